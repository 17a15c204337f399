"""Pretrained EnCodec (Défossez et al., 2022) at 24 kHz and 48 kHz on the tokenizer contract.

The ``encodec`` package ships two models: 24 kHz mono, causal, 75 frames per second (hop 320),
up to 32 codebooks; 48 kHz stereo, non-causal, 150 frames per second, up to 16 codebooks, applied
to 1 s segments that are each normalised by their RMS (the *scale*, which decode needs). Their
weights come from a URL or a local folder whose checkpoint file is checked by the sha256 prefix in
its name (``encodec_24khz-d7cc33bc.th``).

What differs from calling the package directly:

* The number of codebooks is always explicit (``num_codebooks`` or ``bandwidth``): with none the
  package silently uses all of them (24 kbps). Only the first K codebooks are kept.
* The 48 kHz model's segments do not overlap (the package overlaps them by 1 % and cross-fades
  on decode), so a clip of d seconds is exactly ceil(d × 150) frames; each segment's scale travels
  in ``Encoded.extras["scale"]`` (one float per segment).
* Clips are zero-padded to whole frames, as for the 50 Hz codec (``codec.py``, ``batch.py``); on a clip of
  whole frames the codes equal the package's ``model.encode`` (tested; for 48 kHz, with the
  package's segment overlap set to 0).
* The checkpoint (a torch pickle) is read with ``torch.load(weights_only=True)``, only here and only
  after its checksum matched; ``save`` writes safetensors, and loading that artifact unpickles
  nothing.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from encodec.model import ROOT_URL
from encodec.modules import SEANetDecoder, SEANetEncoder
from encodec.quantization import ResidualVectorQuantizer
from torch import nn

from tokenize_mm.tokenizers.artifact import sha256_file
from tokenize_mm.tokenizers.audio import io as audio_io
from tokenize_mm.tokenizers.audio.codec import CodecTokenizer
from tokenize_mm.tokenizers.base import Encoded, TokenizerInfo
from tokenize_mm.tokenizers.errors import InvalidCodesError, PretrainedWeightsError
from tokenize_mm.tokenizers.registry import register_tokenizer


@dataclass(frozen=True)
class PretrainedSpec:
    """One of the ``encodec`` package's pretrained models."""

    checkpoint: str  # official file name; the part after "-" is a sha256 prefix
    sample_rate: int
    channels: int
    causal: bool
    norm: str
    segment_seconds: float | None  # normalised, independently encoded segments
    max_codebooks: int
    bandwidths: tuple[float, ...]  # kbps the model was trained for


SPECS = {
    "encodec_24khz": PretrainedSpec(
        "encodec_24khz-d7cc33bc.th", 24_000, 1, True, "weight_norm", None, 32,
        (1.5, 3.0, 6.0, 12.0, 24.0),
    ),
    "encodec_48khz": PretrainedSpec(
        "encodec_48khz-7e698e3e.th", 48_000, 2, False, "time_group_norm", 1.0, 16,
        (3.0, 6.0, 12.0, 24.0),
    ),
}  # fmt: skip
HOP = 320  # the product of SEANet's default ratios (8, 5, 4, 2)
BITS = 10  # log2 of 1024 codes per codebook


def kbps_per_codebook(name: str) -> float:
    """Bit rate of one codebook: frame rate × 10 bits (0.75 kbps at 24 kHz, 1.5 at 48 kHz)."""
    return SPECS[name].sample_rate / HOP * BITS / 1000


def supported_codebooks(name: str) -> tuple[int, ...]:
    """The numbers of codebooks the model was trained with (one per target bandwidth)."""
    return tuple(round(bw / kbps_per_codebook(name)) for bw in SPECS[name].bandwidths)


