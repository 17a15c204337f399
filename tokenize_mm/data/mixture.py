"""Mixture stream: packed batches whose documents are drawn from sources by a sampler.

Data mixing as in multilingual and multimodal pretraining (Arivazhagan et al. 2019; Chung et al.
2023, UniMax; Xie et al. 2023, DoReMi): each document of the stream comes from a source drawn by a
``MixtureSampler`` (``tokenize_mm.balance.sampling``), whose probabilities are read afresh at every
draw so that an adaptive sampler's update counts from the next draw. A sampler's p_s is a share of
*tokens* (its sizes are tokens), so source s is drawn with probability ∝ p_s / (mean tokens per
document of s): a source of long documents is not over-served. Documents are packed into rows with
``Packer``'s best fit over a look-ahead buffer (``packer.py``) and stacked into batches.

**Order.** One seeded generator draws the sources; it is the same on every rank, so all ranks draw
the same sequence of sources (and, with all-reduced samplers, the same probabilities). Each source
is read through a permutation of its documents seeded by (seed, source, source epoch); at each
draw of a source, rank r takes the permutation's entry ``position + r`` and every rank moves
``position`` on by ``world_size``. So within an epoch of a source the ranks read disjoint
documents; a new epoch (a new permutation) starts when fewer than ``world_size`` entries are left.
A source whose documents say ``sequential = True`` (an endless stream of fresh examples,
``tokenize_mm.data.fresh``) is read in order instead, document ``position + r``.

**Resume.** ``state_dict`` holds everything the next batch depends on: the generator's state, each
source's epoch and position, the pieces waiting in the packer's buffer (as source, document,
start, stop: the tokens are read again on restore), the served-token counters and the sampler's
state. A stream restored from a state taken after batch k yields exactly the batches k + 1, k + 2,
... of the uninterrupted stream. Under DDP each rank's buffer differs: pass ``gather`` (e.g.
``all_gather_object``) to ``state_dict`` to keep every rank's state in the one checkpoint;
``load_state_dict`` picks this rank's. The state lives in this process, so read the stream with
``num_workers=0``.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from tokenize_mm.balance.sampling import MixtureSampler
from tokenize_mm.core.modalities import MODALITY_IDS
from tokenize_mm.data.errors import DataError
from tokenize_mm.data.packing import Batch, Document, PackedRow, Piece, collate, split_document
from tokenize_mm.data.packing.packer import Packer, PackStats, PiecePool, check_positive

STATE_VERSION = 1
_MODALITY_NAMES = sorted(MODALITY_IDS, key=MODALITY_IDS.__getitem__)  # text, image, audio, special


# -- sources of a store ---------------------------------------------------------------------------
class _StoreLike(Protocol):
    examples: list[dict[str, Any]]

    def document(self, i: int) -> Document: ...


class StoreDocuments(Sequence[Document]):
    """The documents of one source of a ``TokenStore``, read lazily; counts from the store index.

    Attributes:
        num_tokens: tokens of all its documents.
        modality_tokens: modality → tokens (``text``, ``image``, ``audio``, ``special``).
    """

    def __init__(self, store: _StoreLike, indices: Sequence[int]):
        self.store, self.indices = store, list(indices)
        self.num_tokens = sum(int(store.examples[i]["length"]) for i in self.indices)
        self.modality_tokens: dict[str, int] = {}
        for i in self.indices:
            for m, n in store.examples[i]["tokens"].items():
                self.modality_tokens[m] = self.modality_tokens.get(m, 0) + int(n)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self.store.document(j) for j in self.indices[i]]
        return self.store.document(self.indices[i])


def store_sources(store: _StoreLike, source_key: str = "source") -> dict[str, StoreDocuments]:
    """A store's examples grouped by ``example[source_key]`` (by first appearance)."""
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(store.examples):
        if source_key not in example:
            raise DataError(f"store example {i} has no {source_key!r}; group by another key.")
        groups.setdefault(str(example[source_key]), []).append(i)
    return {source: StoreDocuments(store, indices) for source, indices in groups.items()}


def source_sizes(documents_by_source: Mapping[str, Sequence[Document]]) -> dict[str, int]:
    """Tokens per source: what every sampler takes as ``sizes``."""
    return {
        s: int(getattr(docs, "num_tokens", None) or sum(len(d) for d in docs))
        for s, docs in documents_by_source.items()
    }


def source_modalities(
    documents_by_source: Mapping[str, Sequence[Document]],
) -> dict[str, dict[str, float]]:
    """Each source's share of its text, image and audio tokens (special tokens left out)."""
    shares = {}
    for source, docs in documents_by_source.items():
        counts = getattr(docs, "modality_tokens", None)
        if counts is None:
            ids = np.bincount(np.concatenate([d.modality for d in docs]), minlength=4)
            counts = {name: int(ids[i]) for i, name in enumerate(_MODALITY_NAMES)}
        kept = {m: n for m, n in counts.items() if m != "special"}
        total = sum(kept.values()) or 1
        shares[source] = {m: n / total for m, n in kept.items()}
    return shares


