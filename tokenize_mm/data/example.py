"""One example of multimodal data, as every data source yields it.

An ``Example`` holds the raw items of up to three modalities (text, image, audio) that belong
together, plus where it comes from (``source``), which split it is in, and an optional ``concept``
label that evaluation uses to measure cross-modal grounding. The items are not tokenized here: the
per-modality tokenizers read them later (a string; a PIL image or a path; an ``AudioRef``, which is
a path, or an in-memory ``(wav, sample_rate)`` pair).

Splits are assigned deterministically from the example id (``split_for_id``), so that the same
example lands in the same split however the data set is filtered, ordered or extended.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.data.errors import DataError

if TYPE_CHECKING:
    import torch

SPLITS: tuple[str, ...] = ("train", "val", "test")


@dataclass(frozen=True)
class AudioRef:
    """An audio file referenced by an example.

    An ``AudioRef`` is path-like (``os.fspath(ref) == str(ref.path)``), so the audio tokenizer and
    anything else that opens files read it as its path.

    Attributes:
        path: the audio file (absolute, or relative to the working directory).
        meta: whatever else the data source says about it (sample rate, duration, speaker, ...).
    """

    path: Path
    meta: dict[str, Any] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:  # error messages name the file
        return str(self.path)


@dataclass(frozen=True)
class Example:
    """One example: the items of the modalities it has, and where it comes from.

    Attributes:
        id: unique within its source; a relative path, a manifest id, or a generated name.
        text: the text, or ``None`` if the example has no text.
        image: a PIL image (built-in data) or an image file path (manifest, folder), or ``None``.
        audio: the audio items, in order; empty if the example has no audio. Manifest and folder
            sources give ``AudioRef`` items (files); the built-in source gives in-memory
            ``(wav, sample_rate)`` pairs, wav a float32 tensor (channels, samples).
        split: ``"train"``, ``"val"`` or ``"test"``.
        source: name of the sub-source the example belongs to (used by the mixture sampler).
        concept: a label kept for evaluation (e.g. ``"red circle"``), or ``None``.
        meta: anything else the source knows about the example.
    """

    id: str
    text: str | None = None
    image: Path | Image.Image | None = None
    audio: tuple[AudioRef | tuple[torch.Tensor, int], ...] = ()
    split: str = "train"
    source: str = ""
    concept: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DataError(f"Example id must be a non-empty string, got {self.id!r}.")
        if self.split not in SPLITS:
            raise DataError(
                f"Example {self.id!r}: split must be one of {SPLITS}, got {self.split!r}."
            )
        if not isinstance(self.audio, tuple):
            # A frozen dataclass cannot assign normally; a list given by the caller becomes a tuple.
            object.__setattr__(self, "audio", tuple(self.audio))

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities this example has, in the canonical order text, image, audio."""
        present = {
            "text": self.text is not None,
            "image": self.image is not None,
            "audio": len(self.audio) > 0,
        }
        return tuple(m for m in MODALITIES if present[m])


def check_split(split: str | None) -> str | None:
    """Return ``split`` unchanged, or raise ``DataError`` if it names no split."""
    if split is not None and split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS} or None, got {split!r}.")
    return split


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Raise ``DataError`` unless both fractions lie in [0, 1] and sum to at most 1."""
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value <= 1.0:
            raise DataError(f"{name} must lie in [0, 1], got {value!r}.")
    if val_fraction + test_fraction > 1.0:
        raise DataError(
            f"val_fraction + test_fraction must be at most 1, got {val_fraction + test_fraction}."
        )


def split_for_id(id: str, val_fraction: float = 0.1, test_fraction: float = 0.1) -> str:
    """The split of an example, decided by a hash of its id.

    The hash (blake2b, not Python's salted ``hash``) maps the id to a number u in [0, 1); the
    example is ``"val"`` if u < val_fraction, ``"test"`` if u < val_fraction + test_fraction, else
    ``"train"``. The result depends on the id only: stable across runs, machines and orderings.

    Args:
        id: the example id.
        val_fraction: expected share of validation examples.
        test_fraction: expected share of test examples.

    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    digest = hashlib.blake2b(id.encode("utf-8"), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    if u < val_fraction:
        return "val"
    if u < val_fraction + test_fraction:
        return "test"
    return "train"


def split_examples(examples: Iterable[Example], split: str) -> Iterator[Example]:
    """Yield the examples of one split, lazily and in order.

    Args:
        examples: any iterable of examples (a source, a list).
        split: ``"train"``, ``"val"`` or ``"test"``.

    Raises:
        DataError: ``split`` names no split.
    """
    if split not in SPLITS:
        raise DataError(f"split must be one of {SPLITS}, got {split!r}.")
    return (example for example in examples if example.split == split)


def iter_items(examples: Iterable[Example], modality: str) -> Iterator[Any]:
    """Yield the item of ``modality`` of every example that has one, in order.

    Text gives strings, image gives PIL images or paths, audio gives each audio item of each
    example in turn: ``AudioRef`` files (path-like) and ``(wav, sample_rate)`` pairs, as they are.
    Every item is one the matching tokenizer's ``encode`` and ``fit`` accept.

    Raises:
        DataError: ``modality`` is not one of text, image, audio.
    """
    if modality not in MODALITIES:
        raise DataError(f"modality must be one of {MODALITIES}, got {modality!r}.")
    if modality == "audio":
        return (ref for example in examples for ref in example.audio)
    return (
        getattr(example, modality) for example in examples if getattr(example, modality) is not None
    )
