"""The VQ image autoencoder: convolutional encoder, vector quantizer, convolutional decoder.

A VQGAN-style autoencoder (Esser et al. 2021, "Taming Transformers"; van den Oord et al. 2017,
VQ-VAE) without the adversarial loss: ``log2(f)`` stride-2 stages map an S × S image to an
(S/f) × (S/f) grid of latents, each latent is replaced by its nearest codebook vector (k-means
initialised, EMA-updated, dead codes restarted: see ``quant/vector.py``), and the mirrored decoder
maps the grid back to pixels. With f = 16 a 256 × 256 image becomes 16 × 16 = 256 tokens.

Pixels enter in [0, 1] and are mapped to [-1, 1] inside; ``decode`` returns [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import torch
from torch import nn

from tokenize_mm.tokenizers.arch import (
    check_non_negative,
    check_positive_int,
    check_quantizer,
    check_quantizer_fields,
    int_tuple,
)
from tokenize_mm.tokenizers.errors import InvalidInputError
from tokenize_mm.tokenizers.quant.base import Quantizer
from tokenize_mm.tokenizers.quant.fsq import FiniteScalarQuantizer
from tokenize_mm.tokenizers.quant.vector import VectorQuantizer

#: ``VQImageConfig.block_norm`` values.
BLOCK_NORMS = ("none", "group")


@dataclasses.dataclass(frozen=True)
class VQImageConfig:
    """Architecture of ``VQImageModel``: its constructor argument, what ``ImageTokenizer.fit``
    takes as ``config``, and what an artifact saves as ``hparams["arch"]``.

    Attributes:
        image_size: side S of the square input.
        downsample: factor f, a power of two dividing ``image_size``; the grid is S/f × S/f.
        base_channels: channels of the first stage.
        channel_mult: per-stage channel multipliers (``log2(f)`` entries), or ``None`` for the
            default doubling capped at 4×.
        num_res_blocks: residual blocks per stage.
        latent_dim: channels of the encoder output fed to the quantizer.
        codebook_size: number of codes.
        codebook_dim: dimension of the codes (a linear projection maps ``latent_dim`` to it when
            they differ: low-dimensional codes are used more evenly, Yu et al. 2022).
        commitment_weight: weight of the commitment loss.
        decay: EMA decay of the codebook.
        threshold_ema_dead_code: codes whose EMA usage falls below this are restarted.
        quantizer: ``"vq"``, a learnt codebook (``quant/vector.py``; the ``codebook_dim``,
            ``commitment_weight``, ``decay`` and ``threshold_ema_dead_code`` fields are its), or ``"fsq"``, finite scalar
            quantization (``quant/fsq.py``: a fixed grid whose codes cannot collapse).
        fsq_levels: FSQ values per dimension, multiplying to ``codebook_size`` (``None``: the
            default for a power-of-two ``codebook_size``, 256 → (8, 8, 4); ``fit`` writes the
            levels it used into the artifact, so a later default cannot change them). Only with
            ``quantizer="fsq"``.
        block_norm: the normalisation inside the encoder's and decoder's blocks: ``"group"``,
            VQGAN's GroupNorm (``gcd(32, channels)`` groups), or ``"none"``; ``None`` (the
            default) resolves to ``"none"`` with FSQ and ``"group"`` with VQ. Measured on the
            main job's FSQ fit (image_small, 120 steps, 3 seeds, docs/results/concept_probe.md):
            with GroupNorm and the RGB loss every built-in image decoded as the same grey blob
            (held-out PSNR 14.6 dB); with the chroma loss, GroupNorm gives 12.2 to 12.4 dB and
            no norm 19.3 to 19.5 dB, in about half the fit time. A likely reason: at these widths
            (16 to 64 channels) a group holds 1 or 2 channels, which is instance normalisation:
            it takes each image's own level out of every feature map. A learnt codebook keeps
            GroupNorm: the tests' tiny VQ fit fell to a perplexity of 4.6 of 32 codes without it.
        fsq_whiten: whiten the FSQ grid input (``quant/whiten.py``: uncorrelated grid
            dimensions; the default) instead of normalising each dimension on its own. Without
            GroupNorm the per-dimension grid used 7 to 11 % of its codes' perplexity on the dev
            set's real images, whitened 20 to 33 %, and its codes named the built-in concepts
            better (docs/results/concept_probe.md, docs/results/codebook_health.md). Only with
            ``quantizer="fsq"``.

    Raises:
        InvalidInputError: a field is out of range (the error names it).
    """

    image_size: int = 256
    downsample: int = 16
    base_channels: int = 64
    channel_mult: tuple[int, ...] | None = None
    num_res_blocks: int = 1
    latent_dim: int = 256
    codebook_size: int = 1024
    codebook_dim: int = 64
    commitment_weight: float = 0.25
    decay: float = 0.99
    threshold_ema_dead_code: float = 2.0
    quantizer: str = "fsq"
    fsq_levels: tuple[int, ...] | None = None
    fsq_whiten: bool = True
    block_norm: str | None = None

    def __post_init__(self) -> None:
        if self.block_norm is not None and self.block_norm not in BLOCK_NORMS:
            raise InvalidInputError(
                f"must be one of {list(BLOCK_NORMS)}", item=f"block_norm={self.block_norm!r}"
            )
        if not isinstance(self.fsq_whiten, bool):
            raise InvalidInputError("must be true or false", item=f"fsq_whiten={self.fsq_whiten!r}")
        for name in ("image_size", "downsample", "base_channels", "num_res_blocks",
                     "latent_dim", "codebook_size", "codebook_dim"):  # fmt: skip
            check_positive_int(name, getattr(self, name))
        f = self.downsample
        if f < 2 or f & (f - 1):
            raise InvalidInputError("must be a power of two >= 2", item=f"downsample={f}")
        if self.image_size % f:
            raise InvalidInputError(
                f"must be a multiple of downsample {f}", item=f"image_size={self.image_size}"
            )
        if self.channel_mult is not None:
            mult = int_tuple("channel_mult", self.channel_mult)
            if len(mult) != self.levels:
                raise InvalidInputError(
                    f"needs {self.levels} entries (one per stage of f = {f})",
                    item=f"channel_mult={list(mult)}",
                )
            object.__setattr__(self, "channel_mult", mult)
        check_non_negative("commitment_weight", self.commitment_weight)
        check_non_negative("threshold_ema_dead_code", self.threshold_ema_dead_code)
        check_quantizer_fields(self)
        if (
            isinstance(self.decay, bool)
            or not isinstance(self.decay, (int, float))
            or not (0.0 < self.decay < 1.0)
        ):
            raise InvalidInputError("must be in (0, 1)", item=f"decay={self.decay!r}")

    @property
    def fsq_grid(self) -> tuple[int, ...] | None:
        """The FSQ levels in use: ``fsq_levels``, or the default for ``codebook_size``; ``None``
        for VQ."""
        return check_quantizer(self.quantizer, self.codebook_size, self.fsq_levels)

    @property
    def norm_in_use(self) -> str:
        """``block_norm``, or its default for the quantizer when ``None`` (``fit`` writes the
        resolved value into the artifact, so a later default cannot change it)."""
        if self.block_norm is not None:
            return self.block_norm
        return "group" if self.quantizer == "vq" else "none"

    @property
    def levels(self) -> int:
        """Stride-2 stages: log2(downsample)."""
        return int(math.log2(self.downsample))

    @property
    def grid(self) -> tuple[int, int]:
        g = self.image_size // self.downsample
        return (g, g)


def _norm(channels: int, kind: str) -> nn.Module:
    """The blocks' normalisation (``VQImageConfig.block_norm``): GroupNorm or none."""
    if kind == "group":
        return nn.GroupNorm(math.gcd(32, channels), channels, eps=1e-6)
    return nn.Identity()


class ResBlock(nn.Module):
    """Pre-norm residual block: (B, C_in, H, W) → (B, C_out, H, W); ``norm`` as
    ``VQImageConfig.block_norm``."""

    def __init__(self, c_in: int, c_out: int, norm: str):
        super().__init__()
        self.body = nn.Sequential(
            _norm(c_in, norm), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1),
            _norm(c_out, norm), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1),
        )  # fmt: skip
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


def stage_channels(
    base_channels: int, channel_mult: Sequence[int] | None, levels: int
) -> list[int]:
    """Channels of each downsampling stage; the default doubles up to 4× the base."""
    mult = list(channel_mult) if channel_mult is not None else [min(2**i, 4) for i in range(levels)]
    if len(mult) != levels:
        raise ValueError(
            f"channel_mult needs {levels} entries (one per stage of f), got {len(mult)}"
        )
    return [base_channels * m for m in mult]


class Encoder(nn.Module):
    """(B, 3, S, S) in [-1, 1] → latents (B, latent_dim, S/f, S/f)."""

    def __init__(self, channels: list[int], num_res_blocks: int, latent_dim: int, norm: str):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, channels[0], 3, padding=1)]
        c = channels[0]
        for ch in channels:
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, ch, norm))
                c = ch
            layers.append(nn.Conv2d(c, c, 4, stride=2, padding=1))  # halve H and W
        layers += [ResBlock(c, c, norm), _norm(c, norm), nn.SiLU(), nn.Conv2d(c, latent_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Latents (B, latent_dim, S/f, S/f) → (B, 3, S, S), unbounded (trained towards [-1, 1])."""

    def __init__(self, channels: list[int], num_res_blocks: int, latent_dim: int, norm: str):
        super().__init__()
        c = channels[-1]
        layers: list[nn.Module] = [nn.Conv2d(latent_dim, c, 3, padding=1), ResBlock(c, c, norm)]
        for ch in reversed(channels):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, ch, 3, padding=1)]
            c = ch
            for _ in range(num_res_blocks):
                layers.append(ResBlock(c, c, norm))
        layers += [_norm(c, norm), nn.SiLU(), nn.Conv2d(c, 3, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQImageModel(nn.Module):
    """Encoder + quantizer (VQ or FSQ) + decoder, of the architecture ``config`` describes."""

    def __init__(self, config: VQImageConfig | None = None):
        super().__init__()
        c = config if config is not None else VQImageConfig()
        if not isinstance(c, VQImageConfig):
            raise TypeError(f"VQImageModel takes a VQImageConfig, got {type(c).__name__}")
        self.config = c
        channels = stage_channels(c.base_channels, c.channel_mult, c.levels)
        self.image_size = c.image_size
        self.grid = c.grid
        self.encoder = Encoder(channels, c.num_res_blocks, c.latent_dim, c.norm_in_use)
        self.quantizer: Quantizer
        if c.quantizer == "fsq":
            self.quantizer = FiniteScalarQuantizer(c.latent_dim, c.fsq_grid, whiten=c.fsq_whiten)
        else:
            self.quantizer = VectorQuantizer(
                dim=c.latent_dim,
                codebook_size=c.codebook_size,
                codebook_dim=c.codebook_dim,
                decay=c.decay,
                commitment_weight=c.commitment_weight,
                threshold_ema_dead_code=c.threshold_ema_dead_code,
            )
        self.decoder = Decoder(channels, c.num_res_blocks, c.latent_dim, c.norm_in_use)

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's convolutions of few channels at the full resolution run faster
        # so (image_small: a fit step 1.15x, one-thread encoding 1.25x, the same codes;
        # benchmarks/image_fit_speed.py), and the latents come out as (B, h*w, D) rows with no
        # copy; the decoder's input is channels-last the same way
        x = (pixels * 2.0 - 1.0).contiguous(memory_format=torch.channels_last)
        z = self.encoder(x)  # (B, D, h, w)
        return z.flatten(2).transpose(1, 2)  # (B, h*w, D), row-major grid

    def _pixels(self, q: torch.Tensor) -> torch.Tensor:
        h, w = self.grid
        z = q.transpose(1, 2).reshape(q.shape[0], -1, h, w)  # (B, D, h, w)
        return self.decoder(z)

    def forward(
        self, pixels: torch.Tensor, quantize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Pixels (B, 3, S, S) in [0, 1] → (reconstruction in [-1, 1] space (B, 3, S, S),
        codes (B, h*w), commitment loss). ``quantize=False`` (a fit's autoencoder warm-up)
        decodes the latents themselves: codes ``None``, loss 0, the quantizer untouched."""
        z = self._latents(pixels)
        if not quantize:
            return self._pixels(z), None, z.new_zeros((), dtype=torch.float32)
        q, codes, commit = self.quantizer(z)
        return self._pixels(q), codes, commit

    @torch.no_grad()
    def calibrate(
        self, pixels_u8: torch.Tensor, max_images: int = 1024, batch_size: int = 64
    ) -> None:
        """After a fit, set an FSQ grid's normalisation statistics to those of the final encoder
        (``quant/fsq.py``'s ``calibrate``) on up to ``max_images`` of the training images
        (N, 3, S, S) uint8: every ``N // max_images``-th image (at least every one), the first
        ``max_images`` of those. A VQ model is left as it is."""
        calibrate = getattr(self.quantizer, "calibrate", None)
        if calibrate is None or len(pixels_u8) == 0:
            return
        chosen = pixels_u8[:: max(1, len(pixels_u8) // max_images)][:max_images]
        device = next(self.parameters()).device
        calibrate(
            self._latents(chosen[i : i + batch_size].to(device).float().div(255.0))
            for i in range(0, len(chosen), batch_size)
        )

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels (B, 3, S, S) in [0, 1] → codes (B, h*w) int64, grid flattened row-major."""
        return self.quantizer.encode(self._latents(pixels))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (B, h*w) → pixels (B, 3, S, S) in [0, 1]."""
        return ((self._pixels(self.quantizer.decode(codes)) + 1.0) / 2.0).clamp(0.0, 1.0)
