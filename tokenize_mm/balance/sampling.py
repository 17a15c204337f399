"""Mixture samplers: how often each source of examples is drawn into the training stream.

A *source* is a named group of examples (the built-in sub-sources ``trimodal``, ``image_text``,
``audio_text``, ``text_only``, or a manifest's sources); ``sizes`` gives each source's size in
**tokens**. Every sampler answers ``probabilities()``: source → p, the share of the training tokens
to take from it (summing to 1; the mixture stream turns it into per-document draws and reads it
afresh at each draw). Each sampler keeps its state in checkpoints (``state_dict`` / ``load_state_dict``,
plain Python values only):

- ``proportional``: p ∝ n, the natural mixture.
- ``temperature``: p ∝ n^(1/τ) (Arivazhagan et al. 2019, "Massively Multilingual Neural Machine
  Translation in the Wild", arXiv:1907.05019); τ = 1 is proportional, τ → ∞ uniform.
- ``unimax``: UniMax (Chung et al. 2023, "UniMax: Fairer and More Effective Language Sampling for
  Large-Scale Multilingual Pretraining", arXiv:2304.09151): a token budget spread uniformly over
  the sources, each capped at ``max_epochs`` passes over its data, the rest redistributed.
- ``fixed``: given weights, normalised.
- ``adaptive``: DoReMi-like (Xie et al. 2023, "DoReMi: Optimizing Data Mixtures Speeds Up Language
  Model Pretraining", arXiv:2305.10429) without a proxy model: an exponentiated-gradient step on
  *modality* weights from each modality's excess loss, mapped to sources through their modality
  token shares (``AdaptiveSampler``).

Every sampler is built the same way, ``Sampler(sizes, *options, source_modalities=shares)``
(``shares``: source → modality → share of its tokens; only ``adaptive`` uses it), so a config
builds one with Hydra's ``_target_`` + ``_partial_`` (``conf/balance/sampling/*.yaml``) and the data
module completes it with the store's sizes and shares; another sampler with that constructor and
the ``MixtureSampler`` methods plugs in from config.

Under DDP every statistic a sampler uses goes through ``reduce`` (a sum all-reduce over ranks)
before use, so all ranks apply the same probabilities. Imports torch only.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from tokenize_mm.core.errors import TokenizeMMError

Reduce = Callable[[torch.Tensor], torch.Tensor]
"""Sums a tensor over ranks (``all_reduce`` with ``SUM``) and returns it, same shape."""

_Shares = Mapping[str, Mapping[str, float]] | None
"""source → modality → share of the source's tokens (unused by the static samplers)."""


class SamplingError(TokenizeMMError, ValueError):
    """A sampler's arguments or saved state do not fit its sources."""


@runtime_checkable
class MixtureSampler(Protocol):
    """Source probabilities for the mixture stream, possibly driven online by the losses."""

    name: str

    def probabilities(self) -> dict[str, float]:
        """Source → share of the tokens to draw from it next; sums to 1."""
        ...

    def update(
        self, modality_losses: Mapping[str, float | torch.Tensor], reduce: Reduce | None = None
    ) -> None:
        """Take this step's mean loss per modality (``text``, ``image``, ``audio``) into account.

        Every statistic passes through ``reduce`` (sum over ranks) before use; None: one process.
        """
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


# -- checks ---------------------------------------------------------------------------------------
def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _check_sizes(sizes: Mapping[str, float]) -> dict[str, float]:
    if not sizes:
        raise SamplingError("sizes is empty: give each source with its number of tokens.")
    for source, n in sizes.items():
        if not _finite(n) or n <= 0:
            raise SamplingError(
                f"source {source!r} has size {n!r}: sizes are token counts > 0; leave out a "
                "source without tokens."
            )
    return {source: float(n) for source, n in sizes.items()}


def _check_keys(
    what: str, given: Mapping[str, Any], expected: Mapping[str, Any], noun: str = "sources"
) -> None:
    missing = [s for s in expected if s not in given]
    unknown = [s for s in given if s not in expected]
    if missing or unknown:
        raise SamplingError(
            f"{what} must name exactly the {noun} {list(expected)}; missing {missing}, "
            f"unknown {unknown}."
        )


def _normalise(weights: Mapping[str, float]) -> dict[str, float]:
    total = math.fsum(weights.values())
    return {source: w / total for source, w in weights.items()}


def _power(sizes: Mapping[str, float], exponent: float) -> dict[str, float]:
    """p ∝ n^exponent, computed on n / max n so that no power overflows."""
    largest = max(sizes.values())
    return _normalise({s: (n / largest) ** exponent for s, n in sizes.items()})


