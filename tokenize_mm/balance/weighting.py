"""Loss weightings: how per-modality losses combine into the one loss a step minimises.

With L_m the mean cross-entropy over target positions of modality m and N_m their count
(docs/architecture.md §6), every weighting returns a total ``Σ_m w_m L_m`` and reports its effective
weights w_m (``train/weight/<m>``):

- ``token_mean``: w_m = N_m / Σ N, the plain mean over all tokens (the baseline, in which the
  modality with the most tokens dominates).
- ``modality_mean``: w_m = 1 / M over the M modalities present in the batch (Unified-IO 2, 4M).
- ``fixed``: given weights.
- ``uncertainty``: Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh
  Losses": learnable log variances s_m, total Σ exp(−s_m) L_m + s_m (the s_m are parameters of this
  module, so they reach the optimizer and the checkpoint).
- ``dwa``: Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with Attention" (dynamic
  weight averaging): w_m = M softmax_m(r_m / T), r_m the ratio of m's mean loss over the last two
  windows of ``window`` steps (epochs in the paper).
- ``grad_share``: token-mean losses, but in the backward pass the rows of ∂L/∂h (h: the trunk's
  final hidden states) are rescaled per modality so that each modality's share of the gradient
  norm moves to ``targets`` (default equal), with EMA-smoothed norms: AudioCraft's loss balancer
  applied to the modalities' disjoint rows, one backward pass, no extra pass through the trunk.
- ``gradnorm``: Chen et al. 2018, "GradNorm": weights learnt so that each modality's gradient norm
  at a shared layer follows its relative inverse training rate; one extra gradient per modality
  through the head and that layer: the expensive reference.

Protocol for the training module, each step: ``total = weighting.combine(losses, counts)``, or,
where ``combines_on_device``, the same total formed from ``weight_vector(counts, means)`` and
``offset_vector(counts)`` on device tensors with nothing read, then ``record(weights)`` once the
weights are read (``BalancedLM``: one host read a step); for the backward, the hook on h calls
``weighting.rescale_grad(grad, target_modality)``; after it,
``weighting.observe(losses, grad_sq_norms)`` with statistics already all-reduced over ranks, so
every rank holds the same state. A modality absent from a batch (N_m = 0) is skipped, never divided
by. All state lives in buffers and parameters: ``state_dict`` carries it into checkpoints.

Where the state lives: the buffers (a few numbers per objective, read and updated every step) stay
float on the CPU when the training module moves to a GPU or casts itself (``_apply``): reading them
is then no device sync, and the small arithmetic of ``observe`` never mixes devices. Only what meets
the loss or its gradient is copied to the loss's device, without waiting (``on_device``).
Parameters (``uncertainty``'s s_m) move with the model. The training module keeps these buffers out
of DDP's broadcasts: every rank computes the same state from all-reduced statistics.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from tokenize_mm.core.modalities import MODALITIES


class LossWeighting(nn.Module):
    """Base: token-mean combination, no rescaling, nothing learnt. Subclasses override."""

    name = "token_mean"
    #: whether ``combine`` wants ``shared``, a shared layer's parameters (GradNorm at the weights)
    needs_shared = False
    #: whether ``weight_vector`` reads the objectives' mean loss values (FAMO)
    uses_mean_losses = False

    def __init__(self, modalities: Sequence[str] = MODALITIES):
        super().__init__()
        self.modalities = tuple(modalities)
        self.register_buffer("last_weights", torch.zeros(len(self.modalities)))
        self._means: dict[str, float] = {}  # set_mean_losses, for the next combine

    def _apply(self, fn, recurse=True):
        # ``.to(device)``, ``.cuda()``, ``.half()`` ... reach the parameters only: the buffers stay
        # as they are, on the CPU (module docstring, "Where the state lives")
        kept = dict(self._buffers)
        super()._apply(fn, recurse)
        self._buffers.update(kept)
        return self

    def _present(self, counts: Mapping[str, Tensor]) -> list[str]:
        return [m for m in self.modalities if float(counts.get(m, 0)) > 0]

    def weight_vector(self, counts: Tensor, means: Tensor | None = None) -> Tensor:
        """(M,) float64 counts N_m over ``modalities`` (0: absent), on any device → (M,) w_m, 0
        for an absent modality, in tensor operations only: no host read, so the training module
        combines a step's losses before it reads anything (``combines_on_device``). ``means``:
        the objectives' global mean losses, (M,) float64 on the same device, for a weighting
        that ``uses_mean_losses`` (else None). Token mean: w_m = N_m / Σ N."""
        return counts / counts.sum().clamp(min=1)

    def offset_vector(self, counts: Tensor) -> Tensor | None:
        """(M,) terms added to the total per objective present, beside w_m L_m (uncertainty's
        s_m); None: nothing."""
        return None

    @property
    def combines_on_device(self) -> bool:
        """Whether the total is Σ_present (w_m L_m + offset_m) over ``weight_vector`` and
        ``offset_vector``, which the training module may form from device counts itself (one host
        read a step): true unless a subclass's ``combine`` does more (GradNorm says when)."""
        return type(self).combine is LossWeighting.combine

    def record(self, weights: Mapping[str, float]) -> None:
        """Remember a step's raw weights, as ``combine`` does, when the training module formed
        the total from ``weight_vector`` itself: ``weights()`` then reports their effective
        values."""
        self._remember(self.effective_weights({m: torch.tensor(w) for m, w in weights.items()}))

    def combine(
        self,
        losses: Mapping[str, Tensor],
        counts: Mapping[str, Tensor],
        shared: Sequence[Tensor] = (),
    ) -> Tensor:
        """Per-modality mean losses (scalars with grad) and token counts → the total loss.
        ``shared``: parameters of a shared layer (used by ``gradnorm`` only)."""
        present = self._present(counts)
        count = torch.tensor([float(counts.get(m, 0)) for m in self.modalities],
                             dtype=torch.float64)  # fmt: skip
        means = None
        if self.uses_mean_losses:  # the global values when given, else this call's loss values
            given, self._means = self._means, {}
            means = torch.tensor([given[m] if m in given else float(losses[m].detach())
                                  if m in present else 0.0 for m in self.modalities],
                                 dtype=torch.float64)  # fmt: skip
        vector, offset = self.weight_vector(count, means), self.offset_vector(count)
        weights = {m: vector[i] for i, m in enumerate(self.modalities) if m in present}
        self._remember(self.effective_weights({m: w.detach() for m, w in weights.items()}))
        parts = []
        for m, w in weights.items():
            part = on_device(w, losses[m]) * losses[m]
            if offset is not None:
                part = part + on_device(offset[self.modalities.index(m)], losses[m])
            parts.append(part)
        return torch.stack(parts).sum() if parts else _zero(losses)

    def effective_weights(self, weights: Mapping[str, Tensor]) -> Mapping[str, Tensor]:
        """The w_m to report for loss weights ``weights`` (the same, unless the gradient is
        rescaled as well)."""
        return weights

    def _remember(self, weights: Mapping[str, Tensor]) -> None:
        for i, m in enumerate(self.modalities):
            self.last_weights[i] = float(weights[m]) if m in weights else 0.0

    def weights(self) -> dict[str, float]:
        """The effective w_m of the last ``combine`` (0 for a modality absent from it)."""
        return {m: float(self.last_weights[i]) for i, m in enumerate(self.modalities)}

    def rescale_grad(self, grad: Tensor, target_modality: Tensor) -> Tensor:
        """∂L/∂h (B, L, D) and each row's target modality name index (B, L) → the gradient to
        propagate (unchanged here)."""
        return grad

    def observe(self, losses: Mapping[str, float], grad_sq_norms: Mapping[str, float]) -> None:
        """After the backward: global (all-reduced) mean losses and squared gradient norms."""

    def set_mean_losses(self, means: Mapping[str, float]) -> None:
        """Before ``combine``: every objective's mean loss this step over all ranks (the training
        module's all-reduced statistics), for a weighting that ``uses_mean_losses``: the loss
        tensors ``combine`` gets are each rank's own share. Used by the next ``combine`` only."""
        self._means = dict(means)

    def observe_shared(self, norms: Mapping[str, float]) -> None:
        """Before ``observe``, for a weighting that ``needs_shared``: each objective's gradient
        norm at the shared layer's weights under the step's loss, ||∇_W (w_m L_m)||, read off
        the step's own backward (``BalancedLM._watch_shared``)."""


