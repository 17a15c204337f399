"""Shared pieces of the command-line entry points: config location, fitting from a source, tables.

The file-in, file-out loop of ``tmm-encode`` and ``tmm-decode`` is in ``cli/files.py``.

Configs live only here and in ``conf/``: below ``cli/`` everything takes flat typed arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tokenize_mm.cli import paths, schemas  # noqa: F401  (register tmm.cache_dir and arch/)
from tokenize_mm.data import AudioRef, BuiltinSource, Example, iter_items
from tokenize_mm.tokenizers.base import TokenizerInfo


def config_dir() -> str:
    """The ``conf/`` folder: the checkout's own, else the copy packaged as ``tokenize_mm/conf``."""
    checkout = paths.checkout_root()
    if checkout is not None:
        return str(checkout / "conf")
    packaged = Path(__file__).resolve().parents[1] / "conf"
    if (packaged / "train.yaml").is_file():
        return str(packaged)
    raise FileNotFoundError("tokenize_mm configs not found (expected conf/ beside the package)")


def fit_from_source(
    fit: Callable[..., Any],
    modality: str,
    source: Iterable[Example],
    fit_split: str = "train",
    eval_split: str | None = None,
):
    """Fit a tokenizer on the ``fit_split`` examples of ``source``.

    For images and audio, the ``eval_split`` examples (default: all outside ``fit_split``) are the held-out
    set for PSNR and codebook usage.
    """
    # a built-in source renders only the fitted modality's items
    examples = list(source.rendering((modality,)) if isinstance(source, BuiltinSource) else source)
    train = [ex for ex in examples if ex.split == fit_split]
    held = [ex for ex in examples if ex.split != fit_split and eval_split in (None, ex.split)]
    kwargs: dict[str, Any] = {"description": f"{type(source).__name__}, split={fit_split}"}
    if modality in ("image", "audio") and held:
        kwargs["held_out"] = _fit_items(held, modality)
    return fit(_fit_items(train, modality), **kwargs)


def _fit_items(examples: list[Example], modality: str) -> list[Any]:
    """What a tokenizer's fit reads: texts, images, or audio (file paths, ``(wav, rate)`` pairs)."""
    items = list(iter_items(examples, modality))
    return [item.path if isinstance(item, AudioRef) else item for item in items]


def rates_table(infos: dict[str, TokenizerInfo]) -> str:
    """A markdown table of token rates and fit metrics, one row per tokenizer."""
    rows = ["| tokenizer | kind | codebook | rate | fit metrics |", "|---|---|---|---|---|"]
    for name, info in infos.items():
        if info.modality == "text":
            rate = f"{info.chars_per_token:.2f} characters per token"
        elif info.modality == "image":
            rate = f"{info.tokens_per_image} tokens per {info.image_size}x{info.image_size} image"
        else:
            rate = f"{info.tokens_per_second:g} tokens per second"
        metrics = ", ".join(f"{k}={v:.3g}" for k, v in info.metrics.items()) or "-"
        rows.append(f"| {name} | {info.kind} | {info.codebook_size} | {rate} | {metrics} |")
    return "\n".join(rows)


def tokenizer_health(infos: dict[str, TokenizerInfo]) -> list[str]:
    """A warning per collapsed codebook of the image and audio tokenizers, from the usage their
    fit measured on held-out data (``quant.usage.collapse_messages``); empty when all are healthy
    or unmeasured."""
    from tokenize_mm.tokenizers.quant.usage import collapse_messages

    out = []
    for name, info in infos.items():
        if info.modality != "text":
            out += collapse_messages(info.metrics, info.codebook_size, f"in {name}'s held-out data")
    return out
