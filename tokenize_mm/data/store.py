"""The pretokenized store: examples tokenized once into memory-mapped shards of token ids.

Training never re-runs the tokenizers: ``pretokenize`` writes every example of a source as one
interleaved sequence of global ids (``VocabLayout``), and ``TokenStore`` reads them back through
``numpy.memmap``. Layout of a store directory::

    layout.json                        the VocabLayout (its fingerprint names the store's ids)
    parts/part-00000-of-00001/         one part per shard_index (any launcher can fan them out)
        chunk-000000.bin               token ids of a chunk of examples, uint16 (or uint32)
        chunk-000000.json              its index: per example id, offset, length, cuts, tokens
                                       per modality, units, source, split, concept; its errors
        part.json                      written when every chunk of the part is done
    store.json                         written by the merge: fingerprint, artifact identities,
                                       dtype, the chunks of all parts, counts

**Shards and chunks.** Record i of the source belongs to part ``i % num_shards``; a part's records
are cut into chunks of ``chunk_size``, and chunk c covers a fixed range of them. A chunk is
committed by writing its ``.bin`` and then its ``.json`` (each atomically); a chunk without its
``.json`` does not exist. So a run killed at any moment and started again redoes only uncommitted
chunks, and every input record ends up exactly once in a committed chunk: in its examples or in
its errors (with the reason). Chunks run in parallel over worker processes. Records that the
source itself refused (a manifest's unreadable files) are listed in ``part.json``.

**Fingerprint.** ``store.json`` records the layout's fingerprint; ``TokenStore(path,
expected_fingerprint=...)`` (what training calls with the fingerprint of the tokenizers it was
given) refuses a store laid out by other tokenizers with ``StoreMismatchError``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenize_mm.atomic import write_atomic, write_text_atomic
from tokenize_mm.data.errors import DataError
from tokenize_mm.data.example import Example
from tokenize_mm.data.packing import Document
from tokenize_mm.sequence.interleave import DEFAULT_ORDER, SpanOrder
from tokenize_mm.sequence.vocab import VocabLayout

STORE_FORMAT = "tokenize_mm.store"
STORE_VERSION = 1
_CHUNK = re.compile(r"chunk-(\d{6})\.json")


class StoreError(DataError):
    """A store is missing, incomplete, or cannot be written."""


class StoreMismatchError(StoreError):
    """A store's tokens were laid out by other tokenizers or another layout."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def part_name(shard_index: int, num_shards: int) -> str:
    return f"part-{shard_index:05d}-of-{num_shards:05d}"


# -- writing ---------------------------------------------------------------------------------------
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
    data = np.concatenate(arrays) if arrays else np.zeros(0, dtype)
    write_atomic(part / f"chunk-{job.chunk:06d}.bin", lambda tmp: data.tofile(tmp))
    index = {"chunk": job.chunk, "dtype": dtype.name, "num_tokens": int(data.size),
             "positions": list(job.positions), "examples": entries,
             "errors": index_errors + errors}  # fmt: skip
    write_text_atomic(part / f"chunk-{job.chunk:06d}.json", json.dumps(index))  # the commit
    return job.chunk, len(entries), len(errors) + len(index_errors)


def committed_chunks(part_dir: str | os.PathLike) -> set[int]:
    """Chunks of a part whose index is written (the ones a rerun skips)."""
    part = Path(part_dir)
    if not part.is_dir():
        return set()
    return {int(m.group(1)) for p in part.iterdir() if (m := _CHUNK.fullmatch(p.name))}


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
    part = out / "parts" / part_name(shard_index, num_shards)
    part.mkdir(parents=True, exist_ok=True)
    for stale in part.glob(".*.tmp"):  # left by a killed run; never committed
        stale.unlink(missing_ok=True)
    mine = list(range(shard_index, len(source), num_shards))
    chunks = [tuple(mine[i : i + chunk_size]) for i in range(0, len(mine), chunk_size)]
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
              "num_records": len(mine), "source_skipped": skipped,
              "fingerprint": layout.fingerprint}  # fmt: skip
    write_text_atomic(part / "part.json", json.dumps(report, indent=2))
    return part


def _line_in_shard(line: int, shard_index: int, num_shards: int) -> bool:
    """A source-level skipped record (by its line) is reported by exactly one part."""
    return (line % num_shards) == shard_index


def _check_or_write_layout(out: Path, layout: VocabLayout) -> None:
    path = out / "layout.json"
    if path.is_file():
        existing = VocabLayout.load(path)
        if existing.fingerprint != layout.fingerprint:
            raise StoreMismatchError(
                f"{out} holds a store laid out by other tokenizers (fingerprint "
                f"{existing.fingerprint[:12]}, these give {layout.fingerprint[:12]}); write to "
                "another out_dir or delete it"
            )
        return
    layout.save(path)


