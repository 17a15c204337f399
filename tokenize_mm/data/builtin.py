"""Built-in sample data: coloured shapes, drawn and described, generated from a seed.

Why it exists: a multimodal pipeline needs data that runs anywhere in seconds (tests, debug
configs, first runs) and on which cross-modal *grounding* is learnable and measurable. Here every
example is about one concept, a colour-shape pair such as "red circle" (8 shapes x 8 colours):
the image draws it and the caption names it, so a model can only predict the caption's colour and
shape words well if it reads the image (and vice versa). The concept is kept as a label for
evaluation (grounding gain, design.md section 5).

Each example is a pure function of (seed, index): a ``_Scene`` (concept, position, scale,
rotation, background colour and texture, caption choice) is sampled first, and each modality is
then *rendered* from it by one function. Images have a textured background and anti-aliased
shapes at random positions, scales and rotations, so that an image tokenizer has something
non-trivial to learn; captions and paragraphs come from several templates, so that a text
tokenizer sees some variety.

Sub-sources (``sources``):
    ``trimodal``: caption + image, one concept (audio joins when its renderer exists).
    ``image_text``: caption + image.
    ``text_only``: a few sentences about a concept, longer than a caption.

Adding a modality to a sub-source is one renderer function added to ``_SOURCES``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from tokenize_mm.data.errors import DataError
from tokenize_mm.data.example import Example, check_split, split_for_id

SHAPES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "cross",
    "ring",
    "diamond",
    "hexagon",
)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 165, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "orange": (245, 135, 25),
    "purple": (135, 55, 185),
    "pink": (245, 125, 185),
    "cyan": (40, 200, 215),
}
# Background names never reuse a shape colour word, so a caption's colour is unambiguous.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "grey": (128, 128, 128),
    "white": (236, 236, 236),
    "black": (25, 25, 25),
    "beige": (225, 210, 175),
    "brown": (105, 70, 40),
}
TEXTURES: dict[str, str] = {  # texture -> adjective used in captions
    "plain": "plain",
    "noise": "speckled",
    "stripes": "striped",
    "checker": "checkered",
    "gradient": "shaded",
}
_SUPERSAMPLE = 2  # shapes are drawn at 2x and reduced: anti-aliased edges


@dataclass(frozen=True)
class _Scene:
    """Everything random about one example, sampled once so that renderers are pure."""

    shape: str
    colour: str
    cx: float  # shape centre, as a fraction of the image width / height
    cy: float
    scale: float  # shape radius, as a fraction of the image size
    angle: float  # rotation in degrees
    background: str
    texture: str
    choices: tuple[int, ...]  # template / sentence picks, read by the text renderers
    noise_seed: int

    @property
    def concept(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def size_word(self) -> str:
        return "small" if self.scale < 0.17 else "medium" if self.scale < 0.25 else "large"

    @property
    def position_word(self) -> str:
        row = "top" if self.cy < 1 / 3 else "bottom" if self.cy > 2 / 3 else ""
        col = "left" if self.cx < 1 / 3 else "right" if self.cx > 2 / 3 else ""
        return f"{row} {col}".strip() or "centre"


def _sample_scene(seed: int, index: int) -> _Scene:
    # Seeding with a string hashes it with sha512: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"tokenize_mm.builtin:{seed}:{index}")
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    scale = rng.uniform(0.12, 0.32)
    # Backgrounds too close to the shape colour would make the shape invisible.
    backgrounds = [b for b in BACKGROUNDS if math.dist(BACKGROUNDS[b], COLOURS[colour]) > 110]
    return _Scene(
        shape=shape,
        colour=colour,
        cx=rng.uniform(scale, 1 - scale),
        cy=rng.uniform(scale, 1 - scale),
        scale=scale,
        angle=rng.uniform(-30.0, 30.0),
        background=rng.choice(backgrounds),
        texture=rng.choice(list(TEXTURES)),
        choices=tuple(rng.randrange(1 << 30) for _ in range(6)),
        noise_seed=rng.randrange(1 << 62),
    )


# ---------------------------------------------------------------------------------------- image


def _unit_outline(shape: str) -> list[tuple[float, float]]:
    """Polygon vertices of a shape of radius 1 centred at the origin (y points down)."""

    def regular(n: int, start_deg: float) -> list[tuple[float, float]]:
        return [
            (
                math.cos(math.radians(start_deg + 360 * k / n)),
                math.sin(math.radians(start_deg + 360 * k / n)),
            )
            for k in range(n)
        ]

    if shape == "square":
        return regular(4, 45.0)
    if shape == "triangle":
        return regular(3, -90.0)
    if shape == "hexagon":
        return regular(6, 0.0)
    if shape == "diamond":  # a tall rhombus: stays distinct from a rotated square
        return [(0.0, -1.0), (0.6, 0.0), (0.0, 1.0), (-0.6, 0.0)]
    if shape == "star":
        outer, inner = regular(5, -90.0), regular(5, -54.0)
        points = []
        for (ox, oy), (ix, iy) in zip(outer, inner, strict=True):
            points += [(ox, oy), (0.45 * ix, 0.45 * iy)]  # tip, then the notch after it
        return points
    if shape == "cross":
        w = 0.32
        return [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    raise ValueError(f"no outline for shape {shape!r}")  # internal: SHAPES and this function agree


def _background(scene: _Scene, size: int, rng: np.random.Generator) -> np.ndarray:
    """A (size, size, 3) float array: the background colour with the scene's texture."""
    base = np.array(BACKGROUNDS[scene.background], dtype=np.float32) + rng.uniform(-10, 10, 3)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    if scene.texture == "noise":
        delta = rng.normal(0.0, 14.0, (size, size, 1))
    elif scene.texture == "stripes":
        theta = rng.choice([0.0, math.pi / 4, math.pi / 2, 3 * math.pi / 4])
        period = rng.uniform(4, 12) * size / 64
        delta = (
            18.0
            * np.sign(np.sin(2 * math.pi * (x * math.cos(theta) + y * math.sin(theta)) / period))[
                ..., None
            ]
        )
    elif scene.texture == "checker":
        cell = max(2, int(rng.integers(4, 17) * size / 64))
        delta = 16.0 * (((x // cell + y // cell) % 2) * 2 - 1)[..., None]
    elif scene.texture == "gradient":
        theta = rng.uniform(0, 2 * math.pi)
        ramp = (x * math.cos(theta) + y * math.sin(theta)) / size
        delta = 60.0 * (ramp - ramp.mean())[..., None]
    else:  # plain
        delta = np.zeros((size, size, 1), dtype=np.float32)
    return base + delta


def _render_image(scene: _Scene, options: RenderOptions) -> Image.Image:
    """The scene as an RGB image: a textured background with the shape drawn in its colour."""
    size = options.image_size
    rng = np.random.default_rng(scene.noise_seed)
    background = Image.fromarray(
        np.clip(_background(scene, size, rng), 0, 255).astype(np.uint8), "RGB"
    )
    fill = tuple(int(np.clip(c + rng.integers(-15, 16), 0, 255)) for c in COLOURS[scene.colour])

    big = size * _SUPERSAMPLE
    mask = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy, r = scene.cx * big, scene.cy * big, scene.scale * big
    if scene.shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif scene.shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=max(1, round(0.35 * r)))
    else:
        cos, sin = math.cos(math.radians(scene.angle)), math.sin(math.radians(scene.angle))
        points = [
            (cx + r * (u * cos - v * sin), cy + r * (u * sin + v * cos))
            for u, v in _unit_outline(scene.shape)
        ]
        draw.polygon(points, fill=255)
    mask = mask.reduce(_SUPERSAMPLE)
    return Image.composite(Image.new("RGB", (size, size), fill), background, mask)


# ----------------------------------------------------------------------------------------- text


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a red", "an orange"."""
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


_WHERE = {  # position word -> phrase; the four corners use "in the top left corner"
    "centre": "in the middle",
    "top": "at the top",
    "bottom": "at the bottom",
    "left": "on the left",
    "right": "on the right",
}
_CAPTIONS = (
    "{a_colour} {shape} on a {bg} background",
    "there is a {size} {colour} {shape} near the {pos}",
    "{a_size} {colour} {shape} {where}",
    "this picture shows {a_colour} {shape}",
    "{a_colour} {shape} on a {tex} {bg} background",
    "the {shape} is {colour} and sits near the {pos}",
    "a {bg} background with {a_size} {colour} {shape}",
    "you can see {a_colour} {shape} {where} of the picture",
)

_OPENERS = (
    "This note is about {a_colour} {shape}.",
    "Think of {a_colour} {shape}.",
    "Here is a short description of {a_colour} {shape}.",
    "The {colour} {shape} is a simple figure.",
)
_SHAPE_FACTS = {
    "circle": ("A circle has no corners at all.", "A circle looks the same however you turn it."),
    "square": ("A square has four equal sides.", "Every corner of a square is a right angle."),
    "triangle": (
        "A triangle has three sides and three corners.",
        "A triangle can point up like a roof.",
    ),
    "star": ("A star has five sharp points.", "The points of a star spread out from its middle."),
    "cross": (
        "A cross is made of two bars that meet in the middle.",
        "A cross looks like a plus sign.",
    ),
    "ring": ("A ring is a circle with a hole in the middle.", "A ring is round and hollow."),
    "diamond": (
        "A diamond is a tall shape that stands on one tip.",
        "A diamond has four sides and two sharp tips.",
    ),
    "hexagon": ("A hexagon has six sides.", "A hexagon looks like a cell of a honeycomb."),
}
_COLOUR_FACTS = {
    "red": ("Red is the colour of a ripe tomato.", "Red is the colour of a stop sign."),
    "green": ("Green is the colour of fresh grass.", "Green is the colour of a leaf in spring."),
    "blue": ("Blue is the colour of a clear sky.", "Blue is the colour of the deep sea."),
    "yellow": ("Yellow is the colour of a lemon.", "Yellow is the colour of the sun in a drawing."),
    "orange": ("Orange is the colour of a carrot.", "Orange is the colour of autumn leaves."),
    "purple": ("Purple is the colour of a plum.", "Purple is the colour of lavender flowers."),
    "pink": ("Pink is the colour of a flamingo.", "Pink is the colour of cherry blossom."),
    "cyan": ("Cyan is the colour of shallow tropical water.", "Cyan sits between green and blue."),
}
_CLOSERS = (
    "On a {bg} background the {colour} {shape} is easy to spot.",
    "If you turn the {shape} a little, it is still {a_colour} {shape}.",
    "A small {colour} {shape} can hide in a corner, while a large one fills the picture.",
    "Children often draw {a_colour} {shape} first.",
    "You could paint {a_colour} {shape} with a single brush stroke.",
)


def _words(scene: _Scene) -> dict[str, str]:
    return {
        "colour": scene.colour,
        "shape": scene.shape,
        "a_colour": _a(scene.colour),
        "size": scene.size_word,
        "a_size": _a(scene.size_word),
        "pos": scene.position_word,
        "where": _WHERE.get(scene.position_word, f"in the {scene.position_word} corner"),
        "bg": scene.background,
        "tex": TEXTURES[scene.texture],
    }


def _render_caption(scene: _Scene, options: RenderOptions) -> str:
    """A one-line caption naming the scene's colour and shape (and sometimes more)."""
    return _CAPTIONS[scene.choices[0] % len(_CAPTIONS)].format(**_words(scene))


def _render_paragraph(scene: _Scene, options: RenderOptions) -> str:
    """Three to five sentences about the scene's concept: longer than a caption."""
    c = scene.choices
    shape_facts, colour_facts = _SHAPE_FACTS[scene.shape], _COLOUR_FACTS[scene.colour]
    sentences = [
        _OPENERS[c[1] % len(_OPENERS)],
        shape_facts[c[2] % len(shape_facts)],
        colour_facts[c[3] % len(colour_facts)],
    ]
    if c[4] % 3:  # two out of three paragraphs get a closing sentence...
        sentences.append(_CLOSERS[c[4] % len(_CLOSERS)])
    if c[5] % 2:  # ...and half get the other fact about the shape
        sentences.insert(2, shape_facts[(c[2] + 1) % len(shape_facts)])
    return " ".join(sentences).format(**_words(scene))


# -------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class RenderOptions:
    """Settings that renderers read (sizes, rates); the scene holds everything random."""

    image_size: int


Renderer = Callable[[_Scene, RenderOptions], Any]

# Sub-source -> modality -> renderer. Keys of the inner dicts are Example fields.
_SOURCES: dict[str, dict[str, Renderer]] = {
    "trimodal": {"text": _render_caption, "image": _render_image},
    "image_text": {"text": _render_caption, "image": _render_image},
    "text_only": {"text": _render_paragraph},
}
SOURCES: tuple[str, ...] = tuple(_SOURCES)


class BuiltinSource:
    """Deterministic built-in examples of coloured shapes, drawn and described.

    Example ``i`` belongs to sub-source ``sources[i % len(sources)]`` and depends only on
    ``(seed, i)``; its split comes from a hash of its id (about 80/10/10 train/val/test). With
    ``split`` set, the source holds only that split's share of the ``num_examples`` examples, so
    the three splits of one configuration are disjoint.

    Args:
        num_examples: number of examples generated, before the split filter.
        image_size: side of the square RGB images, in pixels.
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
        sources = (sources,) if isinstance(sources, str) else tuple(sources)
        unknown = [s for s in sources if s not in _SOURCES]
        if not sources or unknown:
            raise DataError(f"sources must be a non-empty subset of {SOURCES}, got {sources!r}.")
        self.num_examples = num_examples
        self.image_size = image_size
        self.seed = seed
        self.sources = sources
        self.split = check_split(split)
        self._options = RenderOptions(image_size=image_size)
        self._indices = [i for i in range(num_examples) if split is None or self._split(i) == split]

    def _source(self, index: int) -> str:
        return self.sources[index % len(self.sources)]

    def _id(self, index: int) -> str:
        return f"{self._source(index)}/s{self.seed}/{index:06d}"

    def _split(self, index: int) -> str:
        return split_for_id(self._id(index), val_fraction=0.1, test_fraction=0.1)

    def _example(self, index: int, modalities: tuple[str, ...] | None = None) -> Example:
        """Example ``index``, rendering only ``modalities`` (all of its source's if ``None``)."""
        source = self._source(index)
        scene = _sample_scene(self.seed, index)
        items = {
            modality: render(scene, self._options)
            for modality, render in _SOURCES[source].items()
            if modalities is None or modality in modalities
        }
        return Example(
            id=self._id(index),
            text=items.get("text"),
            image=items.get("image"),
            audio=items.get("audio", ()),
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

    def __len__(self) -> int:
        return len(self._indices)

    def __getitem__(self, i: int) -> Example:
        """The ``i``-th example of this source (after the split filter)."""
        return self._example(self._indices[i])

    def __iter__(self) -> Iterator[Example]:
        for index in self._indices:
            yield self._example(index)

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

    @staticmethod
    def concepts() -> list[str]:
        """Every concept label, ``"<colour> <shape>"``, in a fixed order (shape-major)."""
        return [f"{colour} {shape}" for shape in SHAPES for colour in COLOURS]

    def __repr__(self) -> str:
        return (
            f"BuiltinSource(num_examples={self.num_examples}, image_size={self.image_size}, "
            f"seed={self.seed}, sources={self.sources!r}, split={self.split!r})"
        )
