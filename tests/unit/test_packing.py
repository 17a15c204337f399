"""Packing and batching: invariants over random documents from a seeded generator.

Every token lands exactly once, rows have the right shape, spans are cut only where allowed,
segments and positions describe the rows, the attention mask isolates documents, batches keep
their token budget, shards partition the documents, and the same seed gives the same batches.
"""

from __future__ import annotations

import itertools
from collections import defaultdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from tokenize_mm.data import (
    SPECIAL_MODALITY,
    Batch,
    DataError,
    Document,
    PackedDataset,
    PackedRow,
    Packer,
    TokenBudgetBatcher,
    attention_mask,
    batch_rows,
    collate,
    layout,
    split_document,
    target_mask,
)

PAD = 7


def random_documents(n: int, seed: int, max_span: int = 40) -> list[Document]:
    """Documents of 1 to 6 spans of 1 to ``max_span`` tokens; each span one modality."""
    rng = np.random.default_rng(seed)
    docs = []
    for i in range(n):
        spans = []
        for _ in range(rng.integers(1, 7)):
            length = int(rng.integers(1, max_span + 1))
            spans.append((rng.integers(0, 1000, length), np.full(length, rng.integers(0, 4))))
        docs.append(Document.from_spans(spans, doc_id=i))
    return docs


def check_tiling(docs: list[Document], spans: list[tuple[int, int, int]]) -> None:
    """Each document's pieces, sorted by start, tile it exactly once."""
    by_doc = defaultdict(list)
    for doc_id, start, stop in spans:
        by_doc[doc_id].append((start, stop))
    assert sorted(by_doc) == [d.doc_id for d in docs]
    for doc in docs:
        pieces = sorted(by_doc[doc.doc_id])
        assert pieces[0][0] == 0 and pieces[-1][1] == len(doc)
        assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))


def check_row(row: PackedRow, docs: list[Document], length: int) -> None:
    """Segments are consecutive, hold their documents' tokens, and padding follows them."""
    for name in ("tokens", "modality", "segment_ids", "positions"):
        assert getattr(row, name).shape == (length,)
    assert (row.tokens.dtype, row.modality.dtype) == (np.int64, np.uint8)
    assert (row.segment_ids.dtype, row.positions.dtype) == (np.int32, np.int64)
    used = sum(stop - start for _, start, stop in row.spans)
    expected_ids = np.zeros(length, np.int32)
    at = 0
    for k, (doc_id, start, stop) in enumerate(row.spans, 1):
        n = stop - start
        doc = docs[doc_id]
        np.testing.assert_array_equal(row.tokens[at : at + n], doc.tokens[start:stop])
        np.testing.assert_array_equal(row.modality[at : at + n], doc.modality[start:stop])
        np.testing.assert_array_equal(row.positions[at : at + n], np.arange(n))
        expected_ids[at : at + n] = k
        at += n
    np.testing.assert_array_equal(row.segment_ids, expected_ids)
    assert (row.tokens[used:] == PAD).all() and (row.modality[used:] == SPECIAL_MODALITY).all()
    assert (row.positions[used:] == 0).all()


# -- Document -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tokens=[1, 2, 3], modality=[0, 0], cuts=[]), "modality has 2 positions"),
        (dict(tokens=[1, 2, 3], modality=[0, 0, 0], cuts=[2, 1]), "strictly increasing"),
        (dict(tokens=[1, 2, 3], modality=[0, 0, 0], cuts=[0]), "strictly increasing"),
        (dict(tokens=[1, 2, 3], modality=[0, 0, 0], cuts=[3]), "strictly increasing"),
        (dict(tokens=[], modality=[], cuts=[]), "is empty"),
        (dict(tokens=[1, 2], modality=[0, 9], cuts=[]), "modality ids"),
        (dict(tokens=[1.5, 2], modality=[0, 0], cuts=[]), "integer"),
        (dict(tokens=[[1, 2]], modality=[0, 0], cuts=[]), "1-D"),
        (dict(tokens=[-1, 2], modality=[0, 0], cuts=[]), "non-negative"),
    ],
)
def test_document_rejects_bad_input_naming_it(kwargs, message):
    with pytest.raises(DataError, match=message) as info:
        Document(**{k: np.asarray(v) for k, v in kwargs.items()}, doc_id=42)
    assert "Document 42" in str(info.value)


