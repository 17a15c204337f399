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

import dataclasses
import os
from collections.abc import Iterable
from typing import Any, ClassVar

import torch
from torch import nn

from tokenize_mm.tokenizers.arch import arch_dict, config_from_hparams, with_fsq_grid
from tokenize_mm.tokenizers.audio import io as audio_io
from tokenize_mm.tokenizers.audio.codec import CodecTokenizer
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.pretrained import EncodecTokenizer
from tokenize_mm.tokenizers.base import TokenizerInfo, map_batch
from tokenize_mm.tokenizers.errors import InvalidInputError, NotFittedError
from tokenize_mm.tokenizers.module_artifact import hold_out
from tokenize_mm.tokenizers.quant.usage import warn_if_collapsed
from tokenize_mm.tokenizers.registry import register_tokenizer


@register_tokenizer
class AudioTokenizer(CodecTokenizer):
    """The 50 Hz codec tokenizer. Build one with ``fit`` or ``load``; ``from_pretrained`` gives
    its sibling ``EncodecTokenizer``. Constructor arguments: see ``CodecTokenizer``; its
    ``hparams`` are ``{"arch": asdict(CodecConfig), "fit": fit settings}`` (an artifact of the
    earlier flat layout keeps its flat dict)."""

    model_class = CodecModel
    kind: ClassVar[str] = "audio.codec"

    @classmethod
    def arch_config(cls, hparams: dict[str, Any]) -> CodecConfig:
        return config_from_hparams(CodecConfig, hparams)

    @property
    def causal(self) -> bool:
        return self.model.config.causal

    @classmethod
    def derive_info(cls, model: nn.Module, hparams: dict[str, Any]) -> TokenizerInfo:
        """Sample rate, frame rate (rate / hop) and codebooks as ``model`` has them."""
        k = model.quantizer.num_codebooks
        frame_rate = model.sample_rate / model.hop_length
        return TokenizerInfo(
            modality="audio", kind=cls.kind, codebook_size=model.quantizer.codebook_size,
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
        config: CodecConfig | None = None,
        held_out: Iterable[Any] | None = None,
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
        autoencoder_warmup: float = 0.0,
        accelerator: str = "cpu",
        precision: str | None = None,
        progress: bool = False,
        description: str | None = None,
        **arch: Any,
    ) -> AudioTokenizer:
        """Train the codec on clips (paths or ``(tensor, sample_rate)`` pairs) or a folder.

        Args:
            clips: the training clips, or a folder of audio files.
            config: the architecture (``CodecConfig``; ``None``: its defaults).
            held_out: clips for the final SI-SNR, mel distance and codebook usage; when ``None``
                a ``val_fraction`` of ``clips`` is held out.
            segment_seconds: length of the random training crops.
            mel_weight: weight of the multi-scale mel loss against the waveform L1.
            adversarial_weight: weight of the hinge loss against the ``encodec`` package's
                multi-scale STFT discriminator (EnCodec: 3); ``0`` (default) trains without it.
            feature_weight: weight of the discriminator's relative feature-matching loss (EnCodec:
                3), with ``adversarial_weight > 0`` only.
            disc_filters: the discriminator's width (EnCodec: 32).
            disc_start_step: codec steps on reconstruction only before the discriminator starts.
            max_steps, batch_size, learning_rate, seed: optimisation.
            autoencoder_warmup: fraction of ``max_steps`` trained as a plain autoencoder before
                quantization starts, so that the quantizer starts on warmed-up latents (a VQ
                codebook is k-means initialised on them); 0 (default) quantizes from step 0.
            accelerator, precision: passed to ``lightning.Trainer``.
            **arch: ``CodecConfig`` fields that replace those of ``config``
                (``fit(clips, n_filters=8)``).

        Raises:
            InvalidInputError: an architecture field is out of range (names it), or a clip
                cannot be used (names the item and its index).
            TypeError: a keyword is neither a fit setting nor a ``CodecConfig`` field.
            NotFittedError: there are no training clips.
        """
        from tokenize_mm.tokenizers.audio.fit import train_codec  # Lightning only here

        config = with_fsq_grid(dataclasses.replace(config or CodecConfig(), **arch))  # validates it
        sample_rate = config.sample_rate
        torch.manual_seed(seed)
        model = CodecModel(config)
        if isinstance(clips, (str, os.PathLike)):
            clips = audio_io.iter_audio_files(clips)

        def prep(clip: Any) -> torch.Tensor:
            return audio_io.to_model_input(
                clip, None, target_rate=sample_rate, channels=config.channels
            )

        train = map_batch(prep, clips)
        held = map_batch(prep, held_out) if held_out is not None else None
        if not train:
            raise NotFittedError("AudioTokenizer.fit got no training clips")
        if held is None:
            train, held = hold_out(train, val_fraction, seed)
        if not isinstance(autoencoder_warmup, (int, float)) or not 0 <= autoencoder_warmup < 1:
            raise InvalidInputError(
                "must be a fraction in [0, 1)", item=f"autoencoder_warmup={autoencoder_warmup!r}"
            )
        record = train_codec(
            model, train, segment=max(model.hop_length, round(segment_seconds * sample_rate)),
            max_steps=max_steps, batch_size=batch_size, learning_rate=learning_rate,
            mel_weight=mel_weight, seed=seed, accelerator=accelerator, precision=precision,
            progress=progress, adversarial_weight=adversarial_weight,
            feature_weight=feature_weight, disc_filters=disc_filters,
            disc_start_step=disc_start_step, warmup_steps=int(autoencoder_warmup * max_steps),
        )  # fmt: skip
        model = model.cpu().eval()
        model.calibrate(train)
        hparams = {
            "arch": arch_dict(config),
            "fit": {"segment_seconds": segment_seconds, "mel_weight": mel_weight,
                    "adversarial_weight": adversarial_weight, "feature_weight": feature_weight,
                    "disc_filters": disc_filters, "disc_start_step": disc_start_step,
                    "max_steps": max_steps, "batch_size": batch_size,
                    "learning_rate": learning_rate, "val_fraction": val_fraction, "seed": seed,
                    "autoencoder_warmup": autoencoder_warmup, "precision": precision},
        }  # fmt: skip
        fit_data = {
            "num_train": len(train), "num_held_out": len(held), "description": description,
            "train_seconds": sum(c.shape[-1] for c in train) / sample_rate,
            **record.fit_data(),
        }  # fmt: skip
        tok = cls(model, _make_info(config), hparams, fit_data)
        tok._info = _make_info(config, tok.evaluate(held) if held else {})
        warn_if_collapsed(tok._info.metrics, config.codebook_size, f"on {len(held)} held-out clips")
        return tok

    def __repr__(self) -> str:
        i = self._info
        return f"AudioTokenizer(sample_rate={i.sample_rate}, frame_rate={i.frame_rate}, K={i.num_codebooks})"


def _make_info(config: CodecConfig, metrics: dict[str, float] | None = None) -> TokenizerInfo:
    frame_rate = config.frame_rate
    return TokenizerInfo(
        modality="audio", kind=AudioTokenizer.kind, codebook_size=config.codebook_size,
        num_codebooks=config.num_codebooks, sample_rate=config.sample_rate,
        frame_rate=frame_rate, tokens_per_second=frame_rate * config.num_codebooks,
        input_policy=audio_io.POLICY, metrics=metrics or {},
    )  # fmt: skip
