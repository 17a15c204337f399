"""The text input policy: what ``TextTokenizer`` accepts, for encoding and for fitting.

``str`` is taken as is, with no normalization; UTF-8 ``bytes`` are decoded strictly (sentencepiece
would silently replace invalid bytes by U+FFFD); a lone surrogate, which has no UTF-8 encoding and
makes sentencepiece raise an untyped error, is refused up front. A fit item that is an
``os.PathLike`` is a UTF-8 file read line by line (universal newlines); a ``str`` is never a path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenize_mm.tokenizers.base import check_batch, map_batch
from tokenize_mm.tokenizers.errors import InvalidInputError

INPUT_POLICY = (
    "str encoded exactly, no normalization; unseen characters as UTF-8 byte pieces; "
    "bytes accepted if valid UTF-8; lone surrogates refused"
)
MARK = "\u2581"  # SentencePiece's whitespace meta symbol
RARE = "\u2585"  # the trainer's stand-in for rare characters: it drops sentences that hold it


def as_text(item: Any) -> str:
    """One encode input as ``str``; raises ``InvalidInputError`` naming the item otherwise."""
    if isinstance(item, (bytes, bytearray)):
        try:
            return bytes(item).decode("utf-8")
        except UnicodeDecodeError as err:
            raise InvalidInputError(
                f"not valid UTF-8 ({err.reason} at byte {err.start}); decode the bytes with "
                "their real encoding and pass a str",
                item=f"{len(item)} bytes",
            ) from None
    if not isinstance(item, str):
        raise InvalidInputError(
            f"expected a str (or UTF-8 bytes), got {type(item).__name__}",
            item=f"{type(item).__name__} object",
        )
    if not item.isascii():
        try:
            item.encode("utf-8")
        except UnicodeEncodeError as err:
            raise InvalidInputError(
                f"lone surrogate U+{ord(item[err.start]):04X} at position {err.start} has no UTF-8 "
                "encoding; fix the source (e.g. read files with errors='replace')",
                item="text " + repr(item[:24] + ("…" if len(item) > 24 else "")),
            ) from None
    return item


def as_texts(items: Sequence[Any]) -> tuple[list[str], str]:
    """``as_text`` over a batch, plus the texts joined. A batch of ``str`` whose concatenation
    encodes to UTF-8 needs no per-item look (the common case, checked in C); otherwise the
    per-item pass converts bytes or names the bad item's batch index."""
    check_batch(items)  # a bare str would be one item per character
    items = items if isinstance(items, list) else list(items)
    try:
        joined = "".join(items)
        joined.encode("utf-8")
        return items, joined
    except (TypeError, UnicodeEncodeError):
        texts = map_batch(as_text, items)
        return texts, "".join(texts)


def read_fit_item(item: Any) -> tuple[list[str], bool]:
    """A fit item as sentences: a text is one, a file one per line. Returns (sentences, is_file)."""
    if not isinstance(item, os.PathLike):
        return [as_text(item)], False
    try:
        data = Path(item).read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        reason = f"not valid UTF-8 ({err.reason} at byte {err.start}); re-encode the file"
    except OSError as err:
        reason = f"cannot read the file ({err.strerror or err})"
    else:  # universal newlines: "\n", "\r\n" and "\r" end a line
        return [line.removesuffix("\n") for line in io.StringIO(data, newline=None)], True
    raise InvalidInputError(reason, item=os.fspath(item))
