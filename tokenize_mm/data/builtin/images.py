"""Image rendering for the built-in data: a scene drawn as an RGB picture.

The image has a textured background (plain, speckled, striped, checkered or shaded, in the
scene's background colour) and the scene's shape drawn in its colour, anti-aliased (drawn at 2x
and reduced), at the scene's position, scale and rotation, so that an image tokenizer has
something non-trivial to learn.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from tokenize_mm.data.builtin.scenes import BACKGROUNDS, COLOURS, RenderOptions, Scene

_SUPERSAMPLE = 2  # shapes are drawn at 2x and reduced: anti-aliased edges


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


def _background(scene: Scene, size: int, rng: np.random.Generator) -> np.ndarray:
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


def render_image(scene: Scene, options: RenderOptions) -> Image.Image:
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
