"""Codebook usage: how many of a codebook's codes a set of codes uses, and how evenly."""

from __future__ import annotations

import torch
from torch import Tensor


def codebook_usage(codes: Tensor, codebook_size: int) -> dict[str, float]:
    """Perplexity (exp of the entropy of the code histogram) and fraction of codes used.

    Args:
        codes: int tensor of any shape with values in [0, codebook_size).
        codebook_size: K.

    Returns:
        ``{"perplexity": p, "used_fraction": f}``; p is in [1, K], K when codes are uniform.
    """
    flat = codes.reshape(-1)
    if flat.numel() == 0 or flat.min() < 0 or flat.max() >= codebook_size:
        raise ValueError(f"codebook_usage: codes must be non-empty and lie in [0, {codebook_size})")
    counts = torch.bincount(flat, minlength=codebook_size).double()
    p = counts[counts > 0] / counts.sum()
    entropy = -(p * p.log()).sum()
    return {
        "perplexity": float(entropy.exp()),
        "used_fraction": float((counts > 0).sum()) / codebook_size,
    }