def merge_store(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Join the parts of a store into ``store.json``; returns it.

    Raises:
        StoreError: a part is missing or unfinished, or parts disagree on the shard count.
    """
    out = Path(out_dir)
    layout = VocabLayout.load(out / "layout.json")
    parts = sorted((out / "parts").glob("part-*"))
    reports = []
    for part in parts:
        report_path = part / "part.json"
        if not report_path.is_file():
            raise StoreError(f"{part} is unfinished (no part.json): run its pretokenize again")
        report = json.loads(report_path.read_text())
        if committed_chunks(part) != set(range(report["num_chunks"])):
            raise StoreError(f"{part} is missing chunks: run its pretokenize again")
        reports.append((part, report))
    counts = {r["num_shards"] for _, r in reports}
    if len(counts) != 1 or len(reports) != next(iter(counts)):
        raise StoreError(
            f"{out}: found parts {[p.name for p in parts]}; every shard_index of one num_shards "
            "is needed before the merge"
        )
    chunks, num_examples, num_errors, num_tokens = [], 0, 0, 0
    for part, report in reports:
        for c in range(report["num_chunks"]):
            index = json.loads((part / f"chunk-{c:06d}.json").read_text())
            chunks.append(str((part / f"chunk-{c:06d}").relative_to(out)))
            num_examples += len(index["examples"])
            num_errors += len(index["errors"])
            num_tokens += index["num_tokens"]
    store = {
        "format": STORE_FORMAT, "format_version": STORE_VERSION,
        "fingerprint": layout.fingerprint, "identities": dict(layout.identities),
        "dtype": token_dtype(layout.vocab_size).name, "vocab_size": layout.vocab_size,
        "chunks": chunks, "num_examples": num_examples, "num_errors": num_errors,
        "num_source_skipped": sum(len(r["source_skipped"]) for _, r in reports),
        "num_tokens": num_tokens,
    }  # fmt: skip
    write_text_atomic(out / "store.json", json.dumps(store, indent=2))
    return store


# -- reading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredExample:
    """One example read from a store: ``tokens`` is a read-only view of the memory map."""

    tokens: np.ndarray
    cuts: list[int]
    meta: dict[str, Any]


class TokenStore:
    """Read a merged store through memory maps.

    Args:
        path: the store directory.
        expected_fingerprint: if given, refuse a store whose layout fingerprint differs (pass
            ``VocabLayout.from_artifacts(...).fingerprint`` of the tokenizers you train with).
        split: keep only this split's examples.

    Raises:
        StoreError: not a (merged) store.
        StoreMismatchError: the fingerprint differs.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        expected_fingerprint: str | None = None,
        split: str | None = None,
    ):
        self.path = Path(path)
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise StoreError(f"{self.path}: no store.json; pretokenize into it and merge first")
        self.manifest = json.loads(manifest.read_text())
        if self.manifest.get("format") != STORE_FORMAT:
            raise StoreError(f"{manifest}: not a tokenize_mm store")
        if self.manifest["format_version"] > STORE_VERSION:
            raise StoreError(f"{manifest}: written by a newer tokenize_mm; upgrade to read it")
        self.layout = VocabLayout.load(self.path / "layout.json")
        fingerprint = self.manifest["fingerprint"]
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise StoreMismatchError(
                f"{self.path}: its tokens were laid out by other tokenizers (store fingerprint "
                f"{fingerprint[:12]}, given tokenizers {expected_fingerprint[:12]}); the store's "
                f"tokenizer artifacts are {self.manifest['identities']}: pretokenize again with "
                "the tokenizers you train with"
            )
        self.dtype = np.dtype(self.manifest["dtype"])
        self._maps: list[np.ndarray] = []
        self.examples: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        for c, chunk in enumerate(self.manifest["chunks"]):
            index = json.loads((self.path / f"{chunk}.json").read_text())
            size = index["num_tokens"]
            data = self.path / f"{chunk}.bin"
            self._maps.append(
                np.memmap(data, dtype=self.dtype, mode="r", shape=(size,))
                if size else np.zeros(0, self.dtype)
            )  # fmt: skip
            for entry in index["examples"]:
                if split is None or entry["split"] == split:
                    self.examples.append({**entry, "chunk": c})
            self.errors += index["errors"]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> StoredExample:
        e = self.examples[i]
        tokens = self._maps[e["chunk"]][e["offset"] : e["offset"] + e["length"]]
        return StoredExample(tokens, e["cuts"], e)

    def __iter__(self) -> Iterator[StoredExample]:
        for i in range(len(self)):
            yield self[i]

    def document(self, i: int) -> Document:
        """Example ``i`` as a packer ``Document``: int64 tokens, their modality ids, span cuts."""
        item = self[i]
        tokens = np.asarray(item.tokens, dtype=np.int64)
        modality = self._modality_table[tokens]
        return Document(tokens, modality, np.asarray(item.cuts, dtype=np.int64), doc_id=i)

    def documents(self) -> list[Document]:
        """Every example as a ``Document`` (what ``PackedDataset`` takes)."""
        return [self.document(i) for i in range(len(self))]

    @property
    def _modality_table(self) -> np.ndarray:
        table = self.__dict__.get("_modality_lookup")
        if table is None:
            ids = np.arange(self.layout.vocab_size)
            table = self.layout.modality_of(torch.from_numpy(ids)).numpy()
            self.__dict__["_modality_lookup"] = table
        return table
