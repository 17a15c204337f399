"""Mixture stream: draws follow the sampler, ranks read disjoint documents, resume is exact."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tokenize_mm.balance import AdaptiveSampler, FixedSampler, ProportionalSampler
from tokenize_mm.data import Batch, DataError, Document
from tokenize_mm.data.mixture import (
    MixtureStream,
    source_modalities,
    source_sizes,
    store_sources,
)

PAD = 1023


def make_documents(seed: int = 0) -> dict[str, list[Document]]:
    """Three sources of different lengths and modalities; audio spans may exceed a row of 64."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Document]] = {"text_only": [], "image_text": [], "audio_text": []}
    doc_id = 0
    for source, count in (("text_only", 60), ("image_text", 40), ("audio_text", 30)):
        for _ in range(count):
            spans = [(0, int(rng.integers(3, 20 if source == "text_only" else 7)))]
            if source == "image_text":
                spans.append((1, 16))
            if source == "audio_text":
                spans.append((2, int(rng.integers(24, 90))))
            out[source].append(
                Document.from_spans(
                    [(rng.integers(0, 1000, n), np.full(n, m)) for m, n in spans], doc_id
                )
            )
            doc_id += 1
    return out


DOCS = make_documents()
WEIGHTS = {"text_only": 0.5, "image_text": 0.3, "audio_text": 0.2}
SHARES = source_modalities(DOCS)


def stream(sampler=None, docs=DOCS, **options) -> MixtureStream:
    sampler = sampler or FixedSampler(source_sizes(docs), WEIGHTS)
    options = {"context": 64, "batch_size": 4, "buffer_size": 8, "split_spans": True, **options}
    return MixtureStream(docs, sampler, PAD, **options)


def losses(step: int) -> dict[str, float]:
    """Text's loss rises then falls back; audio's falls then rises: the weights keep moving."""
    return {
        "text": 3.0 + 0.2 * min(step, 8 - step),
        "image": 2.0,
        "audio": 2.0 + 0.1 * abs(step - 6),
    }


