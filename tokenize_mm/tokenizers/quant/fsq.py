"""Finite scalar quantization: a codebook that is a fixed grid, so no code can fall out of use.

FSQ (Mentzer et al. 2023, "Finite Scalar Quantization: VQ-VAE Made Simple", arXiv:2309.15505)
projects each latent to d = len(levels) numbers, bounds each to a range and rounds it to one of
``levels[i]`` values; the code is the mixed-radix index of the rounded vector, so the codebook
has prod(levels) entries. There is no codebook to learn, initialise or restart and no commitment
loss: gradients pass the rounding straight through. Codes cannot collapse the way a learnt
codebook does (a code whose cell the encoder never visits is still a code), which is why the
built-in codec's short CPU fits use it (docs/tokenizers.md, "Choosing the quantizer").
Residual FSQ (the residual form of ``quant/residual.py``, each stage rounding what the previous
left on a finer grid) gives K codes per latent.

Both use ``vector_quantize_pytorch`` (``FSQ``, ``ResidualFSQ``), the reference implementation, for
the bounding, rounding and index arithmetic; it is imported when a quantizer is built (``import
tokenize_mm`` does not load it) and holds no weights here (its grid buffers follow from
``levels`` and are not saved).

A grid cannot lose codes, but the encoder can still send everything into one cell. Measured during
development on a 120-step audio fit (64 built-in clips): with the library's own projection, the codes
fell to one cell of 256 within 24 steps and stayed there (the encoder's latents drift by far more
than they vary over a clip), on training batches and held-out audio alike. So the projection
is ours: ``project_in`` (dim → d), then a batch normalisation without affine parameters
(``norm``: zero mean, unit variance per grid dimension over the batch's latents in training,
running statistics at inference) so that every grid dimension keeps its spread over the levels
whatever the encoder's drift, the grid, and ``project_out`` (d → dim). The same fits then keep
20 to 61 % of the codes in use on held-out recordings, and the image fits 64 to 84 %
(docs/results/codebook_health.md).

Per-dimension normalisation leaves the d grid inputs free to be correlated, and a short fit makes
them so: the main job's audio codec had its three inputs correlated at 0.99 and used the grid
as a line of about 8 cells. With ``whiten=True`` (``quant/whiten.py``; the codec's default) the
normalisation also decorrelates them. Both keep running statistics that lag a moving encoder, so
a fit ends with ``calibrate``: the exact statistics of the final encoder on its training data.

The grid bounds each dimension on its own (``tanh``), so a latent far outside the range the fit
saw lands in a corner cell whatever its direction: a μ-law codec fitted on melodies sent 72 % of
the frames of held-out real recordings to one corner (seed 2). With ``radius > 0`` a normalised
grid input longer than ``radius`` is scaled back onto that sphere before the grid
(``y · min(1, radius / ‖y‖)``): in range nothing changes, out of range the direction survives.
It is off by default (``CodecConfig.fsq_radius``): without companding it lowered the main job's
codec's spread on real recordings (docs/results/codebook_health.md).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from tokenize_mm.tokenizers.quant.whiten import Whiten


def default_levels(codebook_size: int) -> tuple[int, ...]:
    """FSQ levels for a power-of-two ``codebook_size``: the fewest dimensions of at most 8 levels,
    the bits spread evenly (256 → (8, 8, 4), 1024 → (8, 8, 4, 4), 4096 → (8, 8, 8, 8)), in the
    spirit of the paper's table (levels of 4 to 8 per dimension).

    Raises:
        ValueError: ``codebook_size`` is not a power of two >= 2 (give levels instead).
    """
    if codebook_size < 2 or codebook_size & (codebook_size - 1):
        raise ValueError(
            f"codebook_size={codebook_size} is not a power of two: give fsq_levels whose "
            "product is the codebook size"
        )
    bits = codebook_size.bit_length() - 1
    dims = -(-bits // 3)
    per_dim = [bits // dims + (1 if i < bits % dims else 0) for i in range(dims)]
    return tuple(2**b for b in per_dim)


def check_levels(levels: Sequence[int]) -> tuple[int, ...]:
    """``levels`` as a tuple of ints >= 2, or ``ValueError`` naming the bad entry."""
    out = tuple(levels)
    if not out or any(isinstance(v, bool) or not isinstance(v, int) or v < 2 for v in out):
        raise ValueError(f"fsq_levels={list(out)}: every level must be an int >= 2")
    return out


class _FSQBase(nn.Module):
    """Shared parts: projections with the normalised grid input, float32 rounding, a zero loss."""

    codebook_size: int
    num_codebooks: int

    def _build(
        self, dim: int, levels: Sequence[int], fsq: nn.Module, radius: float, whiten: bool
    ) -> None:
        if not radius >= 0:
            raise ValueError(f"radius must be >= 0 (0: off), got {radius}")
        self.levels = check_levels(levels)
        self.radius = float(radius)
        d = len(self.levels)
        self.project_in = nn.Linear(dim, d)
        self.whiten = bool(whiten)
        self.norm = Whiten(d) if self.whiten else nn.BatchNorm1d(d, affine=False, momentum=0.1)
        self.fsq = fsq
        self.project_out = nn.Linear(d, dim)
        self.codebook_size = math.prod(self.levels)

    def _grid_input(self, z: Tensor) -> Tensor:
        """z (B, N, dim) → normalised grid input (B, N, d), float32, no longer than ``radius``."""
        y = self.project_in(z.float())
        y = self.norm(y) if self.whiten else self.norm(y.transpose(1, 2)).transpose(1, 2)
        if self.radius > 0:
            y = y * (self.radius / y.norm(dim=-1, keepdim=True).clamp_min(1e-12)).clamp(max=1.0)
        return y

    def _run(self, z: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(z.device.type, enabled=False):
            grid, indices = self.fsq(self._grid_input(z))
            quantized = self.project_out(grid)
        return quantized.to(z.dtype), indices.long()

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """z (B, N, dim) → (quantized (B, N, dim), straight-through; codes; loss 0)."""
        quantized, indices = self._run(z)
        return quantized, self._codes(indices), z.new_zeros((), dtype=torch.float32)

    @torch.no_grad()
    def calibrate(self, latents: Iterable[Tensor]) -> int:
        """Set the normalisation's inference statistics to the exact mean and (co)variance of the
        projected ``latents`` (each (B, N, dim)); returns the number of latent vectors counted.

        During a fit the running statistics average the batches of the last ten or so steps, so
        they lag an encoder that is still moving; after it, the statistics of the final weights
        on the training data replace them ("precise BN": Wu & Johnson 2021, "Rethinking 'Batch'
        in BatchNorm", arXiv:2105.07576). Measured on a whitened audio codec fitted before
        calibration existed (seed 2, 1 thread; ``benchmarks/grid_inputs.py --recalibrate``): its
        held-out mean sat 3.3 standard deviations off along one whitened dimension, and the
        real-audio perplexity went from 11.3 of 256 to 135.6 once calibrated.

        Raises:
            ValueError: fewer than 2 latent vectors.
        """
        d = len(self.levels)
        count, total = 0, torch.zeros(d, dtype=torch.float64)
        outer = torch.zeros(d, d, dtype=torch.float64)
        for z in latents:
            y = self.project_in(z.float()).reshape(-1, d).double().cpu()
            count += y.shape[0]
            total += y.sum(0)
            outer += y.T @ y
        if count < 2:
            raise ValueError(f"calibration needs at least 2 latent vectors, got {count}")
        mean = total / count
        cov = (outer - count * torch.outer(mean, mean)) / (count - 1)
        norm = self.norm
        norm.running_mean.copy_(mean.to(norm.running_mean))
        if self.whiten:
            norm.running_cov.copy_(cov.to(norm.running_cov))
        else:
            norm.running_var.copy_(cov.diagonal().to(norm.running_var))
        return count

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """z (B, N, dim) → int64 codes."""
        with torch.autocast(z.device.type, enabled=False):
            _, indices = self.fsq(self._grid_input(z))
        return self._codes(indices.long())


class FiniteScalarQuantizer(_FSQBase):
    """One FSQ codebook on channel-last latents (B, N, dim) → codes (B, N).

    Args:
        dim: latent dimension (projected to len(levels) and back).
        levels: values per dimension; the codebook has prod(levels) codes.
        radius: longest normalised grid input, longer ones scaled back (0: no limit).
        whiten: whiten the grid input (``quant/whiten.py``) instead of normalising each
            dimension on its own.
    """

    def __init__(self, dim: int, levels: Sequence[int], radius: float = 0.0, whiten: bool = False):
        super().__init__()
        from vector_quantize_pytorch import FSQ

        levels = check_levels(levels)
        with torch.device("cpu"):  # the library computes its grid with .item(): not on meta
            # The library's symmetric bound (its residual form always uses it) is the only one it
            # allows with levels of 2; grids without a 2 keep the bound their artifacts were
            # written with.
            grid = FSQ(levels=list(levels), preserve_symmetry=2 in levels)
        self._build(dim, levels, grid, radius, whiten)
        self.num_codebooks = 1

    def _codes(self, indices: Tensor) -> Tensor:
        return indices

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, N) → (B, N, dim)."""
        return self.project_out(self.fsq.indices_to_codes(codes.long()).float())


class ResidualFiniteScalarQuantizer(_FSQBase):
    """K residual FSQ stages on channel-last latents (B, N, dim) → codes (B, K, N).

    Args:
        dim: latent dimension.
        num_codebooks: K stages (each a finer grid on what the previous left).
        levels: values per dimension of every stage; prod(levels) codes per stage.
        radius: longest normalised grid input, longer ones scaled back (0: no limit).
        whiten: whiten the grid input (``quant/whiten.py``) instead of normalising each
            dimension on its own.
    """

    def __init__(
        self,
        dim: int,
        num_codebooks: int,
        levels: Sequence[int],
        radius: float = 0.0,
        whiten: bool = False,
    ):
        super().__init__()
        from vector_quantize_pytorch import ResidualFSQ

        if num_codebooks < 1:
            raise ValueError(f"num_codebooks must be >= 1, got {num_codebooks}")
        levels = check_levels(levels)
        with torch.device("cpu"):  # the library computes its grid with .item(): not on meta
            grid = ResidualFSQ(levels=list(levels), num_quantizers=num_codebooks)
        self._build(dim, levels, grid, radius, whiten)
        self.num_codebooks = num_codebooks

    def _codes(self, indices: Tensor) -> Tensor:
        return indices.transpose(1, 2)  # the library's (B, N, K) → ours (B, K, N)

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """codes (B, K', N) → (B, N, dim): the sum of the first K' <= K stages' grid points,
        projected out (fewer stages: a coarser reconstruction at a lower bitrate)."""
        given = codes.shape[1]
        if not 1 <= given <= self.num_codebooks:
            raise ValueError(
                f"codes hold {given} stages, the quantizer decodes 1 to {self.num_codebooks}"
            )
        indices = codes.long().transpose(1, 2)  # (B, N, K')
        return self.project_out(self._stage_sum(indices).float())

    def _stage_sum(self, indices: Tensor) -> Tensor:
        """(B, N, K') stage indices → (B, N, d'): the sum of each stage's grid point times the
        stage's scale, through the library's output projection; what its
        ``get_output_from_indices`` computes, the same ops in the same order, without its
        ``einx`` lookup, which builds a graph (solving its shapes with sympy) for every new shape:
        a codec's held-out evaluation decodes clips of many lengths."""
        books, scales = self.fsq.codebooks, self.fsq.scales  # (K, C, d), (K, d)
        points = torch.stack([books[k][indices[..., k]] for k in range(indices.shape[-1])])
        points = points * scales[: indices.shape[-1], None, None, :]  # (K', B, N, d)
        return self.fsq.project_out(points.sum(0))
