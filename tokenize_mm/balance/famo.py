"""FAMO: weights that equalise the rate at which every objective's loss falls, at O(1) cost.

Liu, Liu, Jin, Stone & Liu, "FAMO: Fast Adaptive Multitask Optimization", NeurIPS 2023
(arXiv:2306.03792). Each objective m (a modality's next-token loss, or the contrastive objective)
has a logit ξ_m; z = softmax(ξ) over the objectives present. The step's loss is

    Σ_m w_m L_m,   w_m = (z_m / L_m) / Σ_j (z_j / L_j)      (the w_m are constants: no gradient)

whose gradient is that of Σ_m z_m log L_m up to the positive factor 1 / Σ_j z_j / L_j: a step
along the z-weighted log losses, which decreases every loss at a rate set by z. After the step,
FAMO moves ξ so that the objectives whose log loss fell the most get less weight::

    δ_m = log L_m(before) − log L_m(after)                  the observed improvement
    ∇ξ  = J_softmax(ξ)ᵀ δ = z ⊙ (δ − z·δ)
    ξ  ← Adam(ξ, ∇ξ + γ ξ)                                   (paper: lr 0.025, γ = 0.001)

No extra forward or backward pass: "after" is the next step's loss on the next batch, the paper's
O(1) variant. Consecutive batches differ (mixed sources, packed documents), so the log losses
are smoothed with an EMA before differencing (``smoothing``; 0 is the paper's rule); the
minimum losses of the paper are 0 here, cross-entropy's floor.

Every statistic it reads is the all-reduced global loss, so every DDP rank takes the same step;
ξ, the Adam moments and the smoothed log losses are buffers, so checkpoints carry them and a
resume continues exactly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from tokenize_mm.balance.weighting import LossWeighting, on_device
from tokenize_mm.core.modalities import MODALITIES

_EPS = 1e-8


class FAMOWeighting(LossWeighting):
    """FAMO loss weighting: softmax weights of learnt logits over log losses.

    Args:
        learning_rate: Adam's rate for the logits ξ (paper: 0.025).
        weight_decay: γ, an L2 pull of ξ towards 0 (equal weights) (paper: 0.001).
        smoothing: EMA decay of each objective's log loss before differencing, in [0, 1).
        betas: Adam's moment decays.
    """

    name = "famo"
    uses_mean_losses = True

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        learning_rate: float = 0.025,
        weight_decay: float = 0.001,
        smoothing: float = 0.9,
        betas: tuple[float, float] = (0.9, 0.999),
    ):
        super().__init__(modalities)
        b1, b2 = (float(b) for b in betas)
        if not (learning_rate > 0 and weight_decay >= 0 and 0 <= smoothing < 1
                and 0 <= b1 < 1 and 0 <= b2 < 1):  # fmt: skip
            raise ValueError(
                "FAMO needs learning_rate > 0, weight_decay >= 0, smoothing and betas in [0, 1); "
                f"got {learning_rate}, {weight_decay}, {smoothing}, {betas}"
            )
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.smoothing = smoothing
        self.betas = (b1, b2)
        m = len(self.modalities)
        self.register_buffer("logits", torch.zeros(m, dtype=torch.float64))  # ξ
        self.register_buffer("moment1", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("moment2", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("adam_steps", torch.zeros(m, dtype=torch.long))
        self.register_buffer("log_loss", torch.zeros(m, dtype=torch.float64))  # smoothed
        self.register_buffer("seen", torch.zeros(m, dtype=torch.bool))

    def task_weights(self, present: Sequence[str]) -> dict[str, float]:
        """z: softmax of ξ over the objectives ``present`` (sums to 1)."""
        idx = [self.modalities.index(m) for m in present]
        z = torch.softmax(self.logits[idx], 0)
        return {m: float(z[j]) for j, m in enumerate(present)}

    def weight_vector(self, counts, means=None):
        """w_m = (z_m / L_m) / Σ_j (z_j / L_j) over the objectives present, z = softmax of ξ over
        them and L_m the step's global mean losses (``means``: under DDP each rank's loss tensor
        is its own share, and a modality absent from one rank's batch has a zero there, which
        took nearly all of that rank's weight). Equal weights when the sum is not finite and
        positive (a non-finite loss: the step is skipped anyway)."""
        present = counts > 0
        logits = on_device(self.logits, counts).masked_fill(~present, -math.inf)
        z = torch.where(present, torch.softmax(logits, 0), 0.0)  # no objective: NaNs masked
        inverse = torch.where(present, z / means.to(z).clamp(min=_EPS), 0.0)
        total = inverse.sum()
        uniform = present.to(z.dtype) / present.sum().clamp(min=1)
        usable = torch.isfinite(total) & (total > 0)
        return torch.where(usable, inverse / torch.where(usable, total, 1.0), uniform)

    def observe(self, losses: Mapping[str, float], grad_sq_norms: Mapping[str, float]) -> None:
        delta = torch.zeros(len(self.modalities), dtype=torch.float64)
        moved = torch.zeros(len(self.modalities), dtype=torch.bool)
        for i, m in enumerate(self.modalities):
            loss = losses.get(m)
            if loss is None or not math.isfinite(loss):
                continue
            log_loss = math.log(max(loss, _EPS))
            if bool(self.seen[i]):
                new = self.smoothing * float(self.log_loss[i]) + (1 - self.smoothing) * log_loss
                delta[i], moved[i] = float(self.log_loss[i]) - new, True
                self.log_loss[i] = new
            else:
                self.log_loss[i], self.seen[i] = log_loss, True
        if int(moved.sum()) < 2:  # one objective alone has nothing to be balanced against
            return
        idx = moved.nonzero().flatten()
        z = torch.softmax(self.logits[idx], 0)
        d = delta[idx]
        grad = z * (d - (z * d).sum()) + self.weight_decay * self.logits[idx]
        b1, b2 = self.betas
        self.adam_steps[idx] += 1
        t = self.adam_steps[idx].double()
        self.moment1[idx] = b1 * self.moment1[idx] + (1 - b1) * grad
        self.moment2[idx] = b2 * self.moment2[idx] + (1 - b2) * grad * grad
        m_hat = self.moment1[idx] / (1 - b1**t)
        v_hat = self.moment2[idx] / (1 - b2**t)
        self.logits[idx] -= self.learning_rate * m_hat / (v_hat.sqrt() + _EPS)
