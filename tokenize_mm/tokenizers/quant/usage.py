"""Codebook usage and the collapse guard: how many of a codebook's codes are used, and how evenly.

A codebook *collapses* when the encoder sends (almost) everything to a few codes: tokens that
carry no information, which a language model then predicts trivially (a near-zero loss that looks
like success). ``codebook_usage`` measures it (perplexity: exp of the code entropy, K when codes
are uniform; used fraction); ``collapse_message`` says when a measurement falls below the floors
(``PERPLEXITY_FLOOR`` of K, ``USED_FLOOR`` of codes), and ``UsageTracker`` counts codes over a
window of fit steps so a fit can report and warn while it runs. The image and audio fits warn with
``CodebookCollapseWarning`` during the fit and after it (on held-out data), and the run report
repeats the warning (docs/tokenizers.md, "Codebook health").
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping

import torch
from torch import Tensor

#: Floors below which a codebook counts as collapsed: perplexity under 10 % of the codebook, or
#: under a quarter of its codes used. A healthy fit is far above both (docs/results/
#: codebook_health.md); a collapsed one sits near 1 code.
PERPLEXITY_FLOOR = 0.10
USED_FLOOR = 0.25


class CodebookCollapseWarning(UserWarning):
    """A tokenizer's codes are near constant: its tokens carry little information."""


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
    return _usage(torch.bincount(flat, minlength=codebook_size).double())


def _usage(counts: Tensor) -> dict[str, float]:
    p = counts[counts > 0] / counts.sum()
    entropy = -(p * p.log()).sum()
    return {
        "perplexity": float(entropy.exp()),
        "used_fraction": float((counts > 0).sum()) / len(counts),
    }


def collapse_message(
    usage: dict[str, float],
    codebook_size: int,
    where: str,
    perplexity_floor: float = PERPLEXITY_FLOOR,
    used_floor: float = USED_FLOOR,
) -> str | None:
    """A warning naming ``where`` and the figures when ``usage`` is below a floor, else None."""
    perplexity, used = usage["perplexity"], usage["used_fraction"]
    if perplexity >= perplexity_floor * codebook_size and used >= used_floor:
        return None
    return (
        f"codebook collapse {where}: perplexity {perplexity:.1f} of {codebook_size} codes "
        f"(floor {perplexity_floor:.0%}), {used:.1%} of codes used (floor {used_floor:.0%}); "
        "the tokens carry little information. Fit longer, or use quantizer=fsq (a fixed grid "
        "that cannot collapse; docs/tokenizers.md)"
    )


def collapse_messages(metrics: Mapping[str, float], codebook_size: int, where: str) -> list[str]:
    """``collapse_message`` for each codebook measured in a tokenizer's ``metrics``
    (``perplexity``/``used_fraction``, or ``perplexity_<k>``/``used_fraction_<k>`` per codebook)."""
    out = []
    for key in sorted(metrics):
        match = re.fullmatch(r"perplexity(_\d+)?", key)
        used = f"used_fraction{match.group(1) or ''}" if match else None
        if match and used in metrics:
            book = f" (codebook {match.group(1)[1:]})" if match.group(1) else ""
            usage = {"perplexity": metrics[key], "used_fraction": metrics[used]}
            if message := collapse_message(usage, codebook_size, where + book):
                out.append(message)
    return out


def warn_if_collapsed(metrics: Mapping[str, float], codebook_size: int, where: str) -> list[str]:
    """Warn (``CodebookCollapseWarning``) for every collapsed codebook in ``metrics``; the
    messages, empty when all are healthy."""
    messages = collapse_messages(metrics, codebook_size, where)
    for message in messages:
        warnings.warn(message, CodebookCollapseWarning, stacklevel=3)
    return messages


class UsageTracker:
    """Code counts of each codebook over the last ``window`` fit steps.

    ``update(codes)`` with codes (B, N) or (B, K, N) every step; ``usage()`` → per-codebook
    ``codebook_usage`` of the window, ``reset()`` starts the next window.
    """

    def __init__(self, codebook_size: int, num_codebooks: int = 1):
        self.codebook_size, self.num_codebooks = codebook_size, num_codebooks
        self.reset()

    def reset(self) -> None:
        self.counts = torch.zeros(self.num_codebooks, self.codebook_size, dtype=torch.float64)

    @torch.no_grad()
    def update(self, codes: Tensor) -> None:
        codes = codes.detach().cpu()
        per_book = codes[:, None] if codes.dim() == 2 else codes  # (B, K, N)
        for k in range(self.num_codebooks):
            self.counts[k] += torch.bincount(
                per_book[:, k].reshape(-1), minlength=self.codebook_size
            ).double()

    def usage(self) -> list[dict[str, float]]:
        """Per codebook: perplexity and used fraction over the window (empty windows skipped)."""
        return [_usage(c) for c in self.counts if c.sum() > 0]