# -- the stream -----------------------------------------------------------------------------------
class MixtureStream(IterableDataset):
    """An endless stream of packed ``Batch`` es from documents drawn by a sampler.

    Read it with ``DataLoader(stream, batch_size=None, num_workers=0)`` or ``next(stream)``; bound
    training by steps (``max_steps``), not epochs.

    Args:
        documents_by_source: source → its documents (``store_sources`` for a ``TokenStore``).
        sampler: gives the source probabilities; its sources must be those of the documents.
        pad_id: global id of the pad token.
        context: row length L.
        batch_size: rows per batch.
        buffer_size: packer look-ahead, in pieces.
        split_spans: cut a span longer than ``context`` mid-span instead of raising.
        seed: seed of the source draws and of each source's permutations.
        rank: this process's rank in distributed training.
        world_size: number of distributed processes.
    """

    def __init__(
        self,
        documents_by_source: Mapping[str, Sequence[Document]],
        sampler: MixtureSampler,
        pad_id: int,
        context: int = 1024,
        batch_size: int = 8,
        buffer_size: int = 256,
        split_spans: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        check_positive(batch_size=batch_size, world_size=world_size)
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size={world_size}), got {rank}.")
        self.documents = dict(documents_by_source)
        self.sources = list(self.documents)
        probabilities = sampler.probabilities()
        if set(probabilities) != set(self.sources):
            raise DataError(
                f"the sampler draws sources {sorted(probabilities)} but the documents come from "
                f"{sorted(self.sources)}; build the sampler from these documents' sources."
            )
        small = {s: len(d) for s, d in self.documents.items() if len(d) < world_size}
        if small:
            raise DataError(
                f"sources {small} have fewer documents than world_size={world_size}; each rank "
                "needs one of its own: leave them out or add documents."
            )
        self.sampler, self.batch_size = sampler, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        sizes = source_sizes(self.documents)
        self._mean_length = np.array([sizes[s] / len(self.documents[s]) for s in self.sources])
        self.packer = Packer(context, pad_id, buffer_size, split_spans)
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._epochs = [0] * len(self.sources)
        self._positions = [0] * len(self.sources)
        self._permutations: dict[int, tuple[int, np.ndarray]] = {}
        self._reset_buffer()
        self.source_tokens = dict.fromkeys(self.sources, 0)
        self.modality_tokens = dict.fromkeys(_MODALITY_NAMES, 0)
        self.batches = 0

    @classmethod
    def from_store(
        cls, store: _StoreLike, sampler: MixtureSampler, pad_id: int, source_key: str = "source",
        **options: Any,
    ) -> MixtureStream:  # fmt: skip
        """A stream over a ``TokenStore``'s examples grouped by ``source_key``."""
        return cls(store_sources(store, source_key), sampler, pad_id, **options)

    # -- drawing ----------------------------------------------------------------------------------
    def draw(self) -> tuple[str, int]:
        """Draw the next document: (source, its index in ``documents[source]``) for this rank."""
        k, index = self._draw()
        return self.sources[k], index

    def _draw(self) -> tuple[int, int]:
        probabilities = self.sampler.probabilities()  # token shares → document draws
        cumulative = np.cumsum([probabilities[s] for s in self.sources] / self._mean_length)
        u = self._rng.random() * cumulative[-1]
        k = min(int(np.searchsorted(cumulative, u, side="right")), len(self.sources) - 1)
        docs = self.documents[self.sources[k]]
        if self._positions[k] + self.world_size > len(docs):  # too few left for every rank
            self._epochs[k] += 1
            self._positions[k] = 0
        position = self._positions[k] + self.rank
        index = (
            position if getattr(docs, "sequential", False) else int(self._permutation(k)[position])
        )
        self._positions[k] += self.world_size
        return k, index

    def _permutation(self, k: int) -> np.ndarray:
        epoch = self._epochs[k]
        cached = self._permutations.get(k)
        if cached is None or cached[0] != epoch:
            source = self.sources[k]
            key = (self.seed, zlib.crc32(source.encode()), epoch)
            cached = (epoch, np.random.default_rng(key).permutation(len(self.documents[source])))
            self._permutations[k] = cached
        return cached[1]

    # -- packing ----------------------------------------------------------------------------------
    def _reset_buffer(self) -> None:
        self._pool = PiecePool()
        # Pieces in the pool, by arrival: arrival → (source index, document index, start, stop,
        # mid_span), and (doc_id, start, stop) → arrivals, to learn which pieces a row took.
        self._pending: dict[int, tuple[int, int, int, int, bool]] = {}
        self._by_span: dict[tuple[int, int, int], deque[int]] = {}
        self._arrivals = 0

    def _add(self, k: int, index: int, piece: Piece) -> None:
        self._pool.add(piece)
        self._pending[self._arrivals] = (k, index, piece.start, piece.stop, piece.mid_span)
        self._by_span.setdefault((piece.doc_id, piece.start, piece.stop), deque()).append(
            self._arrivals
        )
        self._arrivals += 1

    def _row(self) -> PackedRow:
        while len(self._pool) < self.packer.buffer_size:
            k, index = self._draw()
            doc = self.documents[self.sources[k]][index]
            pieces = split_document(doc, self.packer.context, self.packer.split_spans)
            self.packer.stats.add_pieces(pieces)
            for piece in pieces:
                self._add(k, index, piece)
        row = self.packer.fill_row(self._pool)
        # The pool takes the oldest piece of a length, so the oldest pending piece with a row
        # span's (doc_id, start, stop) is the one it took.
        for span in row.spans:
            arrivals = self._by_span[span]
            k = self._pending.pop(arrivals.popleft())[0]
            if not arrivals:
                del self._by_span[span]
            self.source_tokens[self.sources[k]] += span[2] - span[1]
        counts = np.bincount(row.modality[row.segment_ids > 0], minlength=len(_MODALITY_NAMES))
        for i, name in enumerate(_MODALITY_NAMES):
            self.modality_tokens[name] += int(counts[i])
        return row

    def __iter__(self) -> MixtureStream:
        if get_worker_info() is not None:
            raise DataError(
                "MixtureStream keeps its draws and sampler in this process; read it with "
                "DataLoader(num_workers=0)."
            )
        return self

    def __next__(self) -> Batch:
        batch = collate([self._row() for _ in range(self.batch_size)])
        self.batches += 1
        return batch

    # -- logging ----------------------------------------------------------------------------------
    def metrics(self) -> dict[str, float]:
        """``sampling/prob/<source>``, ``sampling/tokens/<source>`` (served on this rank) and
        ``sampling/token_share/<modality>`` (of the non-padding tokens served on this rank)."""
        out = {f"sampling/prob/{s}": p for s, p in self.sampler.probabilities().items()}
        out |= {f"sampling/tokens/{s}": float(n) for s, n in self.source_tokens.items()}
        total = sum(self.modality_tokens.values()) or 1
        out |= {f"sampling/token_share/{m}": n / total for m, n in self.modality_tokens.items()}
        return out

    # -- state ------------------------------------------------------------------------------------
    def state_dict(self, gather: Callable[[Any], Sequence[Any]] | None = None) -> dict[str, Any]:
        """This rank's state (plain Python values); with ``gather`` (object → every rank's
        object, in rank order) ``{"ranks": [state of rank 0, rank 1, ...]}``."""
        state = {
            "version": STATE_VERSION, "sources": list(self.sources), "seed": self.seed,
            "rank": self.rank, "world_size": self.world_size,
            "rng": self._rng.bit_generator.state, "epochs": list(self._epochs),
            "positions": list(self._positions),
            "pending": [[k, i, a, b, int(mid)] for k, i, a, b, mid in self._pending.values()],
            "source_tokens": dict(self.source_tokens),
            "modality_tokens": dict(self.modality_tokens), "batches": self.batches,
            "pack_stats": dict(vars(self.packer.stats)), "sampler": self.sampler.state_dict(),
        }  # fmt: skip
        return state if gather is None else {"ranks": list(gather(state))}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue exactly where the stream that gave ``state`` stood (this rank's part of it)."""
        if "ranks" in state:
            ranks = state["ranks"]
            if len(ranks) != self.world_size:
                raise DataError(
                    f"the state holds {len(ranks)} ranks, this run has world_size="
                    f"{self.world_size}; exact resume needs the same number of ranks."
                )
            state = ranks[self.rank]
        saved = (state.get("version"), state["sources"], state["seed"], state["rank"],
                 state["world_size"])  # fmt: skip
        mine = (STATE_VERSION, self.sources, self.seed, self.rank, self.world_size)
        if tuple(saved) != mine:
            raise DataError(
                f"the state was taken from a stream with (version, sources, seed, rank, "
                f"world_size) = {saved}, this one has {mine}; resume with the same settings "
                "(under DDP, save with state_dict(gather=...))."
            )
        self.sampler.load_state_dict(state["sampler"])
        self._rng.bit_generator.state = state["rng"]
        self._epochs = [int(e) for e in state["epochs"]]
        self._positions = [int(p) for p in state["positions"]]
        self._reset_buffer()
        for k, index, start, stop, mid in state["pending"]:
            doc = self.documents[self.sources[k]][index]
            piece = Piece(
                doc.doc_id, start, doc.tokens[start:stop], doc.modality[start:stop], bool(mid)
            )
            self._add(k, index, piece)
        self.source_tokens = {s: int(n) for s, n in state["source_tokens"].items()}
        self.modality_tokens = {m: int(n) for m, n in state["modality_tokens"].items()}
        self.batches = int(state["batches"])
        self.packer.stats = PackStats(**state["pack_stats"])
