"""``AudioTokenizer``: the 50 Hz EnCodec-architecture codec on the tokenizer contract.

Two backends share this class's input policy, chunking, batching and decoding: the 50 Hz codec
that ``fit`` trains (kind ``audio.codec``), and pretrained EnCodec 24/48 kHz through
``AudioTokenizer.from_pretrained`` (``audio_pretrained.py``, kind ``audio.encodec``).

A clip (path, or a tensor (C, S) / (S,) with its sample rate) is converted by the policy of
``audio_io.py`` (mixed to the model's channels, resampled to its rate), encoded to codes of shape
(K, ceil(S / hop)) — exactly ``info.frame_rate`` frames per second of audio, K residual codebooks
— and decoded back to a float tensor (C, S) at ``info.sample_rate``, trimmed to the encoded length
(``Encoded.extras["num_samples"]``). The clip is zero-padded to whole frames first, so a clip
shorter than one hop is one frame. ``fit`` trains the codec with Lightning (imported only then) and measures SI-SNR, log-mel
distance and per-codebook usage on held-out clips, kept in ``info``. Weights are safetensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from tokenize_mm.tokenizers import audio_io
from tokenize_mm.tokenizers.audio_batch import encode_pieces, folded_copy
from tokenize_mm.tokenizers.audio_model import CodecModel
from tokenize_mm.tokenizers.base import (
    Encoded,
    TokenizerInfo,
    check_codes,
    map_batch,
    register_tokenizer,
)
from tokenize_mm.tokenizers.errors import InvalidCodesError, InvalidInputError, NotFittedError
from tokenize_mm.tokenizers.module_artifact import ModuleTokenizer, hold_out, loss_summary
from tokenize_mm.tokenizers.quantizer import codebook_usage

ARCH_KEYS = (
    "sample_rate", "channels", "ratios", "n_filters", "n_residual_layers", "dimension", "lstm",
    "causal", "num_codebooks", "codebook_size", "codebook_dim", "commitment_weight",
)  # fmt: skip


@register_tokenizer
class AudioTokenizer(ModuleTokenizer):
    """The 50 Hz codec tokenizer. Build one with ``fit``, ``load`` or ``from_pretrained``.

    Args:
        model: a ``CodecModel``.
        info: its ``TokenizerInfo``.
        hparams: architecture and fit hyper-parameters (saved in the artifact).
        fit_data: description of the fit data (saved in the artifact).
        chunk_seconds: clips longer than this are encoded chunk by chunk, so that memory stays
            bounded for recordings of any length (see ``encode``).
        context_seconds: audio before each chunk that the encoder sees and whose frames are
            dropped, so that frames near a chunk boundary have the left context of a one-shot
            encode.
        batch_seconds: most audio (pieces × the longest) that ``encode_batch`` puts in one
            forward pass; ``None``: 60 s on the CPU (where larger batches gain nothing), 300 s on
            an accelerator (about 2 GB per activation of the full-width encoder's first layers).
    """

    model_class = CodecModel
    arch_keys = ARCH_KEYS
    kind: ClassVar[str] = "audio.codec"

    def __init__(
        self,
        model: nn.Module,
        info: TokenizerInfo,
        hparams: dict[str, Any],
        fit_data: dict[str, Any] | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 1.0,
        batch_seconds: float | None = None,
    ):
        self.model = model.eval()
        self._info = info
        self.hparams = dict(hparams)
        self.fit_data = dict(fit_data or {})
        hop, rate = model.hop_length, model.sample_rate
        # Both are whole numbers of frames, so that chunk boundaries fall on frame boundaries.
        self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
        self.context = max(0, round(context_seconds * rate / hop)) * hop
        self.batch_seconds = batch_seconds
        self._folded: nn.Module | None = None

    @classmethod
    def derive_info(cls, model: nn.Module, hparams: dict[str, Any]) -> TokenizerInfo:
        """Sample rate, frame rate (rate / hop) and codebooks as ``model`` has them."""
        k = model.quantizer.num_codebooks
        frame_rate = model.sample_rate / model.hop_length
        return TokenizerInfo(
            modality="audio", kind=cls.kind, codebook_size=model.quantizer.layers[0].codebook_size,
            num_codebooks=k, sample_rate=model.sample_rate, frame_rate=frame_rate,
            tokens_per_second=frame_rate * k,
        )  # fmt: skip

    @property
    def batch_samples(self) -> int:
        """Most samples (pieces × the longest) in one forward pass of ``encode_batch``."""
        seconds = self.batch_seconds
        if seconds is None:
            seconds = 60.0 if self.device.type == "cpu" else 300.0
        return max(self.chunk + self.context, round(seconds * self.model.sample_rate))

    @property
    def causal(self) -> bool:
        """Whether the encoder's convolutions are causal (pieces of any length then batch)."""
        return bool(self.hparams.get("causal", True))

    def preprocess(self, item: Any, sample_rate: int | None = None) -> torch.Tensor:
        """One clip → float32 (C, S) at the model's rate and channels (``audio_io`` policy)."""
        return audio_io.to_model_input(
            item, sample_rate, target_rate=self.model.sample_rate, channels=self.model.channels
        )

    def encode(self, item: Any, sample_rate: int | None = None) -> Encoded:
        """A path, a ``(tensor, sample_rate)`` pair, or a tensor with ``sample_rate`` → codes
        (K, ceil(S / hop)) and ``extras["num_samples"]`` (S at the model's rate).

        The clip is zero-padded at the end to whole frames (a clip shorter than one frame is one
        frame). A clip longer than ``chunk_seconds`` is encoded in chunks of that length, each
        preceded by ``context_seconds`` of the audio before it (their frames are dropped): memory
        is bounded by the chunk, and the frame count is exactly that of a one-shot encode. With a
        causal codec without LSTM layers and a context longer than its receptive field, the codes
        equal a one-shot encode (tested); with non-causal convolutions the last frames of each
        chunk can differ, and with LSTM layers any frame can, through the LSTM state.
        """
        return self._encode_wavs([self.preprocess(item, sample_rate)])[0]

    def encode_batch(self, items: Sequence[Any]) -> list[Encoded]:
        """Encode many clips in few batched forward passes (``audio_batch.py``), with the codes
        that ``encode`` gives each of them; errors name the index of the item at fault."""
        out: list[Encoded] = []
        pending: list[torch.Tensor] = []
        pending_samples, bound = 0, 4 * self.batch_samples  # bound the memory held at once
        for wav in map_batch(self.preprocess, items):
            pending.append(wav)
            pending_samples += wav.shape[-1]
            if pending_samples >= bound:
                out += self._encode_wavs(pending)
                pending, pending_samples = [], 0
        return out + (self._encode_wavs(pending) if pending else [])

    def _pieces(self, wav: torch.Tensor) -> tuple[list[tuple[torch.Tensor, int]], Any]:
        """A clip (C, S) zero-padded to whole frames → (pieces (C, L) with the number of their
        leading frames to drop, per-segment scales or ``None``)."""
        hop = self.model.hop_length
        padded = F.pad(wav, (0, -wav.shape[-1] % hop))
        spans = []
        for start in range(0, padded.shape[-1], self.chunk):
            left = max(0, start - self.context)
            spans.append((padded[:, left : start + self.chunk], (start - left) // hop))
        return spans, None

    def _encode_wavs(self, wavs: Sequence[torch.Tensor]) -> list[Encoded]:
        """Preprocessed clips (C, S_i) → one ``Encoded`` each, all pieces encoded together."""
        pieces, plan = [], []
        for wav in wavs:
            spans, scale = self._pieces(wav)
            plan.append((wav.shape[-1], [drop for _, drop in spans], scale))
            pieces += [piece for piece, _ in spans]
        codes = encode_pieces(
            self.inference_model(), pieces, causal=self.causal,
            batch_samples=self.batch_samples, batch_convs=self.device.type != "cpu",
        )  # fmt: skip
        out, k = [], 0
        for num_samples, drops, scale in plan:
            parts = [codes[k + j][:, drop:] for j, drop in enumerate(drops)]
            k += len(drops)
            extras = {"num_samples": torch.tensor([num_samples])}
            if scale is not None:
                extras["scale"] = scale
            out.append(Encoded(codes=torch.cat(parts, dim=-1), extras=extras))
        return out

    def inference_model(self) -> nn.Module:
        """The model with weight normalisation folded into plain weights (``audio_batch``),
        built on first use and again after the model moves to another device."""
        folded = self._folded
        if folded is None or next(folded.parameters()).device != self.device:
            arch = {k: self.hparams[k] for k in self.arch_keys if k in self.hparams}
            self._folded = folded_copy(self.model, lambda: self.model_class(**arch))
        return self._folded

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_folded": None}  # rebuilt on first use

    def decode(self, encoded: Encoded) -> torch.Tensor:
        """Codes (K, T) → float32 waveform (C, S) at ``info.sample_rate``."""
        check_codes(encoded, self._info)
        if encoded.num_steps == 0:
            raise InvalidCodesError(
                "codes have 0 frames; encode gives every clip at least one, so these codes were "
                "cut or built by hand: pass codes of shape (K, T) with T >= 1"
            )
        n = _num_samples(encoded)
        if n is not None and self.model.num_frames(n) != encoded.num_steps:
            raise InvalidCodesError(
                f"extras['num_samples'] = {n} needs {self.model.num_frames(n)} frames, codes "
                f"have {encoded.num_steps}; were codes and extras taken from different clips?"
            )
        with torch.inference_mode():
            wav = self._decode_codes(encoded).cpu()
        return (wav[:, :n] if n is not None else wav).clone()

    def _decode_codes(self, encoded: Encoded) -> torch.Tensor:
        """Checked codes (K, T) → waveform (C, T · hop) on the model's device."""
        return self.inference_model().decode(encoded.codes[None].to(self.device))[0]

    def decode_batch(self, encoded: Sequence[Encoded]) -> list[torch.Tensor]:
        return map_batch(self.decode, encoded)

    @classmethod
    def from_pretrained(
        cls,
        name: str,
        *,
        num_codebooks: int | None = None,
        bandwidth: float | None = None,
        repository: str | os.PathLike | None = None,
        checkpoint: str | None = None,
    ) -> AudioTokenizer:
        """Pretrained EnCodec (``"encodec_24khz"`` or ``"encodec_48khz"``) with an explicit number
        of codebooks; see ``EncodecTokenizer.from_pretrained``."""
        from tokenize_mm.tokenizers.audio_pretrained import EncodecTokenizer

        return EncodecTokenizer.from_pretrained(
            name, num_codebooks=num_codebooks, bandwidth=bandwidth, repository=repository,
            checkpoint=checkpoint,
        )  # fmt: skip

    # -- fit -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        clips: Iterable[Any] | str | os.PathLike,
        *,
        held_out: Iterable[Any] | None = None,
        sample_rate: int = 24_000,
        channels: int = 1,
        ratios: Sequence[int] = (8, 5, 4, 3),
        n_filters: int = 32,
        n_residual_layers: int = 1,
        dimension: int = 128,
        lstm: int = 2,
        causal: bool = True,
        num_codebooks: int = 1,
        codebook_size: int = 1024,
        codebook_dim: int | None = None,
        commitment_weight: float = 1.0,
        segment_seconds: float = 1.0,
        mel_weight: float = 1.0,
        adversarial_weight: float = 0.0,
        feature_weight: float = 3.0,
        disc_filters: int = 32,
        disc_start_step: int = 0,
        max_steps: int = 2000,
        batch_size: int = 16,
        learning_rate: float = 3e-4,
        val_fraction: float = 0.1,
        seed: int = 0,
        accelerator: str = "cpu",
        precision: str | None = None,
        progress: bool = False,
        description: str | None = None,
    ) -> AudioTokenizer:
        """Train the codec on clips (paths or ``(tensor, sample_rate)`` pairs) or a folder.

        Args:
            clips: the training clips, or a folder of audio files.
            held_out: clips for the final SI-SNR, mel distance and codebook usage; when ``None``
                a ``val_fraction`` of ``clips`` is held out.
            sample_rate, channels, ratios, ...: architecture (see ``CodecModel``).
            segment_seconds: length of the random training crops.
            mel_weight: weight of the multi-scale mel loss against the waveform L1.
            adversarial_weight: weight of the hinge loss against the ``encodec`` package's
                multi-scale STFT discriminator (EnCodec: 3); ``0`` (default) trains without it.
            feature_weight: weight of the discriminator's relative feature-matching loss (EnCodec:
                3), with ``adversarial_weight > 0`` only.
            disc_filters: the discriminator's width (EnCodec: 32).
            disc_start_step: codec steps on reconstruction only before the discriminator starts.
            max_steps, batch_size, learning_rate, seed: optimisation.
            accelerator, precision: passed to ``lightning.Trainer``.

        Raises:
            InvalidInputError: a clip cannot be used (names the item and its index).
            NotFittedError: there are no training clips.
        """
        from tokenize_mm.tokenizers.audio_fit import train_codec  # Lightning only here

        arch = {
            "sample_rate": sample_rate, "channels": channels, "ratios": list(ratios),
            "n_filters": n_filters, "n_residual_layers": n_residual_layers,
            "dimension": dimension, "lstm": lstm, "causal": causal,
            "num_codebooks": num_codebooks, "codebook_size": codebook_size,
            "codebook_dim": codebook_dim, "commitment_weight": commitment_weight,
        }  # fmt: skip
        _check_arch(arch)
        torch.manual_seed(seed)
        model = CodecModel(**arch)
        if isinstance(clips, (str, os.PathLike)):
            clips = audio_io.iter_audio_files(clips)

        def prep(clip: Any) -> torch.Tensor:
            return audio_io.to_model_input(clip, None, target_rate=sample_rate, channels=channels)

        train = map_batch(prep, clips)
        held = map_batch(prep, held_out) if held_out is not None else None
        if not train:
            raise NotFittedError("AudioTokenizer.fit got no training clips")
        if held is None:
            train, held = hold_out(train, val_fraction, seed)
        history = train_codec(
            model, train, segment=max(model.hop_length, round(segment_seconds * sample_rate)),
            max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
            mel_weight=mel_weight, seed=seed, accelerator=accelerator, precision=precision,
            progress=progress, adversarial_weight=adversarial_weight,
            feature_weight=feature_weight, disc_filters=disc_filters,
            disc_start_step=disc_start_step,
        )  # fmt: skip
        model = model.cpu().eval()
        hparams = {**arch, "segment_seconds": segment_seconds, "mel_weight": mel_weight,
                   "adversarial_weight": adversarial_weight, "feature_weight": feature_weight,
                   "disc_filters": disc_filters, "disc_start_step": disc_start_step,
                   "max_steps": max_steps, "batch_size": batch_size,
                   "learning_rate": learning_rate, "seed": seed, "precision": precision}  # fmt: skip
        fit_data = {
            "num_train": len(train), "num_held_out": len(held), "description": description,
            "train_seconds": sum(c.shape[-1] for c in train) / sample_rate,
            **loss_summary(history),
        }  # fmt: skip
        tok = cls(model, _make_info(arch), hparams, fit_data)
        tok._info = _make_info(arch, tok.evaluate(held) if held else {})
        return tok

    def evaluate(self, clips: Sequence[torch.Tensor]) -> dict[str, float]:
        """SI-SNR (dB), log-mel L1 distance and per-codebook usage on preprocessed clips (C, S),
        each encoded and decoded as ``encode`` and ``decode`` do."""
        from tokenize_mm.tokenizers.audio_metrics import log_mel_distance, si_snr

        snrs, mels = [], []
        encoded = self._encode_wavs(list(clips))
        for wav, enc in zip(clips, encoded, strict=True):
            y = self.decode(enc)
            snrs.append(si_snr(y, wav))
            mels.append(log_mel_distance(y, wav, self.model.sample_rate))
        all_codes = torch.cat([enc.codes for enc in encoded], dim=1)  # (K, sum T)
        out = {
            "si_snr_db": sum(snrs) / len(snrs),
            "mel_distance": sum(mels) / len(mels),
            "num_eval_clips": float(len(clips)),
        }
        for k in range(all_codes.shape[0]):
            usage = codebook_usage(all_codes[k], self._info.codebook_size)
            out[f"perplexity_{k}"] = float(usage["perplexity"])
            out[f"used_fraction_{k}"] = float(usage["used_fraction"])
        return out

    def __repr__(self) -> str:
        i = self._info
        return f"AudioTokenizer(sample_rate={i.sample_rate}, frame_rate={i.frame_rate}, K={i.num_codebooks})"


def _num_samples(encoded: Encoded) -> int | None:
    """``extras["num_samples"]`` as an int (``None`` if absent): one whole number >= 1 in an
    integer tensor; a fractional, empty or multi-valued one is refused, never truncated."""
    value = encoded.extras.get("num_samples")
    if value is None:
        return None
    if torch.is_floating_point(value) or value.dtype == torch.bool or value.numel() != 1:
        raise InvalidCodesError(
            f"extras['num_samples'] must hold one whole number of samples in an integer tensor, "
            f"got {value.dtype} of shape {tuple(value.shape)}; use torch.tensor([n])"
        )
    n = int(value.reshape(-1)[0])
    if n < 1:
        raise InvalidCodesError(f"extras['num_samples'] = {n}; a clip has at least one sample")
    return n


def _check_arch(arch: dict[str, Any]) -> None:
    """Refuse fit arguments that build no codec, naming them (``InvalidInputError``)."""
    for key in ("sample_rate", "channels", "num_codebooks", "codebook_size", "n_filters"):
        value = arch[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError("must be a positive int", item=f"{key}={value!r}")
    if arch["channels"] not in (1, 2):
        raise InvalidInputError(
            "must be 1 (mono) or 2 (stereo)", item=f"channels={arch['channels']}"
        )
    ratios = arch["ratios"]
    if not ratios or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in ratios):
        raise InvalidInputError("must be a list of positive ints", item=f"ratios={ratios}")


def _make_info(arch: dict[str, Any], metrics: dict[str, float] | None = None) -> TokenizerInfo:
    frame_rate = arch["sample_rate"] / math.prod(int(r) for r in arch["ratios"])
    return TokenizerInfo(
        modality="audio", kind=AudioTokenizer.kind, codebook_size=arch["codebook_size"],
        num_codebooks=arch["num_codebooks"], sample_rate=arch["sample_rate"],
        frame_rate=frame_rate, tokens_per_second=frame_rate * arch["num_codebooks"],
        input_policy=audio_io.POLICY, metrics=metrics or {},
    )  # fmt: skip
