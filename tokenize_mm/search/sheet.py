"""A contact sheet: image hits as a grid of thumbnails, each captioned with its rank and score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

from tokenize_mm.core.atomic import write_atomic
from tokenize_mm.search.errors import SearchError


def contact_sheet(hits: Sequence, out: str | Path, thumb: int = 160, columns: int = 5) -> Path:
    """Write a PNG of the image hits among ``hits`` (``index.Hit``; others are left out) to
    ``out`` atomically. Returns the path.

    Raises:
        SearchError: no image hit has a file to show.
    """
    shown = [h for h in hits if h.item["modality"] == "image" and h.item.get("path")]
    if not shown:
        raise SearchError("no image hit to put on a contact sheet (query with modality=image)")
    columns = min(columns, len(shown))
    rows = (len(shown) + columns - 1) // columns
    caption = 18
    sheet = Image.new("RGB", (columns * thumb, rows * (thumb + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, hit in enumerate(shown):
        x, y = (i % columns) * thumb, (i // columns) * (thumb + caption)
        try:
            with Image.open(hit.item["path"]) as img:
                tile = ImageOps.pad(img.convert("RGB"), (thumb, thumb), color="white")
        except OSError:  # moved or deleted since indexing: say so in its tile
            tile = Image.new("RGB", (thumb, thumb), "lightgrey")
            ImageDraw.Draw(tile).text((4, thumb // 2), "file missing", fill="black")
        sheet.paste(tile, (x, y))
        draw.text((x + 4, y + thumb + 3), f"#{hit.rank}  {hit.score:.3f}", fill="black")
    out = Path(out)
    return write_atomic(out, lambda tmp: sheet.save(tmp, format="PNG"))
