"""The pretokenized store: examples tokenized once into memory-mapped shards of token ids.

Training never re-runs the tokenizers: ``pretokenize`` writes every example of a source as one
interleaved sequence of global ids (``VocabLayout``), and ``TokenStore`` reads them back through
``numpy.memmap``. Layout of a store directory::

    layout.json                        the VocabLayout (its fingerprint names the store's ids)
    parts/part-00000-of-00001/         one part per shard_index (any launcher can fan them out)
        plan.json                      the job the part belongs to, written when it is started
        chunk-000000.bin               token ids of a chunk of examples, uint16 (or uint32)
        chunk-000000.json              its index: the record positions and ids it covers, the
                                       .bin's size and sha256; per example id, offset, length,
                                       cuts, tokens per modality, units, source, split, concept;
                                       its errors
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

**Resume only the same job.** Which records a chunk covers depends on the source, its order,
``chunk_size`` and the shard; what its tokens are depends on the layout, ``audio_pattern`` and the
span order. A part records all of it in ``plan.json`` when it is started (with the source's
``source_fingerprint``: content and order), and a rerun resumes the part only when its plan is the
same; otherwise ``StoreResumeError`` names each difference (then, now). ``merge_store`` checks that
the parts agree, that each chunk covers exactly the records its plan gives it, each once (in its
examples or errors), and that no record id is in two chunks.

**Integrity.** Each chunk index records the size and sha256 of its ``.bin``. ``TokenStore``
checks every size when it opens a store (a stat per chunk: a truncated chunk is refused), and
``TokenStore.verify()`` (or ``verify=True``; ``merge_store`` always) reads every chunk and checks
its sha256 and that every id lies in the layout's vocabulary. Reading an example whose ids lie
outside it raises ``StoreIntegrityError`` naming the chunk and the example. Every JSON field read
is type-checked (``StoreFormatError`` names the file and the key), and the chunk paths in
``store.json`` must be the store's own names (``parts/part-00000-of-00001/chunk-000000``): a path
that would lead out of the store is refused.

**Fingerprint.** ``store.json`` records the layout's fingerprint; ``TokenStore(path,
expected_fingerprint=...)`` (what training calls with the fingerprint of the tokenizers it was
given) refuses a store laid out by other tokenizers with ``StoreMismatchError``.
"""

from __future__ import annotations

import hashlib
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
from tokenize_mm.data.example import AudioRef, Example
from tokenize_mm.data.manifest import file_identity
from tokenize_mm.data.packing import Document
from tokenize_mm.sequence.interleave import DEFAULT_ORDER, SpanOrder
from tokenize_mm.sequence.vocab import VocabLayout

STORE_FORMAT = "tokenize_mm.store"
STORE_VERSION = 2  # 2: chunk indexes hold ids, bin_bytes, bin_sha256; parts hold plan.json
PLAN_FORMAT = "tokenize_mm.store.plan"
PLAN_NAME = "plan.json"
_CHUNK = re.compile(r"chunk-(\d{6})\.json")
_PART_DIR = re.compile(r"part-(\d{5,})-of-(\d{5,})")
_CHUNK_PATH = re.compile(r"parts/part-(\d{5,})-of-(\d{5,})/chunk-(\d{6,})")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StoreError(DataError):
    """A store is missing, incomplete, or cannot be written."""


class StoreMismatchError(StoreError):
    """A store's tokens were laid out by other tokenizers or another layout."""


class StoreResumeError(StoreMismatchError):
    """A part was started as another job (other source, order, chunk size, shard or layout), so
    resuming it would mix two jobs' chunks."""


class StoreFormatError(StoreError):
    """A store file is not what the format says: not JSON, a missing key, a field of the wrong
    type, or a path that is not one of the store's own names."""


class StoreIntegrityError(StoreError):
    """A store's data disagrees with its index: a truncated or changed chunk file, an id outside
    the vocabulary, or a record missing from, or twice in, the store."""


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def part_name(shard_index: int, num_shards: int) -> str:
    return f"part-{shard_index:05d}-of-{num_shards:05d}"


def chunk_name(chunk: int) -> str:
    return f"chunk-{chunk:06d}"


def chunk_positions(
    num_records: int, shard_index: int, num_shards: int, chunk_size: int
) -> list[tuple[int, ...]]:
    """The record positions of each chunk of a part: ``[chunk] -> (positions, ...)``."""
    mine = list(range(shard_index, num_records, num_shards))
    return [tuple(mine[i : i + chunk_size]) for i in range(0, len(mine), chunk_size)]