def test_document_stores_canonical_dtypes():
    doc = Document.from_spans([([1, 2], [0, 0]), ([3, 4, 5], [1, 1, 1])], doc_id=3)
    assert (doc.tokens.dtype, doc.modality.dtype, doc.cuts.dtype) == (np.int64, np.uint8, np.int64)
    assert doc.cuts.tolist() == [2] and len(doc) == 5


# -- splitting ------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_length", [40, 57, 100])
def test_split_at_cuts_only_and_round_trips(max_length):
    for doc in random_documents(200, seed=1):
        pieces = split_document(doc, max_length)
        np.testing.assert_array_equal(np.concatenate([p.tokens for p in pieces]), doc.tokens)
        np.testing.assert_array_equal(np.concatenate([p.modality for p in pieces]), doc.modality)
        assert all(len(p) <= max_length for p in pieces)
        assert all(p.start in set(doc.cuts.tolist()) for p in pieces[1:])
        assert not any(p.mid_span for p in pieces)
        assert (len(pieces) == 1) == (len(doc) <= max_length)


def test_long_span_raises_naming_document_and_length():
    doc = Document.from_spans(
        [(np.arange(5), np.zeros(5, int)), (np.arange(30), np.ones(30, int))], 9
    )
    with pytest.raises(DataError, match=r"Document 9: the span at positions 5\.\.35 has 30 tokens"):
        split_document(doc, 16)
    with pytest.raises(DataError, match="split_spans=True"):
        list(Packer(16, PAD).pack([doc]))


def test_split_spans_cuts_mid_span_and_counts_it():
    docs = random_documents(100, seed=2, max_span=90)
    packer = Packer(32, PAD, buffer_size=16, split_spans=True)
    rows = list(packer.pack(docs))
    check_tiling(docs, [s for r in rows for s in r.spans])
    for row in rows:
        check_row(row, docs, 32)
    assert packer.stats.mid_span_splits > 0
    pieces = [p for d in docs for p in split_document(d, 32, split_spans=True)]
    assert packer.stats.mid_span_splits == sum(p.mid_span for p in pieces)
    assert sum(p.start not in set(docs[p.doc_id].cuts.tolist()) for p in pieces if p.start) == (
        packer.stats.mid_span_splits
    )


# -- packing --------------------------------------------------------------------------------------
@pytest.mark.parametrize("context, buffer_size", [(64, 1), (64, 8), (128, 64), (250, 1000)])
def test_pack_keeps_every_token_once_in_rows_of_context(context, buffer_size):
    docs = random_documents(300, seed=context + buffer_size)
    packer = Packer(context, PAD, buffer_size=buffer_size)
    rows = list(packer.pack(docs))
    for row in rows:
        check_row(row, docs, context)
    check_tiling(docs, [s for r in rows for s in r.spans])
    total = sum(map(len, docs))
    stats = packer.stats
    assert stats.tokens == total == sum(int((r.segment_ids > 0).sum()) for r in rows)
    assert stats.rows == len(rows) and stats.pad_tokens == len(rows) * context - total
    assert stats.documents == len(docs) and stats.mid_span_splits == 0
    assert stats.non_pad_fraction == pytest.approx(total / (len(rows) * context))


def test_pack_fills_rows_tightly_with_a_buffer():
    docs = random_documents(2000, seed=5)
    tight, single = Packer(256, PAD, buffer_size=128), Packer(256, PAD, buffer_size=1)
    list(tight.pack(docs)), list(single.pack(docs))
    assert tight.stats.non_pad_fraction > 0.99 > single.stats.non_pad_fraction


