"""Efficiency metrics (tokenizers/efficiency.py): invariants of entropy, usage and quality."""

from __future__ import annotations

import math

import pytest
import torch

from tokenize_mm.tokenizers.efficiency import (
    bits_per_token,
    codebook_stats,
    image_quality,
    round_trip,
)


@pytest.mark.parametrize("n", [1, 2, 8, 256])
def test_uniform_codes_carry_log2_n_bits_and_use_every_code(n):
    codes = torch.arange(n).repeat(5)[None]  # (1, 5n): every code 5 times
    (stats,) = codebook_stats(codes, n)
    assert stats["entropy_bits"] == pytest.approx(math.log2(n), abs=1e-9)
    assert stats["nominal_bits"] == pytest.approx(math.log2(n))
    assert stats["used_fraction"] == 1.0 and stats["used_codes"] == n
    assert stats["perplexity"] == pytest.approx(n)
    assert stats["num_tokens"] == 5 * n
    correction = (n - 1) / (2 * 5 * n * math.log(2))
    assert stats["entropy_bits_miller_madow"] == pytest.approx(math.log2(n) + correction)


def test_each_codebook_is_measured_on_its_own():
    codes = torch.stack([torch.arange(4).repeat(4), torch.full((16,), 3)])  # (K=2, 16)
    first, second = codebook_stats(codes, 8)
    assert (first["entropy_bits"], first["used_fraction"]) == (pytest.approx(2.0), 0.5)
    assert (second["entropy_bits"], second["used_fraction"]) == (pytest.approx(0.0), 1 / 8)
    bits = bits_per_token([first, second])
    assert bits["nominal"] == pytest.approx(3.0)
    assert bits["unigram"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "codes", [torch.arange(4), torch.zeros(1, 0, dtype=torch.long), torch.tensor([[0, 9]])]
)
def test_codebook_stats_refuses_bad_codes(codes):
    with pytest.raises(ValueError):
        codebook_stats(codes, 8)


def test_round_trip_counts_exact_texts_and_lists_failures():
    texts = ["Hello world.", "A red circle", "  two  spaces ", ""]
    assert round_trip(texts, list(texts)) == {
        "num_items": 4, "num_exact": 4, "rate": 1.0, "failures": [],
    }  # fmt: skip
    lowered = round_trip(texts, [t.lower() for t in texts])
    assert lowered["rate"] == 0.5 and lowered["failures"] == [0, 1]
    assert round_trip([], [])["rate"] == 1.0
    with pytest.raises(ValueError):
        round_trip(texts, texts[:2])


def test_plain_ascii_round_trips_through_sentencepiece(tiny_text, sentences):
    texts = [*sentences[:50], "Plain ASCII: ~!@#$%^&*()_+ 0123456789 {}[]|\\;:'\",.<>/?"]
    result = round_trip(texts, tiny_text.decode_batch(tiny_text.encode_batch(texts)))
    assert result["rate"] == 1.0


def test_perfect_reconstruction_has_infinite_psnr_and_ssim_one():
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    quality = image_quality(images.clone(), images)
    assert quality["psnr_db"] > 100 or math.isinf(quality["psnr_db"])
    assert quality["ssim"] == pytest.approx(1.0)


def test_psnr_of_a_known_error_and_ssim_below_one():
    images = 0.2 + 0.6 * torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    quality = image_quality(images + 0.1, images)  # MSE 0.01 → PSNR 20 dB at data range 1
    assert quality["psnr_db"] == pytest.approx(20.0, abs=1e-3)
    noisy = (images + 0.2 * torch.randn(images.shape)).clamp(0, 1)
    assert image_quality(noisy, images)["ssim"] < 0.9


def test_image_quality_refuses_mismatched_shapes():
    with pytest.raises(ValueError):
        image_quality(torch.rand(2, 3, 32, 32), torch.rand(2, 3, 16, 16))
