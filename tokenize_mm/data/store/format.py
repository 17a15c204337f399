"""The store's on-disk names: format and version, part and chunk names, token dtype, layout.json.

A part is ``parts/part-<shard:05d>-of-<num_shards:05d>``, a chunk ``chunk-<c:06d>`` (its
``.bin``, ``(num_tokens,)`` ids of ``token_dtype``, and its ``.json`` index); a chunk whose
``.json`` is written is committed (``committed_chunks``). ``layout.json`` holds the
``VocabLayout`` that names the store's ids.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from tokenize_mm.data.store.errors import StoreFormatError
from tokenize_mm.sequence.vocab import VocabLayout

STORE_FORMAT = "tokenize_mm.store"
STORE_VERSION = 2  # 2: chunk indexes hold ids, bin_bytes, bin_sha256; parts hold plan.json
PLAN_FORMAT = "tokenize_mm.store.plan"
PLAN_NAME = "plan.json"
_CHUNK = re.compile(r"chunk-(\d{6})\.json")
_PART_DIR = re.compile(r"part-(\d{5,})-of-(\d{5,})")
_CHUNK_PATH = re.compile(r"parts/part-(\d{5,})-of-(\d{5,})/chunk-(\d{6,})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def part_name(shard_index: int, num_shards: int) -> str:
    return f"part-{shard_index:05d}-of-{num_shards:05d}"


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}"


def committed_chunks(part_dir: str | os.PathLike) -> set[int]:
    """Chunks of a part whose index is written (the ones a rerun skips)."""
    part = Path(part_dir)
    if not part.is_dir():
        return set()
    return {int(m.group(1)) for p in part.iterdir() if (m := _CHUNK.fullmatch(p.name))}


def _load_layout(out: Path) -> VocabLayout:
    """The store's ``layout.json``; ``StoreFormatError`` if it is missing or not a layout."""
    path = out / "layout.json"
    try:
        return VocabLayout.load(path)
    except FileNotFoundError:
        raise StoreFormatError(
            f"{path}: missing, so {out} is not a store; pretokenize into it first"
        ) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise StoreFormatError(
            f"{path}: not a valid layout ({type(err).__name__}: {err}); pretokenize the store "
            "again into a new out_dir"
        ) from None
