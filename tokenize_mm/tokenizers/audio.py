"""``AudioTokenizer``: the 50 Hz EnCodec-architecture codec on the tokenizer contract.

A clip (path, or a tensor (C, S) / (S,) with its sample rate) is converted by the policy of
``audio_io.py`` (mixed to the model's channels, resampled to its rate), encoded to codes of shape
(K, ceil(S / hop)) — exactly ``info.frame_rate`` frames per second of audio, K residual codebooks
— and decoded back to a float tensor (C, S) at ``info.sample_rate``, trimmed to the encoded length
(``Encoded.extras["num_samples"]``). A clip shorter than one hop is one frame (SEANet pads the
end). ``fit`` trains the codec with Lightning (imported only then) and measures SI-SNR, log-mel
distance and per-codebook usage on held-out clips, kept in ``info``. Weights are safetensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch

from tokenize_mm.tokenizers import audio_io
from tokenize_mm.tokenizers.audio_model import CodecModel
from tokenize_mm.tokenizers.base import (
    Encoded,
    TokenizerInfo,
    check_codes,
    map_batch,
    register_tokenizer,
)
from tokenize_mm.tokenizers.errors import InvalidCodesError, NotFittedError
from tokenize_mm.tokenizers.module_artifact import ModuleTokenizer, hold_out, loss_summary
from tokenize_mm.tokenizers.quantizer import codebook_usage

ARCH_KEYS = (
    "sample_rate", "channels", "ratios", "n_filters", "n_residual_layers", "dimension", "lstm",
    "causal", "num_codebooks", "codebook_size", "codebook_dim", "commitment_weight",
)  # fmt: skip


@register_tokenizer
class AudioTokenizer(ModuleTokenizer):
    """The 50 Hz codec tokenizer. Build one with ``fit`` or ``load``.

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
    """

    model_class = CodecModel
    arch_keys = ARCH_KEYS
    kind: ClassVar[str] = "audio.codec"

    def __init__(
        self,
        model: CodecModel,
        info: TokenizerInfo,
        hparams: dict[str, Any],
        fit_data: dict[str, Any] | None = None,
        chunk_seconds: float = 30.0,
        context_seconds: float = 1.0,
    ):
        self.model = model.eval()
        self._info = info
        self.hparams = dict(hparams)
        self.fit_data = dict(fit_data or {})
        hop, rate = model.hop_length, model.sample_rate
        # Both are whole numbers of frames, so that chunk boundaries fall on frame boundaries.
        self.chunk = max(1, round(chunk_seconds * rate / hop)) * hop
        self.context = max(0, round(context_seconds * rate / hop)) * hop

    def preprocess(self, item: Any, sample_rate: int | None = None) -> torch.Tensor:
        """One clip → float32 (C, S) at the model's rate and channels (``audio_io`` policy)."""
        return audio_io.to_model_input(
            item, sample_rate, target_rate=self.model.sample_rate, channels=self.model.channels
        )

    def encode(self, item: Any, sample_rate: int | None = None) -> Encoded:
        """A path, a ``(tensor, sample_rate)`` pair, or a tensor with ``sample_rate`` → codes
        (K, ceil(S / hop)) and ``extras["num_samples"]`` (S at the model's rate).

        A clip longer than ``chunk_seconds`` is encoded in chunks of that length, each preceded
        by ``context_seconds`` of the audio before it (their frames are dropped): memory is
        bounded by the chunk, and the frame count is exactly that of a one-shot encode. With a
        causal codec without LSTM layers and a context longer than its receptive field, the codes
        equal a one-shot encode (tested); with non-causal convolutions the last frames of each
        chunk can differ, and with LSTM layers any frame can, through the LSTM state.
        """
        wav = self.preprocess(item, sample_rate)
        with torch.inference_mode():
            codes = torch.cat(
                [self._encode_span(wav, start) for start in range(0, wav.shape[-1], self.chunk)],
                dim=-1,
            )
        return Encoded(codes=codes, extras={"num_samples": torch.tensor([wav.shape[-1]])})

    def _encode_span(self, wav: torch.Tensor, start: int) -> torch.Tensor:
        """Codes (K, frames) of ``wav[:, start:start + chunk]``, encoded with left context."""
        left = max(0, start - self.context)
        piece = wav[None, :, left : start + self.chunk].to(self.device)  # (1, C, <= ctx + chunk)
        codes = self.model.encode(piece)[0].cpu()  # (K, frames of the piece)
        return codes[:, (start - left) // self.model.hop_length :].clone()

    def encode_batch(self, items: Sequence[Any]) -> list[Encoded]:
        """Encode clips one after another (identical to ``encode``); errors name the index."""
        return map_batch(self.encode, items)

    def decode(self, encoded: Encoded) -> torch.Tensor:
        """Codes (K, T) → float32 waveform (C, S) at ``info.sample_rate``."""
        check_codes(encoded, self._info)
        with torch.inference_mode():
            wav = self.model.decode(encoded.codes[None].to(self.device))[0].cpu()
        if "num_samples" in encoded.extras:
            n = int(encoded.extras["num_samples"].reshape(-1)[0])
            if self.model.num_frames(n) != encoded.num_steps:
                raise InvalidCodesError(
                    f"extras['num_samples'] = {n} needs {self.model.num_frames(n)} frames, codes "
                    f"have {encoded.num_steps}; were codes and extras taken from different clips?"
                )
            wav = wav[:, :n]
        return wav.clone()

    def decode_batch(self, encoded: Sequence[Encoded]) -> list[torch.Tensor]:
        return map_batch(self.decode, encoded)

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
            max_steps, batch_size, learning_rate, seed: optimisation.
            accelerator, precision: passed to ``lightning.Trainer``.

        Raises:
            InvalidInputError: a clip cannot be used (names the item and its index).
            NotFittedError: there are no training clips.
        """
        from tokenize_mm.tokenizers.audio_fit import train_codec  # Lightning only here

        arch = {
            "sample_rate": sample_rate, "channels": channels, "ratios": [int(r) for r in ratios],
            "n_filters": n_filters, "n_residual_layers": n_residual_layers,
            "dimension": dimension, "lstm": lstm, "causal": causal,
            "num_codebooks": num_codebooks, "codebook_size": codebook_size,
            "codebook_dim": codebook_dim, "commitment_weight": commitment_weight,
        }  # fmt: skip
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
            progress=progress,
        )  # fmt: skip
        model = model.cpu().eval()
        hparams = {**arch, "segment_seconds": segment_seconds, "mel_weight": mel_weight,
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
        """SI-SNR (dB), log-mel L1 distance and per-codebook usage on preprocessed clips (C, S)."""
        from tokenize_mm.tokenizers.audio_metrics import log_mel_distance, si_snr

        snrs, mels, codes = [], [], []
        for wav in clips:
            with torch.inference_mode():
                c = self.model.encode(wav[None].to(self.device))
                y = self.model.decode(c)[0, :, : wav.shape[-1]].cpu()
            snrs.append(si_snr(y, wav))
            mels.append(log_mel_distance(y, wav, self.model.sample_rate))
            codes.append(c[0].cpu())
        all_codes = torch.cat(codes, dim=1)  # (K, sum T)
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


def _make_info(arch: dict[str, Any], metrics: dict[str, float] | None = None) -> TokenizerInfo:
    frame_rate = arch["sample_rate"] / math.prod(int(r) for r in arch["ratios"])
    return TokenizerInfo(
        modality="audio", kind=AudioTokenizer.kind, codebook_size=arch["codebook_size"],
        num_codebooks=arch["num_codebooks"], sample_rate=arch["sample_rate"],
        frame_rate=frame_rate, tokens_per_second=frame_rate * arch["num_codebooks"],
        input_policy=audio_io.POLICY, metrics=metrics or {},
    )  # fmt: skip
