"""Checks of a chunk against its index: the index's fields, the records it covers, its file.

Shared by ``merge_store`` and ``TokenStore``: ``_check_index`` (the fields reading uses),
``_check_records`` (exactly the plan's record positions, each once), ``_check_bin`` (the
``.bin``'s size, a stat), ``_check_checksum`` (its sha256, a read) and ``_check_chunk_path`` (a
chunk path of ``store.json`` is one of the store's own names). A bad field is a
``StoreFormatError``, bad data a ``StoreIntegrityError``; both name the file and say how to redo
the chunk (``_redo_chunk``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tokenize_mm.data.store.errors import StoreIntegrityError
from tokenize_mm.data.store.format import _CHUNK_PATH, _SHA256, chunk_name, part_name
from tokenize_mm.data.store.json_fields import JsonFile


def _redo_chunk(index_path: Path) -> str:
    """How to fix a bad chunk of a store: redo it (its commit is its index)."""
    return (
        f"redo the chunk: delete {index_path}, rerun pretokenize with the settings the store was "
        "made with (it redoes only that chunk), then merge_store"
    )


def _check_index(jf: JsonFile, chunk: int, dtype: np.dtype, version: int) -> dict[str, Any]:
    """Check the fields of a chunk index (``jf``) that reading uses; returns the index.

    ``version`` 1 indexes (no ids, size or checksum) are accepted for reading only.
    """
    index = jf.load()
    if jf.field(index, "chunk", int) != chunk:
        raise jf.error(f"says it is chunk {index['chunk']}, its name says {chunk}")
    if jf.field(index, "dtype", str) != dtype.name:
        raise jf.error(f"dtype is {index['dtype']!r}, the store's is {dtype.name!r}")
    num_tokens = jf.count(index, "num_tokens")
    positions = jf.ints(index, "positions")
    if version >= 2:
        if jf.count(index, "bin_bytes") != num_tokens * dtype.itemsize:
            raise jf.error(f"bin_bytes {index['bin_bytes']} is not num_tokens x {dtype.itemsize}")
        if not _SHA256.fullmatch(jf.field(index, "bin_sha256", str)):
            raise jf.error("bin_sha256 is not a sha256 (64 lowercase hex digits)")
        ids = jf.field(index, "ids", list)
        if len(ids) != len(positions) or not all(i is None or type(i) is str for i in ids):
            raise jf.error("ids must hold one string (or null) per position")
    for k, entry in enumerate(jf.field(index, "examples", list)):
        where = f"example {k}"
        jf.count(entry, "position", where)
        jf.field(entry, "id", str, where=where)
        end = jf.count(entry, "offset", where) + jf.count(entry, "length", where)
        if end > num_tokens:
            raise jf.error(f"{where} ({entry['id']!r}) ends at {end}, past num_tokens {num_tokens}")
        jf.ints(entry, "cuts", where)
        for key in ("tokens", "units"):
            jf.field(entry, key, dict, where=where)
        for key in ("source", "split"):
            jf.field(entry, key, str, where=where)
        jf.field(entry, "concept", str, type(None), where=where)
    for k, entry in enumerate(jf.field(index, "errors", list)):
        jf.count(entry, "position", f"error {k}")
        jf.field(entry, "id", str, type(None), where=f"error {k}")
        jf.field(entry, "reason", str, where=f"error {k}")
    return index


def _check_records(jf: JsonFile, index: dict[str, Any], positions: Sequence[int]) -> None:
    """Check that the chunk covers exactly ``positions``, each record once (in its examples or
    its errors) and under the id its ``ids`` gives it (``StoreIntegrityError``)."""
    fix = _redo_chunk(jf.path)
    if index["positions"] != list(positions):
        raise StoreIntegrityError(
            f"{jf.path}: covers record positions {_short(index['positions'])}, its part's plan "
            f"gives it {_short(list(positions))}; {fix}"
        )
    id_of = dict(zip(positions, index["ids"], strict=True))
    seen: dict[int, str] = {}
    for kind in ("examples", "errors"):
        for entry in index[kind]:
            pos = entry["position"]
            if pos not in id_of:
                raise StoreIntegrityError(
                    f"{jf.path}: {kind} hold record position {pos} ({entry['id']!r}), which is "
                    f"not one of the chunk's; {fix}"
                )
            if pos in seen:
                raise StoreIntegrityError(
                    f"{jf.path}: record position {pos} ({entry['id']!r}) is in the chunk twice "
                    f"({seen[pos]} and {kind}); {fix}"
                )
            if entry["id"] is not None and entry["id"] != id_of[pos]:
                raise StoreIntegrityError(
                    f"{jf.path}: record position {pos} is {entry['id']!r} in {kind} but "
                    f"{id_of[pos]!r} in ids; {fix}"
                )
            seen[pos] = kind
    missing = [p for p in positions if p not in seen]
    if missing:
        raise StoreIntegrityError(
            f"{jf.path}: records at positions {_short(missing)} are in neither the examples nor "
            f"the errors; {fix}"
        )


def _short(values: Sequence[Any], limit: int = 8) -> str:
    """A list for a message, cut after ``limit`` items."""
    shown = ", ".join(map(str, values[:limit]))
    return f"[{shown}{', ...' if len(values) > limit else ''}] ({len(values)})"


def _check_bin(path: Path, index: dict[str, Any], dtype: np.dtype, fix: str) -> None:
    """Check a chunk's ``.bin`` size against its index (a stat); ``StoreIntegrityError``."""
    expected = index["num_tokens"] * dtype.itemsize
    try:
        size = os.stat(path).st_size
    except OSError as err:
        raise StoreIntegrityError(
            f"{path}: the chunk's token file cannot be read ({err.strerror}); {fix}"
        ) from None
    if size != expected:
        raise StoreIntegrityError(
            f"{path}: {size} bytes, its index says {expected} ({index['num_tokens']} tokens of "
            f"{dtype.name}): the chunk file is truncated or was overwritten; {fix}"
        )


def _check_checksum(path: Path, index: dict[str, Any], fix: str) -> None:
    """Check a chunk's ``.bin`` against the sha256 in its index; ``StoreIntegrityError``."""
    from tokenize_mm.tokenizers.artifact import sha256_file

    actual = sha256_file(path)
    if actual != index["bin_sha256"]:
        raise StoreIntegrityError(
            f"{path}: sha256 {actual[:12]}..., its index says {index['bin_sha256'][:12]}...: the "
            f"chunk file changed after it was written; {fix}"
        )


def _check_chunk_path(jf: JsonFile, rel: Any, k: int) -> str:
    """A chunk path from ``store.json``: exactly one of the store's own chunk names."""
    match = _CHUNK_PATH.fullmatch(rel) if isinstance(rel, str) else None
    if match:
        shard, num, chunk = map(int, match.groups())
        if shard < num and rel == f"parts/{part_name(shard, num)}/{chunk_name(chunk)}":
            return rel
    raise jf.error(
        f"chunks[{k}] is {rel!r}, not a chunk of this store (a chunk is named like "
        "'parts/part-00000-of-00001/chunk-000000', inside the store)"
    )
