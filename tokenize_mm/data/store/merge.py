"""Merging a store: ``merge_store`` joins its finished parts into ``store.json``.

Before it writes ``store.json`` it checks that every part of one ``num_shards`` is there and
finished (``part.json``), that the parts were made as the same job (their plans agree), that each
chunk covers exactly the records its plan gives it, each once (in its examples or errors), that
no record id is in two chunks, and that each chunk file has the size and sha256 its index records.
So every input record is in the merged store exactly once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenize_mm.core.atomic import write_text_atomic
from tokenize_mm.data.store.checks import (
    _check_bin,
    _check_checksum,
    _check_index,
    _check_records,
    _redo_chunk,
    _short,
)
from tokenize_mm.data.store.errors import (
    StoreError,
    StoreFormatError,
    StoreIntegrityError,
    StoreMismatchError,
)
from tokenize_mm.data.store.format import (
    _PART_DIR,
    PLAN_NAME,
    STORE_FORMAT,
    STORE_VERSION,
    _load_layout,
    chunk_name,
    committed_chunks,
    part_name,
    token_dtype,
)
from tokenize_mm.data.store.json_fields import JsonFile
from tokenize_mm.data.store.plan import _plan_differences, chunk_positions
from tokenize_mm.sequence.vocab import VocabLayout


@dataclass(frozen=True)
class _Part:
    """A finished part, read for the merge: its folder, checked plan and report."""

    path: Path
    plan: dict[str, Any]
    report: dict[str, Any]


def _part_dirs(out: Path) -> list[Path]:
    """The part folders of a store, each named as the store names its parts."""
    parts = sorted((out / "parts").glob("part-*"))
    if not parts:
        raise StoreError(f"{out}: no parts to merge; pretokenize into it first")
    for path in parts:
        match = _PART_DIR.fullmatch(path.name)
        shard, num = map(int, match.groups()) if match else (-1, -1)
        if not 0 <= shard < num or path.name != part_name(shard, num):
            raise StoreFormatError(
                f"{path}: not a part of this store (parts are named like part-00000-of-00001); "
                "move it out of parts/"
            )
    return parts


def _read_part(path: Path, layout: VocabLayout) -> _Part:
    """Read and check a part's ``part.json`` and ``plan.json`` and that its chunks are done."""
    report_path = path / "part.json"
    if not report_path.is_file():
        raise StoreError(f"{path} is unfinished (no part.json): run its pretokenize again")
    report_file = JsonFile(report_path, "run its pretokenize again")
    report = report_file.load()
    num_chunks = report_file.count(report, "num_chunks")
    for k, skipped in enumerate(report_file.field(report, "source_skipped", list)):
        report_file.field(skipped, "reason", str, where=f"source_skipped[{k}]")
    plan_file = JsonFile(path / PLAN_NAME, f"delete {path} and run its pretokenize again")
    plan = plan_file.load()
    for key in ("shard_index", "num_shards", "chunk_size", "num_records"):
        plan_file.count(plan, key)
    if plan["chunk_size"] < 1:
        raise plan_file.error(f"chunk_size is {plan['chunk_size']}, not a positive integer")
    for key in ("layout_fingerprint", "source_fingerprint"):
        plan_file.field(plan, key, str)
    shard, num = map(int, _PART_DIR.fullmatch(path.name).groups())  # type: ignore[union-attr]
    named = [(plan_file, plan["shard_index"], plan["num_shards"]),
             (report_file, report_file.field(report, "shard_index", int),
              report_file.field(report, "num_shards", int))]  # fmt: skip
    for file, s, n in named:
        if (s, n) != (shard, num):
            raise file.error(f"says shard {s} of {n}, its folder {path.name}")
    if plan["layout_fingerprint"] != layout.fingerprint:
        raise StoreMismatchError(
            f"{path}: made with layout {plan['layout_fingerprint'][:12]}..., the store's is "
            f"{layout.fingerprint[:12]}...; delete the part and run its pretokenize again"
        )
    expected = len(chunk_positions(plan["num_records"], shard, num, plan["chunk_size"]))
    done = committed_chunks(path)
    if num_chunks != expected or done != set(range(expected)):
        missing, extra = sorted(set(range(expected)) - done), sorted(done - set(range(expected)))
        raise StoreError(
            f"{path} is missing chunks {_short(missing)} or holds chunks its plan does not "
            f"give it {_short(extra)} (part.json says {num_chunks} chunks, the plan {expected}): "
            "run its pretokenize again (with the same settings)"
        )
    return _Part(path, plan, report)


