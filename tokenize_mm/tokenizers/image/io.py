"""Image input policy: every accepted input becomes a float tensor (3, S, S) in [0, 1].

One documented policy for all inputs (files, PIL images, tensors):

1. **Bounds, before any decoding.** Width and height are read from the file's header (Pillow's
   ``Image.open`` reads only the header; pixels are decoded by ``load``) and checked before a
   pixel is decoded: the longer side at most ``MAX_SIDE`` (32768), at most ``MAX_PIXELS``
   (2**26, 8192 × 8192) pixels, and an aspect ratio (longer side / shorter side) at most
   ``MAX_ASPECT`` (32:1). The same bounds apply to PIL images and tensors given directly. Without
   them a 1.2 KB PNG of 400000 × 1 pixels was scaled to 256 × 102400000 before its centre crop
   (40 s, 7.9 GB): Pillow's decompression-bomb check looks at the file's pixels, not the resize's.
   With them, the resized image has at most S × 32·S pixels, and the largest accepted file costs
   about 0.8 GB and a few seconds (8192 × 8192 RGBA: decoded, white background, composite, 4 bytes
   a pixel each; ``benchmarks/hostile_inputs.py``).
2. **Reading.** A path is opened with Pillow and fully decoded (a truncated or non-image file is an
   error, never a partial image); the EXIF orientation is applied. An animated file (GIF, APNG,
   WebP, AVIF or FLI with more than one frame) is refused rather than silently reduced to its
   first frame: open it with Pillow, ``seek`` to the frame you want and pass the PIL image. A PIL
   image given directly is encoded at its current frame. Other multi-frame formats (multi-page
   TIFF, MPO with its extra pictures) give their first frame (their primary image).
3. **Mode.** 16-bit and 32-bit integer modes (``I;16*``, ``I``) are scaled from [0, 65535], float
   mode ``F`` from [0, 255], and values outside the range are clipped; NaN or Inf in ``I`` / ``F``
   pixels is refused (it would otherwise encode as black). Modes with transparency (``RGBA``,
   ``LA``, ``PA``, ``P`` with a transparent index) are composited onto white; every other mode
   (``L``, ``1``, ``P``, ``CMYK``, ``YCbCr``, ``LAB``, ``HSV``) goes through Pillow's conversion to
   ``RGB``. Grey becomes three equal channels.
4. **Size.** The shorter side is resized to S with an anti-aliased bicubic filter, then the centre
   S × S square is cropped. Aspect ratio is kept; the long side's borders are cut.

Tensors must be float (C, H, W) with C in {1, 3, 4} and finite values in [0, 1], within the
bounds of point 1; C = 1 is grey, C = 4 is RGBA (composited onto white). Anything else is refused
with ``InvalidInputError``.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from tokenize_mm.core.files import input_file_problem
from tokenize_mm.tokenizers.errors import InvalidInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
POLICY = (
    "size checked from the header before decoding (side <= 32768, pixels <= 2**26, aspect <= "
    "32:1, also for PIL images and tensors); animated files refused; PIL decode + EXIF transpose; "
    "alpha composited on white; 16-bit scaled from 65535, float from 255, NaN/Inf refused; "
    "other modes via PIL convert('RGB'); shorter side resized (bicubic, antialias) to "
    "image_size, centre crop; float tensors (C in 1,3,4) in [0,1] taken as is"
)
# Bounds on an input's size, checked before decoding (module docstring, point 1).
MAX_SIDE = 32_768  # longer side, in pixels
MAX_PIXELS = 2**26  # width × height (8192 × 8192; Pillow's own bomb warning is at 89.5 M)
MAX_ASPECT = 32  # longer side / shorter side: the centre crop keeps at least 1/32 of the image
# Formats whose extra frames are an animation (refused), not auxiliary pictures (MPO, TIFF pages).
ANIMATED_FORMATS = ("GIF", "PNG", "WEBP", "AVIF", "FLI")


def describe(item: Any) -> str:
    """A short name for an item, used in error messages."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, torch.Tensor):
        return f"tensor{tuple(item.shape)}"
    if isinstance(item, Image.Image):
        return f"PIL image {item.mode} {item.size[0]}x{item.size[1]}"
    return type(item).__name__