def test_pack_streams_with_bounded_look_ahead():
    pulled = 0

    def stream():
        nonlocal pulled
        for doc in random_documents(500, seed=6, max_span=20):  # one piece each at context 128
            pulled += 1
            yield doc

    first = next(iter(Packer(128, PAD, buffer_size=32).pack(stream())))
    assert pulled == 32 and first.spans[0][0] == 0  # the oldest piece opens the row


def test_worked_example_of_the_module_docstring():
    a = Document(np.array([10, 11, 12]), np.array([0, 0, 0]), doc_id=0)
    b = Document(np.array([20, 21, 22, 23]), np.array([1, 1, 1, 1]), doc_id=1)
    row = layout(split_document(a, 8) + split_document(b, 8), 8, PAD)
    assert row.tokens.tolist() == [10, 11, 12, 20, 21, 22, 23, PAD]
    assert row.modality.tolist() == [0, 0, 0, 1, 1, 1, 1, SPECIAL_MODALITY]
    assert row.segment_ids.tolist() == [1, 1, 1, 2, 2, 2, 2, 0]
    assert row.positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 0]
    seg = torch.from_numpy(row.segment_ids)
    assert target_mask(seg).int().tolist() == [1, 1, 0, 1, 1, 1, 0, 0]
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[:3, :3] = torch.ones(3, 3).tril().bool()
    expected[3:7, 3:7] = torch.ones(4, 4).tril().bool()
    expected[7, 7] = True
    assert torch.equal(attention_mask(seg), expected)


# -- masks ----------------------------------------------------------------------------------------
def test_masks_match_their_definitions():
    batch = collate(list(Packer(48, PAD, buffer_size=8).pack(random_documents(40, seed=7)))[:4])
    seg = batch.segment_ids
    mask, targets = batch.attention_mask(), batch.target_mask()
    assert mask.shape == (4, 48, 48) and targets.shape == (4, 48)
    for b in range(4):
        for t in range(48):
            for s in range(48):
                assert bool(mask[b, t, s]) == (s <= t and bool(seg[b, t] == seg[b, s]))
            follows = t + 1 < 48 and seg[b, t] != 0 and seg[b, t + 1] == seg[b, t]
            assert bool(targets[b, t]) == bool(follows)


def test_attention_mask_isolates_documents_in_sdpa():
    """A packed row through masked attention equals each document through causal attention."""
    rows = list(Packer(64, PAD, buffer_size=16).pack(random_documents(30, seed=8, max_span=15)))
    batch = collate(rows)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(len(rows), 2, 64, 8, generator=gen) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=batch.attention_mask()[:, None])
    assert torch.isfinite(out).all()
    for b, row in enumerate(rows):
        for seg in range(1, len(row.spans) + 1):
            idx = torch.from_numpy(np.flatnonzero(row.segment_ids == seg))
            alone = F.scaled_dot_product_attention(
                q[b : b + 1, :, idx], k[b : b + 1, :, idx], v[b : b + 1, :, idx], is_causal=True
            )
            torch.testing.assert_close(out[b : b + 1, :, idx], alone)


# -- batching -------------------------------------------------------------------------------------
def test_batch_rows_shapes_and_last_batch():
    rows = list(Packer(64, PAD, buffer_size=8).pack(random_documents(50, seed=9)))
    batches = list(batch_rows(rows, 4))
    assert [b.tokens.shape[0] for b in batches] == [4] * (len(rows) // 4) + (
        [len(rows) % 4] if len(rows) % 4 else []
    )
    assert len(list(batch_rows(rows, 4, drop_last=True))) == len(rows) // 4
    b = batches[0]
    assert (b.tokens.dtype, b.modality.dtype) == (torch.int64, torch.uint8)
    assert (b.segment_ids.dtype, b.positions.dtype) == (torch.int32, torch.int64)
    assert b.tokens.shape == b.modality.shape == b.segment_ids.shape == b.positions.shape
    assert b.num_tokens == sum(stop - start for r in b.spans for _, start, stop in r)