class ModalityMean(LossWeighting):
    name = "modality_mean"

    def weight_vector(self, counts, means=None):
        present = (counts > 0).to(counts.dtype)
        return present / present.sum().clamp(min=1)


class FixedWeighting(LossWeighting):
    """Args: weights: modality → weight (normalised over the modalities present)."""

    name = "fixed"

    def __init__(self, weights: Mapping[str, float], modalities: Sequence[str] = MODALITIES):
        super().__init__(modalities)
        unknown = sorted(set(weights) - set(self.modalities))
        missing = [m for m in self.modalities if m not in weights]
        if unknown or missing or any(w < 0 for w in weights.values()):
            raise ValueError(
                f"fixed weights need one non-negative weight per modality {self.modalities}; "
                f"unknown {unknown}, missing {missing}"
            )
        self.given = {m: float(weights[m]) for m in self.modalities}

    def weight_vector(self, counts, means=None):
        given = torch.tensor([self.given[m] for m in self.modalities], dtype=counts.dtype)
        chosen = torch.where(counts > 0, on_device(given, counts), 0.0)
        total = chosen.sum()
        return chosen / torch.where(total > 0, total, 1.0)


class UncertaintyWeighting(LossWeighting):
    """Kendall et al. 2018. Args: init_log_var: starting s_m."""

    name = "uncertainty"

    def __init__(self, modalities: Sequence[str] = MODALITIES, init_log_var: float = 0.0):
        super().__init__(modalities)
        self.log_var = nn.Parameter(torch.full((len(self.modalities),), float(init_log_var)))

    def weight_vector(self, counts, means=None):
        # exp(−s_m), with its gradient: the s_m are learnt through the total
        return torch.where(counts > 0, torch.exp(-self.log_var).to(counts), 0.0)

    def offset_vector(self, counts):
        return torch.where(counts > 0, self.log_var.to(counts), 0.0)


