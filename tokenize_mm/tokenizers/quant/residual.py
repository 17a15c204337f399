"""Residual vector quantization: K codebooks, each quantizing what the previous ones left.

The idea is SoundStream's (Zeghidour et al., 2021) as used by EnCodec (Défossez et al., 2022):
codebook k quantizes the residual ``r_k = z - (q_1 + ... + q_{k-1})``, so that the first codes
carry the coarse content and later ones refine it; decoding sums the K code vectors. Each stage is
a ``VectorQuantizer`` (k-means initialised, EMA-updated, dead codes restarted).

Unlike encodec 0.1.1's ``ResidualVectorQuantization`` (its upstream issue 25), the residual passed
to stage k+1 is ``r_k - q_k.detach()`` rather than ``r_k - quantized_k`` with a straight-through
``quantized_k``, whose gradient with respect to ``r_k`` is zero: here every stage's commitment loss
reaches the encoder.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenize_mm.tokenizers.quant.vector import VectorQuantizer


class ResidualVectorQuantizer(nn.Module):
    """K stacked ``VectorQuantizer`` stages on channel-last latents (B, N, dim).

    Args:
        dim: latent dimension.
        num_codebooks: K, the number of stages.
        codebook_size: codes per stage.
        codebook_dim: code dimension of every stage (``None``: ``dim``).
        decay, threshold_ema_dead_code, commitment_weight, kmeans_init: as ``VectorQuantizer``.

    A ``Quantizer`` (``quant/base.py``) with K codebooks: codes have shape (B, K, N).
    """

    def __init__(
        self,
        dim: int,
        num_codebooks: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        decay: float = 0.99,
        threshold_ema_dead_code: float = 2.0,
        commitment_weight: float = 1.0,
        kmeans_init: bool = True,
    ):
        super().__init__()
        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        self.num_codebooks = num_codebooks
        self.layers = nn.ModuleList(
            VectorQuantizer(
                dim,
                codebook_size,
                codebook_dim=codebook_dim,
                decay=decay,
                kmeans_init=kmeans_init,
                threshold_ema_dead_code=threshold_ema_dead_code,
                commitment_weight=commitment_weight,
            )
            for _ in range(num_codebooks)
        )

    @property
    def codebook_size(self) -> int:
        """Codes per stage (every stage has the same number)."""
        return self.layers[0].codebook_size

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z (B, N, dim) → (quantized (B, N, dim), straight-through; codes (B, K, N); commitment
        loss summed over stages)."""
        residual, total = z, torch.zeros_like(z)
        codes, loss = [], z.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            q, c, commit = layer(residual)  # q: straight-through towards residual
            residual = residual - q.detach()
            total = total + q
            codes.append(c)
            loss = loss + commit
        return total, torch.stack(codes, dim=1), loss

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """z (B, N, dim) → codes (B, K, N) int64."""
        residual, codes = z, []
        for layer in self.layers:
            c = layer.encode(residual)
            residual = residual - layer.decode(c).to(residual.dtype)
            codes.append(c)
        return torch.stack(codes, dim=1)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, K', N) → (B, N, dim): the sum of the first K' <= K stages' code vectors
        (fewer stages: a coarser reconstruction at a lower bitrate)."""
        _check_stages(codes.shape[1], len(self.layers))
        return sum(
            layer.decode(codes[:, k]) for k, layer in enumerate(self.layers[: codes.shape[1]])
        )


def _check_stages(given: int, stages: int) -> None:
    if not 1 <= given <= stages:
        raise ValueError(f"codes hold {given} stages, the quantizer decodes 1 to {stages}")
