"""Batched codec inference (``audio_batch.py``): identical codes to one-by-one encoding for
clips of many lengths, weight normalisation folded without touching the saved model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokenize_mm import AudioTokenizer
from tokenize_mm.tokenizers.arch import arch_dict
from tokenize_mm.tokenizers.audio.batch import MIN_MEMBERS, _groups, encode_pieces, folded_copy
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.tokenizer import _make_info

ARCH = CodecConfig(
    sample_rate=24_000, channels=1, ratios=(8, 5, 4, 3), n_filters=4, n_residual_layers=1,
    dimension=16, lstm=1, causal=True, num_codebooks=3, codebook_size=64, codebook_dim=None,
    commitment_weight=1.0,
)  # fmt: skip


def untrained(**changes) -> AudioTokenizer:
    """A codec with an LSTM (the tiny fixture has none) and random codebooks."""
    arch = dataclasses.replace(ARCH, **changes)
    torch.manual_seed(0)
    model = CodecModel(arch)
    for layer in getattr(model.quantizer, "layers", []):  # VQ: random codebooks; FSQ has none
        layer.codebook.embed.normal_()
        layer.codebook.inited.fill_(1.0)
    hparams = {"arch": arch_dict(arch), "fit": {}}
    return AudioTokenizer(model, _make_info(arch), hparams, chunk_seconds=2.0, context_seconds=0.5)


def mixed_clips(n: int = 9) -> list[tuple[torch.Tensor, int]]:
    """Lengths from under one frame to several chunks (with chunk_seconds=2), two rates."""
    g = torch.Generator().manual_seed(0)
    lengths = [5, 480, 4_801, 12_345, 24_000, 30_017, 55_555, 24_000 * 5 + 7, 1_000][:n]
    return [
        (0.2 * torch.randn(1, s, generator=g), 24_000 if i % 3 else 16_000)
        for i, s in enumerate(lengths)
    ]


@pytest.mark.parametrize("causal", [True, False])
def test_batch_codes_equal_one_by_one(causal):
    tok = untrained(causal=causal)
    clips = mixed_clips()
    batch = tok.encode_batch(clips)
    singles = [tok.encode(c) for c in clips]
    assert [e.codes.shape[-1] for e in batch] == [e.codes.shape[-1] for e in singles]
    for a, b in zip(batch, singles, strict=True):
        assert torch.equal(a.codes, b.codes)
        assert torch.equal(a.extras["num_samples"], b.extras["num_samples"])
    assert len({int(c.max()) for e in batch for c in e.codes}) > 1  # not a constant code


def test_small_batch_budget_gives_the_same_codes():
    clips = mixed_clips()
    big, small = untrained(), untrained()
    small.batch_seconds = 0.0  # the smallest budget: one chunk with its context, many groups
    assert big.encode_batch(clips) == small.encode_batch(clips)


def test_folding_keeps_outputs_and_leaves_the_model_alone():
    tok = untrained()
    keys = set(tok.model.state_dict())
    assert any(k.endswith("weight_g") for k in keys)
    folded = tok.inference_model()
    assert not any(k.endswith("weight_g") for k in folded.state_dict())
    assert set(tok.model.state_dict()) == keys
    assert tok.inference_model() is folded  # built once
    wav = 0.1 * torch.randn(1, 1, 4_800)
    with torch.no_grad():
        torch.testing.assert_close(folded.encoder(wav), tok.model.encoder(wav))
        codes = tok.model.encode(wav)
        torch.testing.assert_close(folded.decode(codes), tok.model.decode(codes))


def test_groups_respect_budget_and_lengths():
    lengths = [960, 480, 960, 1440, 480, 960]
    for causal in (True, False):
        groups = _groups(lengths, causal=causal, batch_samples=2_000)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
        for g in groups:
            longest = max(lengths[i] for i in g)
            assert len(g) == 1 or len(g) * longest <= 2_000
            if not causal:
                assert len({lengths[i] for i in g}) == 1


def test_groups_for_workers_shrink_as_the_work_left_does():
    """Guided self-scheduling: with two workers no group takes more than a quarter of the samples
    left unless it holds at most MIN_MEMBERS pieces, none more than a worker's share, and every
    piece is grouped once."""
    lengths = [960 * (1 + i % 5) for i in range(60)]
    budget = 20_000
    groups = _groups(lengths, causal=True, batch_samples=budget, workers=2)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    padded = [len(g) * max(lengths[i] for i in g) for g in groups]
    left, share = sum(lengths), -(-sum(lengths) // 2)
    for size, group in zip(padded, groups, strict=True):
        room = max(-(-left // 4), MIN_MEMBERS * max(lengths[i] for i in group))
        assert len(group) == 1 or size <= min(budget, share, room)
        left -= sum(lengths[i] for i in group)
    assert padded[-1] < padded[0] / 2  # the tail is small: the workers finish together
    assert len(groups) > len(_groups(lengths, causal=True, batch_samples=budget))


@pytest.mark.parametrize("lengths", [[48_000] * 2, [24_000] * 4, [72_000] * 7])
def test_a_few_clips_still_make_a_group_per_worker(lengths):
    groups = _groups(lengths, causal=True, batch_samples=720_000, workers=2)
    assert len(groups) >= 2 and sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert max(len(g) for g in groups) <= -(-len(lengths) // 2)


def test_pieces_must_be_whole_frames():
    tok = untrained()
    with pytest.raises(ValueError, match="multiples of the hop"):
        encode_pieces(
            tok.inference_model(), [torch.zeros(1, 500)], causal=True, batch_samples=10_000,
            batch_convs=False,
        )  # fmt: skip


def test_folded_copy_is_on_the_model_device_and_frozen():
    model = CodecModel(ARCH)
    copy = folded_copy(model, lambda: CodecModel(ARCH))
    assert not any(p.requires_grad for p in copy.parameters())
    assert not copy.training


def test_pieces_too_short_to_pad_alike_are_not_mixed():
    """SEANet pads an input no longer than its padding specially; such short pieces join only
    pieces of their own length. For the 50 Hz codec that is under 7 frames (the last k=7 conv)."""
    from tokenize_mm.tokenizers.audio.batch import min_mixed_length

    assert min_mixed_length(CodecModel(ARCH).encoder) == 7 * 480
    groups = _groups([480, 96_000, 960, 48_000], causal=True, batch_samples=10**6, min_mixed=3360)
    assert groups == [[1, 3], [2], [0]]


def test_worker_threads_do_not_change_the_codes():
    """Pieces' convolutions spread over Python threads (each piece on one thread) give the
    codes of one worker, and the tokenizer's encode_batch those of one-by-one encoding."""
    tok = untrained()
    model, hop = tok.inference_model(), tok.model.hop_length
    g = torch.Generator().manual_seed(1)
    pieces = [torch.randn(1, hop * n, generator=g) for n in (3, 17, 40, 40, 9, 120, 1)]
    runs = [encode_pieces(model, pieces, causal=True, batch_samples=hop * 80, batch_convs=False,
                          workers=w) for w in (1, 2, 3)]  # fmt: skip
    assert all(len(r) == len(pieces) for r in runs)
    for a, b, c in zip(*runs, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