# -- store files: checked JSON -------------------------------------------------------------------
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "integer", float: "number",
               bool: "boolean", type(None): "null"}  # fmt: skip


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class _JsonFile:
    """A JSON file of a store, read with its fields checked.

    Every error is a ``StoreFormatError`` that names the file (and the key, and where in the file)
    and ends with ``fix``, what to do about it.
    """

    path: Path
    fix: str

    def error(self, problem: str) -> StoreFormatError:
        return StoreFormatError(f"{self.path}: {problem}; {self.fix}")

    def load(self) -> dict[str, Any]:
        """The file's JSON object."""
        try:
            value = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise self.error("missing") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise self.error(f"cannot be read as JSON ({err})") from None
        if not isinstance(value, dict):
            raise self.error(f"holds a JSON {_json_type(value)}, not an object")
        return value

    def field(self, obj: Any, key: str, *kinds: type, where: str = "") -> Any:
        """``obj[key]``, checked to be one of ``kinds`` (``bool`` does not count as ``int``)."""
        at = f"{where}: " if where else ""
        if not isinstance(obj, dict):
            raise self.error(f"{at}is a JSON {_json_type(obj)}, not an object")
        if key not in obj:
            raise self.error(f"{at}missing key {key!r}")
        value = obj[key]
        if not isinstance(value, kinds) or (type(value) is bool and bool not in kinds):
            names = " or ".join(_JSON_TYPES.get(k, k.__name__) for k in kinds)
            raise self.error(f"{at}{key!r} is a JSON {_json_type(value)}, expected {names}")
        return value

    def count(self, obj: Any, key: str, where: str = "") -> int:
        """``obj[key]``, a non-negative integer."""
        value = self.field(obj, key, int, where=where)
        if value < 0:
            raise self.error(f"{where + ': ' if where else ''}{key!r} is negative ({value})")
        return value

    def ints(self, obj: Any, key: str, where: str = "") -> list[int]:
        """``obj[key]``, a list of non-negative integers."""
        values = self.field(obj, key, list, where=where)
        if not all(type(v) is int and v >= 0 for v in values):
            raise self.error(f"{where + ': ' if where else ''}{key!r} must hold integers >= 0")
        return values


def _redo_chunk(index_path: Path) -> str:
    """How to fix a bad chunk of a store: redo it (its commit is its index)."""
    return (
        f"redo the chunk: delete {index_path}, rerun pretokenize with the settings the store was "
        "made with (it redoes only that chunk), then merge_store"
    )


def _check_index(jf: _JsonFile, chunk: int, dtype: np.dtype, version: int) -> dict[str, Any]:
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


def _check_records(jf: _JsonFile, index: dict[str, Any], positions: Sequence[int]) -> None:
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


def _check_chunk_path(jf: _JsonFile, rel: Any, k: int) -> str:
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


# -- source fingerprints and plans ---------------------------------------------------------------
def source_fingerprint(source: Sequence[Example]) -> str:
    """sha256 (hex) of the records of ``source``: their content and their order.

    The source's own ``fingerprint()`` where it has one (``ManifestSource``, ``FolderSource``:
    the files' size and mtime, cheap); for a ``BuiltinSource`` its arguments and the generator's
    code; for any other indexable source a hash of every record (``records_fingerprint``).
    """
    from tokenize_mm.data.builtin import BuiltinSource

    own = getattr(source, "fingerprint", None)
    if callable(own):
        return str(own())
    if isinstance(source, BuiltinSource):
        return _builtin_fingerprint(source)
    return records_fingerprint(source)


_BUILTIN_ARGS = ("num_examples", "image_size", "audio_seconds", "sample_rate", "seed", "sources",
                 "split")  # fmt: skip


def _builtin_fingerprint(source: Any) -> str:
    """A ``BuiltinSource``: its constructor arguments and a hash of ``builtin.py`` (the
    examples are a pure function of both)."""
    import tokenize_mm.data.builtin as builtin

    code = hashlib.sha256(Path(builtin.__file__).read_bytes()).hexdigest()
    args = {key: getattr(source, key) for key in _BUILTIN_ARGS}
    return hashlib.sha256(json.dumps(["builtin", args, code]).encode()).hexdigest()


def records_fingerprint(source: Sequence[Example]) -> str:
    """sha256 (hex) over every record of ``source`` in order: id, split, sub-source, concept,
    text, and media (a file: path, size and mtime_ns; a PIL image: its pixels; a clip: its
    samples and rate). A record the source fails to give counts as its error message."""
    digest = hashlib.sha256(b"records")
    for i in range(len(source)):
        try:
            example = source[i]
        except Exception as err:  # the store reports it as an error of this record
            _frame(digest, json.dumps(["error", i, type(err).__name__, str(err)]).encode())
            continue
        fields = [example.id, example.split, example.source, example.concept, example.text]
        _frame(digest, json.dumps(fields).encode())
        for item in (example.image, *example.audio):
            _hash_item(digest, item)
    return digest.hexdigest()