class DynamicWeightAverage(LossWeighting):
    """Liu et al. 2019. Args: temperature: T (paper: 2); window: steps per averaging window."""

    name = "dwa"

    def __init__(
        self, modalities: Sequence[str] = MODALITIES, temperature: float = 2.0, window: int = 20
    ):
        super().__init__(modalities)
        if temperature <= 0 or window < 1:
            raise ValueError(f"need temperature > 0 and window >= 1, got {temperature}, {window}")
        self.temperature, self.window = temperature, window
        m = len(self.modalities)
        self.register_buffer("sums", torch.zeros(m))  # this window's loss sums
        self.register_buffer("steps", torch.zeros(m))
        self.register_buffer("previous", torch.zeros(2, m))  # means of the last two windows
        self.register_buffer("windows_done", torch.zeros((), dtype=torch.long))
        self.register_buffer("dwa_weights", torch.ones(m))

    def weight_vector(self, counts, means=None):
        # w_m normalised over the modalities present: M softmax(r / T) restricted to them
        chosen = torch.where(counts > 0, on_device(self.dwa_weights, counts), 0.0)
        return chosen / chosen.sum().clamp(min=1e-12)

    def observe(self, losses, grad_sq_norms):
        for i, m in enumerate(self.modalities):
            if m in losses and math.isfinite(losses[m]):
                self.sums[i] += losses[m]
                self.steps[i] += 1
        if int(self.steps.max()) < self.window:
            return
        means = torch.where(self.steps > 0, self.sums / self.steps.clamp(min=1), self.previous[1])
        self.previous[0], self.previous[1] = self.previous[1].clone(), means
        self.sums.zero_()
        self.steps.zero_()
        self.windows_done += 1
        if int(self.windows_done) >= 2:
            ratio = self.previous[1] / self.previous[0].clamp(min=1e-12)
            self.dwa_weights.copy_(
                len(self.modalities) * torch.softmax(ratio / self.temperature, 0)
            )