def assert_same_batches(a: list[Batch], b: list[Batch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for field in ("tokens", "modality", "segment_ids", "positions"):
            assert torch.equal(getattr(x, field), getattr(y, field)), field
        assert x.spans == y.spans


def test_draws_serve_each_source_its_token_share():
    s = stream()
    draws = [s.draw() for _ in range(20000)]
    tokens = dict.fromkeys(WEIGHTS, 0)
    counts = dict.fromkeys(WEIGHTS, 0)
    for source, i in draws:
        tokens[source] += len(DOCS[source][i])
        counts[source] += 1
    total = sum(tokens.values())
    assert {k: v / total for k, v in tokens.items()} == pytest.approx(WEIGHTS, abs=0.02)
    # Per document, a source is drawn ∝ p / mean document length.
    sizes = source_sizes(DOCS)
    q = {k: WEIGHTS[k] * len(DOCS[k]) / sizes[k] for k in WEIGHTS}
    q = {k: v / sum(q.values()) for k, v in q.items()}
    assert {k: v / len(draws) for k, v in counts.items()} == pytest.approx(q, abs=0.015)


class Switch:
    """A sampler whose probabilities the test sets directly."""

    name = "switch"

    def __init__(self, probabilities):
        self.p = dict(probabilities)

    def probabilities(self):
        return dict(self.p)

    def update(self, modality_losses, reduce=None):
        pass

    def state_dict(self):
        return {"p": dict(self.p)}

    def load_state_dict(self, state):
        self.p = dict(state["p"])


def test_a_new_probability_counts_from_the_next_draw():
    sampler = Switch(WEIGHTS)
    s = stream(sampler)
    assert {s.draw()[0] for _ in range(200)} == set(WEIGHTS)
    sampler.p = {"text_only": 0.0, "image_text": 1.0, "audio_text": 0.0}
    assert {s.draw()[0] for _ in range(100)} == {"image_text"}


def test_seed_determines_the_stream():
    a, b, c = stream(seed=3), stream(seed=3), stream(seed=4)
    first = [next(a) for _ in range(4)]
    assert_same_batches(first, [next(b) for _ in range(4)])
    other = [next(c) for _ in range(4)]
    assert not all(torch.equal(x.tokens, y.tokens) for x, y in zip(first, other, strict=True))


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # plain values only


def test_resume_is_exact_after_sampler_updates():
    def adaptive():
        return AdaptiveSampler(source_sizes(DOCS), SHARES, step_size=0.5, smoothing=0.3)

    sampler = adaptive()
    original = stream(sampler, seed=7)
    batches, state = [], None
    for step in range(12):
        batches.append(next(original))
        sampler.update(losses(step))
        if step == 4:
            state = _roundtrip(original.state_dict())
            p_saved = sampler.probabilities()
    assert sampler.probabilities() != p_saved  # the updates moved the mixture after the save
    assert state["pending"], "the packer held pieces at the save: the test covers its buffer"

    resumed_sampler = adaptive()
    resumed = stream(resumed_sampler, seed=7)
    resumed.load_state_dict(state)
    assert resumed_sampler.probabilities() == p_saved
    tail = []
    for step in range(5, 12):
        tail.append(next(resumed))
        resumed_sampler.update(losses(step))
    assert_same_batches(tail, batches[5:])
    assert resumed.metrics() == original.metrics()
    assert vars(resumed.packer.stats) == vars(original.packer.stats)


def test_resume_under_ddp_gives_each_rank_its_own_state():
    ranks = [stream(rank=r, world_size=2, seed=1) for r in range(2)]
    for s in ranks:
        for _ in range(3):
            next(s)
    state = ranks[0].state_dict(gather=lambda own: [own, ranks[1].state_dict()])
    state = _roundtrip(state)
    expected = [[next(s) for _ in range(3)] for s in ranks]
    for r in range(2):
        restored = stream(rank=r, world_size=2, seed=1)
        restored.load_state_dict(state)
        assert_same_batches([next(restored) for _ in range(3)], expected[r])
    with pytest.raises(DataError, match="rank"):  # one rank's state into another rank
        stream(rank=1, world_size=2, seed=1).load_state_dict(state["ranks"][0])


def test_ranks_draw_the_same_sources_but_disjoint_documents():
    world = 3
    ranks = [stream(rank=r, world_size=world, seed=5) for r in range(world)]
    draws = [[s.draw() for _ in range(600)] for s in ranks]
    assert [[d[0] for d in rank] for rank in draws][1:] == [[d[0] for d in draws[0]]] * 2
    for source, docs in DOCS.items():
        per_epoch = len(docs) // world  # draws of the source per rank before a new epoch
        seen = [[i for s, i in rank if s == source][:per_epoch] for rank in draws]
        assert all(len(ids) == per_epoch for ids in seen), "draw more to fill an epoch"
        union = set().union(*map(set, seen))
        assert len(union) == world * per_epoch  # disjoint, and none read twice


def test_served_tokens_are_counted_for_logging():
    s = stream(ProportionalSampler(source_sizes(DOCS)))
    served = sum(next(s).num_tokens for _ in range(6))
    assert sum(s.source_tokens.values()) == served
    assert sum(s.modality_tokens.values()) == served and s.modality_tokens["image"] > 0
    metrics = s.metrics()
    probabilities = s.sampler.probabilities()
    assert {k: metrics[f"sampling/prob/{k}"] for k in DOCS} == probabilities
    assert sum(metrics[f"sampling/token_share/{m}"] for m in ("text", "image", "audio")) == (
        pytest.approx(1.0)
    )


def test_dataloader_reads_the_stream_in_process():
    a, b = stream(seed=2), stream(seed=2)
    loader = DataLoader(a, batch_size=None, num_workers=0)
    batches = [batch for batch, _ in zip(loader, range(3), strict=False)]
    assert_same_batches(batches, [next(b) for _ in range(3)])


class FakeStore:
    """What ``store_sources`` reads of a ``TokenStore``: the index and ``document(i)``."""

    names = ("text", "image", "audio", "special")

    def __init__(self, docs: dict[str, list[Document]]):
        self.docs = [d for ds in docs.values() for d in ds]
        self.examples = [
            {"source": source, "length": len(d),
             "tokens": {m: int((d.modality == k).sum()) for k, m in enumerate(self.names)}}
            for source, ds in docs.items() for d in ds
        ]  # fmt: skip

    def document(self, i: int) -> Document:
        return self.docs[i]


def test_store_sources_group_the_store_and_count_from_its_index():
    store = FakeStore(DOCS)
    grouped = store_sources(store)
    assert list(grouped) == list(DOCS)
    assert {k: len(v) for k, v in grouped.items()} == {k: len(v) for k, v in DOCS.items()}
    assert source_sizes(grouped) == source_sizes(DOCS)
    shares = source_modalities(grouped)
    assert all(shares[k] == pytest.approx(v) for k, v in SHARES.items())
    assert SHARES["image_text"].keys() == {"text", "image", "audio"}
    assert SHARES["text_only"]["text"] == 1.0
    from_store = MixtureStream.from_store(
        store, FixedSampler(source_sizes(grouped), WEIGHTS), PAD, context=64, batch_size=4,
        buffer_size=8, split_spans=True,
    )  # fmt: skip
    reference = stream()
    assert_same_batches([next(from_store) for _ in range(3)], [next(reference) for _ in range(3)])
    with pytest.raises(DataError, match="concept"):
        store_sources(store, "concept")


def test_sources_must_match_the_sampler_and_serve_every_rank():
    with pytest.raises(DataError, match="build the sampler"):
        stream(FixedSampler({"text_only": 1, "speech": 1}, {"text_only": 1, "speech": 1}))
    few = {**DOCS, "image_text": DOCS["image_text"][:2]}
    with pytest.raises(DataError, match="fewer documents than world_size=3"):
        stream(docs=few, rank=0, world_size=3)