def _frame(digest: Any, data: bytes) -> None:
    """Add ``data`` to ``digest`` behind its length, so that no two sequences of frames collide."""
    digest.update(len(data).to_bytes(8, "little") + data)


def _hash_item(digest: Any, item: Any) -> None:
    """Add one media item of an example to ``digest`` (see ``records_fingerprint``)."""
    from PIL import Image

    if item is None:
        _frame(digest, b"none")
    elif isinstance(item, AudioRef):
        ref = ["ref", file_identity(item.path), item.meta]
        _frame(digest, json.dumps(ref, default=str).encode())
    elif isinstance(item, (str, os.PathLike)):
        _frame(digest, json.dumps(["file", file_identity(item)]).encode())
    elif isinstance(item, Image.Image):
        _frame(digest, json.dumps(["pil", item.mode, list(item.size)]).encode())
        _frame(digest, item.tobytes())
    elif isinstance(item, tuple) and len(item) == 2:  # an in-memory clip: (wav, sample rate)
        _frame(digest, json.dumps(["clip", str(item[1])]).encode())
        _hash_item(digest, item[0])
    elif isinstance(item, (torch.Tensor, np.ndarray)):
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        array = np.ascontiguousarray(array)
        _frame(digest, json.dumps(["array", array.dtype.str, list(array.shape)]).encode())
        _frame(digest, array.tobytes())
    else:
        _frame(digest, json.dumps(["other", type(item).__name__, repr(item)]).encode())


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
        old = _JsonFile(path, start_over).load()
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
    data = np.ascontiguousarray(np.concatenate(arrays) if arrays else np.zeros(0, dtype))
    write_atomic(part / f"{chunk_name(job.chunk)}.bin", lambda tmp: data.tofile(tmp))
    ids, sha256 = {pos: ex.id for pos, ex in examples}, hashlib.sha256(data.tobytes()).hexdigest()
    index = {"chunk": job.chunk, "dtype": dtype.name, "num_tokens": int(data.size),
             "bin_bytes": int(data.nbytes), "bin_sha256": sha256,
             "positions": list(job.positions), "ids": [ids.get(pos) for pos in job.positions],
             "examples": entries, "errors": index_errors + errors}  # fmt: skip
    write_text_atomic(part / f"{chunk_name(job.chunk)}.json", json.dumps(index))  # the commit
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


# -- merging ---------------------------------------------------------------------------------------
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
    report_file = _JsonFile(report_path, "run its pretokenize again")
    report = report_file.load()
    num_chunks = report_file.count(report, "num_chunks")
    for k, skipped in enumerate(report_file.field(report, "source_skipped", list)):
        report_file.field(skipped, "reason", str, where=f"source_skipped[{k}]")
    plan_file = _JsonFile(path / PLAN_NAME, f"delete {path} and run its pretokenize again")
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
            jf = _JsonFile(index_path, _redo_chunk(index_path))
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


# -- reading ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredExample:
    """One example read from a store: ``tokens`` is a read-only view of the memory map."""

    tokens: np.ndarray
    cuts: list[int]
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Chunk:
    """A chunk of an open store: its files, its checked index, its tokens (a memory map)."""

    name: str  # "parts/<part>/chunk-NNNNNN", relative to the store
    index_path: Path
    bin_path: Path
    index: dict[str, Any]
    data: np.ndarray  # (num_tokens,) of the store's dtype

    @property
    def fix(self) -> str:
        return _redo_chunk(self.index_path)