# -- static samplers ------------------------------------------------------------------------------
class _Static:
    """Probabilities fixed at construction: ``update`` does nothing, the state names the sources."""

    name = ""

    def __init__(self, probabilities: dict[str, float]):
        self._probabilities = probabilities

    def probabilities(self) -> dict[str, float]:
        return dict(self._probabilities)

    def update(
        self, modality_losses: Mapping[str, float | torch.Tensor], reduce: Reduce | None = None
    ) -> None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "sources": list(self._probabilities)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state(state, self.name, list(self._probabilities))


def _check_state(state: Mapping[str, Any], name: str, sources: list[str]) -> None:
    if state.get("name") != name or list(state.get("sources", ())) != sources:
        raise SamplingError(
            f"the saved state is of sampler {state.get('name')!r} over sources "
            f"{state.get('sources')}, this is {name!r} over {sources}; resume with the same "
            "sampler and sources, or start the sampler afresh."
        )


class ProportionalSampler(_Static):
    """p ∝ n: each source as often as its share of the tokens.

    Args:
        sizes: tokens per source.
    """

    name = "proportional"

    def __init__(self, sizes: Mapping[str, float], *, source_modalities: _Shares = None):
        super().__init__(_power(_check_sizes(sizes), 1.0))


class TemperatureSampler(_Static):
    """p ∝ n^(1/tau): tau = 1 is proportional, larger tau flattens towards uniform.

    Args:
        sizes: tokens per source.
        tau: temperature, > 0 (common choices 2 to 5; below 1 sharpens towards the largest).
    """

    name = "temperature"

    def __init__(
        self, sizes: Mapping[str, float], tau: float = 3.0, *, source_modalities: _Shares = None
    ):
        if not _finite(tau) or tau <= 0:
            raise SamplingError(f"tau must be a finite number > 0, got {tau!r}.")
        self.tau = float(tau)
        super().__init__(_power(_check_sizes(sizes), 1.0 / self.tau))


class FixedSampler(_Static):
    """p ∝ the given weights.

    Args:
        sizes: tokens per source (only its source names are used).
        weights: source → weight >= 0, one per source, not all zero.
    """

    name = "fixed"

    def __init__(
        self,
        sizes: Mapping[str, float],
        weights: Mapping[str, float],
        *,
        source_modalities: _Shares = None,
    ):
        sizes = _check_sizes(sizes)
        _check_keys("weights", weights, sizes)
        bad = {s: w for s, w in weights.items() if not _finite(w) or w < 0}
        if bad or not any(weights.values()):
            raise SamplingError(
                f"weights must be finite numbers >= 0, not all zero; got {dict(weights)}."
            )
        super().__init__(_normalise({s: float(weights[s]) for s in sizes}))


class UniMaxSampler(_Static):
    """UniMax: the token budget spread uniformly over sources, each at most ``max_epochs`` passes.

    Sources are visited from the smallest: each gets min(remaining budget / sources left,
    ``max_epochs`` × its size), and what a capped source leaves goes to the larger ones. Then
    p = allocation / budget. A budget above every cap together leaves all sources capped and p
    proportional to the caps (that is, to the sizes).

    Args:
        sizes: tokens per source.
        budget_tokens: tokens the run will train on.
        max_epochs: passes over a source at most (Chung et al. use 1 to 10).

    Attributes:
        allocation: source → tokens it gets of the budget.
    """

    name = "unimax"

    def __init__(
        self,
        sizes: Mapping[str, float],
        budget_tokens: float,
        max_epochs: float = 4.0,
        *,
        source_modalities: _Shares = None,
    ):
        sizes = _check_sizes(sizes)
        if not _finite(budget_tokens) or budget_tokens <= 0:
            raise SamplingError(f"budget_tokens must be > 0, got {budget_tokens!r}.")
        if not _finite(max_epochs) or max_epochs <= 0:
            raise SamplingError(f"max_epochs must be > 0, got {max_epochs!r}.")
        self.budget_tokens, self.max_epochs = float(budget_tokens), float(max_epochs)
        order = sorted(sizes, key=lambda s: (sizes[s], s))
        remaining, allocation = self.budget_tokens, {}
        for i, source in enumerate(order):
            allocation[source] = min(remaining / (len(order) - i), max_epochs * sizes[source])
            remaining -= allocation[source]
        self.allocation = {s: allocation[s] for s in sizes}
        super().__init__(_normalise(self.allocation))


