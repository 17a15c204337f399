"""Writing a store: ``pretokenize`` tokenizes one shard of a source into its part, resumably.

``out_dir/layout.json`` is written (or checked: an existing store must have the same layout), the
part's ``plan.json`` is written (or checked: ``plan.py``), the chunks not yet committed are run
(``worker.py``), in this process or over 'spawn' worker processes, and ``part.json`` is written
when every chunk of the part is done, with the records the source itself refused
(``source_skipped``).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tokenize_mm.core.atomic import write_text_atomic
from tokenize_mm.data.example import Example
from tokenize_mm.data.store.errors import StoreError, StoreMismatchError
from tokenize_mm.data.store.format import _load_layout, committed_chunks, part_name
from tokenize_mm.data.store.plan import _check_or_write_plan, _plan, chunk_positions
from tokenize_mm.data.store.worker import _init_worker, _Job, _run_chunk
from tokenize_mm.sequence.interleave import DEFAULT_ORDER, SpanOrder
from tokenize_mm.sequence.vocab import VocabLayout


def pretokenize(
    source: Sequence[Example],
    tokenizer_dirs: Mapping[str, str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    audio_pattern: str = "flatten",
    order: SpanOrder = DEFAULT_ORDER,
    chunk_size: int = 64,
    workers: int = 1,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Tokenize this shard of ``source`` into ``out_dir/parts/<part>``; resumable.

    A part already started in ``out_dir`` is resumed (its committed chunks are kept) only if it
    was started as the same job: the same source (``source_fingerprint``: records, content and
    order), ``chunk_size``, shard, ``audio_pattern``, span order and layout (its ``plan.json``).

    Args:
        source: examples with ``len`` and indexing (built-in, manifest or folder source).
        tokenizer_dirs: modality → tokenizer artifact directory.
        out_dir: the store directory (created; an existing store must have the same layout).
        audio_pattern, order: how examples become sequences (``interleave``).
        chunk_size: records per chunk (the unit of commit and of parallel work).
        workers: worker processes (1: in this process).
        shard_index, num_shards: this part takes records ``i`` with ``i % num_shards ==
            shard_index``; run the others anywhere, then ``merge_store``.
        progress: called with (chunks done, chunks in the part) after each chunk.

    Returns:
        The part's directory.

    Raises:
        StoreMismatchError: ``out_dir`` holds a store of another layout.
        StoreResumeError: the part was started as another job (the message names each setting
            that differs, then and now).
        StoreFormatError: a file of the existing store (``layout.json``, ``plan.json``) is
            malformed.
        StoreError: bad arguments.
    """
    if not 0 <= shard_index < num_shards or chunk_size < 1 or workers < 1:
        raise StoreError(
            f"need 0 <= shard_index < num_shards, chunk_size >= 1, workers >= 1; got "
            f"shard_index={shard_index}, num_shards={num_shards}, chunk_size={chunk_size}, "
            f"workers={workers}"
        )
    dirs = {m: str(Path(d).resolve()) for m, d in tokenizer_dirs.items()}
    layout = VocabLayout.from_artifacts(dirs, audio_pattern=audio_pattern)
    out = Path(out_dir)
    _check_or_write_layout(out, layout)
    plan = _plan(source, layout, audio_pattern=audio_pattern, order=order, chunk_size=chunk_size,
                 shard_index=shard_index, num_shards=num_shards)  # fmt: skip
    part = out / "parts" / part_name(shard_index, num_shards)
    part.mkdir(parents=True, exist_ok=True)
    _check_or_write_plan(part, plan)
    for stale in part.glob(".*.tmp"):  # left by a killed run; never committed
        stale.unlink(missing_ok=True)
    chunks = chunk_positions(len(source), shard_index, num_shards, chunk_size)
    done = committed_chunks(part)
    jobs = [_Job(str(part), c, chunks[c]) for c in range(len(chunks)) if c not in done]
    finished = len(chunks) - len(jobs)
    if progress:
        progress(finished, len(chunks))
    init = (source, dirs, audio_pattern, order)
    if workers == 1 or len(jobs) <= 1:
        if jobs:
            _init_worker(*init, single_thread=False)
        for job in jobs:
            _run_chunk(job)
            finished += 1
            if progress:
                progress(finished, len(chunks))
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(workers, initializer=_init_worker, initargs=(*init, True)) as pool:
            for _ in pool.imap_unordered(_run_chunk, jobs):
                finished += 1
                if progress:
                    progress(finished, len(chunks))
    skipped = [{"id": r.id, "line": r.line, "reason": r.reason, "detail": r.detail}
               for r in getattr(source, "skipped", [])
               if _line_in_shard(r.line, shard_index, num_shards)]  # fmt: skip
    report = {"shard_index": shard_index, "num_shards": num_shards, "num_chunks": len(chunks),
              "num_records": sum(map(len, chunks)), "source_skipped": skipped,
              "fingerprint": layout.fingerprint}  # fmt: skip
    write_text_atomic(part / "part.json", json.dumps(report, indent=2))
    return part


def _line_in_shard(line: int, shard_index: int, num_shards: int) -> bool:
    """A source-level skipped record (by its line) is reported by exactly one part."""
    return (line % num_shards) == shard_index


def _check_or_write_layout(out: Path, layout: VocabLayout) -> None:
    path = out / "layout.json"
    if path.is_file():
        existing = _load_layout(out)
        if existing.fingerprint != layout.fingerprint:
            raise StoreMismatchError(
                f"{out} holds a store laid out by other tokenizers (fingerprint "
                f"{existing.fingerprint[:12]}, these give {layout.fingerprint[:12]}); write to "
                "another out_dir or delete it"
            )
        return
    layout.save(path)
