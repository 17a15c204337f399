"""Balance: how the modalities share the data and the loss (docs/architecture.md §6).

- ``sampling``: mixture samplers over sources (proportional, temperature, UniMax, fixed, adaptive),
  seeded by the stream that draws from them, all-reduced under DDP, state in checkpoints;
  ``odm`` (online data mixing, a bandit over sources) adds one more.
- ``weighting``: how per-modality losses combine (token_mean, modality_mean, fixed, uncertainty,
  dwa, grad_share, gradnorm), state in buffers and parameters; ``famo`` (FAMO) and
  ``modulation`` (OGM-GE, ``ogm``) add two more behind the same protocol. ``WEIGHTINGS`` names
  them all.

Imports torch only: neither Lightning, Hydra, nor ``tokenize_mm.data``.
"""

from tokenize_mm.balance.famo import FAMOWeighting
from tokenize_mm.balance.modulation import GradModulation
from tokenize_mm.balance.odm import OnlineMixingSampler  # registers "odm" in SAMPLERS
from tokenize_mm.balance.sampling import (
    SAMPLERS,
    AdaptiveSampler,
    FixedSampler,
    MixtureSampler,
    ProportionalSampler,
    Reduce,
    SamplingError,
    TemperatureSampler,
    UniMaxSampler,
    build_sampler,
)
from tokenize_mm.balance.weighting import (
    DynamicWeightAverage,
    FixedWeighting,
    GradNormWeighting,
    GradShareWeighting,
    LossWeighting,
    ModalityMean,
    UncertaintyWeighting,
)

WEIGHTINGS: dict[str, type[LossWeighting]] = {
    cls.name: cls
    for cls in (LossWeighting, ModalityMean, FixedWeighting, UncertaintyWeighting,
                DynamicWeightAverage, GradShareWeighting, GradNormWeighting, FAMOWeighting,
                GradModulation)
}  # fmt: skip
"""Weighting classes by ``name``."""

__all__ = [
    "SAMPLERS",
    "WEIGHTINGS",
    "AdaptiveSampler",
    "DynamicWeightAverage",
    "FAMOWeighting",
    "FixedSampler",
    "FixedWeighting",
    "GradModulation",
    "GradNormWeighting",
    "GradShareWeighting",
    "LossWeighting",
    "MixtureSampler",
    "ModalityMean",
    "OnlineMixingSampler",
    "ProportionalSampler",
    "Reduce",
    "SamplingError",
    "TemperatureSampler",
    "UncertaintyWeighting",
    "UniMaxSampler",
    "build_sampler",
]
