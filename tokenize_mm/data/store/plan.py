"""A part's plan and the resume rule: a part resumes only as the same job.

Record i of the source belongs to part ``i % num_shards``; a part's records are cut into chunks
of ``chunk_size`` (``chunk_positions``). Which records a chunk covers depends on the source, its
order, ``chunk_size`` and the shard; what its tokens are depends on the layout, ``audio_pattern``
and the span order. ``_plan`` records all of it (with the source's fingerprint), a part writes it
as ``plan.json`` when it is started, and ``_check_or_write_plan`` resumes the part only under the
same plan; otherwise ``StoreResumeError`` names each difference (then, now).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tokenize_mm.core.atomic import write_text_atomic
from tokenize_mm.data.example import Example
from tokenize_mm.data.store.errors import StoreResumeError
from tokenize_mm.data.store.fingerprint import source_fingerprint
from tokenize_mm.data.store.format import (
    _SHA256,
    PLAN_FORMAT,
    PLAN_NAME,
    STORE_VERSION,
    committed_chunks,
)
from tokenize_mm.data.store.json_fields import JsonFile
from tokenize_mm.sequence.interleave import SpanOrder
from tokenize_mm.sequence.vocab import VocabLayout


def chunk_positions(
    num_records: int, shard_index: int, num_shards: int, chunk_size: int
) -> list[tuple[int, ...]]:
    """The record positions of each chunk of a part: ``[chunk] -> (positions, ...)``."""
    mine = list(range(shard_index, num_records, num_shards))
    return [tuple(mine[i : i + chunk_size]) for i in range(0, len(mine), chunk_size)]


def _plan(
    source: Sequence[Example], layout: VocabLayout, *, audio_pattern: str, order: SpanOrder,
    chunk_size: int, shard_index: int, num_shards: int,
) -> dict[str, Any]:  # fmt: skip
    """What a part is a piece of: everything that decides which records its chunks cover and
    what their tokens are. A part resumes only under the same plan."""
    span_order = {
        "mode": order.mode,
        "order": list(order.order) if order.mode == "fixed" else None,  # used by "fixed" only
        "seed": order.seed if order.mode == "random" else None,  # used by "random" only
    }
    return {
        "format": PLAN_FORMAT, "format_version": STORE_VERSION,
        "shard_index": shard_index, "num_shards": num_shards, "chunk_size": chunk_size,
        "audio_pattern": audio_pattern, "span_order": span_order,
        "layout_fingerprint": layout.fingerprint, "num_records": len(source),
        "source_type": type(source).__name__, "source_fingerprint": source_fingerprint(source),
    }  # fmt: skip


_WHY = {
    "source_fingerprint": "the source's records, their order or their files changed",
    "num_records": "the source has another number of records",
    "layout_fingerprint": "other tokenizers",
}


def _plan_differences(
    old: Mapping[str, Any], new: Mapping[str, Any], labels: tuple[str, str] = ("then", "now")
) -> list[str]:
    """``"key: <old> then, <new> now"`` (with ``labels``) for each key whose value differs."""
    out = []
    for key in sorted(set(old) | set(new)):
        before, now = old.get(key, "(absent)"), new.get(key, "(absent)")
        if before != now:
            why = f" ({_WHY[key]})" if key in _WHY else ""
            out.append(f"{key}: {_show(before)} {labels[0]}, {_show(now)} {labels[1]}{why}")
    return out


def _show(value: Any) -> str:
    """A plan value for a message (fingerprints shortened)."""
    if isinstance(value, str) and _SHA256.fullmatch(value):
        return value[:12] + "..."
    return json.dumps(value)


def _check_or_write_plan(part: Path, plan: dict[str, Any]) -> None:
    """Start ``part`` under ``plan``, or check that it was started under the same one.

    Raises:
        StoreResumeError: the part was started under another plan, or holds chunks but no plan.
        StoreFormatError: its ``plan.json`` is not a JSON object.
    """
    path = part / PLAN_NAME
    start_over = f"to start the part over, delete {part} (or write to another out_dir)"
    if path.is_file():
        old = JsonFile(path, start_over).load()
        differences = _plan_differences(old, json.loads(json.dumps(plan)))
        if differences:
            raise StoreResumeError(
                f"{part} was started as another job, and resuming it would mix the two: "
                f"{'; '.join(differences)}. To resume it, run again with the settings and source "
                f"it was started with; {start_over}"
            )
        return
    if committed_chunks(part) or (part / "part.json").exists():
        raise StoreResumeError(
            f"{part} holds chunks but no {PLAN_NAME} (written by an older tokenize_mm), so "
            f"whether they belong to this job is unknown: {start_over}"
        )
    write_text_atomic(path, json.dumps(plan, indent=2))
