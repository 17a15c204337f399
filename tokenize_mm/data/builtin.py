"""Built-in sample data: coloured shapes, drawn, described and played, generated from a seed.

Why it exists: a multimodal pipeline needs data that runs anywhere in seconds (tests, debug
configs, first runs) and on which cross-modal *grounding* is learnable and measurable. Here every
example is about one concept, a colour-shape pair such as "red circle" (8 shapes x 8 colours):
the image draws it, the caption names it and the audio clip plays it, so a model can only predict
the caption's colour and shape words well if it reads the image or hears the clip (and vice
versa). The concept is kept as a label for evaluation (grounding gain, docs/architecture.md §6).

Each example is a pure function of (seed, index): a ``_Scene`` (concept, position, scale,
rotation, background colour and texture, caption choice, audio tempo, pitch offset and loudness)
is sampled first, and each modality is then *rendered* from it by one function. Images have a
textured background and anti-aliased shapes at random positions, scales and rotations, so that an
image tokenizer has something non-trivial to learn; captions and paragraphs come from several
templates, so that a text tokenizer sees some variety. Audio clips are short synthetic melodies
(mono float32 at 24 kHz, ``(wav (1, S), sample_rate)`` pairs that the audio tokenizer reads as
they are): the shape picks the motif (pitch contour, note count and rhythm: a circle is a smooth
four-note arch, a star ten fast high-low leaps, a ring one note struck eight times) and the colour
picks the voice (a register, 3 semitones from the next colour's, and a harmonic mix: blue is
hollow odd harmonics, red a bright sawtooth, green nearly a sine). Tempo (clip length within
+-8 %), a pitch offset (+-0.5 semitone), loudness, note accents and a little white noise vary
from example to example without touching the concept.

Sub-sources (``sources``):
    ``trimodal``: caption + image + audio clip, one concept.
    ``image_text``: caption + image.
    ``text_only``: a few sentences about a concept, longer than a caption.
    ``audio_text``: caption + audio clip.

Token budget at the default sizes (``make train``'s tokenizers): a trimodal example has about
150 audio tokens (3 s at audio_small's 50 frames per second, K = 1), 64 image tokens
(image_small: 64 px, downsample 8) and 15 text tokens (text_small: a 512-piece SentencePiece
model fitted on the default source's train split; its captions are 8 to 22 pieces), i.e.
audio : image : text = 9.9 : 4.2 : 1, near real data's 10 : 5 : 1. The image-to-text ratio is
fixed by those two tokenizers; ``audio_seconds`` sets the audio one. Measured over the 128
trimodal examples of ``BuiltinSource()``: mean ``len(text_tok.encode(caption))``, and
``ceil(S * 50 / 24000)`` for the audio.

Generation is vectorised (numpy over samples): the 512 default examples, all four sub-sources,
take about a second on a 2-core CPU, most of it for the audio.

Adding a modality to a sub-source is one renderer function added to ``_SOURCES``.

``BuiltinSource.fingerprint()`` identifies the examples without generating any: its constructor
arguments and a hash of this file's source (the examples are a pure function of both), so that a
store being written from it can tell whether a rerun gives the same examples.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
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
    # Audio nuisances. Drawn after every field above, so adding audio left images and captions
    # of every (seed, index) unchanged.
    stretch: float  # clip length / audio_seconds (tempo): 0.92 to 1.08
    detune: float  # pitch offset in semitones, -0.5 to 0.5 (colour registers are 3 apart)
    loudness: float  # peak amplitude, 0.3 to 0.8
    audio_seed: int  # per-note accents and background noise

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
        stretch=rng.uniform(0.92, 1.08),
        detune=rng.uniform(-0.5, 0.5),
        loudness=rng.uniform(0.3, 0.8),
        audio_seed=rng.randrange(1 << 62),
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


def concept_caption(concept: str) -> str:
    """The caption of a concept, ``"<colour> <shape>"`` → "this picture shows a red circle".

    One of the caption templates (the one that names nothing but the concept): the candidate
    captions of zero-shot evaluation (``tokenize_mm.evaluation.zero_shot``).

    Raises:
        DataError: ``concept`` is not one of ``BuiltinSource.concepts()``.
    """
    colour, _, shape = concept.partition(" ")
    if colour not in COLOURS or shape not in SHAPES:
        raise DataError(f"unknown concept {concept!r}; concepts are BuiltinSource.concepts()")
    return f"this picture shows {_a(colour)} {shape}"


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


# ---------------------------------------------------------------------------------------- audio

# Shape -> motif: (pitches in semitones above the colour's base note, note lengths in beats,
# gate = the sounding share of each note). Contour, note count and rhythm all differ by shape.
_MOTIFS: dict[str, tuple[tuple[int, ...], tuple[float, ...], float]] = {
    "circle": ((0, 4, 7, 4), (1, 1, 1, 1), 0.95),  # a smooth arch, legato
    "square": ((0, 0, 7, 7), (1, 1, 1, 1), 0.45),  # two flat blocks, staccato
    "triangle": ((0, 4, 7), (4 / 3, 4 / 3, 4 / 3), 0.9),  # three rising notes
    "star": ((9, 0) * 5, (0.4,) * 10, 0.5),  # five spikes: fast high-low leaps
    "cross": ((7, 0), (2, 2), 0.95),  # two long notes, a falling fifth
    "ring": ((4,) * 8, (0.5,) * 8, 0.6),  # one note rung eight times
    "diamond": ((0, 3, 6, 9, 6, 3), (2 / 3,) * 6, 0.85),  # a pointed climb and descent
    "hexagon": ((9, 7, 5, 4, 2, 0), (2 / 3,) * 6, 0.85),  # six steps down
}
# Colour -> voice: (base note as a MIDI number, amplitudes of harmonics 1, 2, ...). Registers are
# 3 semitones apart and every colour has its own harmonic mix (timbre): two cues for the colour.
_VOICES: dict[str, tuple[int, tuple[float, ...]]] = {
    "blue": (51, (1.0, 0.0, 0.33, 0.0, 0.2, 0.0, 0.14)),  # odd harmonics: hollow, clarinet-like
    "purple": (54, (0.5, 1.0, 0.3, 0.6)),  # the octave dominates
    "red": (57, (1.0, 0.5, 0.33, 0.25, 0.2, 0.17, 0.14, 0.12)),  # sawtooth: bright
    "green": (60, (1.0, 0.15, 0.05)),  # nearly a sine: soft
    "orange": (63, (1.0, 0.0, 0.8, 0.0, 0.5, 0.0, 0.3)),  # strong odd harmonics: reedy
    "yellow": (66, (1.0, 0.7, 0.0, 0.45, 0.0, 0.3)),  # even harmonics
    "pink": (69, (1.0, 0.5, 0.5, 0.25, 0.25)),
    "cyan": (72, (1.0, 0.0, 0.0, 0.2, 0.6)),  # a bell-like fifth harmonic
}
_ATTACK_S, _RELEASE_S = 0.01, 0.03  # note envelope: linear attack and release, in seconds


def _render_audio(scene: _Scene, options: RenderOptions) -> tuple[torch.Tensor, int]:
    """The scene as a short melody: ``(wav, sample_rate)``, wav float32 (1, S) in [-1, 1].

    The shape picks the motif (contour, note count, rhythm), the colour picks the voice (register
    and harmonic mix). The scene's nuisances vary what does not carry the concept: clip length
    (tempo, S = audio_seconds x stretch x rate), pitch offset, loudness, per-note accents and a
    little white noise. Synthesis is vectorised over samples (numpy).
    """
    rate = options.sample_rate
    pitches, beats, gate = _MOTIFS[scene.shape]
    base, amps = _VOICES[scene.colour]
    rng = np.random.default_rng(scene.audio_seed)
    n = max(1, round(options.audio_seconds * scene.stretch * rate))

    # Which note each sample belongs to, and how far into it (in seconds).
    bounds = np.round(np.concatenate([[0.0], np.cumsum(beats)]) * (n / sum(beats))).astype(int)
    note = np.repeat(np.arange(len(beats)), np.diff(bounds))
    into = (np.arange(n) - bounds[note]).astype(np.float32) / np.float32(rate)
    sounding = (gate / rate * np.diff(bounds)).astype(np.float32)[note]
    envelope = (
        np.clip(into / np.float32(_ATTACK_S), 0.0, 1.0)
        * np.clip((sounding - into) / np.float32(_RELEASE_S), 0.0, 1.0)
        * np.exp(np.float32(-1.5) * into / sounding)  # a gentle decay within each note
        * rng.uniform(0.75, 1.0, len(beats)).astype(np.float32)[note]  # accents
    )

    # Continuous phase through the note changes (accumulated in float64). Harmonics come from
    # the Chebyshev recurrence sin((k+1)p) = 2 cos(p) sin(kp) - sin((k-1)p): one sin and one cos
    # per sample whatever the voice. Harmonics above 0.45 x rate are left out.
    note_freqs = 440.0 * 2.0 ** ((base + scene.detune + np.asarray(pitches) - 69.0) / 12.0)
    freq = note_freqs.astype(np.float32)[note]
    phase = np.mod(np.cumsum(freq, dtype=np.float64) * (2 * math.pi / rate), 2 * math.pi)
    phase = phase.astype(np.float32)
    two_cos, previous, current = 2 * np.cos(phase), np.zeros_like(phase), np.sin(phase)
    wave = np.zeros_like(phase)
    for k, amp in enumerate(amps, start=1):
        keep = k * note_freqs < 0.45 * rate  # per note
        if amp and keep.all():
            wave += np.float32(amp) * current
        elif amp and keep.any():
            wave += (amp * keep).astype(np.float32)[note] * current
        previous, current = current, two_cos * current - previous
    wave *= envelope

    wave *= scene.loudness / max(float(np.abs(wave).max()), 1e-9)
    wave += np.float32(scene.loudness * rng.uniform(0.003, 0.02)) * rng.standard_normal(
        n, dtype=np.float32
    )
    wav = np.clip(wave, -1.0, 1.0).astype(np.float32)
    return torch.from_numpy(wav)[None], rate


# -------------------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class RenderOptions:
    """Settings that renderers read (sizes, lengths, rates); the scene holds everything random."""

    image_size: int
    audio_seconds: float = 3.0
    sample_rate: int = 24_000


Renderer = Callable[[_Scene, RenderOptions], Any]

# Sub-source -> modality -> renderer. Keys of the inner dicts are Example fields.
_SOURCES: dict[str, dict[str, Renderer]] = {
    "trimodal": {"text": _render_caption, "image": _render_image, "audio": _render_audio},
    "image_text": {"text": _render_caption, "image": _render_image},
    "text_only": {"text": _render_paragraph},
    "audio_text": {"text": _render_caption, "audio": _render_audio},
}
SOURCES: tuple[str, ...] = tuple(_SOURCES)


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
            about 10 times a caption's tokens (see the module docstring).
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
        """sha256 (hex) of what the examples are made of: the constructor arguments and the sha256
        of ``builtin.py`` (the examples are a pure function of both). Nothing is rendered."""
        code = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()
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
