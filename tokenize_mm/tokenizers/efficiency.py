"""Tokenizer efficiency: how much information a token carries, and how much of the input survives.

Three questions about a discrete tokenizer, asked of held-out data:

- **Bits per token.** The nominal figure is log2 of the codebook size: what a token could carry.
  The unigram estimate is the empirical (plug-in) entropy of the codes' histogram (Shannon 1948,
  "A Mathematical Theory of Communication"): what the tokens actually carry if each is coded on
  its own. The plug-in estimate is biased low when the sample is small next to the codebook, so
  the Miller–Madow correction (Miller 1955, "Note on the bias of information estimates") is given
  beside it. With K residual codebooks each codebook is measured on its own, since a token's
  position in the flattened stream tells which codebook it comes from.
- **Codebook usage.** Fraction of the codes used at least once, and perplexity (2^entropy).
- **Reconstruction.** Exact text round trips; image PSNR and SSIM (Wang et al. 2004, "Image
  Quality Assessment: From Error Visibility to Structural Similarity") from torchmetrics, imported
  only when called. Audio SI-SNR and log-mel distance live in ``audio/metrics.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from tokenize_mm.tokenizers.quant.usage import codebook_usage


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> list[dict[str, float]]:
    """Usage and unigram entropy of each codebook.

    Args:
        codes: int tensor of shape (K, N): the N codes of each of K codebooks (e.g. the codes of
            many items concatenated along their steps), values in [0, codebook_size).
        codebook_size: number of codes per codebook.

    Returns:
        One dict per codebook k, in order: ``codebook`` (k), ``codebook_size``, ``num_tokens``
        (N), ``used_codes``, ``used_fraction``, ``perplexity`` (2^entropy, in [1, codebook_size]),
        ``entropy_bits`` (plug-in), ``entropy_bits_miller_madow`` (plug-in + (used − 1) /
        (2 N ln 2)) and ``nominal_bits`` (log2 codebook_size).

    Raises:
        ValueError: ``codes`` is not 2-D, is empty, or holds ids outside [0, codebook_size).
    """
    if codes.dim() != 2 or codes.shape[1] == 0:
        raise ValueError(
            f"codebook_stats: expected non-empty codes of shape (K, N), got {tuple(codes.shape)}"
        )
    out = []
    for k, row in enumerate(codes.long()):  # row: (N,)
        usage = codebook_usage(row, codebook_size)
        n = row.numel()
        used = round(usage["used_fraction"] * codebook_size)
        bits = math.log(usage["perplexity"]) / math.log(2)
        out.append(
            {
                "codebook": k,
                "codebook_size": codebook_size,
                "num_tokens": n,
                "used_codes": used,
                "used_fraction": usage["used_fraction"],
                "perplexity": usage["perplexity"],
                "entropy_bits": bits,
                "entropy_bits_miller_madow": bits + (used - 1) / (2 * n * math.log(2)),
                "nominal_bits": math.log2(codebook_size),
            }
        )
    return out


def bits_per_token(stats: Sequence[dict[str, float]]) -> dict[str, float]:
    """Bits per token of a stream of K codebooks' tokens, from ``codebook_stats``.

    Each codebook contributes equally many tokens (one per step), so a token carries the mean of
    the codebooks' figures.

    Returns:
        ``{"nominal", "unigram", "unigram_miller_madow"}``, in bits per token.
    """
    if not stats:
        raise ValueError("bits_per_token: no codebook statistics given")

    def mean(key: str) -> float:
        return sum(s[key] for s in stats) / len(stats)

    return {
        "nominal": mean("nominal_bits"),
        "unigram": mean("entropy_bits"),
        "unigram_miller_madow": mean("entropy_bits_miller_madow"),
    }


def round_trip(
    originals: Sequence[str], decoded: Sequence[str], max_examples: int = 5
) -> dict[str, object]:
    """How many texts come back exactly from ``decode(encode(text))``.

    Args:
        originals: the texts, N of them.
        decoded: what decode returned for each, in the same order.
        max_examples: how many failing indices to list.

    Returns:
        ``{"num_items": N, "num_exact", "rate" (num_exact / N; 1.0 when N = 0),
        "failures": the first ``max_examples`` indices whose text changed}``.
    """
    if len(originals) != len(decoded):
        raise ValueError(f"round_trip: {len(originals)} originals but {len(decoded)} decoded texts")
    failures = [i for i, (a, b) in enumerate(zip(originals, decoded, strict=True)) if a != b]
    n = len(originals)
    return {
        "num_items": n,
        "num_exact": n - len(failures),
        "rate": (n - len(failures)) / n if n else 1.0,
        "failures": failures[:max_examples],
    }


def image_quality(reconstructions: torch.Tensor, originals: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM of reconstructed images against the originals, with data range 1.

    Args:
        reconstructions: float tensor (N, C, H, W) in [0, 1], e.g. ``decode(encode(x))``.
        originals: float tensor (N, C, H, W) in [0, 1], the tokenizer's input at its own size.
            H and W must be at least 11 (SSIM's Gaussian window).

    Returns:
        ``psnr_db``: PSNR of each image, averaged over images (infinite when every image is
        reproduced exactly); ``ssim``: mean SSIM (Gaussian window 11, sigma 1.5; 1 when exact).
    """
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    if reconstructions.shape != originals.shape or reconstructions.dim() != 4:
        raise ValueError(
            "image_quality: expected two tensors (N, C, H, W) of one shape, got "
            f"{tuple(reconstructions.shape)} and {tuple(originals.shape)}"
        )
    preds, target = reconstructions.float(), originals.float()
    psnr = peak_signal_noise_ratio(preds, target, data_range=1.0, dim=(1, 2, 3))
    ssim = structural_similarity_index_measure(preds, target, data_range=1.0)
    return {"psnr_db": float(psnr), "ssim": float(ssim)}  # type: ignore[arg-type]
