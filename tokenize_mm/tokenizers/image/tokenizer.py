"""``ImageTokenizer``: VQ image patches on the tokenizer contract (docs/architecture.md §4).

An image (path, PIL image or float tensor (C, H, W) in [0, 1]) is converted by the policy of
``image/io.py`` to (3, S, S), encoded to a (S/f) × (S/f) grid of codebook ids, and returned as
codes of shape (1, (S/f)²), row-major. ``decode`` returns a float tensor (3, S, S) in [0, 1].

``fit`` trains the autoencoder of ``image/model.py`` with Lightning (``image/fit.py``, imported
only then), and at the end measures reconstruction PSNR and codebook usage on held-out images,
kept in ``info``. It takes images, paths or a folder; reading a manifest is the caller's job
(``tokenize_mm.cli.common.fit_from_source``), so this layer never imports the data layer. Weights
are saved as safetensors.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from tokenize_mm.tokenizers.arch import (
    arch_dict,
    check_non_negative,
    config_from_hparams,
    with_fsq_grid,
)
from tokenize_mm.tokenizers.base import Encoded, TokenizerInfo, check_codes, map_batch
from tokenize_mm.tokenizers.errors import InvalidInputError, NotFittedError
from tokenize_mm.tokenizers.image import io as image_io
from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel
from tokenize_mm.tokenizers.module_artifact import ModuleTokenizer, hold_out
from tokenize_mm.tokenizers.quant.usage import codebook_usage, warn_if_collapsed
from tokenize_mm.tokenizers.registry import register_tokenizer
from tokenize_mm.tokenizers.threads import one_thread


@register_tokenizer
class ImageTokenizer(ModuleTokenizer):
    """VQ patch tokenizer. Build one with ``fit`` or ``load``.

    Args:
        model: a trained ``VQImageModel``.
        info: its ``TokenizerInfo``.
        hparams: ``{"arch": asdict(VQImageConfig), "fit": fit settings}`` (saved in the
            artifact; an artifact of the earlier flat layout keeps its flat dict).
        fit_data: description of the fit data (saved in the artifact).
        batch_size: images per forward pass in ``encode_batch``/``decode_batch``.
    """

    model_class = VQImageModel
    kind: ClassVar[str] = "image.vq"

    def __init__(
        self,
        model: VQImageModel,
        info: TokenizerInfo,
        hparams: dict[str, Any],
        fit_data: dict[str, Any] | None = None,
        batch_size: int = 32,
    ):
        self.model = model.eval()
        self._info = info
        self.hparams = dict(hparams)
        self.fit_data = dict(fit_data or {})
        self.batch_size = batch_size

    @classmethod
    def arch_config(cls, hparams: dict[str, Any]) -> VQImageConfig:
        return config_from_hparams(VQImageConfig, hparams)

    @classmethod
    def derive_info(cls, model: nn.Module, hparams: dict[str, Any]) -> TokenizerInfo:
        """Image size, grid and codebook size as ``model`` has them."""
        rows, cols = model.grid
        return TokenizerInfo(
            modality="image", kind=cls.kind, codebook_size=model.quantizer.codebook_size,
            num_codebooks=1, image_size=model.image_size, grid=(rows, cols),
            tokens_per_image=rows * cols,
        )  # fmt: skip

    # -- contract --------------------------------------------------------------------------------
    def preprocess(self, item: Any) -> torch.Tensor:
        """One item → float tensor (3, S, S) in [0, 1] (the policy of ``image/io.py``)."""
        return image_io.to_model_input(item, self._info.image_size or 0)

    def encode(self, item: Any) -> Encoded:
        return self.encode_batch([item])[0]

    def encode_batch(self, items: Sequence[Any]) -> list[Encoded]:
        """Encode images in forward passes of ``batch_size``; errors name the batch index."""
        pixels = map_batch(self.preprocess, items)
        out: list[Encoded] = []
        for start in range(0, len(pixels), self.batch_size):
            chunk = torch.stack(pixels[start : start + self.batch_size]).to(self.device)
            with torch.inference_mode(), one_thread(self.device):  # threads.py
                codes = self.model.encode(chunk).cpu()  # (B, h*w)
            out += [Encoded(codes=c.unsqueeze(0).clone()) for c in codes]
        return out

    def decode(self, encoded: Encoded) -> torch.Tensor:
        """Codes (1, (S/f)²) → float tensor (3, S, S) in [0, 1]."""
        return self.decode_batch([encoded])[0]

    def decode_batch(self, encoded: Sequence[Encoded]) -> list[torch.Tensor]:
        steps = self._info.tokens_per_image
        map_batch(lambda e: check_codes(e, self._info, steps=steps), encoded)
        out: list[torch.Tensor] = []
        for start in range(0, len(encoded), self.batch_size):
            codes = torch.stack([e.codes[0] for e in encoded[start : start + self.batch_size]])
            with torch.inference_mode():
                pixels = self.model.decode(codes.to(self.device)).cpu()
            out += list(pixels)
        return out

    # -- fit -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        images: Iterable[Any] | str | os.PathLike,
        *,
        config: VQImageConfig | None = None,
        held_out: Iterable[Any] | None = None,
        max_steps: int = 2000,
        batch_size: int = 16,
        learning_rate: float = 1e-3,
        val_fraction: float = 0.1,
        seed: int = 0,
        autoencoder_warmup: float = 0.0,
        chroma_weight: float = 0.0,
        accelerator: str = "cpu",
        precision: str | None = None,
        progress: bool = False,
        description: str | None = None,
        **arch: Any,
    ) -> ImageTokenizer:
        """Train a VQ image tokenizer.

        Args:
            images: an iterable of images (paths, PIL images, float tensors) or a folder of
                image files. To fit on a manifest's records, read it with ``ManifestSource`` and
                pass its images, or use ``tokenize_mm.cli.common.fit_from_source`` (which holds
                out the records outside the fit split).
            config: the architecture (``VQImageConfig``; ``None``: its defaults).
            held_out: images for the final PSNR and codebook-usage measurement; when ``None``,
                a ``val_fraction`` of ``images`` is held out.
            max_steps, batch_size, learning_rate, seed: optimisation.
            autoencoder_warmup: fraction of ``max_steps`` trained as a plain autoencoder before
                quantization starts, so that the quantizer starts on warmed-up latents (a VQ
                codebook is k-means initialised on them); 0 (default) quantizes from step 0.
            chroma_weight: weight of an extra L1 + MSE loss on the colour differences B − Y and
                R − Y (``image/fit.py``), so that a short fit keeps the hue of small shapes; 0
                (default): the RGB loss alone.
            accelerator, precision: passed to ``lightning.Trainer`` (e.g. ``"gpu"``, ``"bf16-mixed"``).
            progress: show Lightning's progress bar.
            description: free text stored in the artifact's ``fit_data``.
            **arch: ``VQImageConfig`` fields that replace those of ``config``
                (``fit(images, image_size=64)``).

        Raises:
            InvalidInputError: an architecture field is out of range (names it), an image cannot
                be read (names the item), or ``images`` is a path that is not a folder (a
                ``.jsonl`` manifest included).
            TypeError: a keyword is neither a fit setting nor a ``VQImageConfig`` field.
            NotFittedError: there are no training images.
        """
        from tokenize_mm.tokenizers.image.fit import train_vq  # Lightning only here

        config = with_fsq_grid(dataclasses.replace(config or VQImageConfig(), **arch))  # validates
        config = dataclasses.replace(config, block_norm=config.norm_in_use)  # saved resolved
        torch.manual_seed(seed)
        model = VQImageModel(config)
        train_items, held_items, source = _resolve_images(images, held_out)
        train = _load_u8(train_items, config.image_size)
        held = _load_u8(held_items, config.image_size) if held_items is not None else None
        if len(train) == 0:
            raise NotFittedError("ImageTokenizer.fit got no training images")
        if held is None:
            train_idx, held_idx = hold_out(range(len(train)), val_fraction, seed)
            held, train = train[held_idx], train[train_idx]
        if not isinstance(autoencoder_warmup, (int, float)) or not 0 <= autoencoder_warmup < 1:
            raise InvalidInputError(
                "must be a fraction in [0, 1)", item=f"autoencoder_warmup={autoencoder_warmup!r}"
            )
        check_non_negative("chroma_weight", chroma_weight)
        if not math.isfinite(chroma_weight):
            raise InvalidInputError("must be finite", item=f"chroma_weight={chroma_weight!r}")
        record = train_vq(
            model, train, max_steps=max_steps, batch_size=batch_size,
            learning_rate=learning_rate, seed=seed, accelerator=accelerator,
            precision=precision, progress=progress,
            warmup_steps=int(autoencoder_warmup * max_steps), chroma_weight=float(chroma_weight),
        )  # fmt: skip
        model = model.cpu().eval()
        model.calibrate(train)
        hparams = {
            "arch": arch_dict(config),
            "fit": {"max_steps": max_steps, "batch_size": batch_size, "learning_rate": learning_rate,
                    "val_fraction": val_fraction, "seed": seed,
                    "autoencoder_warmup": autoencoder_warmup, "chroma_weight": chroma_weight,
                    "precision": precision},
        }  # fmt: skip
        fit_data = {
            "source": source, "num_train": len(train), "num_held_out": len(held),
            "description": description, **record.fit_data(),
        }  # fmt: skip
        tok = cls(model, _make_info(config), hparams, fit_data)
        metrics = tok.evaluate(held) if len(held) else {}
        tok._info = _make_info(config, metrics)
        warn_if_collapsed(metrics, config.codebook_size, f"on {len(held)} held-out images")
        return tok

    def evaluate(self, pixels_u8: torch.Tensor) -> dict[str, float]:
        """PSNR (dB, mean over images) and codebook usage on (N, 3, S, S) uint8 images."""
        psnrs, codes = [], []
        for start in range(0, len(pixels_u8), self.batch_size):
            x = pixels_u8[start : start + self.batch_size].float().div(255.0).to(self.device)
            with torch.inference_mode():
                with one_thread(self.device):  # the codes encode_batch gives (threads.py)
                    c = self.model.encode(x)
                y = self.model.decode(c)
            mse = (y - x).pow(2).flatten(1).mean(1).clamp_min(1e-10)
            psnrs.append(-10.0 * torch.log10(mse).cpu())
            codes.append(c.cpu())
        usage = codebook_usage(torch.cat(codes).flatten(), self._info.codebook_size)
        return {
            "psnr_db": float(torch.cat(psnrs).mean()),
            "perplexity": float(usage["perplexity"]),
            "used_fraction": float(usage["used_fraction"]),
            "num_eval_images": float(len(pixels_u8)),
        }

    def __repr__(self) -> str:
        i = self._info
        return f"ImageTokenizer(image_size={i.image_size}, grid={i.grid}, codebook_size={i.codebook_size})"


def _make_info(config: VQImageConfig, metrics: dict[str, float] | None = None) -> TokenizerInfo:
    rows, cols = config.grid
    return TokenizerInfo(
        modality="image", kind=ImageTokenizer.kind, codebook_size=config.codebook_size,
        num_codebooks=1, image_size=config.image_size, grid=(rows, cols),
        tokens_per_image=rows * cols,
        input_policy=image_io.POLICY, metrics=metrics or {},
    )  # fmt: skip


def _load_u8(items: Iterable[Any], size: int) -> torch.Tensor:
    """Preprocess images into one (N, 3, S, S) uint8 tensor; errors name the item's index."""
    pixels = map_batch(lambda it: image_io.to_model_input(it, size), items)
    if not pixels:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8)
    return (torch.stack(pixels) * 255.0).round_().to(torch.uint8)


def _resolve_images(
    images: Iterable[Any] | str | os.PathLike, held_out: Iterable[Any] | None
) -> tuple[list[Any], list[Any] | None, dict[str, Any]]:
    """Turn the ``images`` argument of ``fit`` into (train items, held-out items, description)."""
    held = list(held_out) if held_out is not None else None
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_dir():
            return image_io.iter_image_files(path), held, {"folder": str(path)}
        hint = (
            "; read a manifest with tokenize_mm.data.ManifestSource and pass its images, or use "
            "tokenize_mm.cli.common.fit_from_source"
            if path.suffix == ".jsonl"
            else ""
        )
        raise InvalidInputError(
            f"expected a folder of images (or pass an iterable of images){hint}", item=str(path)
        )
    return list(images), held, {"iterable": True}
