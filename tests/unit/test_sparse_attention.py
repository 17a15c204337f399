"""The causal fast path and block-sparse flex attention give ``block_mask``'s answer: the same
allowed pairs, the same hidden states and gradients in DecoderLM, in every reading (packed, late
fusion, isolated spans, bidirectional spans, scoring branches)."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from tokenize_mm.models import DecoderLM, ModelConfigError, block_mask, preset, sparse_attention
from tokenize_mm.models.sparse_attention import attend, causal_rows, flex_block_mask

VOCAB = 64


@pytest.fixture(autouse=True)
def quiet_flex():
    """Uncompiled flex attention warns that it runs its dense reference: that is what is tested."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*flex_attention.*")
        yield


def rows(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two rows of 20: two documents then padding; one document of mixed modalities."""
    g = torch.Generator().manual_seed(seed)
    segment_ids = torch.tensor([[1] * 8 + [2] * 9 + [0] * 3, [1] * 20])
    positions = torch.tensor([[*range(8), *range(9), 0, 0, 0], list(range(20))])
    modality = torch.randint(0, 4, (2, 20), generator=g)
    tokens = torch.randint(0, VOCAB, (2, 20), generator=g)
    return dict(tokens=tokens, modality=modality, positions=positions, segment_ids=segment_ids)


def single_document_rows(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two rows of 20, each one document: the second followed by padding."""
    batch = rows(seed)
    batch["segment_ids"] = torch.tensor([[1] * 20, [3] * 15 + [0] * 5])
    batch["positions"] = torch.tensor([list(range(20)), [*range(15), 0, 0, 0, 0, 0]])
    return batch


@pytest.mark.parametrize(
    ("segment_ids", "expected"),
    [
        ([[1, 1, 1, 1], [2, 2, 2, 2]], True),
        ([[1, 1, 1, 0], [5, 5, 0, 0]], True),  # trailing padding
        ([[1, 1, 2, 2], [1, 1, 1, 1]], False),  # two documents in a row
        ([[0, 1, 1, 1], [1, 1, 1, 1]], False),  # padding first
        ([[1, 1, 0, 1], [1, 1, 1, 1]], False),  # padding inside
    ],
)
def test_causal_rows(segment_ids, expected):
    assert causal_rows(torch.tensor(segment_ids)) is expected


def test_causal_rows_of_an_empty_batch_is_false():
    assert causal_rows(torch.zeros(0, 8, dtype=torch.long)) is False
    assert causal_rows(torch.zeros(2, 0, dtype=torch.long)) is False


MASK_CASES = [
    dict(),
    dict(modality=True),
    dict(modality=True, bidirectional=True),
    dict(branches=True),
]


@pytest.mark.parametrize(
    "case", MASK_CASES, ids=["packed", "modality", "bidirectional", "branches"]
)
def test_flex_matches_dense_mask(case):
    batch = rows()
    modality = batch["modality"] if case.get("modality") else None
    branches = torch.tensor([[0] * 10 + [1] * 5 + [2] * 5, [0] * 12 + [1] * 8]) if case.get(
        "branches") else None  # fmt: skip
    bidirectional = case.get("bidirectional", False)
    dense = block_mask(batch["segment_ids"], modality, branches, bidirectional)
    sparse = flex_block_mask(batch["segment_ids"], modality, branches, bidirectional)
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 20, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(attend(q, k, v, sparse, 0.0), attend(q, k, v, dense, 0.0))


def test_flex_refuses_bidirectional_without_modality():
    with pytest.raises(ValueError, match="modality"):
        flex_block_mask(torch.ones(1, 4, dtype=torch.long), bidirectional=True)


def _model(attention: str, fusion: str = "early") -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(preset("tiny", fusion=fusion, attention=attention), vocab_size=VOCAB)


READINGS = [
    ("early", {}),
    ("late", {}),
    ("early", {"isolate_modalities": True}),
    ("early", {"isolate_modalities": True, "bidirectional": True}),
]


@pytest.mark.parametrize(
    ("fusion", "reading"), READINGS, ids=["early", "late", "isolated", "bidir"]
)
def test_decoder_flex_equals_dense(fusion, reading, monkeypatch):
    """Flex forced on the CPU (PyTorch runs its dense reference there, forward only: a GPU's
    flex has the backward) gives the dense mask's hidden states in every reading."""
    batch = rows()
    with torch.no_grad():
        dense = _model("flex", fusion)(**batch, **reading)  # a CPU: flex_runs is False
        monkeypatch.setattr("tokenize_mm.models.transformer.flex_runs", lambda device: True)
        kinds = []
        real_attend = sparse_attention.attend
        monkeypatch.setattr(
            "tokenize_mm.models.attention.attend",
            lambda q, k, v, mask, p: (
                kinds.append(type(mask).__name__) or real_attend(q, k, v, mask, p)
            ),
        )
        flex = _model("flex", fusion)(**batch, **reading)
    assert kinds and set(kinds) == {"BlockMask"}
    torch.testing.assert_close(flex, dense, atol=1e-5, rtol=1e-5)


def test_flex_config_trains_on_a_cpu_through_the_dense_mask():
    model, batch = _model("flex"), rows()
    model(**batch).square().mean().backward()
    assert model.tok_emb.weight.grad is not None and torch.isfinite(model.tok_emb.weight.grad).all()


def test_causal_fast_path_equals_the_mask_where_it_is_read(monkeypatch):
    """Single-document rows run without a mask; every non-padding position and every gradient
    through them equal the dense mask's, which the path is bypassed to compute."""
    batch = single_document_rows()
    real = batch["segment_ids"] != 0
    calls = []

    def run():
        model = _model("dense")
        hidden = model(**batch)
        F.cross_entropy(model.logits(hidden)[real], batch["tokens"][real]).backward()
        return hidden.detach()[real], model.blocks[0].attn.qkv.weight.grad.clone()

    real_attend = sparse_attention.attend

    def spy(q, k, v, mask, dropout_p):
        calls.append(mask is None)
        return real_attend(q, k, v, mask, dropout_p)

    monkeypatch.setattr("tokenize_mm.models.attention.attend", spy)
    fast = run()
    assert calls and all(calls)  # every block took the fast path
    calls.clear()
    monkeypatch.setattr("tokenize_mm.models.transformer.causal_rows", lambda _: False)
    dense = run()
    assert calls and not any(calls)
    torch.testing.assert_close(fast[0], dense[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast[1], dense[1], atol=1e-6, rtol=1e-4)


def test_fast_path_not_taken_for_packed_rows_or_isolated_spans(monkeypatch):
    taken = []
    real_attend = sparse_attention.attend
    monkeypatch.setattr(
        "tokenize_mm.models.attention.attend",
        lambda q, k, v, mask, p: taken.append(mask is None) or real_attend(q, k, v, mask, p),
    )
    model = _model("dense")
    model(**rows())  # row 0 packs two documents
    model(**single_document_rows(), isolate_modalities=True)
    assert taken and not any(taken)


@pytest.mark.parametrize(
    ("fields", "match"),
    [({"attention": "sparse"}, "attention must be one of"), ({"attention": "flex", "dropout": 0.1},
                                                              "no attention dropout")],
)  # fmt: skip
def test_config_refuses_unknown_attention_and_flex_dropout(fields, match):
    with pytest.raises(ModelConfigError, match=match):
        preset("tiny", **fields)


def test_a_known_single_document_answer_replaces_the_check(monkeypatch):
    """``single_document_rows`` given by the caller (``BalancedLM`` reads it off the batch's host
    copy) is used as is: the check, a read of the device on a GPU, does not run, and the answer
    gives the same hidden states as the check's."""
    model, batch = _model("dense"), single_document_rows()
    checked = model(**batch)
    monkeypatch.setattr("tokenize_mm.models.transformer.causal_rows", _refuse)
    torch.testing.assert_close(model(**batch, single_document_rows=True), checked)
    # False takes the dense mask: the same states at every real position, up to float rounding
    # (padding, never a target, may see the document on the fast path only)
    real = batch["segment_ids"] != 0
    dense = model(**batch, single_document_rows=False)
    torch.testing.assert_close(dense[real], checked[real], atol=1e-5, rtol=1e-5)


def _refuse(_segment_ids):
    raise AssertionError("causal_rows ran although the caller gave its answer")
