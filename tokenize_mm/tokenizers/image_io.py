"""Image input policy: every accepted input becomes a float tensor (3, S, S) in [0, 1].

One documented policy for all inputs (files, PIL images, tensors):

1. **Reading.** A path is opened with Pillow and fully decoded (a truncated or non-image file is an
   error, never a partial image); the EXIF orientation is applied.
2. **Mode.** 16-bit and 32-bit integer modes (``I;16*``, ``I``) are scaled from [0, 65535], float
   mode ``F`` from [0, 255]; modes with transparency (``RGBA``, ``LA``, ``PA``, ``P`` with a
   transparent index) are composited onto white; every other mode (``L``, ``1``, ``P``, ``CMYK``,
   ``YCbCr``, ``LAB``, ``HSV``) goes through Pillow's conversion to ``RGB``. Grey becomes three equal
   channels.
3. **Size.** The shorter side is resized to S with an anti-aliased bicubic filter, then the centre
   S × S square is cropped. Aspect ratio is kept; the long side's borders are cut.

Tensors must be float (C, H, W) with C in {1, 3, 4} and finite values in [0, 1]; C = 1 is grey,
C = 4 is RGBA (composited onto white). Anything else is refused with ``InvalidInputError``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from tokenize_mm.tokenizers.errors import InvalidInputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
POLICY = (
    "PIL decode + EXIF transpose; alpha composited on white; 16-bit scaled from 65535; "
    "other modes via PIL convert('RGB'); shorter side resized (bicubic, antialias) to "
    "image_size, centre crop; float tensors (C in 1,3,4) in [0,1] taken as is"
)


def describe(item: Any) -> str:
    """A short name for an item, used in error messages."""
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    if isinstance(item, torch.Tensor):
        return f"tensor{tuple(item.shape)}"
    if isinstance(item, Image.Image):
        return f"PIL image {item.mode} {item.size[0]}x{item.size[1]}"
    return type(item).__name__


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image file; errors name the file and the problem."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        raise InvalidInputError("file does not exist", item=name)
    if p.is_dir():
        raise InvalidInputError("is a directory, not an image file", item=name)
    if p.stat().st_size == 0:
        raise InvalidInputError("file is empty (0 bytes); re-export the image", item=name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p) as img:
                img.load()
                img = ImageOps.exif_transpose(img)
                img.load()
                return img
    except UnidentifiedImageError as err:
        raise InvalidInputError(
            "not an image file Pillow can read (unknown or corrupt format)", item=name
        ) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidInputError(f"image is too large to decode safely ({err})", item=name) from err
    except (OSError, SyntaxError, ValueError) as err:
        raise InvalidInputError(f"image file is truncated or corrupt ({err})", item=name) from err


def pil_to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB by the policy in the module docstring."""
    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        scale = 255.0 if mode == "F" else 65535.0
        arr = np.clip(arr / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
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
    """Raise ``InvalidInputError`` unless ``x`` is a float (C, H, W) image in [0, 1]."""
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
        InvalidInputError: naming the item, for unreadable files and invalid tensors or types.
    """
    name = describe(item)
    if isinstance(item, (str, os.PathLike)):
        item = open_image(item)
    if isinstance(item, Image.Image):
        if item.width == 0 or item.height == 0:
            raise InvalidInputError("image has zero width or height", item=name)
        img = resize_center_crop_pil(pil_to_rgb(item), size)
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
