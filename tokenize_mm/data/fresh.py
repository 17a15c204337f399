"""Fresh built-in examples: a training stream that never shows the model an example twice.

A ``TokenStore`` of the built-in data is a fixed pool (512 examples by default, about 410 of them
in the train split). The main job's 300 steps read each about 20 times, and a longer run memorises
them before it learns anything that carries to unseen scenes. The built-in examples are a pure
function of (seed, index), so there is no need for a pool: ``FreshDocuments`` is the endless
sequence of one sub-source's train examples (``BuiltinSource.indices_of``), each rendered and
tokenized when the stream first reaches it.

**Where the work happens.** Spawned worker processes (``FreshExamples``, one by default) load the
run's tokenizers and render and tokenize chunks of examples ahead of the stream, so that the
training step rarely waits: the stream reads a sub-source's documents in order (``sequential``; no
permutation, no epochs), so the next chunks are known before they are asked for. Only a few chunks
per sub-source are kept in memory. The workers run at the lowest CPU priority
(``lower_priority``), out of the trainer's way.

**Same documents everywhere.** Document j of a sub-source depends only on the source settings, j
and the tokenizers, and is always computed in the worker with one torch thread (as the store's
workers do), so a resumed run reads exactly the documents the uninterrupted one would have (the
stream's state holds positions, not tokens), and every rank of a DDP run, which reads positions
``position + rank``, reads its own.

**Held out stays held out.** A built-in example's split comes from its id (``split_for_id``), and
the stream reads only train examples of the store's own source settings (checked against the
store's source fingerprint), so no streamed example is one of the store's val or test examples,
nor of the test split that evaluation draws from the same seed.

**Kept between runs** (``FreshSpec.cache_dir``): the documents being a pure function of the spec,
the worker writes every finished chunk to ``<cache_dir>/<sub-source>-c<chunk>/<k>.npz`` (plain
arrays, read back without pickle; an atomic write, so a crash leaves no partial chunk), and a later
run of the same spec reads the chunks it finds instead of rendering them again: the runs of a
balance sweep that share a seed render each example once (rendering and tokenizing, the codec's
encoder mostly, took about a third of a grounding-size step on 2 cores, the worker contending with
the trainer's threads). ``cache_dir/spec.json`` records what the chunks depend on (``identity``:
source settings, the tokenizers' manifests, pattern, order, group size); a folder of another spec
is refused, and a chunk that does not load or names other examples is rendered again. The caller
keys the folder by the code too (``tmm-train``: ``<cache_dir>/fresh/<key>``), so a change to the
renderer or a tokenizer's code starts a new one. ``render_ahead`` fills the folder before training
starts, in the stream's own worker processes, as many as there are cores (``StoreDataModule``'s
``fresh_ahead``: the documents the run is expected to read at the sampler's first probabilities,
``expected_documents``), so that the workers then have little left to render beside the trainer
and have loaded the tokenizers before they are first needed (a worker started only then would
load them at the lowest priority beside the trainer while the stream waits for its chunk).

**Hard negatives** (``FreshSpec.group_size``, ``data.hard_negatives``): the stream can draw each
sub-source's examples in groups that share colour and background and differ in shape
(``grouped_scene``), so that the pairs a contrastive batch holds cannot all be told apart by
colour and background alone. The held-out examples are drawn as always.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import weakref
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tokenize_mm.core.atomic import write_atomic, write_text_atomic
from tokenize_mm.data.builtin import BuiltinSource
from tokenize_mm.data.errors import DataError
from tokenize_mm.data.packing import Document
from tokenize_mm.sequence.interleave import DEFAULT_ORDER, SpanOrder

log = logging.getLogger(__name__)

#: Nominal length of a fresh sub-source: more documents than any run reads.
ENDLESS = 1 << 40


@dataclass(frozen=True)
class FreshSpec:
    """What the worker needs to render and tokenize built-in examples (plain, picklable values).

    Attributes:
        source: ``BuiltinSource`` keyword arguments (``conf/source/builtin.yaml``'s fields);
            ``num_examples`` and ``split`` only identify the store, the stream reads past them.
        tokenizer_dirs: modality → tokenizer artifact folder (the run's tokenizers).
        audio_pattern: the layout's audio pattern (``VocabLayout.from_artifacts``).
        order: span order of each example's sequence (the store's).
        group_size: hard negatives: each sub-source's examples in groups of this many sharing
            colour and background, shapes differing (``BuiltinSource.example_at``); 1: none.
        cache_dir: a folder where finished chunks are kept and later runs of the same spec read
            them (see the module docstring); ``None``: every run renders its own.
    """

    source: dict[str, Any]
    tokenizer_dirs: dict[str, str]
    audio_pattern: str = "flatten"
    order: SpanOrder = field(default_factory=lambda: DEFAULT_ORDER)
    group_size: int = 1
    cache_dir: str | None = None

    def identity(self) -> dict[str, Any]:
        """What the documents depend on besides the code: the source settings, each tokenizer's
        manifest (its weights' hashes and hyperparameters, by sha256), the audio pattern, the
        span order and the group size (not where the tokenizers or the cache lie)."""
        tokenizers = {}
        for m, d in sorted(self.tokenizer_dirs.items()):
            try:
                tokenizers[m] = hashlib.sha256((Path(d) / "manifest.json").read_bytes()).hexdigest()
            except OSError as err:
                raise DataError(f"tokenizer {m!r}: cannot read {d}/manifest.json ({err}).") from err
        return {"source": self.source, "tokenizers": tokenizers,
                "audio_pattern": self.audio_pattern, "order": asdict(self.order),
                "group_size": self.group_size}  # fmt: skip


# -- the worker process ---------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(spec: FreshSpec, background: bool = False) -> None:
    """Load the spec's tokenizers into this process; ``background``: at the lowest CPU priority."""
    import torch

    from tokenize_mm.data.tokenize_example import ExampleTokenizer
    from tokenize_mm.sequence.vocab import VocabLayout
    from tokenize_mm.tokenizers.artifact import load_tokenizer

    torch.set_num_threads(1)  # the same numerics on every machine, and out of the trainer's way
    if background:
        lower_priority()
    layout = VocabLayout.from_artifacts(spec.tokenizer_dirs, audio_pattern=spec.audio_pattern)
    toks = {m: load_tokenizer(d) for m, d in spec.tokenizer_dirs.items()}
    _WORKER.update(
        source=BuiltinSource(**spec.source),
        run=ExampleTokenizer(toks, layout, spec.order),
        group_size=spec.group_size,
    )


def _tokenize(
    indices: list[int], keep: str | None = None
) -> list[tuple[np.ndarray, list[int]] | str]:
    """Built-in examples ``indices`` as (tokens, cuts), or ``"<id>: <reason>"`` for a failure;
    with ``keep`` (a chunk file's path) a chunk without failures is also written there."""
    examples = [_WORKER["source"].example_at(i, _WORKER["group_size"]) for i in indices]
    out: list[tuple[np.ndarray, list[int]] | str] = []
    for ex, result in zip(examples, _WORKER["run"](examples), strict=True):
        out.append(
            f"{ex.id}: {result}" if isinstance(result, str) else (result.tokens, result.cuts)
        )
    if keep is not None and not any(isinstance(r, str) for r in out):
        try:
            write_chunk(Path(keep), indices, out)  # type: ignore[arg-type]
        except OSError as err:  # a full disk costs the next run the rendering, not this one
            log.warning("could not keep the fresh chunk %s (%s)", keep, err)
    return out


def lower_priority() -> None:
    """Run this process at the lowest CPU priority (niceness 19; as it is where the platform has
    none or forbids it). The worker that renders beside the trainer then takes a core only when
    the trainer's threads leave it: at equal priority it takes one of the trainer's cores for
    as long as it renders, and the trainer's intra-op threads wait on each other at every
    parallel region (a busy core slows a 2-thread step far more than it takes from it). At the
    lowest priority the trainer waits for a chunk only when it is not ready, and the worker then
    has the cores."""
    # no nice() (Windows), or not permitted: as it is
    with contextlib.suppress(AttributeError, OSError):
        os.nice(19 - os.nice(0))


# -- kept chunks ----------------------------------------------------------------------------------
def write_chunk(path: Path, indices: list[int], docs: list[tuple[np.ndarray, list[int]]]) -> None:
    """One chunk's documents as plain arrays (atomically): the built-in ``indices``, the tokens
    and the cuts of every document, concatenated, with their offsets."""
    tokens = [np.asarray(t, np.int64) for t, _ in docs]
    cuts = [np.asarray(c, np.int64) for _, c in docs]
    arrays = {
        "indices": np.asarray(indices, np.int64),
        "tokens": np.concatenate(tokens) if tokens else np.zeros(0, np.int64),
        "token_offsets": np.cumsum([0] + [len(t) for t in tokens]),
        "cuts": np.concatenate(cuts) if cuts else np.zeros(0, np.int64),
        "cut_offsets": np.cumsum([0] + [len(c) for c in cuts]),
    }

    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    write_atomic(path, write)


def read_chunk(
    path: Path, indices: list[int], vocab_size: int
) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """A kept chunk's (tokens, cuts) per document, or ``None`` when the file does not load (no
    pickle is ever read), is inconsistent (offsets, dtypes, a token id outside ``vocab_size``),
    or holds other examples than ``indices``."""
    keys = ("indices", "tokens", "token_offsets", "cuts", "cut_offsets")
    try:
        with np.load(path, allow_pickle=False) as z:
            got = {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("the kept fresh chunk %s does not load (%s); rendering it again", path, err)
        return None
    t_off, c_off, tokens = got["token_offsets"], got["cut_offsets"], got["tokens"]
    n = len(indices)
    shaped = all(a.ndim == 1 and np.issubdtype(a.dtype, np.integer) for a in got.values())
    if (
        not shaped or got["indices"].tolist() != list(indices)
        or len(t_off) != n + 1 or len(c_off) != n + 1 or t_off[0] != 0 or c_off[0] != 0
        or t_off[-1] != len(tokens) or c_off[-1] != len(got["cuts"])
        or np.any(np.diff(t_off) < 0) or np.any(np.diff(c_off) < 0)
        or (len(tokens) and (tokens.min() < 0 or tokens.max() >= vocab_size))
    ):  # fmt: skip
        log.warning("the kept fresh chunk %s is damaged or of other examples; rendering it again",
                    path)  # fmt: skip
        return None
    return [(got["tokens"][t_off[k] : t_off[k + 1]], got["cuts"][c_off[k] : c_off[k + 1]])
            for k in range(n)]  # fmt: skip


# -- the main process -----------------------------------------------------------------------------
class FreshExamples:
    """The worker process and the fresh sub-sources it serves.

    Args:
        spec: the source settings and tokenizers.
        modality_table: (vocab_size,) modality id of every global token id (the layout's).
        chunk: examples per worker task.
        ahead: chunks of each sub-source prepared ahead of the one being read.
        workers: worker processes (each at the lowest CPU priority, ``lower_priority``): while
            the trainer waits for a chunk, another can render the next.

    The worker starts on the first document asked for; ``close()`` (or garbage collection) stops
    it. Not picklable once started: build it where it is read (``StoreDataModule.setup``).
    """

    def __init__(self, spec: FreshSpec, modality_table: np.ndarray, chunk: int = 16,
                 ahead: int = 2, workers: int = 1):  # fmt: skip
        if chunk < 1 or ahead < 0 or workers < 1:
            raise DataError(f"chunk and workers must be >= 1 and ahead >= 0, got chunk={chunk}, "
                            f"ahead={ahead}, workers={workers}.")  # fmt: skip
        self.spec, self.modality_table = spec, np.asarray(modality_table)
        self.chunk, self.ahead, self.workers = chunk, ahead, workers
        self.source = BuiltinSource(**spec.source)
        self.source.check_group_size(spec.group_size)  # here, not in the worker
        self._executor: ProcessPoolExecutor | None = None
        self.streamed = 0  # chunks the stream had rendered beside the trainer (FreshDocuments)
        self.cache_dir = None if spec.cache_dir is None else Path(spec.cache_dir)
        if self.cache_dir is not None:
            self._claim_cache(self.cache_dir)

    def _claim_cache(self, folder: Path) -> None:
        """Record this spec's identity in ``folder/spec.json``, or check the one there."""
        identity = json.loads(json.dumps(self.spec.identity(), sort_keys=True))
        marker = folder / "spec.json"
        try:
            saved = json.loads(marker.read_text()) if marker.is_file() else None
        except (OSError, ValueError) as err:
            raise DataError(f"the fresh-example cache {folder} has an unreadable spec.json ({err}); "
                            "delete the folder or choose another cache_dir.") from err  # fmt: skip
        if saved is None:
            write_text_atomic(marker, json.dumps(identity, indent=1, sort_keys=True) + "\n")
        elif saved != identity:
            changed = sorted(k for k in identity.keys() | saved.keys()
                             if identity.get(k) != saved.get(k))  # fmt: skip
            raise DataError(
                f"the fresh-example cache {folder} holds the documents of another spec ({changed} "
                "differ); give this spec its own cache_dir (tmm-train keys it by the spec) or "
                "delete the folder."
            )

    def chunk_path(self, name: str, c: int) -> Path | None:
        """Where chunk ``c`` of sub-source ``name`` is kept (``None``: no cache)."""
        if self.cache_dir is None:
            return None
        return self.cache_dir / f"{name}-c{self.chunk}" / f"{c:07d}.npz"

    def check_store(self, store: Any) -> None:
        """Refuse a store written from other source settings: its val and test examples would
        not be the ones the stream leaves out."""
        saved = store.manifest.get("source_fingerprint")
        if saved != self.source.fingerprint():
            raise DataError(
                f"the store {store.path} was not written from the built-in source {self.source!r} "
                "(another seed, size or code): fresh examples need the store of the same source "
                "settings, whose val split they leave out (set data.fresh=false to train on the "
                "store's own train split)."
            )

    def documents(self, name: str, reference: Sequence[Document]) -> FreshDocuments:
        """Sub-source ``name``'s fresh train documents; ``reference`` (that sub-source's store
        documents) gives the token counts the sampler sizes from."""
        return FreshDocuments(self, name, reference)

    def submit(self, indices: list[int], keep: Path | None = None) -> Future:
        """Render and tokenize ``indices`` in the worker (started on first use); with ``keep``
        the worker also writes the finished chunk there."""
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker, initargs=(self.spec, True),
            )  # fmt: skip
            weakref.finalize(self, self._executor.shutdown, wait=False, cancel_futures=True)
        return self._executor.submit(_tokenize, indices, None if keep is None else str(keep))

    def render_ahead(self, wanted: Mapping[str, int]) -> int:
        """Render and keep the chunks that hold the first ``wanted[name]`` documents of each
        sub-source and are not kept yet, in the stream's own worker processes (all ``workers``
        of them, started here): before training starts, so that they do not contend with the
        trainer's threads for them, and so that the workers have loaded the tokenizers before
        the stream first needs a chunk that is not kept (needs ``cache_dir``). A chunk with a
        failed example is not kept: the stream renders it again and names the example when it
        reaches it. Returns the number of chunks rendered.

        Raises:
            DataError: a rendering process died.
        """
        if self.cache_dir is None:
            return 0
        jobs: list[tuple[list[int], Path]] = []
        for name, n in wanted.items():
            order = self.source.indices_of(name, "train")
            for c in range(-(-max(n, 0) // self.chunk)):
                indices = list(itertools.islice(order, self.chunk))
                path = self.chunk_path(name, c)
                if path is not None and not path.is_file():
                    jobs.append((indices, path))
        futures = [self.submit(indices, keep=path) for indices, path in jobs]
        try:
            for future in futures:
                future.result()
        except BrokenProcessPool as err:
            raise DataError(f"a fresh-example process died ({err}); see its error above.") from err
        finally:
            for future in futures:  # interrupted: nothing left queued ahead of the stream's
                future.cancel()
        return len(jobs)

    def close(self) -> None:
        """Stop the worker (a later read starts another)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def __getstate__(self) -> dict[str, Any]:
        if self._executor is not None:
            raise DataError("a started FreshExamples cannot be pickled; build it in each process.")
        return self.__dict__.copy()


class FreshDocuments(Sequence[Document]):
    """One sub-source's endless train examples as packer ``Document`` s, in order.

    ``len`` is nominal (``ENDLESS``); ``num_tokens`` and ``modality_tokens`` scale the reference
    documents' counts to it, so a sampler sizes the sub-sources as it would from the store.
    ``doc_id`` is the example's built-in index. ``sequential`` tells ``MixtureStream`` to read it
    in order instead of through a permutation.

    Raises (on reading):
        DataError: an example failed to tokenize (its id and reason), or the worker died.
    """

    sequential = True

    def __init__(self, owner: FreshExamples, name: str, reference: Sequence[Document]):
        if len(reference) == 0:
            raise DataError(f"sub-source {name!r} has no train documents in the store to size it.")
        self.owner, self.name = owner, name
        counts = getattr(reference, "modality_tokens", None)
        total = getattr(reference, "num_tokens", None)
        if counts is None or total is None:
            raise DataError("the reference documents need num_tokens and modality_tokens "
                            "(StoreDocuments has both).")  # fmt: skip
        scale = ENDLESS // len(reference)
        self.num_tokens = int(total) * scale
        self.modality_tokens = {m: int(n) * scale for m, n in counts.items()}
        self._order: Iterator[int] = owner.source.indices_of(name, "train")
        self._indices: list[int] = []
        self._chunks: dict[int, Future | Path | list[Document]] = {}

    def __len__(self) -> int:
        return ENDLESS

    def index_of(self, j: int) -> int:
        """The built-in index of document ``j``."""
        while len(self._indices) <= j:
            self._indices.append(next(self._order))
        return self._indices[j]

    def _indices_of_chunk(self, c: int) -> list[int]:
        start = c * self.owner.chunk
        return [self.index_of(j) for j in range(start, start + self.owner.chunk)]

    def _submit(self, c: int) -> None:
        if c not in self._chunks:
            path = self.owner.chunk_path(self.name, c)
            if path is not None and path.is_file():  # kept by an earlier run: read when reached
                self._chunks[c] = path
            else:
                self._chunks[c] = self._render(c, path)

    def _render(self, c: int, keep: Path | None) -> Future:
        """Chunk ``c`` rendered by the workers beside the trainer (counted in ``streamed``)."""
        self.owner.streamed += 1
        return self.owner.submit(self._indices_of_chunk(c), keep=keep)

    def _read_kept(self, path: Path, c: int) -> list[Document] | None:
        """Chunk ``c`` from its kept file, or ``None`` when the file is not a sound chunk."""
        table = self.owner.modality_table
        kept = read_chunk(path, self._indices_of_chunk(c), len(table))
        if kept is None:
            return None
        try:
            return [Document(tokens, table[tokens], cuts, doc_id=self.index_of(j))
                    for j, (tokens, cuts) in enumerate(kept, start=c * self.owner.chunk)]  # fmt: skip
        except DataError as err:  # cuts out of order or past the end
            log.warning("the kept fresh chunk %s is damaged (%s); rendering it again", path, err)
            return None

    def _chunk(self, c: int) -> list[Document]:
        for ahead in range(self.owner.ahead + 1):
            self._submit(c + ahead)
        got = self._chunks[c]
        if isinstance(got, Path):  # damaged or foreign: rendered (and kept) again
            docs = self._read_kept(got, c)
            self._chunks[c] = got = docs if docs is not None else self._render(c, got)
        if isinstance(got, Future):
            try:
                results = got.result()
            except BrokenProcessPool as err:
                raise DataError(
                    f"the fresh-example worker died ({err}); see its error above."
                ) from err
            docs = []
            for j, result in enumerate(results, start=c * self.owner.chunk):
                if isinstance(result, str):
                    raise DataError(f"fresh built-in example {result}")
                tokens, cuts = result
                docs.append(Document(tokens, self.owner.modality_table[tokens],
                                     np.asarray(cuts, np.int64), doc_id=self.index_of(j)))  # fmt: skip
            self._chunks[c] = got = docs
        for old in [k for k in self._chunks if k < c - 1]:  # behind the stream: not read again
            del self._chunks[old]
        return got

    def __getitem__(self, j):  # type: ignore[override]
        if isinstance(j, slice):
            return [self[i] for i in range(*j.indices(min(len(self), j.stop or len(self))))]
        if not 0 <= j < ENDLESS:
            raise IndexError(j)
        return self._chunk(j // self.owner.chunk)[j % self.owner.chunk]


def expected_documents(
    docs: Mapping[str, FreshDocuments], probabilities: Mapping[str, float], positions: int
) -> dict[str, int]:
    """Documents of each sub-source that ``positions`` packed positions read when sub-source s
    gets a token share ``probabilities[s]`` (``MixtureStream`` draws s in proportion to p_s over
    its mean document length; padding makes this a slight overestimate)."""
    out = {}
    for name, d in docs.items():
        mean_length = d.num_tokens / len(d)
        out[name] = int(probabilities.get(name, 0.0) * positions / mean_length) + 1
    return out


def fresh_sources(store: Any, owner: FreshExamples) -> dict[str, FreshDocuments]:
    """The fresh train documents of every sub-source of ``store``'s train split (a ``TokenStore``
    opened on ``split="train"``), sized from the store's own documents of each."""
    from tokenize_mm.data.mixture import store_sources

    owner.check_store(store)
    return {name: owner.documents(name, docs) for name, docs in store_sources(store).items()}