class PretrainedEncodec(nn.Module):
    """The package's SEANet encoder/decoder and residual VQ, keeping the first K codebooks.

    Args:
        name: ``"encodec_24khz"`` or ``"encodec_48khz"``.
        num_codebooks: K.
    """

    def __init__(self, name: str, num_codebooks: int):
        super().__init__()
        spec = SPECS[name]
        self.name, self.sample_rate, self.channels = name, spec.sample_rate, spec.channels
        self.hop_length = HOP
        kwargs = dict(channels=spec.channels, norm=spec.norm, causal=spec.causal)
        with warnings.catch_warnings():  # encodec uses the deprecated torch weight_norm
            warnings.simplefilter("ignore", FutureWarning)
            self.encoder = SEANetEncoder(**kwargs)
            self.decoder = SEANetDecoder(**kwargs)
        self.quantizer = ResidualVectorQuantizer(dimension=128, n_q=num_codebooks, bins=1024)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return -(-num_samples // self.hop_length)

    def compand(self, wav: torch.Tensor) -> torch.Tensor:
        """The encoder's input: EnCodec's models read the waveform as it is."""
        return wav

    @torch.no_grad()
    def quantize(self, latent: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, 128, T) → codes (B, K, T) with all K kept codebooks."""
        return self.quantizer.encode(latent, int(self.frame_rate)).transpose(0, 1)

    @torch.no_grad()
    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, C, S), S a multiple of the hop → codes (B, K, S / hop)."""
        return self.quantize(self.encoder(wav))

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes (B, K, T) → wav (B, C, T · hop), before any per-segment scale."""
        return self.decoder(self.quantizer.decode(codes.transpose(0, 1)))


@register_tokenizer
class EncodecTokenizer(CodecTokenizer):
    """Pretrained EnCodec on the codec contract (``CodecTokenizer``), a sibling of the fitted
    ``AudioTokenizer``. Build one with ``from_pretrained`` (``AudioTokenizer.from_pretrained``
    forwards here) or ``load`` an artifact it saved; tokenize_mm does not train it, so it has no
    ``fit``."""

    model_class = PretrainedEncodec

    @classmethod
    def arch_config(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """The pretrained model's name and codebook count (its architecture is the name's)."""
        return {"name": hparams.get("name"), "num_codebooks": hparams.get("num_codebooks")}

    @classmethod
    def build_model(cls, config: dict[str, Any]) -> nn.Module:
        return cls.model_class(**config)

    kind: ClassVar[str] = "audio.encodec"

    def __init__(self, model: nn.Module, info: TokenizerInfo, hparams: dict[str, Any], *a, **kw):
        super().__init__(model, info, hparams, *a, **kw)
        seconds = SPECS[hparams["name"]].segment_seconds
        self.segment = round(seconds * model.sample_rate) if seconds else None

    @classmethod
    def derive_info(cls, model: nn.Module, hparams: dict[str, Any]) -> TokenizerInfo:
        """EnCodec's rates for the K codebooks the model keeps."""
        return _make_info(model, len(model.quantizer.vq.layers))

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        num_codebooks: int | None = None,
        bandwidth: float | None = None,
        repository: str | os.PathLike | None = None,
        checkpoint: str | None = None,
    ) -> EncodecTokenizer:
        """Load a pretrained EnCodec with K codebooks.

        Args:
            name: ``"encodec_24khz"`` (75 frames/s) or ``"encodec_48khz"`` (150 frames/s).
            num_codebooks: K, one of ``supported_codebooks(name)`` (24 kHz: 2, 4, 8, 16, 32;
                48 kHz: 2, 4, 8, 16). Give this or ``bandwidth``, never neither.
            bandwidth: kbps, one of the model's target bandwidths (K = bandwidth / kbps per
                codebook).
            repository: a folder holding the checkpoint file; its sha256 must start with the
                hexadecimal suffix of the file name. ``None``: download it from the official URL
                (through torch.hub's cache, hash checked), which needs a network.
            checkpoint: the file name inside ``repository`` (default: the official one).

        Raises:
            ValueError: an unknown name, or a missing, conflicting or unsupported K / bandwidth.
            PretrainedWeightsError: the checkpoint is missing, its checksum does not match, or it
                does not hold this model's weights.
        """
        if name not in SPECS:
            raise ValueError(f"unknown pretrained EnCodec {name!r}; choose one of {list(SPECS)}")
        k = _resolve_codebooks(name, num_codebooks, bandwidth)
        state = _read_checkpoint(name, repository, checkpoint)
        keep = {key: v for key, v in state.items() if _layer_index(key) < k}
        model = PretrainedEncodec(name, k)
        try:
            model.load_state_dict(keep)
        except RuntimeError as e:
            raise PretrainedWeightsError(
                f"the checkpoint for {name} does not hold that model's weights: {e}"
            ) from e
        spec = SPECS[name]
        hparams = {
            "name": name, "num_codebooks": k, "bandwidth_kbps": k * kbps_per_codebook(name),
            "causal": spec.causal, "checkpoint": checkpoint or spec.checkpoint,
        }  # fmt: skip
        return cls(model.eval(), _make_info(model, k), hparams, {"description": "pretrained"})

    # -- what differs from the 50 Hz codec: normalised segments and their scales ---------------
    def _pieces(self, wav: torch.Tensor) -> tuple[list[tuple[torch.Tensor, int]], Any]:
        if self.segment is None:
            return super()._pieces(wav)
        n, seg = wav.shape[-1], self.segment
        padded = F.pad(wav, (0, -n % self.model.hop_length))
        pieces, scales = [], []
        for start in range(0, padded.shape[-1], seg):
            volume = wav[:, start : start + seg].mean(dim=0).pow(2).mean().sqrt()
            scale = 1e-8 + volume  # as the package: silence gives a tiny scale, not a division by 0
            pieces.append((padded[:, start : start + seg] / scale, 0))
            scales.append(scale)
        return pieces, torch.stack(scales).to(torch.float32)

    def _decode_codes(self, encoded: Encoded) -> torch.Tensor:
        if self.segment is None:
            return super()._decode_codes(encoded)
        per_segment = self.segment // self.model.hop_length
        scale = encoded.extras.get("scale")
        expected = math.ceil(encoded.num_steps / per_segment)
        if scale is None or scale.numel() != expected or not bool(torch.isfinite(scale).all()):
            raise InvalidCodesError(
                f"{self.kind} codes need extras['scale'] with one finite value per "
                f"{self.segment}-sample segment ({expected} for {encoded.num_steps} frames), as "
                "encode returns them"
            )
        model, codes = self.inference_model(), encoded.codes.to(self.device)
        scale = scale.reshape(-1).to(self.device, torch.float32)
        parts = [
            model.decode(c[None])[0] * scale[i]
            for i, c in enumerate(codes.split(per_segment, dim=-1))
        ]
        return torch.cat(parts, dim=-1)

    def __repr__(self) -> str:
        i = self._info
        return f"EncodecTokenizer({self.hparams['name']!r}, K={i.num_codebooks})"


