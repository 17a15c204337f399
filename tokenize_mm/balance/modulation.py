"""On-the-fly gradient modulation with generalisation enhancement (OGM-GE), for early fusion.

Peng, Wei, Deng, Wang & Hu, "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022 (arXiv:2203.15332). In the paper two unimodal encoders feed a late-fusion head; the
modality whose prediction is ahead (discrepancy ratio ρ > 1) has its encoder's gradient scaled by

    k_m = 1 − tanh(α · (ρ_m − 1))   when ρ_m > 1,   else 1,

and Gaussian noise with the variance of that gradient is added to it (GE), which the paper shows
restores the generalisation that plain down-scaling loses.

Adapted to one shared trunk: a modality's "encoder gradient" is its rows of ∂L/∂h (h: the trunk's
final hidden states, the rows that predict its tokens; and for the contrastive objective, its
isolated pass), rescaled in the backward pass as ``grad_share`` does. ``ρ_m`` compares objective m
with the mean of the others, by one of two signals:

- ``loss_progress`` (default): the fraction of its first loss that it has shed,
  p_m = 1 − L̄_m / L_m(first), with L̄ an EMA of the global loss; ρ_m = p_m / mean_{j≠m} p_j;
- ``grad_share``: the EMA of its unmodulated gradient norm; ρ_m = ‖g_m‖ / mean_{j≠m} ‖g_j‖.

The losses combine as ``modality_mean`` (w_m = 1/M) before modulation. GE noise is drawn from a
generator seeded by (``seed``, step, objective), so a run and its resume draw the same noise; every DDP rank
computes the same k from all-reduced statistics. Coefficients, EMAs and the step count are
buffers: checkpoints carry them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from tokenize_mm.balance.weighting import ModalityMean, on_device
from tokenize_mm.core.modalities import MODALITIES

SIGNALS = ("loss_progress", "grad_share")


class GradModulation(ModalityMean):
    """OGM-GE: slow the objective ahead in the backward pass, with noise of its spread.

    Args:
        alpha: α, how strongly the objective ahead is slowed (paper: 0.1 to 0.8 by dataset).
        signal: ``loss_progress`` or ``grad_share`` (see the module docstring).
        ema: smoothing of the losses and norms, in [0, 1).
        noise: add GE noise to the rows of every slowed objective.
        seed: of the GE noise.
        min_coeff: the floor of k: an objective far ahead (or the only one with progress, ρ = ∞)
            is slowed to this, never stopped.
        warmup_steps: steps observed before any modulation (the EMAs settle first).
    """

    name = "ogm"

    def __init__(
        self,
        modalities: Sequence[str] = MODALITIES,
        alpha: float = 0.5,
        signal: str = "loss_progress",
        ema: float = 0.9,
        noise: bool = True,
        seed: int = 0,
        min_coeff: float = 0.1,
        warmup_steps: int = 10,
    ):
        super().__init__(modalities)
        if (signal not in SIGNALS or not alpha > 0 or not 0 <= ema < 1
                or not 0 < min_coeff <= 1 or warmup_steps < 0):  # fmt: skip
            raise ValueError(
                f"ogm needs alpha > 0, signal in {SIGNALS}, ema in [0, 1), min_coeff in (0, 1], "
                f"warmup_steps >= 0; got {alpha}, {signal!r}, {ema}, {min_coeff}, {warmup_steps}"
            )
        self.alpha, self.signal, self.ema, self.noise, self.seed = alpha, signal, ema, noise, seed
        self.min_coeff, self.warmup_steps = min_coeff, warmup_steps
        m = len(self.modalities)
        self.register_buffer("first_loss", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("loss_ema", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("norm_ema", torch.zeros(m, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(m, dtype=torch.bool))
        self.register_buffer("coeffs", torch.ones(m))  # k_m
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def effective_weights(self, weights):
        return {m: w * float(self.coeffs[self.modalities.index(m)]) for m, w in weights.items()}

    def rescale_grad(self, grad: Tensor, target_modality: Tensor) -> Tensor:
        index = target_modality.long().clamp(max=len(self.modalities))  # special rows: last slot
        table = on_device(torch.cat([self.coeffs, self.coeffs.new_ones(1)]), grad)
        scaled = grad * table[index].unsqueeze(-1)
        if not self.noise or bool((self.coeffs >= 1).all()):
            return scaled
        # The coefficients and the step count are host state; nothing here reads the device: the
        # rows' spread is a masked mean and variance, and the noise is drawn where grad lives.
        values = grad.float()
        for i in (self.coeffs < 1).nonzero().flatten().tolist():
            rows = (index == i).unsqueeze(-1)  # (B, L, 1); none on this pass: nothing changes
            # one draw per (seed, step, objective): the contrastive pass's noise is its own
            generator = torch.Generator(device=grad.device).manual_seed(
                (self.seed * 1_000_003 + int(self.steps)) * 16 + i
            )
            draw = torch.randn(grad.shape, generator=generator, dtype=torch.float32,
                               device=grad.device)  # fmt: skip
            count = (rows.sum() * grad.shape[-1]).clamp(min=1)
            mean = torch.where(rows, values, 0.0).sum() / count
            spread = torch.where(rows, values - mean, 0.0).pow(2).sum() / count
            std = spread.sqrt()  # the rows' own gradient spread (population std)
            scaled = torch.where(rows, scaled + (draw * std).to(grad.dtype), scaled)
        return scaled

    def scores(self) -> dict[str, float]:
        """Each seen objective's signal (progress, or gradient norm) behind ρ."""
        out = {}
        for i, m in enumerate(self.modalities):
            if not bool(self.seen[i]):
                continue
            if self.signal == "loss_progress":
                first = float(self.first_loss[i])
                out[m] = max(0.0, 1.0 - float(self.loss_ema[i]) / first) if first > 0 else 0.0
            else:
                out[m] = float(self.norm_ema[i])
        return out

    def observe(self, losses: Mapping[str, float], grad_sq_norms: Mapping[str, float]) -> None:
        self.steps += 1
        for i, m in enumerate(self.modalities):
            loss = losses.get(m)
            if loss is None or not math.isfinite(loss):
                continue
            # the norms measured are of the modulated rows: undo k (GE noise aside)
            norm = math.sqrt(max(grad_sq_norms.get(m, 0.0), 0.0)) / float(self.coeffs[i])
            if bool(self.seen[i]):
                self.loss_ema[i] = self.ema * float(self.loss_ema[i]) + (1 - self.ema) * loss
                self.norm_ema[i] = self.ema * float(self.norm_ema[i]) + (1 - self.ema) * norm
            else:
                self.first_loss[i] = self.loss_ema[i] = loss
                self.norm_ema[i], self.seen[i] = norm, True
        scores = self.scores()
        coeffs = torch.ones(len(self.modalities))
        if len(scores) >= 2 and int(self.steps) > self.warmup_steps:
            for m, s in scores.items():
                others = [v for k, v in scores.items() if k != m]
                mean = sum(others) / len(others)
                rho = s / mean if mean > 0 else (math.inf if s > 0 else 1.0)
                if rho > 1:
                    k = 1.0 - math.tanh(self.alpha * (rho - 1.0))
                    coeffs[self.modalities.index(m)] = max(k, self.min_coeff)
        self.coeffs.copy_(coeffs)