@pytest.mark.parametrize("max_tokens, max_length, buffer_size", [(256, 64, 16), (500, 100, 500)])
def test_token_budget_batches_keep_the_budget(max_tokens, max_length, buffer_size):
    docs = random_documents(300, seed=max_tokens)
    batcher = TokenBudgetBatcher(max_tokens, PAD, max_length, buffer_size, seed=1)
    batches = list(batcher.batches(docs))
    spans = []
    for batch in batches:
        rows, length = batch.tokens.shape
        assert rows * length <= max_tokens and length <= max_length
        longest = max(stop - start for ((_, start, stop),) in batch.spans)
        assert length == longest  # padded to the longest row, no further
        for r, ((doc_id, start, stop),) in enumerate(batch.spans):
            n = stop - start
            assert batch.tokens[r, :n].tolist() == docs[doc_id].tokens[start:stop].tolist()
            assert batch.segment_ids[r].tolist() == [1] * n + [0] * (length - n)
            assert batch.positions[r, :n].tolist() == list(range(n))
        spans += [s for (s,) in batch.spans]
    check_tiling(docs, spans)
    assert batcher.stats.tokens == sum(map(len, docs)) and batcher.stats.batches == len(batches)


def test_token_budget_rejects_a_row_over_the_budget():
    with pytest.raises(DataError, match="max_length 300 exceeds max_tokens 200"):
        TokenBudgetBatcher(200, PAD, max_length=300)
    with pytest.raises(DataError, match="context must be a positive integer"):
        Packer(0, PAD)


# -- dataset --------------------------------------------------------------------------------------
def doc_ids(batches: list[Batch]) -> list[int]:
    return [doc_id for b in batches for row in b.spans for doc_id, start, _ in row if start == 0]


@pytest.mark.parametrize("max_tokens", [None, 512])
def test_shards_partition_the_documents(max_tokens):
    docs = random_documents(120, seed=10)
    data = PackedDataset(docs, PAD, context=128, batch_size=4, max_tokens=max_tokens, seed=3)
    shards = [doc_ids(list(data.iter_shard(s, 3))) for s in range(3)]
    assert sorted(itertools.chain(*shards)) == list(range(len(docs)))
    order = np.random.default_rng((3, 0)).permutation(len(docs))
    for s in range(3):
        assert sorted(shards[s]) == sorted(order[s::3].tolist())


@pytest.mark.slow
def test_dataloader_workers_and_ranks_see_each_document_once():
    docs = random_documents(80, seed=11)
    seen = []
    for rank in range(2):
        data = PackedDataset(docs, PAD, context=128, batch_size=2, rank=rank, world_size=2)
        loader = DataLoader(data, batch_size=None, num_workers=2)
        seen += doc_ids(list(loader))
    assert sorted(seen) == list(range(len(docs)))


def test_same_seed_same_batches_and_epochs_differ():
    docs = random_documents(100, seed=12)

    def run(seed: int, epoch: int, **kwargs) -> list[Batch]:
        data = PackedDataset(docs, PAD, context=96, batch_size=3, seed=seed, **kwargs)
        data.set_epoch(epoch)
        return list(data)

    def same(x: list[Batch], y: list[Batch]) -> bool:
        return len(x) == len(y) and all(
            torch.equal(a.tokens, b.tokens) for a, b in zip(x, y, strict=True)
        )

    assert same(run(0, 0), run(0, 0)) and same(run(0, 0, max_tokens=300), run(0, 0, max_tokens=300))
    assert not same(run(0, 0), run(0, 1)) and not same(run(0, 0), run(1, 0))
    assert same(run(0, 0, shuffle=False), run(1, 5, shuffle=False))


def test_stream_of_documents_is_read_in_order():
    docs = random_documents(60, seed=13)
    data = PackedDataset(lambda: iter(docs), PAD, context=512, batch_size=2, buffer_size=1)
    assert doc_ids(list(data)) == list(range(60))  # buffer 1: one row per document, in order


def test_batch_moves_as_a_whole():
    batch = next(iter(PackedDataset(random_documents(10, seed=14), PAD, context=64)))
    moved = batch.to("cpu")
    assert torch.equal(moved.positions, batch.positions) and moved.spans == batch.spans
