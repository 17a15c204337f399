"""Codebook patterns: exact round trips, documented layouts, and clear errors on bad input."""

from __future__ import annotations

import random

import pytest
import torch

from tokenize_mm.sequence import (
    DelayPattern,
    FlattenPattern,
    UnknownPatternError,
    build_batch,
    get_pattern,
    pattern_names,
    revert_batch,
)
from tokenize_mm.tokenizers.errors import InvalidCodesError

NAMES = ["flatten", "delay"]
PAD = -1
P = PAD  # the "P" of the docstring grids

# The K = 3, T = 4 worked example of the docstrings: codebook k at step t holds 10 * k + t.
CODES_3x4 = torch.tensor([[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]])


def random_cases(n: int = 60, seed: int = 0):
    """(codes, pad_id) with K in 1..8, T in 0..50 and ids in [0, 1024); pad_id outside them."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for _ in range(n):
        k, t = rng.randint(1, 8), rng.randint(0, 50)
        codes = torch.randint(0, 1024, (k, t), generator=gen)
        cases.append((codes, rng.choice([-1, 1024, 5000])))
    return cases


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_and_steps(name):
    pattern = get_pattern(name)
    for codes, pad_id in random_cases():
        k, t = codes.shape
        seq = pattern.build(codes, pad_id)
        assert seq.dtype == torch.int64
        assert seq.shape[-1] == pattern.steps(t, k)
        assert torch.equal(pattern.revert(seq, k, pad_id), codes)


def test_flatten_is_time_major_without_pads():
    for codes, pad_id in random_cases(seed=1):
        k, t = codes.shape
        seq = FlattenPattern().build(codes, pad_id)
        assert seq.shape == (k * t,)
        for pos in (0, k * t // 2, k * t - 1) if t else ():
            assert seq[pos] == codes[pos % k, pos // k]
        assert not (seq == pad_id).any()


def test_delay_pads_exactly_where_documented():
    for codes, pad_id in random_cases(seed=2):
        k, t = codes.shape
        seq = DelayPattern().build(codes, pad_id)
        assert seq.shape == (k, t + k - 1)
        for row in range(k):
            assert (seq[row, :row] == pad_id).all()  # k leading pads
            assert torch.equal(seq[row, row : row + t], codes[row])
            assert (seq[row, row + t :] == pad_id).all()  # K - 1 - k trailing pads
            assert seq[row, row + t :].numel() == k - 1 - row


def test_worked_grids_from_docstrings():
    assert FlattenPattern().build(CODES_3x4, PAD).tolist() == [
        0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23,
    ]  # fmt: skip
    assert DelayPattern().build(CODES_3x4, PAD).tolist() == [
        [0, 1, 2, 3, P, P],
        [P, 10, 11, 12, 13, P],
        [P, P, 20, 21, 22, 23],
    ]


def test_single_codebook_is_identity():
    codes = torch.arange(7).unsqueeze(0)  # (1, 7)
    assert torch.equal(FlattenPattern().build(codes, PAD), codes[0])
    assert torch.equal(DelayPattern().build(codes, PAD), codes)


def test_zero_steps():
    empty = torch.zeros(3, 0, dtype=torch.long)
    assert FlattenPattern().build(empty, PAD).shape == (0,)
    assert DelayPattern().build(empty, PAD).tolist() == [[P, P], [P, P], [P, P]]
    assert DelayPattern().revert(torch.full((3, 2), PAD), 3, PAD).shape == (3, 0)


def test_delay_corrupted_pads_raise_naming_the_position():
    seq = DelayPattern().build(CODES_3x4, PAD)
    pad_overwritten = seq.clone()
    pad_overwritten[2, 1] = 7
    with pytest.raises(InvalidCodesError, match=r"codebook 2, step 1\) holds 7"):
        DelayPattern().revert(pad_overwritten, 3, PAD)
    code_overwritten = seq.clone()
    code_overwritten[1, 3] = PAD
    with pytest.raises(ValueError, match=r"codebook 1, step 3\) holds pad_id -1"):
        DelayPattern().revert(code_overwritten, 3, PAD)
    with pytest.raises(InvalidCodesError, match="another pad_id"):
        DelayPattern().revert(seq, 3, pad_id=1024)


def test_flatten_refuses_pads_and_ragged_length():
    seq = FlattenPattern().build(CODES_3x4, PAD)
    seq[4] = PAD
    with pytest.raises(InvalidCodesError, match=r"position 4 \(step 1, codebook 1\)"):
        FlattenPattern().revert(seq, 3, PAD)
    with pytest.raises(InvalidCodesError, match="whole number of steps"):
        FlattenPattern().revert(torch.arange(10), 3, PAD)


@pytest.mark.parametrize("name", NAMES)
def test_build_refuses_codes_holding_pad_id(name):
    codes = CODES_3x4.clone()
    codes[2, 3] = PAD
    with pytest.raises(InvalidCodesError, match=r"codebook 2, step 3"):
        get_pattern(name).build(codes, PAD)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "bad",
    [
        CODES_3x4.to(torch.int32),
        CODES_3x4.float(),
        CODES_3x4[0],  # 1-D
        CODES_3x4[None],  # 3-D
        torch.zeros(0, 4, dtype=torch.long),  # K = 0
        [[0, 1], [2, 3]],  # not a tensor
    ],
)
def test_build_refuses_wrong_shapes_and_dtypes(name, bad):
    with pytest.raises(InvalidCodesError):
        get_pattern(name).build(bad, PAD)


def test_revert_refuses_wrong_shapes():
    delayed = DelayPattern().build(CODES_3x4, PAD)
    with pytest.raises(InvalidCodesError, match="cannot come from 4 codebooks"):
        DelayPattern().revert(delayed, 4, PAD)
    with pytest.raises(InvalidCodesError, match="cannot come from 3 codebooks"):
        DelayPattern().revert(torch.full((3, 1), PAD), 3, PAD)
    with pytest.raises(InvalidCodesError, match="int64"):
        DelayPattern().revert(delayed.flatten(), 3, PAD)
    with pytest.raises(InvalidCodesError, match="int64"):
        FlattenPattern().revert(delayed, 3, PAD)
    with pytest.raises(ValueError, match="num_codebooks"):
        FlattenPattern().revert(torch.arange(4), 0, PAD)


def test_batch_equals_one_by_one_and_names_the_index():
    pattern = DelayPattern()
    codes = [
        torch.randint(0, 1024, (4, t), generator=torch.Generator().manual_seed(t))
        for t in (0, 1, 9, 30)
    ]
    seqs = build_batch(pattern, codes, PAD)
    assert all(torch.equal(s, pattern.build(c, PAD)) for s, c in zip(seqs, codes, strict=True))
    reverted = revert_batch(pattern, seqs, codes[0].shape[0], PAD)
    assert all(torch.equal(r, c) for r, c in zip(reverted, codes, strict=True))
    with pytest.raises(InvalidCodesError, match="batch item 1"):
        build_batch(pattern, [CODES_3x4, CODES_3x4.float()], PAD)


def test_registry():
    assert pattern_names() == ["delay", "flatten"]
    assert isinstance(get_pattern("flatten"), FlattenPattern)
    assert isinstance(get_pattern("delay"), DelayPattern)
    with pytest.raises(UnknownPatternError, match="known patterns: delay, flatten"):
        get_pattern("parallel")
    assert issubclass(UnknownPatternError, ValueError)
