"""``AudioTokenizer``: the 50 Hz EnCodec-architecture codec that tokenize_mm fits (kind
``audio.codec``).

Its encode/decode path is ``CodecTokenizer``'s (``codec.py``), shared with its sibling
``EncodecTokenizer`` (``pretrained.py``, kind ``audio.encodec``), which
``AudioTokenizer.from_pretrained`` builds. The model is ``CodecModel`` (``model.py``): SEANet,
hop 480 at 24 kHz, so exactly 50 frames per second. ``fit`` trains it with Lightning (``fit.py``,
imported only then) and measures SI-SNR, log-mel distance and per-codebook usage on held-out
clips, kept in ``info``. Weights are safetensors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import torch
from torch import nn

from tokenize_mm.tokenizers.audio import io as audio_io
from tokenize_mm.tokenizers.audio.codec import CodecTokenizer
from tokenize_mm.tokenizers.audio.model import CodecModel
from tokenize_mm.tokenizers.audio.pretrained import EncodecTokenizer
from tokenize_mm.tokenizers.base import TokenizerInfo, map_batch
from tokenize_mm.tokenizers.errors import InvalidInputError, NotFittedError
from tokenize_mm.tokenizers.module_artifact import hold_out, loss_summary
from tokenize_mm.tokenizers.registry import register_tokenizer

ARCH_KEYS = (
    "sample_rate", "channels", "ratios", "n_filters", "n_residual_layers", "dimension", "lstm",
    "causal", "num_codebooks", "codebook_size", "codebook_dim", "commitment_weight",
)  # fmt: skip


@register_tokenizer
class AudioTokenizer(CodecTokenizer):
    """The 50 Hz codec tokenizer. Build one with ``fit`` or ``load``; ``from_pretrained`` gives
    its sibling ``EncodecTokenizer``. Constructor arguments: see ``CodecTokenizer``."""

    model_class = CodecModel
    arch_keys = ARCH_KEYS
    kind: ClassVar[str] = "audio.codec"

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
        """Pretrained EnCodec (``"encodec_24khz"`` or ``"encodec_48khz"``) with an explicit number
        of codebooks: forwards to ``EncodecTokenizer.from_pretrained``, which builds the sibling
        class (kind ``audio.encodec``). ``pretrained.py`` does not import this module: no cycle."""
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
        from tokenize_mm.tokenizers.audio.fit import train_codec  # Lightning only here

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

    def __repr__(self) -> str:
        i = self._info
        return f"AudioTokenizer(sample_rate={i.sample_rate}, frame_rate={i.frame_rate}, K={i.num_codebooks})"


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