class GradShareWeighting(LossWeighting):
    """Rescale each modality's rows of ∂L/∂h towards target gradient shares.

    Args:
        targets: modality → target share (normalised; default equal).
        ema: smoothing of the measured squared norms (AudioCraft's balancer: 0.999 per step;
            smaller reacts faster).
        max_scale: bound on any row scale, for stability while the EMA warms up.
    """

    name = "grad_share"

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        targets: Mapping[str, float] | None = None,
        ema: float = 0.9,
        max_scale: float = 100.0,
    ):
        super().__init__(modalities)
        t = torch.tensor([float((targets or {}).get(m, 1.0)) for m in self.modalities])
        if bool((t < 0).any()) or float(t.sum()) <= 0 or not 0 <= ema < 1:
            raise ValueError(f"targets must be >= 0 with a positive sum, ema in [0, 1); got {t}")
        self.register_buffer("targets", t / t.sum())
        self.ema, self.max_scale = ema, max_scale
        self.register_buffer("norm_ema", torch.zeros(len(self.modalities)))  # of unscaled norms
        self.register_buffer("seen", torch.zeros(len(self.modalities), dtype=torch.bool))
        self.register_buffer("scales", torch.ones(len(self.modalities)))

    def rescale_grad(self, grad, target_modality):
        index = target_modality.long().clamp(max=len(self.modalities))  # special rows: last slot
        table = on_device(torch.cat([self.scales, self.scales.new_ones(1)]), grad)
        return grad * table[index].unsqueeze(-1)

    def observe(self, losses, grad_sq_norms):
        # grad_sq_norms are of the *rescaled* rows: undo this step's scale to get the raw norms
        for i, m in enumerate(self.modalities):
            if grad_sq_norms.get(m, 0.0) > 0:
                raw = math.sqrt(grad_sq_norms[m]) / float(self.scales[i])
                if bool(self.seen[i]):
                    self.norm_ema[i] = self.ema * self.norm_ema[i] + (1 - self.ema) * raw
                else:
                    self.norm_ema[i], self.seen[i] = raw, True
        if not bool(self.seen.any()):
            return
        seen = self.seen
        targets = torch.where(seen, self.targets, torch.zeros_like(self.targets))
        targets = targets / targets.sum()
        total = float(self.norm_ema[seen].sum())
        want = targets * total  # the norm each modality should have, same total
        scales = torch.where(seen, want / self.norm_ema.clamp(min=1e-12), torch.ones_like(want))
        self.scales.copy_(scales.clamp(1.0 / self.max_scale, self.max_scale))

    def effective_weights(self, weights):
        # the loss is the token mean; each modality's rows of dL/dh are then scaled
        return {m: w * float(self.scales[self.modalities.index(m)]) for m, w in weights.items()}