def check_size(width: int, height: int, name: str) -> None:
    """Refuse an image whose size is zero or outside ``MAX_ASPECT``, ``MAX_SIDE``, ``MAX_PIXELS``.

    Raises:
        InvalidInputError: naming the item, its size and the limit it breaks.
    """
    long, short = max(width, height), min(width, height)
    size = f"{width} x {height} pixels"
    if short <= 0:
        raise InvalidInputError(f"image has zero width or height ({size})", item=name)
    if long > MAX_ASPECT * short:
        ratio = f"{long / short:.1f}".removesuffix(".0")
        raise InvalidInputError(
            f"image is {size}, an aspect ratio of {ratio}:1, more than the limit of {MAX_ASPECT}:1 "
            "(MAX_ASPECT); its centre square would be a sliver of it: crop or pad it to a less "
            "elongated shape first",
            item=name,
        )
    if long > MAX_SIDE:
        raise InvalidInputError(
            f"image is {size}, a side longer than the limit of {MAX_SIDE} (MAX_SIDE); "
            "downscale it first",
            item=name,
        )
    if width * height > MAX_PIXELS:
        raise InvalidInputError(
            f"image is {size} ({width * height:,} pixels), more than the limit of "
            f"{MAX_PIXELS:,} (MAX_PIXELS); downscale it first",
            item=name,
        )


def check_still(img: Image.Image, name: str) -> None:
    """Refuse an animated image file (module docstring, point 2): say how to pick a frame."""
    if img.format in ANIMATED_FORMATS and getattr(img, "is_animated", False):
        frames = getattr(img, "n_frames", "several")
        raise InvalidInputError(
            f"animated {img.format} image ({frames} frames); only still images are encoded, and "
            "using frame 0 would silently drop the rest: pick a frame with Pillow and pass the "
            "image, e.g. img = Image.open(path); img.seek(k); tokenizer.encode(img)",
            item=name,
        )


@contextlib.contextmanager
def _decode_errors(name: str) -> Iterator[None]:
    """Turn Pillow's errors while reading ``name`` into ``InvalidInputError`` naming it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except InvalidInputError:
        raise
    except UnidentifiedImageError as err:
        raise InvalidInputError(
            "not an image file Pillow can read (unknown or corrupt format)", item=name
        ) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidInputError(
            f"image is too large to decode safely ({err}); at most {MAX_PIXELS:,} pixels "
            "(MAX_PIXELS) are accepted",
            item=name,
        ) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidInputError(f"image file is truncated or corrupt ({err})", item=name) from err


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file, check its header (size, animation), then fully decode it.

    Raises:
        InvalidInputError: naming the file and the problem; size and animation are refused from
            the header, before any pixel is decoded.
    """
    name = str(path)
    p = Path(path)
    if (problem := input_file_problem(p)) is not None:
        raise InvalidInputError(f"{problem}; pass an image file", item=name)
    with _decode_errors(name), p.open("rb") as f:  # our file: closing it keeps the pixels
        img = Image.open(f)  # reads the header only
        check_size(img.width, img.height, name)
        check_still(img, name)
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # no copy unless the image is rotated
        return img


