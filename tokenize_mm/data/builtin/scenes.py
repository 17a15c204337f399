"""Scene sampling for the built-in data: the concepts, and everything random about one example.

Every built-in example is about one *concept*, a colour-shape pair such as "red circle" (8
``SHAPES`` x 8 ``COLOURS``). Each example is a pure function of (seed, index): a ``Scene``
(concept, position, scale, rotation, background colour and texture, caption choice, audio tempo,
pitch offset and loudness) is sampled first by ``sample_scene``, and each modality is then
*rendered* from it by one function (``images.py``, ``captions.py``, ``audio.py``), which reads
the scene and the ``RenderOptions`` (sizes, lengths, rates) and nothing else.

``grouped_scene`` is the same draw with *hard negatives* for contrastive training: consecutive
examples of a sub-source in groups that share the colour, background and texture and differ in
shape (as hard-negative batches in contrastive learning: Robinson et al. 2021, "Contrastive
Learning with Hard Negative Samples", arXiv:2010.04592; NegCLIP's same-scene captions,
Yuksekgonul et al. 2023, arXiv:2210.01936). Each example's marginal distribution is unchanged;
only its neighbours become alike.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace

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


@dataclass(frozen=True)
class Scene:
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


def sample_scene(seed: int, index: int) -> Scene:
    # Seeding with a string hashes it with sha512: stable across runs and PYTHONHASHSEED.
    rng = random.Random(f"tokenize_mm.builtin:{seed}:{index}")
    colour = rng.choice(list(COLOURS))
    shape = rng.choice(SHAPES)
    scale = rng.uniform(0.12, 0.32)
    # Backgrounds too close to the shape colour would make the shape invisible.
    backgrounds = [b for b in BACKGROUNDS if math.dist(BACKGROUNDS[b], COLOURS[colour]) > 110]
    return Scene(
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


@dataclass(frozen=True)
class RenderOptions:
    """Settings that renderers read (sizes, lengths, rates); the scene holds everything random."""

    image_size: int
    audio_seconds: float = 3.0
    sample_rate: int = 24_000


def grouped_scene(seed: int, index: int, stride: int, group_size: int) -> Scene:
    """``sample_scene(seed, index)`` with the colour, background and texture of its group.

    Example ``index`` is the ``(index // stride) % group_size``-th member of group
    ``index // (stride * group_size)`` (``stride``: the number of interleaved sub-sources, so a
    group is ``group_size`` consecutive examples of each sub-source). The group's first scene
    gives the colour, background and texture; the member's shape is that entry of a shuffle of
    ``SHAPES`` seeded by the group, so the members' shapes all differ (``group_size`` <= 8);
    everything else (place, size, rotation, wording, audio nuisances) is the example's own. The
    colour and the shape are each uniform, as in ``sample_scene``. ``group_size`` 1 is
    ``sample_scene``.

    Raises:
        ValueError: ``stride`` < 1 or ``group_size`` not in [1, len(SHAPES)].
    """
    if stride < 1 or not 1 <= group_size <= len(SHAPES):
        raise ValueError(
            f"grouped_scene needs stride >= 1 and 1 <= group_size <= {len(SHAPES)} (one shape "
            f"per member), got stride={stride}, group_size={group_size}."
        )
    own = sample_scene(seed, index)
    if group_size == 1:
        return own
    group, member = divmod(index // stride, group_size)
    first = sample_scene(seed, group * group_size * stride)
    shapes = random.Random(f"tokenize_mm.builtin.group:{seed}:{group}").sample(SHAPES, len(SHAPES))
    return replace(own, shape=shapes[member], colour=first.colour, background=first.background,
                   texture=first.texture)  # fmt: skip