def _floor(weights: list[float], floor: float) -> list[float]:
    """``weights`` normalised with every entry >= ``floor`` (those below are set to it, the others
    scaled to fill the rest); needs len(weights) × floor < 1."""
    fixed = [False] * len(weights)
    while True:
        free = math.fsum(w for w, f in zip(weights, fixed, strict=True) if not f)
        room = 1.0 - floor * sum(fixed)
        out = [floor if f else w * room / free for w, f in zip(weights, fixed, strict=True)]
        low = [not f and x < floor for x, f in zip(out, fixed, strict=True)]
        if not any(low):  # at least one entry stays free: all below floor would sum under 1
            return out
        fixed = [f or x for f, x in zip(fixed, low, strict=True)]


# -- adaptive -------------------------------------------------------------------------------------
class AdaptiveSampler:
    """Source probabilities driven online by each modality's excess loss (DoReMi-like, no proxy).

    Modality weights α (initially the corpus' token share of each modality, so that the first
    probabilities are the proportional ones, floored) take one exponentiated-gradient step per ``update``::

        L̄_m  = smoothing · L̄_m + (1 − smoothing) · L_m         EMA of the mean loss over ranks
        λ_m  = max(L̄_m − ref_m, 0)                              excess loss
        α   ← floor(softmax_m(log α_m + step_size · λ_m), min_prob)

    ``ref_m`` is ``reference_losses[m]`` when given (DoReMi's reference model, replaced by a number:
    e.g. the loss a run on that modality alone reaches), else the lowest L̄_m seen so far: then a
    modality gains weight while its loss sits above its own best, i.e. while it is being forgotten
    or left behind. ``floor`` raises weights below ``min_prob`` to it and rescales the others to
    keep the sum 1 (DoReMi mixes with uniform instead; a floor leaves the weights as they are while
    no modality has excess loss). Sources take the weights through their token shares::

        p_s = (1 − S · min_prob) · Σ_m α_m · N_{s,m} / N_m + min_prob

    with N_{s,m} the tokens of modality m in source s and N_m = Σ_s N_{s,m}, so every source keeps
    at least ``min_prob``. Deterministic: the same losses give the same probabilities.

    Args:
        sizes: tokens per source.
        source_modalities: source → modality → share of its tokens (normalised per source), e.g.
            ``{"trimodal": {"audio": 0.66, "image": 0.28, "text": 0.06}}``.
        step_size: η, the exponentiated-gradient step per update (per nat of excess loss).
        smoothing: EMA decay of the losses, in [0, 1); 0 uses each step's loss as is.
        min_prob: floor of every source's probability and of every modality weight.
        reference_losses: modality → reference loss; None: each modality's lowest smoothed loss.
    """

    name = "adaptive"

    def __init__(
        self,
        sizes: Mapping[str, float],
        source_modalities: _Shares,
        step_size: float = 1.0,
        smoothing: float = 0.9,
        min_prob: float = 0.01,
        reference_losses: Mapping[str, float] | None = None,
    ):
        sizes = _check_sizes(sizes)
        if source_modalities is None:
            raise SamplingError("the adaptive sampler needs source_modalities (shares per source).")
        _check_keys("source_modalities", source_modalities, sizes)
        tokens: dict[str, dict[str, float]] = {}
        for source, shares in source_modalities.items():
            if not shares or not all(_finite(v) and v >= 0 for v in shares.values()):
                raise SamplingError(
                    f"source_modalities[{source!r}] = {dict(shares)}: give each modality's "
                    "share of the source's tokens as numbers >= 0."
                )
            total = math.fsum(shares.values())
            if total <= 0:
                raise SamplingError(f"source_modalities[{source!r}] has no tokens in any modality.")
            tokens[source] = {m: sizes[source] * v / total for m, v in shares.items()}
        self.modalities = sorted({m for t in tokens.values() for m, n in t.items() if n > 0})
        self.sources = list(sizes)
        per_modality = {
            m: math.fsum(t.get(m, 0.0) for t in tokens.values()) for m in self.modalities
        }
        # q[m][s]: the share of modality m's tokens that source s holds.
        self._q = {
            m: {s: tokens[s].get(m, 0.0) / per_modality[m] for s in sizes} for m in per_modality
        }
        for key, value, ok in (
            ("step_size", step_size, _finite(step_size) and step_size >= 0),
            ("smoothing", smoothing, _finite(smoothing) and 0 <= smoothing < 1),
            ("min_prob", min_prob, _finite(min_prob) and min_prob >= 0),
        ):
            if not ok:
                raise SamplingError(f"{key}={value!r} is out of range; see AdaptiveSampler's Args.")
        if max(len(self.sources), len(self.modalities)) * min_prob >= 1:
            raise SamplingError(
                f"min_prob={min_prob} leaves no room: it must be below 1 / {len(self.sources)} "
                f"sources and 1 / {len(self.modalities)} modalities."
            )
        self.reference_losses = dict(reference_losses or {})
        if reference_losses is not None:
            _check_keys("reference_losses", self.reference_losses, per_modality, "modalities")
        self.step_size, self.smoothing, self.min_prob = float(step_size), float(smoothing), min_prob
        total = math.fsum(per_modality.values())
        self._weights = _floor([per_modality[m] / total for m in self.modalities], min_prob)
        self._ema = [math.nan] * len(self.modalities)
        self._best = [math.nan] * len(self.modalities)
        self._steps = 0
        self._refresh()

    def probabilities(self) -> dict[str, float]:
        return dict(self._probabilities)

    def modality_weights(self) -> dict[str, float]:
        """Modality → α_m (for logging)."""
        return dict(zip(self.modalities, self._weights, strict=True))

    def update(
        self, modality_losses: Mapping[str, float | torch.Tensor], reduce: Reduce | None = None
    ) -> None:
        """One step from this rank's mean loss per modality; a modality a rank did not see (missing
        or NaN) counts on the ranks that did. Losses of modalities no source holds are ignored.

        ``reduce`` receives a (2, M) float64 CPU tensor, the loss sums and counts per modality in
        ``self.modalities`` order, and must return its sum over ranks.
        """
        stats = torch.zeros(2, len(self.modalities), dtype=torch.float64)
        for i, m in enumerate(self.modalities):
            loss = float(modality_losses[m]) if m in modality_losses else math.nan
            if math.isfinite(loss):
                stats[0, i], stats[1, i] = loss, 1.0
        if reduce is not None:
            stats = reduce(stats)
        sums, counts = stats.tolist()
        logits = []
        for i, m in enumerate(self.modalities):
            if counts[i] > 0:
                loss, ema = sums[i] / counts[i], self._ema[i]
                ema = (
                    loss if math.isnan(ema) else self.smoothing * ema + (1 - self.smoothing) * loss
                )
                self._ema[i] = ema
                self._best[i] = ema if math.isnan(self._best[i]) else min(self._best[i], ema)
            reference = self.reference_losses.get(m, self._best[i])
            excess = 0.0 if math.isnan(self._ema[i]) else max(self._ema[i] - reference, 0.0)
            logits.append(math.log(self._weights[i]) + self.step_size * excess)
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        self._weights = _floor(weights, self.min_prob)
        self._steps += 1
        self._refresh()

    def _refresh(self) -> None:
        mixed = {
            s: math.fsum(
                w * self._q[m][s] for m, w in zip(self.modalities, self._weights, strict=True)
            )
            for s in self.sources
        }
        floor, total = self.min_prob, math.fsum(mixed.values())
        self._probabilities = {
            s: (1 - len(mixed) * floor) * p / total + floor for s, p in mixed.items()
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "sources": list(self.sources), "modalities": list(self.modalities),
            "weights": list(self._weights), "ema": list(self._ema), "best": list(self._best),
            "steps": self._steps,
        }  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state(state, self.name, self.sources)
        if list(state["modalities"]) != self.modalities:
            raise SamplingError(
                f"the saved state weighs modalities {state['modalities']}, this sampler "
                f"{self.modalities}; resume with the same source_modalities."
            )
        self._weights = [float(w) for w in state["weights"]]
        self._ema = [float(x) for x in state["ema"]]
        self._best = [float(x) for x in state["best"]]
        self._steps = int(state["steps"])
        self._refresh()


SAMPLERS: dict[str, type] = {
    cls.name: cls
    for cls in (
        ProportionalSampler, TemperatureSampler, UniMaxSampler, FixedSampler, AdaptiveSampler,
    )
}  # fmt: skip
"""Sampler classes by ``name``."""


def build_sampler(
    name: str,
    sizes: Mapping[str, float],
    source_modalities: Mapping[str, Mapping[str, float]] | None = None,
    **options: Any,
) -> MixtureSampler:
    """The sampler called ``name`` over ``sizes`` (tokens per source), with its own ``options``.

    ``source_modalities`` goes to the samplers that use it (``adaptive``) and is ignored by the
    others, so a caller can build any sampler from a config the same way.
    """
    if name not in SAMPLERS:
        raise SamplingError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}.")
    return SAMPLERS[name](sizes, source_modalities=source_modalities, **options)