def pil_to_rgb(img: Image.Image, name: str | None = None) -> Image.Image:
    """Convert any Pillow mode to RGB by the policy in the module docstring.

    Raises:
        InvalidInputError: naming ``name``, for NaN or Inf pixels in mode ``I`` or ``F``.
    """
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.array(img, dtype=np.float32)  # (H, W), a writable copy; float32 is exact enough
        if not np.isfinite(arr).all():
            raise InvalidInputError(
                f"mode {mode} image contains NaN or Inf pixel values; replace them (e.g. "
                "numpy.nan_to_num) before encoding",
                item=name,
            )
        arr *= 255.0 / (255.0 if mode == "F" else 65535.0)
        arr += 0.5
        arr = np.clip(arr, 0, 255, out=arr).astype(np.uint8)
        return Image.fromarray(arr).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img if mode == "RGBA" else img.convert("RGBA")
        white = (255, 255, 255, 255)  # the background is freed as soon as it is composited
        return Image.alpha_composite(Image.new("RGBA", rgba.size, white), rgba).convert("RGB")
    return img.convert("RGB") if mode != "RGB" else img


def resize_center_crop_pil(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def check_tensor(x: torch.Tensor, name: str) -> None:
    """Raise ``InvalidInputError`` unless ``x`` is a float (C, H, W) image in [0, 1] within the
    size bounds (``check_size``)."""
    if not torch.is_floating_point(x):
        raise InvalidInputError(
            f"image tensor must be floating point in [0, 1], got {x.dtype}; for uint8 "
            "pixels use x.float() / 255",
            item=name,
        )
    if x.dim() != 3 or x.shape[0] not in (1, 3, 4):
        hint = (
            " (a batch? pass a list of (C, H, W) tensors to encode_batch)" if x.dim() == 4 else ""
        )
        raise InvalidInputError(
            f"image tensor must have shape (C, H, W) with C in 1, 3, 4; got {tuple(x.shape)}{hint}",
            item=name,
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise InvalidInputError("image tensor has zero height or width", item=name)
    check_size(x.shape[2], x.shape[1], name)
    if not bool(torch.isfinite(x).all()):
        raise InvalidInputError("image tensor contains NaN or Inf values", item=name)
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise InvalidInputError(
            f"image tensor values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; "
            "normalise it (e.g. x / 255 or (x + 1) / 2)",
            item=name,
        )


def tensor_to_rgb_square(x: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) float in [0, 1] → (3, size, size) float32 by the same policy as for files."""
    x = x.detach().to("cpu", torch.float32)
    if x.shape[0] == 4:  # RGBA onto white
        rgb, alpha = x[:3], x[3:4]
        x = rgb * alpha + (1.0 - alpha)
    elif x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    _, h, w = x.shape
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    if (nh, nw) != (h, w):
        x = F.interpolate(
            x[None], size=(nh, nw), mode="bicubic", antialias=True, align_corners=False
        )[0]
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[:, top : top + size, left : left + size].clamp(0.0, 1.0).contiguous()


def to_model_input(item: Any, size: int) -> torch.Tensor:
    """Any accepted image input → float32 tensor (3, size, size) in [0, 1].

    Raises:
        InvalidInputError: naming the item, for unreadable or animated files, sizes outside the
            bounds (checked before decoding), NaN pixels, and invalid tensors or types.
    """
    name = describe(item)
    if isinstance(item, (str, os.PathLike)):
        item = open_image(item)
    if isinstance(item, Image.Image):
        check_size(item.width, item.height, name)  # before a lazily opened image is decoded
        img = resize_center_crop_pil(pil_to_rgb(item, name), size)
        arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)
    if isinstance(item, torch.Tensor):
        check_tensor(item, name)
        return tensor_to_rgb_square(item, size)
    raise InvalidInputError(
        f"unsupported image input of type {type(item).__name__}; pass a path, a PIL image or a "
        "float tensor (C, H, W) in [0, 1]",
        item=name,
    )


def to_pil(x: torch.Tensor) -> Image.Image:
    """Float tensor (3, H, W) in [0, 1] → RGB PIL image (rounded to 8 bits)."""
    arr = (x.detach().to("cpu", torch.float32).clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)
    return Image.fromarray(arr.permute(1, 2, 0).numpy(), mode="RGB")


def iter_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted for determinism."""
    root = Path(folder)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
