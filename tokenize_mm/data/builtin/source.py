"""``BuiltinSource``: the built-in examples, each a scene rendered into its sub-source's modalities.

Sub-sources (``sources``):
    ``trimodal``: caption + image + audio clip, one concept.
    ``image_text``: caption + image.
    ``text_only``: a few sentences about a concept, longer than a caption.
    ``audio_text``: caption + audio clip.

Adding a modality to a sub-source is one renderer function added to ``_SOURCES``.

``BuiltinSource.fingerprint()`` identifies the examples without generating any: its constructor
arguments and a hash of the source files of this package (the examples are a pure function of
both), so that a store being written from it can tell whether a rerun gives the same examples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from tokenize_mm.data.builtin.audio import render_audio
from tokenize_mm.data.builtin.captions import render_caption, render_paragraph
from tokenize_mm.data.builtin.images import render_image
from tokenize_mm.data.builtin.scenes import (
    COLOURS,
    SHAPES,
    RenderOptions,
    Scene,
    grouped_scene,
    sample_scene,
)
from tokenize_mm.data.errors import DataError
from tokenize_mm.data.example import Example, check_split, split_for_id

Renderer = Callable[[Scene, RenderOptions], Any]

# Sub-source -> modality -> renderer. Keys of the inner dicts are Example fields.
_SOURCES: dict[str, dict[str, Renderer]] = {
    "trimodal": {"text": render_caption, "image": render_image, "audio": render_audio},
    "image_text": {"text": render_caption, "image": render_image},
    "text_only": {"text": render_paragraph},
    "audio_text": {"text": render_caption, "audio": render_audio},
}
SOURCES: tuple[str, ...] = tuple(_SOURCES)


def _code_hash() -> str:
    """sha256 (hex) over the name and bytes of every ``.py`` file of this package, sorted by name:
    any change to the code that makes the examples changes it."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).resolve().parent.glob("*.py"), key=lambda p: p.name):
        digest.update(f"{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return digest.hexdigest()


class BuiltinSource:
    """Deterministic built-in examples of coloured shapes, drawn, described and played.

    Example ``i`` belongs to sub-source ``sources[i % len(sources)]`` and depends only on
    ``(seed, i)``; its split comes from a hash of its id (about 80/10/10 train/val/test). With
    ``split`` set, the source holds only that split's share of the ``num_examples`` examples, so
    the three splits of one configuration are disjoint.

    Args:
        num_examples: number of examples generated, before the split filter.
        image_size: side of the square RGB images, in pixels.
        audio_seconds: nominal length of the audio clips, in seconds; each clip's tempo makes it
            up to 8 % shorter or longer. The default, 3 s, is 150 tokens at 50 frames per second:
            about 10 times a caption's tokens (see the package docstring).
        sample_rate: sample rate of the audio clips, in Hz (24 kHz: the default codec's rate).
        seed: the data set's seed; the same seed always gives the same examples.
        sources: which sub-sources to interleave (see the module docstring).
        split: keep only ``"train"``, ``"val"`` or ``"test"`` examples; ``None`` keeps all.

    Raises:
        DataError: an argument is out of range or names an unknown sub-source or split.
    """

    def __init__(
        self,
        num_examples: int = 512,
        image_size: int = 64,
        audio_seconds: float = 3.0,
        sample_rate: int = 24_000,
        seed: int = 0,
        sources: tuple[str, ...] = SOURCES,
        split: str | None = None,
    ):
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 0:
            raise DataError(f"num_examples must be a non-negative integer, got {num_examples!r}.")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise DataError(
                f"image_size must be an integer of at least 16 pixels, got {image_size!r}."
            )
        if (
            isinstance(audio_seconds, bool)
            or not isinstance(audio_seconds, (int, float))
            or not 0.5 <= audio_seconds <= 60
        ):
            raise DataError(
                f"audio_seconds must be a number of seconds in [0.5, 60], got {audio_seconds!r}."
            )
        if (
            isinstance(sample_rate, bool)
            or not isinstance(sample_rate, int)
            or not 8_000 <= sample_rate <= 192_000
        ):
            raise DataError(
                f"sample_rate must be an integer in [8000, 192000] Hz, got {sample_rate!r}."
            )
        sources = (sources,) if isinstance(sources, str) else tuple(sources)
        unknown = [s for s in sources if s not in _SOURCES]
        if not sources or unknown:
            raise DataError(f"sources must be a non-empty subset of {SOURCES}, got {sources!r}.")
        self.num_examples = num_examples
        self.image_size = image_size
        self.audio_seconds = float(audio_seconds)
        self.sample_rate = sample_rate
        self.seed = seed
        self.sources = sources
        self.split = check_split(split)
        self._options = RenderOptions(
            image_size=image_size, audio_seconds=self.audio_seconds, sample_rate=sample_rate
        )
        self._indices = [i for i in range(num_examples) if split is None or self._split(i) == split]

    def _source(self, index: int) -> str:
        return self.sources[index % len(self.sources)]

    def example_at(self, index: int, group_size: int = 1) -> Example:
        """Example ``index`` of the seed's endless sequence, whatever ``num_examples`` and
        ``split`` hold (a streamed run reads past ``num_examples``; ``split`` is the example's
        own, from its id). ``group_size`` > 1 draws its scene with ``grouped_scene``: hard
        negatives, each sub-source's examples in groups of that many sharing colour and
        background, shapes differing (the id and split are the same)."""
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            raise DataError(f"a built-in example index is a non-negative integer, got {index!r}.")
        self.check_group_size(group_size)
        return self._example(index, group_size=group_size)

    @staticmethod
    def check_group_size(group_size: int) -> None:
        """Raise ``DataError`` unless ``group_size`` is an integer in [1, len(SHAPES)]."""
        if (
            isinstance(group_size, bool)
            or not isinstance(group_size, int)
            or not (1 <= group_size <= len(SHAPES))
        ):
            raise DataError(
                f"group_size must be an integer in [1, {len(SHAPES)}] (one shape per member of a "
                f"group), got {group_size!r}."
            )

    def indices_of(self, source: str, split: str | None, start: int = 0) -> Iterator[int]:
        """The indices of sub-source ``source``'s ``split`` examples (all with ``None``), from
        ``start`` on, without end (the seed's endless sequence, past ``num_examples``); nothing
        is rendered."""
        if source not in self.sources:
            raise DataError(f"no sub-source {source!r} here; the sources are {self.sources}.")
        check_split(split)
        k, n = self.sources.index(source), len(self.sources)
        index = start + (k - start) % n
        while True:
            if split is None or self._split(index) == split:
                yield index
            index += n

    def _id(self, index: int) -> str:
        return f"{self._source(index)}/s{self.seed}/{index:06d}"

    def _split(self, index: int) -> str:
        return split_for_id(self._id(index), val_fraction=0.1, test_fraction=0.1)

    def _example(
        self, index: int, modalities: tuple[str, ...] | None = None, group_size: int = 1
    ) -> Example:
        """Example ``index``, rendering only ``modalities`` (all of its source's if ``None``),
        its scene grouped by ``group_size`` (``example_at``)."""
        source = self._source(index)
        if group_size == 1:
            scene = sample_scene(self.seed, index)
        else:
            scene = grouped_scene(self.seed, index, len(self.sources), group_size)
        items = {
            modality: render(scene, self._options)
            for modality, render in _SOURCES[source].items()
            if modalities is None or modality in modalities
        }
        return Example(
            id=self._id(index),
            text=items.get("text"),
            image=items.get("image"),
            audio=(items["audio"],) if "audio" in items else (),
            split=self._split(index),
            source=source,
            concept=scene.concept,
            meta={
                "shape": scene.shape,
                "colour": scene.colour,
                "background": scene.background,
                "texture": scene.texture,
                "position": scene.position_word,
                "size": scene.size_word,
                "seed": self.seed,
                "index": index,
            },
        )

    _FINGERPRINT_ARGS = ("num_examples", "image_size", "audio_seconds", "sample_rate", "seed",
                         "sources", "split")  # fmt: skip

    def fingerprint(self) -> str:
        """sha256 (hex) of what the examples are made of: the constructor arguments and a sha256
        over every source file of the ``builtin`` package, sorted by name (the examples are a pure
        function of both). Nothing is rendered."""
        code = _code_hash()
        args = {key: getattr(self, key) for key in self._FINGERPRINT_ARGS}
        return hashlib.sha256(json.dumps(["builtin", args, code]).encode()).hexdigest()

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> Example:
        """The ``i``-th example of this source (after the split filter)."""
        return self._example(self._indices[i])

    def __iter__(self) -> Iterator[Example]:
        for index in self._indices:
            yield self._example(index)

    def rendering(self, modalities: Sequence[str]) -> Iterator[Example]:
        """The examples in order, with only their items of ``modalities`` rendered (ids, splits,
        concepts and metadata as always): a tokenizer's fit reads one modality and need not draw
        or play the others."""
        wanted = tuple(modalities)
        for index in self._indices:
            yield self._example(index, wanted)

    def texts(self) -> Iterator[str]:
        """The texts of the examples that have one, in order (images are not drawn)."""
        for index in self._indices:
            if "text" in _SOURCES[self._source(index)]:
                yield self._example(index, ("text",)).text  # type: ignore[misc]

    def images(self) -> Iterator[Image.Image]:
        """The images of the examples that have one, in order (texts are not rendered)."""
        for index in self._indices:
            if "image" in _SOURCES[self._source(index)]:
                yield self._example(index, ("image",)).image  # type: ignore[misc]

    def clips(self) -> Iterator[tuple[torch.Tensor, int]]:
        """The audio clips, ``(wav (1, S) float32, sample_rate)``, in order (nothing else drawn)."""
        for index in self._indices:
            if "audio" in _SOURCES[self._source(index)]:
                yield from self._example(index, ("audio",)).audio  # type: ignore[misc]

    @staticmethod
    def concepts() -> list[str]:
        """Every concept label, ``"<colour> <shape>"``, in a fixed order (shape-major)."""
        return [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]

    def __repr__(self) -> str:
        return (
            f"BuiltinSource(num_examples={self.num_examples}, image_size={self.image_size}, "
            f"audio_seconds={self.audio_seconds}, sample_rate={self.sample_rate}, seed={self.seed}, sources={self.sources!r}, split={self.split!r})"
        )