class GradNormWeighting(LossWeighting):
    """Chen et al. 2018, "GradNorm", arXiv:1711.02257: weights that pull each objective's weighted
    gradient norm G_m = w_m ||∇ L_m|| towards the mean G times its relative inverse training
    rate (L_m / L_m(0), normalised, to the power ``alpha``).

    Args:
        alpha: the restoring force.
        learning_rate: of the weights (a multiplicative step, below).
        measure_at: where ||∇ L_m|| is measured. ``"hidden"``: at the trunk's output h, from the
            backward pass the step runs anyway (the training module's per-objective squared norms
            of the rows of dL/dh, summed over ranks): no extra cost, and DDP-correct. The
            objectives own disjoint rows of h, so a row block's norm is w_m ||∇_h L_m||: the
            gradient with respect to the shared representation, the cheap stand-in for the shared
            weights that MGDA-UB uses (Sener & Koltun 2018, arXiv:1810.04650). ``"weights"``:
            the paper's, the last shared layer's weights: the training module splits the
            step's own gradient of that layer by objective (``BalancedLM._watch_shared``, exact,
            no extra backward; this rank's gradient only), or, for a compiled model, ``combine``
            runs one extra backward to the layer per objective (``shared``; 1.33 to 1.36 times
            token_mean's step on the small model).
    """

    name = "gradnorm"
    MEASURES = ("hidden", "weights")

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        alpha: float = 1.5,
        learning_rate: float = 0.025,
        measure_at: str = "hidden",
    ):
        super().__init__(modalities)
        if measure_at not in self.MEASURES:
            raise ValueError(f"measure_at must be one of {self.MEASURES}, got {measure_at!r}")
        self.alpha, self.learning_rate, self.measure_at = alpha, learning_rate, measure_at
        m = len(self.modalities)
        self.register_buffer("task_weights", torch.ones(m))
        self.register_buffer("initial_losses", torch.zeros(m))
        self.register_buffer("has_initial", torch.zeros(m, dtype=torch.bool))
        self.pending: dict[str, float] = {}

    @property
    def needs_shared(self) -> bool:
        """Whether ``combine`` wants the shared layer's parameters (``measure_at="weights"``)."""
        return self.measure_at == "weights"

    @property
    def combines_on_device(self) -> bool:
        # ``combine`` adds only the extra backward per objective of ``shared``, which the
        # training module asks for alone (a compiled model at the weights)
        return True

    def weight_vector(self, counts, means=None):
        return torch.where(counts > 0, on_device(self.task_weights, counts), 0.0)

    def combine(self, losses, counts, shared: Sequence[Tensor] = ()):
        if self.needs_shared and shared and torch.is_grad_enabled():  # one backward per objective
            w = self.task_weights
            self.pending = {m: float(w[self.modalities.index(m)]) * _grad_norm(losses[m], shared)
                            for m in self._present(counts)}  # fmt: skip
        return super().combine(losses, counts, shared)

    def observe_shared(self, norms):
        self.pending = dict(norms)

    def observe(self, losses, grad_sq_norms):
        if self.needs_shared:  # G_m = ||∇_W (w_m L_m)||, from observe_shared or combine
            norms, self.pending = self.pending, {}
        else:  # rows of dL/dh under the weighted loss: already G_m = w_m ||∇_h L_m||
            norms = {m: math.sqrt(max(float(v), 0.0)) for m, v in grad_sq_norms.items()}
        present = [m for m in self.modalities if m in losses and m in norms]
        if not present:
            return
        idx = [self.modalities.index(m) for m in present]
        loss = torch.tensor([losses[m] for m in present])
        for j, i in enumerate(idx):
            if not bool(self.has_initial[i]):
                self.initial_losses[i], self.has_initial[i] = loss[j], True
        w = self.task_weights[idx]
        g = torch.tensor([norms[m] for m in present], dtype=w.dtype)
        ratio = loss / self.initial_losses[idx].clamp(min=1e-12)
        target = g.mean() * (ratio / ratio.mean()) ** self.alpha
        # A scale-free step towards G_m = target_m: multiplicative in the relative error, so the
        # rate needs no tuning to the size of the losses (the paper's L1 gradient is scaled by the
        # raw norms, which made fixed rates oscillate on losses of different magnitudes).
        step = (g - target) / g.mean().clamp(min=1e-12)
        w = (w * torch.exp(-self.learning_rate * step.clamp(-5, 5))).clamp(min=1e-3)
        self.task_weights[idx] = w * len(idx) / w.sum()


def on_device(value: Tensor, like: Tensor) -> Tensor:
    """``value`` (host state) on ``like``'s device in its dtype, for use with it. The copy does
    not wait: from host memory it is staged before this returns, and the device queue keeps its
    order, so no sync is needed (a plain ``.to`` waits for the device to finish)."""
    return value.to(device=like.device, dtype=like.dtype, non_blocking=True)


def _grad_norm(loss: Tensor, params: Sequence[Tensor]) -> float:
    grads = torch.autograd.grad(loss, list(params), retain_graph=True, allow_unused=True)
    return math.sqrt(sum(float(g.pow(2).sum()) for g in grads if g is not None))


def _zero(losses: Mapping[str, Tensor]) -> Tensor:
    any_loss = next(iter(losses.values()), None)
    return any_loss.sum() * 0.0 if any_loss is not None else torch.zeros(())
