"""Whitening of a quantizer's grid input: zero mean and identity covariance over the batch.

Decorrelated batch normalisation (Huang et al. 2018, "Decorrelated Batch Normalization",
arXiv:1804.08450): where batch normalisation scales each dimension to unit variance on its own,
whitening also removes the correlation between dimensions, ``x̂ = L⁻¹ (x − μ)`` with
``Σ + εI = L Lᵀ`` (the Cholesky factor; the paper uses the ZCA matrix, any square root of the
inverse covariance whitens). Gradients flow through the batch mean and covariance as in batch
normalisation; at inference the running mean and covariance (exponential averages, momentum
0.1) replace them.

Why the FSQ grid needs it (``quant/fsq.py``): an FSQ grid of d dimensions spreads codes over
all its cells only if the d grid inputs vary independently. Measured on the main job's audio
codec (120 steps on built-in melodies, seed 0): the three batch-normalised grid inputs were
correlated at |r| = 0.98 to 0.99 on its own held-out clips and on real recordings alike (the
covariance's eigenvalues 1.79, 0.010, 0.005 on the built-in clips), so the 256-cell grid was used
as a line of about 8 cells (perplexity 10.1 and 12.5; ``benchmarks/grid_inputs.py``). Whitening makes the d inputs uncorrelated on the training batches
by construction (docs/results/codebook_health.md measures what it changes).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Whiten(nn.Module):
    """Whitening of the last dimension of ``x`` (..., d) over all the other positions.

    Args:
        d: the dimension whitened.
        momentum: weight of a training batch's statistics in the running ones.
        eps: added to the covariance's diagonal (as batch normalisation adds it to the variance).
    """

    def __init__(self, d: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        if d < 1:
            raise ValueError(f"d must be >= 1, got {d}")
        self.d, self.momentum, self.eps = d, float(momentum), float(eps)
        self.register_buffer("running_mean", torch.zeros(d))
        self.register_buffer("running_cov", torch.eye(d))
        self.register_buffer("num_batches_tracked", torch.zeros((), dtype=torch.long))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., d) float → whitened (..., d); in training, x must hold at least 2 positions."""
        flat = x.reshape(-1, self.d)
        if self.training:
            if flat.shape[0] < 2:
                raise ValueError(
                    f"whitening in training needs at least 2 positions per batch, got "
                    f"{flat.shape[0]}"
                )
            mean = flat.mean(0)
            centred = flat - mean
            cov = centred.T @ centred / (flat.shape[0] - 1)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_cov.lerp_(cov.detach(), self.momentum)
                self.num_batches_tracked += 1
        else:
            mean, cov = self.running_mean, self.running_cov
            centred = flat - mean
        eye = torch.eye(self.d, dtype=cov.dtype, device=cov.device)
        factor = torch.linalg.cholesky(cov + self.eps * eye)  # lower: cov + εI = L Lᵀ
        white = torch.linalg.solve_triangular(factor, centred.T, upper=False).T
        return white.reshape(x.shape)