def _resolve_codebooks(name: str, num_codebooks: int | None, bandwidth: float | None) -> int:
    supported = supported_codebooks(name)
    per = kbps_per_codebook(name)
    if num_codebooks is None and bandwidth is None:
        raise ValueError(
            f"{name} needs an explicit num_codebooks (one of {list(supported)}) or bandwidth (one "
            f"of {list(SPECS[name].bandwidths)} kbps); the encodec package would silently use all "
            f"{SPECS[name].max_codebooks} codebooks"
        )
    if bandwidth is not None:
        k = round(bandwidth / per)
        if not math.isclose(k * per, bandwidth) or k not in supported:
            raise ValueError(
                f"{name} was trained for bandwidths {list(SPECS[name].bandwidths)} kbps, got "
                f"{bandwidth}"
            )
        if num_codebooks is not None and num_codebooks != k:
            raise ValueError(f"bandwidth {bandwidth} kbps means {k} codebooks, not {num_codebooks}")
        return k
    if num_codebooks not in supported:
        raise ValueError(
            f"{name} was trained with {list(supported)} codebooks, got num_codebooks="
            f"{num_codebooks}"
        )
    return int(num_codebooks)


def _read_checkpoint(
    name: str, repository: str | os.PathLike | None, checkpoint: str | None
) -> dict[str, torch.Tensor]:
    """The official state dict, checksum-verified, read without executing code."""
    spec = SPECS[name]
    file_name = checkpoint or spec.checkpoint
    if repository is None:
        url = ROOT_URL + file_name
        try:
            return torch.hub.load_state_dict_from_url(
                url, map_location="cpu", check_hash=True, weights_only=True
            )
        except Exception as e:  # no network, a failed hash: say where to put the file instead
            raise PretrainedWeightsError(
                f"could not download {url} ({e}); without a network, download it elsewhere and "
                "pass repository=<folder holding it>"
            ) from e
    path = Path(repository) / file_name
    if not path.is_file():
        raise PretrainedWeightsError(
            f"{path} does not exist; put the official checkpoint ({ROOT_URL}{file_name}) in "
            f"{repository}"
        )
    match = re.fullmatch(r"[^-]+-([0-9a-f]+)", path.stem)
    if match is None:
        raise PretrainedWeightsError(
            f"{path.name}: a checkpoint name ends in -<sha256 prefix> (as {spec.checkpoint}), so "
            "that the file can be verified"
        )
    expected, actual = match.group(1), sha256_file(path)
    if not actual.startswith(expected):
        raise PretrainedWeightsError(
            f"{path}: checksum mismatch (sha256 {actual[: len(expected)]}..., the name says "
            f"{expected}); the file is corrupt or not the official checkpoint: download "
            f"{ROOT_URL}{spec.checkpoint} again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise PretrainedWeightsError(f"{path}: not a readable weights-only checkpoint ({e})") from e
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def _layer_index(key: str) -> int:
    """The codebook index of a quantizer key (``quantizer.vq.layers.<i>.``), else -1."""
    match = re.match(r"quantizer\.vq\.layers\.(\d+)\.", key)
    return int(match.group(1)) if match else -1


def _make_info(model: PretrainedEncodec, k: int) -> TokenizerInfo:
    return TokenizerInfo(
        modality="audio", kind=EncodecTokenizer.kind, codebook_size=1024, num_codebooks=k,
        sample_rate=model.sample_rate, frame_rate=model.frame_rate,
        tokens_per_second=model.frame_rate * k, input_policy=audio_io.POLICY,
    )  # fmt: skip