_SAME_JOB = ("num_shards", "audio_pattern", "span_order", "layout_fingerprint", "num_records",
             "source_type", "source_fingerprint")  # fmt: skip


def _check_parts_agree(out: Path, parts: list[_Part]) -> None:
    """Every shard of one ``num_shards`` is there, and all were made from the same job."""
    counts = {p.plan["num_shards"] for p in parts}
    shards = sorted(p.plan["shard_index"] for p in parts)
    if len(counts) != 1 or shards != list(range(next(iter(counts)))):
        raise StoreError(
            f"{out}: found parts {[p.path.name for p in parts]}; every shard_index of one "
            "num_shards is needed before the merge"
        )
    first = parts[0]
    for part in parts[1:]:
        differences = _plan_differences(
            {k: first.plan.get(k) for k in _SAME_JOB},
            {k: part.plan.get(k) for k in _SAME_JOB},
            (f"in {first.path.name}", f"in {part.path.name}"),
        )
        if differences:
            raise StoreMismatchError(
                f"{out}: {part.path.name} was made as another job than {first.path.name} "
                f"({'; '.join(differences)}); delete the parts made from the wrong source or "
                "settings and run their pretokenize again"
            )


def merge_store(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Join the parts of a store into ``store.json``; returns it.

    Checks first: every part of one ``num_shards`` is there and finished; the parts were made
    from the same source and settings (their plans); each chunk covers exactly the records its
    plan gives it, each once (in its examples or errors), and no record id is in two chunks; each
    chunk file has the size and sha256 its index records.

    Raises:
        StoreError: a part is missing or unfinished, or parts disagree on the shard count.
        StoreMismatchError: parts were made from different sources, settings or layouts.
        StoreIntegrityError: a record is missing or twice, or a chunk file changed.
        StoreFormatError: a file of the store is malformed (the message names it).
    """
    out = Path(out_dir)
    layout = _load_layout(out)
    dtype = token_dtype(layout.vocab_size)
    parts = [_read_part(path, layout) for path in _part_dirs(out)]
    _check_parts_agree(out, parts)
    chunks: list[str] = []
    owner: dict[str, Path] = {}  # record id -> the chunk index holding it
    num_examples = num_errors = num_tokens = 0
    for part in parts:
        plan = part.plan
        for c, positions in enumerate(chunk_positions(
            plan["num_records"], plan["shard_index"], plan["num_shards"], plan["chunk_size"]
        )):  # fmt: skip
            index_path = part.path / f"{chunk_name(c)}.json"
            jf = JsonFile(index_path, _redo_chunk(index_path))
            index = _check_index(jf, c, dtype, STORE_VERSION)
            _check_records(jf, index, positions)
            bin_path = jf.path.with_suffix(".bin")
            _check_bin(bin_path, index, dtype, jf.fix)
            _check_checksum(bin_path, index, jf.fix)
            for record_id in index["ids"]:
                if record_id is not None and owner.setdefault(record_id, jf.path) != jf.path:
                    raise StoreIntegrityError(
                        f"{jf.path}: record id {record_id!r} is also in {owner[record_id]}; "
                        "every record must be in the store once: give the source's records "
                        "unique ids, or pretokenize again into a new out_dir"
                    )
            chunks.append(f"parts/{part.path.name}/{chunk_name(c)}")
            num_examples += len(index["examples"])
            num_errors += len(index["errors"])
            num_tokens += index["num_tokens"]
    store = {
        "format": STORE_FORMAT, "format_version": STORE_VERSION,
        "fingerprint": layout.fingerprint, "identities": dict(layout.identities),
        "dtype": dtype.name, "vocab_size": layout.vocab_size,
        "chunks": chunks, "num_records": parts[0].plan["num_records"],
        "source_type": parts[0].plan.get("source_type"),
        "source_fingerprint": parts[0].plan["source_fingerprint"],
        "num_examples": num_examples, "num_errors": num_errors,
        "num_source_skipped": sum(len(p.report["source_skipped"]) for p in parts),
        "num_tokens": num_tokens,
    }  # fmt: skip
    write_text_atomic(out / "store.json", json.dumps(store, indent=2))
    return store