class TokenStore:
    """Read a merged store through memory maps.

    Opening checks every JSON field it reads, that the chunk paths are the store's own, and that
    each chunk file has the size its index records (a stat per chunk). ``verify()`` also reads
    every chunk: sha256 and ids.

    Args:
        path: the store directory.
        expected_fingerprint: if given, refuse a store whose layout fingerprint differs (pass
            ``VocabLayout.from_artifacts(...).fingerprint`` of the tokenizers you train with).
        split: keep only this split's examples.
        verify: run ``verify()`` once opened.

    Raises:
        StoreError: not a (merged) store.
        StoreMismatchError: the fingerprint differs.
        StoreFormatError: a file of the store is malformed (the message names the file and key).
        StoreIntegrityError: a chunk file is missing or of the wrong size (or, with ``verify``,
            has another sha256 or an id outside the vocabulary).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        expected_fingerprint: str | None = None,
        split: str | None = None,
        verify: bool = False,
    ):
        self.path = Path(path)
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise StoreError(f"{self.path}: no store.json; pretokenize into it and merge first")
        jf = _JsonFile(manifest, "run merge_store on the store again")
        self.manifest = jf.load()
        if self.manifest.get("format") != STORE_FORMAT:
            raise StoreFormatError(f"{manifest}: not a tokenize_mm store")
        self.version = jf.count(self.manifest, "format_version")
        if self.version < 1:
            raise jf.error(f"format_version is {self.version}; versions start at 1")
        if self.version > STORE_VERSION:
            raise StoreError(f"{manifest}: written by a newer tokenize_mm; upgrade to read it")
        self.layout = _load_layout(self.path)
        fingerprint = jf.field(self.manifest, "fingerprint", str)
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise StoreMismatchError(
                f"{self.path}: its tokens were laid out by other tokenizers (store fingerprint "
                f"{fingerprint[:12]}, given tokenizers {expected_fingerprint[:12]}); the store's "
                f"tokenizer artifacts are {self.manifest.get('identities')}: pretokenize again "
                "with the tokenizers you train with"
            )
        if fingerprint != self.layout.fingerprint:
            raise jf.error(
                f"fingerprint {fingerprint[:12]} is not that of layout.json "
                f"({self.layout.fingerprint[:12]})"
            )
        self.dtype = token_dtype(self.layout.vocab_size)
        if jf.field(self.manifest, "dtype", str) != self.dtype.name:
            raise jf.error(f"dtype {self.manifest['dtype']!r} is not the layout's {self.dtype}")
        names = [_check_chunk_path(jf, rel, k)
                 for k, rel in enumerate(jf.field(self.manifest, "chunks", list))]  # fmt: skip
        if len(set(names)) != len(names):
            raise jf.error("lists a chunk twice")
        self._chunks = [self._open_chunk(name) for name in names]
        self.examples: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        for c, chunk in enumerate(self._chunks):
            for entry in chunk.index["examples"]:
                if split is None or entry["split"] == split:
                    self.examples.append({**entry, "chunk": c})
            self.errors += chunk.index["errors"]
        if verify:
            self.verify()

    def _open_chunk(self, name: str) -> _Chunk:
        """Read and check a chunk's index, check its ``.bin`` size, and map it."""
        index_path, bin_path = self.path / f"{name}.json", self.path / f"{name}.bin"
        jf = _JsonFile(index_path, _redo_chunk(index_path))
        number = int(_CHUNK_PATH.fullmatch(name).group(3))  # type: ignore[union-attr]
        index = _check_index(jf, number, self.dtype, self.version)
        _check_bin(bin_path, index, self.dtype, jf.fix)
        size = index["num_tokens"]
        data = (np.memmap(bin_path, dtype=self.dtype, mode="r", shape=(size,)) if size
                else np.zeros(0, self.dtype))  # fmt: skip
        return _Chunk(name, index_path, bin_path, index, data)

    def verify(self) -> None:
        """Read every chunk: check its sha256 against its index, that it covers each of its
        records once, and that every id is below the layout's ``vocab_size``.

        Raises:
            StoreIntegrityError: the first bad chunk, named (and the example, for a bad id).
            StoreError: a format-1 store, which records no checksums.
        """
        if self.version < 2:
            raise StoreError(
                f"{self.path}: a format-{self.version} store records no chunk checksums; "
                "pretokenize it again to be able to verify it"
            )
        for chunk in self._chunks:
            jf = _JsonFile(chunk.index_path, chunk.fix)
            _check_records(jf, chunk.index, chunk.index["positions"])
            _check_checksum(chunk.bin_path, chunk.index, chunk.fix)
            if chunk.data.size and int(chunk.data.max()) >= self.layout.vocab_size:
                bad = int(np.argmax(chunk.data >= self.layout.vocab_size))
                entry = next((e for e in chunk.index["examples"]
                              if e["offset"] <= bad < e["offset"] + e["length"]), None)  # fmt: skip
                self._raise_out_of_range(chunk, entry, int(chunk.data[bad]))

    def _raise_out_of_range(self, chunk: _Chunk, entry: dict[str, Any] | None, value: int) -> None:
        example = f"example {entry['id']!r}" if entry else "a gap between examples"
        raise StoreIntegrityError(
            f"{chunk.bin_path}: {example} holds token id {value}, outside the vocabulary "
            f"(vocab_size {self.layout.vocab_size}): the chunk file is corrupt or was written "
            f"with another layout; {chunk.fix}"
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> StoredExample:
        """Example ``i``; ``StoreIntegrityError`` if it holds an id outside the vocabulary."""
        e = self.examples[i]
        chunk = self._chunks[e["chunk"]]
        tokens = chunk.data[e["offset"] : e["offset"] + e["length"]]
        if tokens.size and int(tokens.max()) >= self.layout.vocab_size:
            self._raise_out_of_range(chunk, e, int(tokens.max()))
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
