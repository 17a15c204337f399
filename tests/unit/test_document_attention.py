"""Causal attention per packed document (``models/document_attention.py``) gives ``block_mask``'s
answer: the plan covers every position once, the attention equals the dense mask's at every
document position (values and gradients), and ``DecoderLM(attention="documents")`` equals the
dense model wherever the plain causal rule applies, falling back to the mask elsewhere."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tokenize_mm.models import DecoderLM, ModelConfigError, block_mask, preset
from tokenize_mm.models.document_attention import DocumentRuns, attend_documents

VOCAB = 64

ROWS = [
    [[1] * 8 + [2] * 9 + [0] * 3, [1] * 20],  # two documents then padding; one document
    [[1] * 3 + [2] * 1 + [3] * 16, [7] * 11 + [8] * 9],  # runs shorter and longer than quantum
    [[0] * 20, [1] * 19 + [2]],  # all padding; a one-position document at the end
]


def packed(segment_ids: list[list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch of the given segment ids, positions restarting per run, random ids."""
    seg = torch.tensor(segment_ids)
    positions = torch.zeros_like(seg)
    for b in range(seg.shape[0]):
        _, counts = seg[b].unique_consecutive(return_counts=True)
        positions[b] = torch.cat([torch.arange(int(n)) for n in counts])
    g = torch.Generator().manual_seed(seed)
    return dict(tokens=torch.randint(0, VOCAB, seg.shape, generator=g),
                modality=torch.randint(0, 4, seg.shape, generator=g),
                positions=positions, segment_ids=seg)  # fmt: skip


@pytest.mark.parametrize("segment_ids", ROWS)
@pytest.mark.parametrize("quantum", [1, 4, 64])
def test_the_plan_covers_every_position_once(segment_ids, quantum):
    seg = torch.tensor(segment_ids)
    runs = DocumentRuns.from_segment_ids(seg, quantum=quantum)
    assert runs is not None and runs.shape == tuple(seg.shape)
    slots = torch.cat([g.reshape(-1) for g in runs.groups])
    assert all(g.shape[1] % quantum == 0 for g in runs.groups)
    assert len({g.shape[1] for g in runs.groups}) == len(runs.groups)  # one group a length
    # each position's output slot holds that position
    assert torch.equal(slots[runs.inverse], torch.arange(seg.numel()))
    flat = seg.reshape(-1)
    for group in runs.groups:  # a run's slots: one segment, one row, in order, then repeats
        rows = group // seg.shape[1]
        assert torch.equal(rows, rows[:, :1].expand_as(rows))
        assert torch.equal(flat[group], flat[group[:, :1]].expand_as(group))
        assert bool((group[:, 1:] >= group[:, :-1]).all())


@pytest.mark.parametrize("segment_ids", ROWS)
def test_attention_per_document_is_the_dense_masks(segment_ids):
    torch.manual_seed(0)
    seg = torch.tensor(segment_ids)
    q, k, v = (torch.randn(2, 3, 20, 8, requires_grad=True) for _ in range(3))
    got = attend_documents(q, k, v, DocumentRuns.from_segment_ids(seg, quantum=4))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=block_mask(seg))
    real = (seg != 0)[:, None, :, None].expand_as(ref)
    torch.testing.assert_close(got[real], ref[real])
    weights = torch.randn_like(ref) * real  # gradients of what document positions output
    grads = torch.autograd.grad((got * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((ref * weights).sum(), (q, k, v))
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e)


def test_recurring_ids_get_no_plan_and_the_shape_is_checked():
    assert DocumentRuns.from_segment_ids(torch.tensor([[1, 1, 2, 2, 1, 1]])) is None
    assert DocumentRuns.from_segment_ids(torch.zeros(0, 4, dtype=torch.long)) is None
    runs = DocumentRuns.from_segment_ids(torch.tensor([[1, 1, 2, 2]]))
    with pytest.raises(ValueError, match="plan is for"):
        attend_documents(*(torch.randn(2, 1, 4, 8) for _ in range(3)), runs)
    with pytest.raises(ValueError, match="quantum"):
        DocumentRuns.from_segment_ids(torch.tensor([[1]]), quantum=0)


def _pair(**changes) -> tuple[DecoderLM, DecoderLM]:
    config = dataclasses.replace(preset("tiny"), **changes)
    torch.manual_seed(0)
    dense = DecoderLM(dataclasses.replace(config, attention="dense"), vocab_size=VOCAB)
    by_document = DecoderLM(dataclasses.replace(config, attention="documents"), vocab_size=VOCAB)
    by_document.load_state_dict(dense.state_dict())
    return dense, by_document


@pytest.mark.parametrize("segment_ids", ROWS[:2])
def test_decoder_with_documents_equals_the_dense_model(segment_ids):
    dense, by_document = _pair()
    batch = packed(segment_ids)
    real = batch["segment_ids"] != 0
    h_dense, h_docs = dense(**batch), by_document(**batch)
    torch.testing.assert_close(h_docs[real], h_dense[real], rtol=1e-5, atol=1e-5)
    h_dense[real].square().sum().backward()
    h_docs[real].square().sum().backward()
    for (name, a), b in zip(dense.named_parameters(), by_document.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=5e-4, msg=name)


def test_documents_fall_back_to_the_mask_where_other_rules_apply():
    """Late fusion, isolated and bidirectional spans: the mask's rule, so the dense path."""
    dense, by_document = _pair(fusion="late", late_layers=1)
    batch = packed(ROWS[0])
    real = batch["segment_ids"] != 0
    for kwargs in ({}, {"isolate_modalities": True},
                   {"isolate_modalities": True, "bidirectional": True}):  # fmt: skip
        torch.testing.assert_close(by_document(**batch, **kwargs)[real],
                                   dense(**batch, **kwargs)[real], rtol=1e-5, atol=1e-5)  # fmt: skip


def test_attention_names_are_checked():
    with pytest.raises(ModelConfigError, match="attention"):
        dataclasses.replace(preset("tiny"), attention="sparse")
