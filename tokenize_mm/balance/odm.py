"""Online data mixing: a bandit over sources whose reward is the loss reduction a source buys.

Albalak, Pan, Raffel & Wang, "Efficient Online Data Mixing For Language Model Pre-Training"
(arXiv:2312.02406): sources are the arms of an EXP3 bandit (Auer et al. 2002) whose policy is
updated every step from the training loss alone, with exploration that decays as
ε_t = min(1/S, sqrt(ln S / (S t))) over S sources.

Here a batch mixes every source (packed documents), and the training module reports one loss per
modality, so a source's reward is the log-loss reduction of the modalities it carries, per token
it contributed::

    Δ_m   = log L̄_m − log L_m                  this step's fall of modality m's (EMA) loss
    r_s   = Σ_m Δ_m · a_{s,m} / Σ_{s'} p_{s'} a_{s',m}

with a_{s,m} the share of source s's tokens that are modality m and p the probabilities the step
was drawn with: r_s is the fall of log loss bought per unit of probability given to s (EXP3's
importance weighting 1/p_s, spread over the modalities it feeds).

When training reports the contrastive objective's loss (``contrastive`` among the step's losses),
its fall is one more term, with a_{s,c} = k_s (k_s − 1) / 2, the pairs a document of source s
holds (k_s: the modalities it carries). Without it the bandit sees only the language-model losses
and takes probability away from the paired sources that the alignment learns from
(docs/results/balance_clip: the tri-modal source at 0.27 against 0.41 under proportional
sampling). ``reward_contrastive=False`` restores the modalities-only reward. Then::

    R̂_s ← smoothing · R̂_s + (1 − smoothing) · r_s          (ODM's moving average of rewards)
    π_s ∝ n_s · exp(step_size · R̂_s / mean_s' |R̂_s'|)
    p_s = (1 − S ε_t) π_s + ε_t

``n_s`` (the source's tokens) makes the policy proportional while no source buys more than
another, and the normalisation by the mean |R̂| makes ``step_size`` independent of the loss
scale. Unlike ``adaptive`` (excess loss: weight goes to what is left behind, learnable or not),
a source earns weight only by what training on it achieves. Every statistic passes through
``reduce``, so DDP ranks agree; the state is plain values, so checkpoints carry it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from tokenize_mm.balance.sampling import (
    SAMPLERS,
    Reduce,
    SamplingError,
    _check_keys,
    _check_sizes,
    _check_state,
    _finite,
)
from tokenize_mm.core.modalities import CONTRASTIVE


class OnlineMixingSampler:
    """ODM's bandit over sources, rewarded by the log-loss fall per unit of probability.

    Args:
    sizes: tokens per source.
    source_modalities: source → modality → share of its tokens (normalised per source).
    step_size: η, how far a source's normalised reward moves its log-probability.
    smoothing: the moving average of the rewards, in [0, 1).
    loss_smoothing: EMA of each modality's loss whose fall is the reward, in [0, 1).
    reward_contrastive: also reward the contrastive objective's fall, credited to the sources by
        the pairs their documents hold (when some source holds two modalities).
    """

    name = "odm"

    def __init__(
        self,
        sizes: Mapping[str, float],
        source_modalities: Mapping[str, Mapping[str, float]] | None,
        step_size: float = 1.0,
        smoothing: float = 0.9,
        loss_smoothing: float = 0.9,
        reward_contrastive: bool = True,
    ):
        sizes = _check_sizes(sizes)
        if source_modalities is None:
            raise SamplingError("the odm sampler needs source_modalities (shares per source).")
        _check_keys("source_modalities", source_modalities, sizes)
        for key, value, ok in (
            ("step_size", step_size, _finite(step_size) and step_size >= 0),
            ("smoothing", smoothing, _finite(smoothing) and 0 <= smoothing < 1),
            ("loss_smoothing", loss_smoothing, _finite(loss_smoothing) and 0 <= loss_smoothing < 1),
        ):
            if not ok:
                raise SamplingError(f"{key}={value!r} is out of range; see OnlineMixingSampler.")
        self.sources = list(sizes)
        self._shares: dict[str, dict[str, float]] = {}
        for source in self.sources:
            shares = source_modalities[source]
            total = math.fsum(v for v in shares.values() if _finite(v) and v >= 0)
            if not shares or total <= 0 or not all(_finite(v) and v >= 0 for v in shares.values()):
                raise SamplingError(
                    f"source_modalities[{source!r}] = {dict(shares)}: give each modality's share "
                    "of the source's tokens as numbers >= 0, not all 0."
                )
            self._shares[source] = {m: v / total for m, v in shares.items()}
        self.modalities = sorted({m for s in self._shares.values() for m, v in s.items() if v > 0})
        # what each objective's fall is credited by: a modality's token share, the pairs a document
        # of the source holds for the contrastive objective
        self._credit = {m: {s: self._shares[s].get(m, 0.0) for s in self.sources}
                        for m in self.modalities}  # fmt: skip
        pairs = {s: _pairs(self._shares[s]) for s in self.sources}
        if reward_contrastive and any(pairs.values()):
            self._credit[CONTRASTIVE] = pairs
        self.objectives = list(self._credit)
        largest = max(sizes.values())
        self._prior = [math.log(sizes[s] / largest) for s in self.sources]
        self.step_size, self.smoothing, self.loss_smoothing = step_size, smoothing, loss_smoothing
        self._rewards = [0.0] * len(self.sources)
        self._log_loss = [math.nan] * len(self.objectives)
        self._steps = 0
        self._refresh()

    @staticmethod
    def exploration(sources: int, step: int) -> float:
        """ε_t = min(1/S, sqrt(ln S / (S t))) (ODM, eq. 2); 1/S before the first step."""
        if step <= 0 or sources < 2:
            return 1.0 / sources
        return min(1.0 / sources, math.sqrt(math.log(sources) / (sources * step)))

    def probabilities(self) -> dict[str, float]:
        return dict(self._probabilities)

    def rewards(self) -> dict[str, float]:
        """Source → R̂_s, the smoothed reward (for logging)."""
        return dict(zip(self.sources, self._rewards, strict=True))

    def update(
        self, modality_losses: Mapping[str, float | torch.Tensor], reduce: Reduce | None = None
    ) -> None:
        """One bandit step from this rank's mean loss per modality (NaN or missing: not seen
        here; ``contrastive`` among them when that objective ran). ``reduce`` sums a (2, O) float64
        tensor (loss sums, counts of ``self.objectives``) over ranks."""
        stats = torch.zeros(2, len(self.objectives), dtype=torch.float64)
        for i, m in enumerate(self.objectives):
            loss = float(modality_losses[m]) if m in modality_losses else math.nan
            if math.isfinite(loss) and loss > 0:
                stats[0, i], stats[1, i] = loss, 1.0
        if reduce is not None:
            stats = reduce(stats)
        sums, counts = stats.tolist()
        fall = {}
        for i, m in enumerate(self.objectives):
            if counts[i] <= 0:
                continue
            log_loss = math.log(sums[i] / counts[i])
            before = self._log_loss[i]
            if not math.isnan(before):
                fall[m] = before - log_loss
                log_loss = self.loss_smoothing * before + (1 - self.loss_smoothing) * log_loss
            self._log_loss[i] = log_loss
        p = self._probabilities
        credit = self._credit
        drawn = {m: math.fsum(p[s] * credit[m][s] for s in self.sources) for m in fall}
        for j, s in enumerate(self.sources):
            reward = math.fsum(
                delta * credit[m][s] / drawn[m] for m, delta in fall.items() if drawn[m] > 0
            )
            self._rewards[j] = self.smoothing * self._rewards[j] + (1 - self.smoothing) * reward
        self._steps += 1
        self._refresh()

    def _refresh(self) -> None:
        scale = math.fsum(abs(r) for r in self._rewards) / len(self._rewards)
        logits = [
            prior + (self.step_size * r / scale if scale > 0 else 0.0)
            for prior, r in zip(self._prior, self._rewards, strict=True)
        ]
        top = max(logits)
        policy = [math.exp(x - top) for x in logits]
        total = math.fsum(policy)
        eps = self.exploration(len(self.sources), self._steps)
        self._probabilities = {
            s: (1 - len(self.sources) * eps) * w / total + eps
            for s, w in zip(self.sources, policy, strict=True)
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "sources": list(self.sources), "modalities": list(self.modalities),
            "objectives": list(self.objectives), "rewards": list(self._rewards),
            "log_loss": list(self._log_loss),
            "steps": self._steps,
        }  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _check_state(state, self.name, self.sources)
        if list(state["modalities"]) != self.modalities:
            raise SamplingError(
                f"the saved state rewards modalities {state['modalities']}, this sampler "
                f"{self.modalities}; resume with the same source_modalities."
            )
        log_loss = [float(x) for x in state["log_loss"]]
        saved = state.get("objectives")
        if saved is None:  # saved before the contrastive reward: the modalities only
            saved = list(state["modalities"]) + self.objectives[len(state["modalities"]) :]
            log_loss += [math.nan] * (len(self.objectives) - len(log_loss))
        if list(saved) != self.objectives:
            flag = "false" if CONTRASTIVE in self.objectives else "true"
            raise SamplingError(
                f"the saved state rewards the objectives {saved}, this sampler {self.objectives}; "
                f"resume with balance.sampling.reward_contrastive={flag}."
            )
        self._rewards = [float(r) for r in state["rewards"]]
        self._log_loss = log_loss
        self._steps = int(state["steps"])
        self._refresh()


def _pairs(shares: Mapping[str, float]) -> float:
    """The modality pairs a document with these token shares holds: k (k - 1) / 2."""
    k = sum(1 for v in shares.values() if v > 0)
    return k * (k - 1) / 2


SAMPLERS[OnlineMixingSampler.name] = OnlineMixingSampler  # build_sampler and configs find it
