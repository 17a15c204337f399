"""Balance measures over a set of strategies run at an equal budget (docs/architecture.md §6).

Worst-modality regret W(S) = max_m ( L_m(S) / min_S' L_m(S') − 1 ): how far strategy S leaves its
worst modality behind the best any strategy of the set reached on that modality, on validation
data. A balanced strategy keeps W small without raising the average loss (here the mean of the
per-modality losses, every modality counted once whatever its token share).

Losses are given as ``strategy → modality → L_m`` (one seed, or the mean over seeds).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

Losses = Mapping[str, Mapping[str, float]]


def _modalities(losses: Losses) -> list[str]:
    """The modalities every strategy reports (W compares like with like)."""
    sets = [set(per) for per in losses.values()]
    return sorted(set.intersection(*sets)) if sets else []


def worst_modality_regret(losses: Losses) -> dict[str, float]:
    """W(S) for every strategy S in ``losses`` (0 for the best on every modality).

    Raises:
        ValueError: no modality is reported by every strategy, or a loss is not positive.
    """
    modalities = _modalities(losses)
    if not modalities:
        raise ValueError("worst_modality_regret needs a modality that every strategy reports")
    for s, per in losses.items():
        for m in modalities:
            if not per[m] > 0 or not math.isfinite(per[m]):
                raise ValueError(
                    f"strategy {s!r}: loss of {m} is {per[m]!r}, not a positive number"
                )
    best = {m: min(per[m] for per in losses.values()) for m in modalities}
    return {s: max(per[m] / best[m] - 1.0 for m in modalities) for s, per in losses.items()}


def average_loss(losses: Losses) -> dict[str, float]:
    """The mean of each strategy's per-modality losses (modalities every strategy reports)."""
    modalities = _modalities(losses)
    return {s: sum(per[m] for m in modalities) / len(modalities) for s, per in losses.items()}


def seed_spread(values: Sequence[float]) -> dict[str, float]:
    """Mean, sample standard deviation (0 for one value), min and max over seeds."""
    values = [float(v) for v in values]
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }
