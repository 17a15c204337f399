"""The 50 Hz audio codec: EnCodec's architecture (Défossez et al., 2022) at 24 kHz, hop 480.

The encoder and decoder are the ``encodec`` package's SEANet modules; the strides (8, 5, 4, 3)
multiply to 480, so a 24 kHz waveform becomes exactly 50 latent frames per second, each quantized
by K residual codebooks (``quant/residual.py``). A clip of S samples gives ceil(S / 480) frames
(SEANet pads the end so the last window is full); decode returns frames × 480 samples, trimmed by
the caller to the original length.

Optionally (``CodecConfig.companding`` = μ > 0) the encoder reads the waveform through μ-law
companding (ITU-T G.711: ``sign(x) · ln(1 + μ|x|) / ln(1 + μ)``) and the decoder writes it
linear: a frame 40 dB below another then reaches the encoder about 20 dB below it. With μ = 255
and ``fsq_radius = 3`` the main job's codec, measured with per-dimension normalisation of its FSQ
grid (before ``fsq_whiten``), spread held-out real recordings over twice the codes
(perplexity 63 of 256 on average over 3 seeds x 2 thread counts, against 32), but a linear probe
named the built-in concepts from its codes less often (0.32 against 0.45, 3 seeds), so both are
off by default (docs/results/codebook_health.md, docs/results/concept_probe.md).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence

import torch
from encodec.modules import SEANetDecoder, SEANetEncoder
from torch import nn

from tokenize_mm.tokenizers.arch import (
    check_non_negative,
    check_positive_int,
    check_quantizer,
    check_quantizer_fields,
    int_tuple,
)
from tokenize_mm.tokenizers.audio.elu import swap_elus
from tokenize_mm.tokenizers.audio.padding import (
    channels_last_forward,
    swap_padded_convs,
    takes_channels_last,
)
from tokenize_mm.tokenizers.errors import InvalidInputError
from tokenize_mm.tokenizers.quant.base import Quantizer
from tokenize_mm.tokenizers.quant.fsq import ResidualFiniteScalarQuantizer
from tokenize_mm.tokenizers.quant.residual import ResidualVectorQuantizer


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """Architecture of ``CodecModel``: its constructor argument, what ``AudioTokenizer.fit``
    takes as ``config``, and what an artifact saves as ``hparams["arch"]``.

    Attributes:
        sample_rate: waveform rate in Hz.
        channels: audio channels, 1 (mono) or 2 (stereo).
        ratios: decoder upsampling ratios (the encoder uses them reversed); their product is the
            hop in samples, ``sample_rate / hop`` the frame rate.
        n_filters: base width (EnCodec: 32).
        n_residual_layers: residual layers per stage.
        dimension: latent dimension (EnCodec: 128).
        lstm: LSTM layers at the end of the encoder and the start of the decoder (EnCodec: 2).
        causal: causal convolutions (EnCodec 24 kHz: true).
        num_codebooks: K residual codebooks.
        codebook_size: codes per codebook.
        codebook_dim: code dimension (``None``: ``dimension``).
        commitment_weight: weight of each stage's commitment loss.
        encoder_init_gain: factor on the initial weights of the encoder's convolutions (see
            ``CodecModel``); it only sets the starting point of ``fit``, loaded weights replace it.
        quantizer: ``"vq"``, a learnt codebook (``quant/vector.py``; the ``codebook_dim``,
            ``commitment_weight`` fields are its), or ``"fsq"``, finite scalar
            quantization (``quant/fsq.py``: a fixed grid whose codes cannot collapse).
        fsq_levels: FSQ values per dimension, multiplying to ``codebook_size`` (``None``: the
            default for a power-of-two ``codebook_size``, 256 → (8, 8, 4); ``fit`` writes the
            levels it used into the artifact, so a later default cannot change them). Only with
            ``quantizer="fsq"``.
        fsq_radius: the FSQ grid input's longest length (``quant/fsq.py``: a longer latent is
            scaled back onto the sphere, keeping its direction, instead of saturating into a
            corner cell); 0 (the default): no limit. Only with ``quantizer="fsq"``.
        fsq_whiten: whiten the FSQ grid input (``quant/whiten.py``: uncorrelated grid
            dimensions; the default) instead of normalising each dimension on its own (artifacts
            written before the field). Only with ``quantizer="fsq"``. With it the main job's codec
            spreads held-out real recordings over 67 to 136 of 256 codes (perplexity, 3 seeds x 1
            and 2 threads), against 15 to 50 without (docs/results/codebook_health.md).
        companding: μ of the μ-law companding of the encoder's input (0, the default: the
            waveform as it is; G.711 uses 255; the module docstring says what it trades).

    Raises:
        InvalidInputError: a field is out of range (the error names it).
    """

    sample_rate: int = 24_000
    channels: int = 1
    ratios: tuple[int, ...] = (8, 5, 4, 3)
    n_filters: int = 32
    n_residual_layers: int = 1
    dimension: int = 128
    lstm: int = 2
    causal: bool = True
    num_codebooks: int = 1
    codebook_size: int = 1024
    codebook_dim: int | None = None
    commitment_weight: float = 1.0
    encoder_init_gain: float = 2.0
    quantizer: str = "fsq"
    fsq_levels: tuple[int, ...] | None = None
    fsq_radius: float = 0.0
    companding: float = 0.0
    fsq_whiten: bool = True

    def __post_init__(self) -> None:
        for name in ("sample_rate", "channels", "n_filters", "n_residual_layers", "dimension",
                     "num_codebooks", "codebook_size"):  # fmt: skip
            check_positive_int(name, getattr(self, name))
        if self.channels not in (1, 2):
            raise InvalidInputError(
                "must be 1 (mono) or 2 (stereo)", item=f"channels={self.channels}"
            )
        object.__setattr__(self, "ratios", int_tuple("ratios", self.ratios))
        if isinstance(self.lstm, bool) or not isinstance(self.lstm, int) or self.lstm < 0:
            raise InvalidInputError("must be an int >= 0", item=f"lstm={self.lstm!r}")
        for name in ("causal", "fsq_whiten"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInputError(
                    "must be true or false", item=f"{name}={getattr(self, name)!r}"
                )
        if self.codebook_dim is not None:
            check_positive_int("codebook_dim", self.codebook_dim)
        check_non_negative("commitment_weight", self.commitment_weight)
        check_non_negative("encoder_init_gain", self.encoder_init_gain)
        check_non_negative("fsq_radius", self.fsq_radius)
        check_non_negative("companding", self.companding)
        check_quantizer_fields(self)

    @property
    def fsq_grid(self) -> tuple[int, ...] | None:
        """The FSQ levels in use: ``fsq_levels``, or the default for ``codebook_size``; ``None``
        for VQ."""
        return check_quantizer(self.quantizer, self.codebook_size, self.fsq_levels)

    @property
    def hop_length(self) -> int:
        """Samples per frame: the product of ``ratios``."""
        return math.prod(self.ratios)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


class CodecModel(nn.Module):
    """SEANet encoder → residual quantizer (VQ or FSQ) → SEANet decoder.

    Args:
        config: the architecture (``CodecConfig``; ``None``: its defaults).

    Initialisation: PyTorch's default convolution init keeps about 1/√3 of the signal's standard
    deviation per layer, so after the encoder's ten or so convolutions the latents of a 1 s clip
    vary over its frames by under 1 % of their size (0.0068). k-means then starts the codebook
    from one point, and short fits collapse to a single code (1 of 256 codes used after 120 steps
    on the built-in audio). Doubling the encoder's initial weights brings the variation to 0.22,
    and the same fit uses 37.9 % of the codes (a test pins the variation;
    ``benchmarks/codec_init.py`` measures both, docs/results/codec_init.md).
    """

    def __init__(self, config: CodecConfig | None = None):
        super().__init__()
        c = config if config is not None else CodecConfig()
        if not isinstance(c, CodecConfig):
            raise TypeError(f"CodecModel takes a CodecConfig, got {type(c).__name__}")
        self.config = c
        self.sample_rate, self.channels = c.sample_rate, c.channels
        self.hop_length = c.hop_length
        kwargs = dict(
            channels=c.channels, dimension=c.dimension, n_filters=c.n_filters,
            n_residual_layers=c.n_residual_layers, ratios=list(c.ratios), lstm=c.lstm,
            causal=c.causal, norm="weight_norm",
        )  # fmt: skip
        with warnings.catch_warnings():  # encodec uses the deprecated torch weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            self.encoder = SEANetEncoder(**kwargs)
            self.decoder = SEANetDecoder(**kwargs)
        # The same parameters (state dict keys), faster on the CPU: reflection padding and the
        # transposed convolutions' trim by slicing (padding.py; 2x F.pad's speed with its
        # backward), the native ELU (elu.py), and both halves run channels-last (``latent``,
        # ``reconstruct``); values and gradients differ from the package's modules at rounding.
        for part in (self.encoder, self.decoder):
            swap_elus(swap_padded_convs(part))
        with torch.no_grad():  # weight norm: w = g · v / ||v||, so scaling g scales w
            for module in self.encoder.modules():
                if hasattr(module, "weight_g"):
                    module.weight_g.mul_(c.encoder_init_gain)
        self.quantizer: Quantizer
        if c.quantizer == "fsq":
            self.quantizer = ResidualFiniteScalarQuantizer(
                c.dimension, c.num_codebooks, c.fsq_grid, radius=c.fsq_radius,
                whiten=c.fsq_whiten,
            )  # fmt: skip
        else:
            self.quantizer = ResidualVectorQuantizer(
                c.dimension, c.num_codebooks, c.codebook_size, codebook_dim=c.codebook_dim,
                commitment_weight=c.commitment_weight,
            )  # fmt: skip

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        """ceil(num_samples / hop): the frames of a clip of ``num_samples`` samples."""
        return -(-num_samples // self.hop_length)

    def forward(
        self, wav: torch.Tensor, quantize: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """wav (B, C, S) → (reconstruction (B, C, frames·hop), codes (B, K, frames), commit loss).
        ``quantize=False`` (a fit's autoencoder warm-up) decodes the latents themselves: codes
        ``None``, loss 0, the quantizer untouched."""
        z = self.latent(self.compand(wav)).transpose(1, 2)  # (B, frames, D)
        if not quantize:
            return self.reconstruct(z.transpose(1, 2)), None, z.new_zeros((), dtype=torch.float32)
        q, codes, commit = self.quantizer(z)
        return self.reconstruct(q.transpose(1, 2)), codes, commit

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder on a companded wav x (B, C, S) → latent (B, D, frames). On the CPU its
        layers run on (B, C, 1, S) in channels-last memory, an LSTM on (B, C, S)
        (``channels_last_forward``), forward and backward: audio_small's narrow layers at the full
        sample rate are slow on (B, C, S) (``benchmarks/codec_fit_speed.py`` times the fit)."""
        if self._runs_channels_last(x, self.encoder):
            return channels_last_forward(self.encoder.model, x)
        return self.encoder(x)

    def reconstruct(self, latent: torch.Tensor) -> torch.Tensor:
        """The decoder on latent (B, D, frames) → wav (B, C, frames · hop); channels-last on the
        CPU, as ``latent``."""
        if self._runs_channels_last(latent, self.decoder):
            return channels_last_forward(self.decoder.model, latent)
        return self.decoder(latent)

    def _runs_channels_last(self, x: torch.Tensor, part: nn.Module) -> bool:
        """float32 on the CPU, and ``part``'s padded convolutions all ours (a model built with
        the package's modules, as ``benchmarks/codec_fit_speed.py``'s reference, keeps (B, C, S))."""
        return x.device.type == "cpu" and x.dtype == torch.float32 and takes_channels_last(part)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, C, S) → codes (B, K, ceil(S / hop)) int64."""
        return self.quantize(self.latent(self.compand(wav)))

    @torch.no_grad()
    def calibrate(self, clips: Sequence[torch.Tensor], max_clips: int = 128,
                  max_seconds: float = 5.0) -> None:  # fmt: skip
        """After a fit, set an FSQ grid's normalisation statistics to those of the final encoder
        (``quant/fsq.py``'s ``calibrate``) on up to ``max_clips`` of the training ``clips``
        (C, S_i): every ``len(clips) // max_clips``-th clip (at least every one), the first
        ``max_clips`` of those, each cut to its first ``max_seconds``. A VQ model is left as it
        is (no normalisation)."""
        calibrate = getattr(self.quantizer, "calibrate", None)
        if calibrate is None or not clips:
            return
        step = max(1, len(clips) // max_clips)
        limit = max(self.hop_length, round(max_seconds * self.sample_rate))
        device = next(self.parameters()).device
        calibrate(
            self.latent(self.compand(clip[None, :, :limit].to(device))).transpose(1, 2)
            for clip in list(clips)[::step][:max_clips]
        )

    def compand(self, wav: torch.Tensor) -> torch.Tensor:
        """The encoder's input: wav (B, C, S) through μ-law companding (unchanged when
        ``config.companding`` is 0)."""
        return mu_law(wav, self.config.companding)

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, D, T) → codes (B, K, T) int64."""
        return self.quantizer.encode(latent.transpose(1, 2))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T) → wav (B, C, T·hop)."""
        return self.reconstruct(self.quantizer.decode(codes).transpose(1, 2))


def mu_law(wav: torch.Tensor, mu: float) -> torch.Tensor:
    """μ-law companding ``sign(x) · ln(1 + μ|x|) / ln(1 + μ)`` elementwise (``mu = 0``: x);
    [-1, 1] maps onto [-1, 1] and 0 stays 0 (zero padding stays zero)."""
    if mu == 0:
        return wav
    return torch.sign(wav) * torch.log1p(mu * wav.abs()) / math.log1p(mu)
