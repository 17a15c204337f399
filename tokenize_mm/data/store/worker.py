"""One chunk tokenized and committed, in this process or in a spawned worker process.

``_init_worker`` loads the tokenizers once per process (and keeps the source, sent once);
``_run_chunk(job)`` tokenizes the records of one chunk (a ``_Job``) and commits it: its ``.bin``
(``(num_tokens,)`` ids of the store's dtype) and then its ``.json`` index (the records' positions
and ids, the ``.bin``'s size and sha256, per example offset, length, cuts, tokens per modality,
units, source, split and concept; its errors), each written atomically. A chunk without its
``.json`` does not exist. Both functions are top-level, so 'spawn' workers find them by module
path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokenize_mm.core.atomic import write_atomic, write_text_atomic
from tokenize_mm.data.store.format import chunk_name, token_dtype
from tokenize_mm.sequence.interleave import SpanOrder
from tokenize_mm.sequence.vocab import VocabLayout


@dataclass(frozen=True)
class _Job:
    """One chunk to tokenize: which records, and where its files go."""

    part_dir: str
    chunk: int
    positions: tuple[int, ...]  # record positions in the source


_WORKER: dict[str, Any] = {}


def _init_worker(
    source: Any, tokenizer_dirs: dict[str, str], audio_pattern: str, order: SpanOrder,
    single_thread: bool,
) -> None:  # fmt: skip
    """Load the tokenizers once per process (and keep the source, sent once)."""
    from tokenize_mm.data.tokenize_example import ExampleTokenizer
    from tokenize_mm.tokenizers.artifact import load_tokenizer

    if single_thread:
        import torch

        torch.set_num_threads(1)
    layout = VocabLayout.from_artifacts(tokenizer_dirs, audio_pattern=audio_pattern)
    toks = {m: load_tokenizer(d) for m, d in tokenizer_dirs.items()}
    _WORKER.update(source=source, run=ExampleTokenizer(toks, layout, order), layout=layout)


def _run_chunk(job: _Job) -> tuple[int, int, int]:
    """Tokenize one chunk and commit it; returns (chunk, examples written, errors)."""
    source, run, layout = _WORKER["source"], _WORKER["run"], _WORKER["layout"]
    examples, errors, index_errors = [], [], []
    for pos in job.positions:
        try:
            examples.append((pos, source[pos]))
        except Exception as err:  # a source that fails on one record: report it, go on
            index_errors.append({"position": pos, "id": None, "reason": f"source: {err}"})
    results = run([ex for _, ex in examples]) if examples else []
    dtype = token_dtype(layout.vocab_size)
    arrays, entries, offset = [], [], 0
    for (pos, ex), result in zip(examples, results, strict=True):
        if isinstance(result, str):
            errors.append({"position": pos, "id": ex.id, "reason": result})
            continue
        arrays.append(result.tokens.astype(dtype))
        entries.append({
            "position": pos, "id": ex.id, "offset": offset, "length": int(result.tokens.size),
            "cuts": result.cuts, "tokens": result.tokens_per_modality, "units": result.units,
            "source": ex.source, "split": ex.split, "concept": ex.concept,
        })  # fmt: skip
        offset += int(result.tokens.size)
    part = Path(job.part_dir)
    data = np.ascontiguousarray(np.concatenate(arrays) if arrays else np.zeros(0, dtype))
    write_atomic(part / f"{chunk_name(job.chunk)}.bin", lambda tmp: data.tofile(tmp))
    ids, sha256 = {pos: ex.id for pos, ex in examples}, hashlib.sha256(data.tobytes()).hexdigest()
    index = {"chunk": job.chunk, "dtype": dtype.name, "num_tokens": int(data.size),
             "bin_bytes": int(data.nbytes), "bin_sha256": sha256,
             "positions": list(job.positions), "ids": [ids.get(pos) for pos in job.positions],
             "examples": entries, "errors": index_errors + errors}  # fmt: skip
    write_text_atomic(part / f"{chunk_name(job.chunk)}.json", json.dumps(index))  # the commit
    return job.chunk, len(entries), len(errors) + len(index_errors)
