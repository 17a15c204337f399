"""Packing and batching: tokenized documents into fixed-shape training batches.

The idea is sequence packing without cross-contamination (Krell et al. 2021, "Efficient Sequence
Packing without Cross-contamination", arXiv:2107.02027) with best-fit packing (Ding et al. 2024,
"Fewer Truncations Improve Language Modeling", arXiv:2404.10830): several documents share one row
of ``context`` tokens, and the row says where each one starts so that none sees another.

A ``Document`` is one example already tokenized: global ``tokens`` (N,), one modality id per
position (0 text, 1 image, 2 audio, 3 special) and ``cuts``, the positions where a span (one
modality item in its begin/end markers) begins. A document longer than a row is split only at
cuts (``split_document``); a span longer than a row is cut mid-span only with
``split_spans=True``. Every token of the input lands in exactly one row; none is dropped.

Document boundaries: each document (or piece of one) is a *segment* of its row. ``segment_ids``
numbers them 1, 2, ... (0 is padding), ``positions`` restart at 0 at each segment, attention must
be causal within a segment (``attention_mask``: causal and same segment, block-diagonal), and the
target of position t counts only if t + 1 is in the same segment (``target_mask``). A piece of a
split document is a segment of its own: it starts at position 0 and does not see the piece before
it, exactly like a document of its own. A row of ``context`` 8 holding A = [a0 a1 a2] and B = [b0 b1 b2 b3], padded with P::

    tokens       a0 a1 a2 b0 b1 b2 b3 P
    modality      .  .  .  .  .  .  .  3     (the documents' own ids; padding is special, 3)
    segment_ids   1  1  1  2  2  2  2  0
    positions     0  1  2  0  1  2  3  0
    target_mask   1  1  0  1  1  1  0  0     (predict token t + 1 from position t)

    attention_mask (query row, key column; 1 = may attend):
          a0 a1 a2 b0 b1 b2 b3 P
      a0   1  .  .  .  .  .  .  .
      a1   1  1  .  .  .  .  .  .
      a2   1  1  1  .  .  .  .  .
      b0   .  .  .  1  .  .  .  .
      b1   .  .  .  1  1  .  .  .
      b2   .  .  .  1  1  1  .  .
      b3   .  .  .  1  1  1  1  .
      P    .  .  .  .  .  .  .  1     (padding sees padding: no empty row, no NaN in softmax)

Three ways to batch: ``Packer`` + ``batch_rows`` (fixed (B, context) batches, the default),
``TokenBudgetBatcher`` (one document per row, variable B with B × longest <= ``max_tokens``) and
``PackedDataset``, an ``IterableDataset`` over either, seeded and sharded over DataLoader workers
and ranks. Imports numpy and torch only (no Lightning, no Hydra).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from tokenize_mm.data.errors import DataError

SPECIAL_MODALITY = 3
"""Modality id of special tokens (bos, eos, markers, padding); 0, 1, 2 are text, image, audio."""


# -- documents and pieces -------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Document:
    """One tokenized example.

    Attributes:
        tokens: (N,) global token ids, N >= 1 (stored as int64).
        modality: (N,) modality id of each position, 0 to 3 (stored as uint8).
        cuts: (M,) strictly increasing positions in (0, N) where a span begins: the only places a
            document longer than a row may be split (stored as int64).
        doc_id: a number naming the document in errors and in ``PackedRow.spans``.
    """

    tokens: np.ndarray
    modality: np.ndarray
    cuts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    doc_id: int = -1

    def __post_init__(self) -> None:
        name = f"Document {self.doc_id}"
        arrays = {"tokens": self.tokens, "modality": self.modality, "cuts": self.cuts}
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.ndim != 1 or not (value.size == 0 or np.issubdtype(value.dtype, np.integer)):
                raise DataError(
                    f"{name}: {key} must be a 1-D integer array, got {value.dtype} "
                    f"of shape {value.shape}."
                )
            arrays[key] = value
        tokens, modality, cuts = arrays["tokens"], arrays["modality"], arrays["cuts"]
        n = len(tokens)
        if n == 0:
            raise DataError(f"{name} is empty; leave it out of the stream.")
        if len(modality) != n:
            raise DataError(
                f"{name}: modality has {len(modality)} positions but tokens has {n}; "
                "give one modality id per token."
            )
        if modality.min() < 0 or modality.max() > SPECIAL_MODALITY:
            raise DataError(
                f"{name}: modality ids must lie in 0..{SPECIAL_MODALITY}, got "
                f"{int(modality.min())}..{int(modality.max())}."
            )
        if tokens.min() < 0:
            raise DataError(f"{name}: token ids must be non-negative, got {int(tokens.min())}.")
        if len(cuts) and (cuts[0] <= 0 or cuts[-1] >= n or np.any(np.diff(cuts) <= 0)):
            raise DataError(
                f"{name}: cuts must be strictly increasing positions in (0, {n}), "
                f"got {cuts.tolist()}."
            )
        object.__setattr__(self, "tokens", tokens.astype(np.int64, copy=False))
        object.__setattr__(self, "modality", modality.astype(np.uint8, copy=False))
        object.__setattr__(self, "cuts", cuts.astype(np.int64, copy=False))

    @classmethod
    def from_spans(cls, spans: Sequence[tuple[np.ndarray, np.ndarray]], doc_id: int = -1):
        """A document made of ``(tokens, modality)`` spans, each (n_i,), with a cut at each span's
        start but the first's."""
        lengths = [len(tokens) for tokens, _ in spans]
        return cls(
            np.concatenate([np.asarray(t) for t, _ in spans]),
            np.concatenate([np.asarray(m) for _, m in spans]),
            np.cumsum(lengths)[:-1],
            doc_id,
        )

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, eq=False)
class Piece:
    """A contiguous part of one document, ``tokens[start:stop]``: the unit that goes into a row.

    ``mid_span`` is True when the piece begins inside a span (only with ``split_spans=True``).
    """

    doc_id: int
    start: int
    tokens: np.ndarray
    modality: np.ndarray
    mid_span: bool = False

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def stop(self) -> int:
        return self.start + len(self.tokens)


def split_document(doc: Document, max_length: int, split_spans: bool = False) -> list[Piece]:
    """Split ``doc`` into pieces of at most ``max_length`` tokens, each as long as possible.

    Pieces end at cuts only; a span longer than ``max_length`` is cut mid-span if ``split_spans``.
    A document that fits is one piece. Concatenating the pieces gives the document back.

    Raises:
        DataError: a span is longer than ``max_length`` and ``split_spans`` is False.
    """
    n = len(doc)
    if n <= max_length:
        return [Piece(doc.doc_id, 0, doc.tokens, doc.modality)]
    bounds = np.concatenate([[0], doc.cuts, [n]])
    pieces, start, mid = [], 0, False
    while start < n:
        stop = int(bounds[np.searchsorted(bounds, start + max_length, side="right") - 1])
        if stop <= start:  # the span holding `start` runs past the room
            if not split_spans:
                j = int(np.searchsorted(bounds, start, side="right"))
                raise DataError(
                    f"Document {doc.doc_id}: the span at positions {bounds[j - 1]}..{bounds[j]} "
                    f"has {bounds[j] - bounds[j - 1]} tokens, more than a row of {max_length}; "
                    "pass split_spans=True to cut it mid-span, or raise the context."
                )
            stop = start + max_length
        pieces.append(
            Piece(doc.doc_id, start, doc.tokens[start:stop], doc.modality[start:stop], mid)
        )
        mid = stop < n and bool(bounds[np.searchsorted(bounds, stop)] != stop)
        start = stop
    return pieces


# -- rows and batches -----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class PackedRow:
    """One row of L tokens: segments laid end to end, then padding.

    Attributes:
        tokens: (L,) int64, ``pad_id`` at padding.
        modality: (L,) uint8, ``SPECIAL_MODALITY`` at padding.
        segment_ids: (L,) int32, 1, 2, ... for the segments in order, 0 at padding.
        positions: (L,) int64, 0, 1, ... from each segment's start, 0 at padding.
        spans: ``(doc_id, start, stop)`` of segment k + 1 at index k.
    """

    tokens: np.ndarray
    modality: np.ndarray
    segment_ids: np.ndarray
    positions: np.ndarray
    spans: tuple[tuple[int, int, int], ...]


def layout(pieces: Sequence[Piece], length: int, pad_id: int) -> PackedRow:
    """Lay ``pieces`` end to end in a row of ``length`` tokens and pad the rest."""
    row = PackedRow(
        np.full(length, pad_id, np.int64),
        np.full(length, SPECIAL_MODALITY, np.uint8),
        np.zeros(length, np.int32),
        np.zeros(length, np.int64),
        tuple((p.doc_id, p.start, p.stop) for p in pieces),
    )
    at = 0
    for k, piece in enumerate(pieces, 1):
        n = len(piece)
        if at + n > length:
            raise DataError(f"Pieces of {sum(map(len, pieces))} tokens overflow a row of {length}.")
        row.tokens[at : at + n] = piece.tokens
        row.modality[at : at + n] = piece.modality
        row.segment_ids[at : at + n] = k
        row.positions[at : at + n] = np.arange(n)
        at += n
    return row


@dataclass(frozen=True, eq=False)
class Batch:
    """B rows of L tokens as tensors: the fields of ``PackedRow`` stacked, (B, L) each."""

    tokens: torch.Tensor
    modality: torch.Tensor
    segment_ids: torch.Tensor
    positions: torch.Tensor
    spans: tuple[tuple[tuple[int, int, int], ...], ...] = ()

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> Batch:
        tensors = {f.name: fn(getattr(self, f.name)) for f in fields(self) if f.name != "spans"}
        return Batch(**tensors, spans=self.spans)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True)
        return self._map(torch.Tensor.pin_memory)

    def target_mask(self) -> torch.Tensor:
        return target_mask(self.segment_ids)

    def attention_mask(self) -> torch.Tensor:
        return attention_mask(self.segment_ids)

    @property
    def num_tokens(self) -> int:
        """Tokens that are not padding."""
        return int((self.segment_ids != 0).sum())


def collate(rows: Sequence[PackedRow]) -> Batch:
    """Stack rows of equal length into a ``Batch`` of (B, L) tensors."""
    stack = {
        f.name: torch.from_numpy(np.stack([getattr(r, f.name) for r in rows]))
        for f in fields(PackedRow)
        if f.name != "spans"
    }
    return Batch(**stack, spans=tuple(r.spans for r in rows))


def target_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(..., L) bool: True at t iff token t + 1 is in the same segment as t and not padding.

    Next-token loss: ``cross_entropy(logits[:, :-1], tokens[:, 1:])`` over ``mask[:, :-1]``.
    """
    valid = (segment_ids[..., 1:] == segment_ids[..., :-1]) & (segment_ids[..., :-1] != 0)
    return torch.cat([valid, torch.zeros_like(valid[..., :1])], dim=-1)


def attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(..., L, L) bool, True where query t may attend key s: s <= t and same segment.

    Block-diagonal causal. This is ``scaled_dot_product_attention``'s boolean ``attn_mask``
    (add a head axis: ``mask[:, None]``); ``nn.Transformer*`` layers want its negation.
    """
    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    return (segment_ids[..., :, None] == segment_ids[..., None, :]) & causal


@dataclass
class PackStats:
    """Counts of a packer or batcher so far; ``non_pad_fraction`` = tokens / (tokens + pad)."""

    documents: int = 0
    pieces: int = 0
    split_documents: int = 0
    mid_span_splits: int = 0
    rows: int = 0
    batches: int = 0
    tokens: int = 0
    pad_tokens: int = 0

    @property
    def non_pad_fraction(self) -> float:
        total = self.tokens + self.pad_tokens
        return self.tokens / total if total else 0.0

    def add_pieces(self, pieces: Sequence[Piece]) -> None:
        self.documents += 1
        self.pieces += len(pieces)
        self.split_documents += len(pieces) > 1
        self.mid_span_splits += sum(p.mid_span for p in pieces)

    def as_dict(self) -> dict:
        return {**self.__dict__, "non_pad_fraction": self.non_pad_fraction}


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}.")


# -- packing --------------------------------------------------------------------------------------
class _Pool:
    """Pieces waiting for a row, reachable by arrival (oldest) and by length (largest that fits)."""

    def __init__(self) -> None:
        self._lengths: list[int] = []  # sorted distinct lengths present
        self._by_length: dict[int, deque[tuple[int, Piece]]] = {}
        self._arrivals: deque[tuple[int, int]] = deque()  # (arrival number, length)
        self._taken: set[int] = set()  # arrivals already popped by length (lazy deletion)
        self._count = self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, piece: Piece) -> None:
        n = len(piece)
        if n not in self._by_length:
            bisect.insort(self._lengths, n)
            self._by_length[n] = deque()
        self._by_length[n].append((self._count, piece))
        self._arrivals.append((self._count, n))
        self._count += 1
        self._size += 1

    def _pop(self, n: int) -> tuple[Piece, int]:
        queue = self._by_length[n]
        number, piece = queue.popleft()  # the oldest of this length
        if not queue:
            del self._by_length[n]
            self._lengths.pop(bisect.bisect_left(self._lengths, n))
        self._size -= 1
        return piece, number

    def pop_oldest(self) -> Piece:
        while self._arrivals[0][0] in self._taken:
            self._taken.remove(self._arrivals.popleft()[0])
        # The oldest piece overall is the oldest of its length.
        return self._pop(self._arrivals.popleft()[1])[0]

    def pop_largest(self, room: int) -> Piece | None:
        i = bisect.bisect_right(self._lengths, room) - 1
        if i < 0:
            return None
        piece, number = self._pop(self._lengths[i])
        self._taken.add(number)
        return piece


class Packer:
    """Packs documents into rows of exactly ``context`` tokens, streaming, with best fit.

        Pieces (``split_document``) wait in a look-ahead buffer of ``buffer_size`` pieces. Each row
        starts with the oldest waiting piece (so no piece waits more than ``buffer_size`` rows) and is
        then filled with the largest waiting piece that still fits, until none fits; the rest is
        padding. Memory is bounded by the buffer; the output depends only on the input order (no
    randomness: shuffling is ``PackedDataset``'s).

        Args:
            context: row length L.
            pad_id: global id of the pad token.
            buffer_size: pieces held back to choose from; larger packs tighter and mixes later.
            split_spans: cut a span longer than ``context`` mid-span instead of raising.
    """

    def __init__(
        self, context: int, pad_id: int, buffer_size: int = 256, split_spans: bool = False
    ):
        _check_positive(context=context, buffer_size=buffer_size)
        self.context, self.pad_id = context, pad_id
        self.buffer_size, self.split_spans = buffer_size, split_spans
        self.stats = PackStats()

    def pack(self, documents: Iterable[Document]) -> Iterator[PackedRow]:
        """Yield rows of ``context`` tokens holding every token of ``documents`` exactly once."""
        pool = _Pool()
        for doc in documents:
            pieces = split_document(doc, self.context, self.split_spans)
            self.stats.add_pieces(pieces)
            for piece in pieces:
                pool.add(piece)
            while len(pool) >= self.buffer_size:
                yield self._row(pool)
        while len(pool):
            yield self._row(pool)

    def _row(self, pool: _Pool) -> PackedRow:
        pieces = [pool.pop_oldest()]
        room = self.context - len(pieces[0])
        while room and (piece := pool.pop_largest(room)) is not None:
            pieces.append(piece)
            room -= len(piece)
        self.stats.rows += 1
        self.stats.tokens += self.context - room
        self.stats.pad_tokens += room
        return layout(pieces, self.context, self.pad_id)


def batch_rows(
    rows: Iterable[PackedRow], batch_size: int, drop_last: bool = False
) -> Iterator[Batch]:
    """Collate consecutive rows into ``Batch`` es of ``batch_size`` (the last may be smaller)."""
    _check_positive(batch_size=batch_size)
    chunk: list[PackedRow] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == batch_size:
            yield collate(chunk)
            chunk = []
    if chunk and not drop_last:
        yield collate(chunk)


# -- token-budget batching ------------------------------------------------------------------------
class TokenBudgetBatcher:
    """Variable-size batches of one piece per row, B × longest <= ``max_tokens``.

    The alternative to fixed batch sizes: pieces of ``buffer_size`` look-ahead are sorted by
    length, cut greedily into batches that keep within the budget (similar lengths together, so
    little padding), and the batches of a buffer are yielded in a seeded random order so that
    training does not see lengths in a curriculum. Rows are padded to the batch's longest piece.

    Args:
        max_tokens: budget of B × L tokens per batch, padding included.
        pad_id: global id of the pad token.
        max_length: longest row; longer documents are split at cuts (default ``max_tokens``).
        buffer_size: pieces sorted together.
        split_spans: cut a span longer than ``max_length`` mid-span instead of raising.
        seed: seed (or seed tuple) of the batch order.
    """

    def __init__(
        self,
        max_tokens: int,
        pad_id: int,
        max_length: int | None = None,
        buffer_size: int = 1024,
        split_spans: bool = False,
        seed: int | tuple[int, ...] = 0,
    ):
        max_length = max_tokens if max_length is None else max_length
        _check_positive(max_tokens=max_tokens, max_length=max_length, buffer_size=buffer_size)
        if max_length > max_tokens:
            raise DataError(
                f"max_length {max_length} exceeds max_tokens {max_tokens}: a row of "
                "max_length would not fit the budget; lower it or raise max_tokens."
            )
        self.max_tokens, self.pad_id, self.max_length = max_tokens, pad_id, max_length
        self.buffer_size, self.split_spans, self.seed = buffer_size, split_spans, seed
        self.stats = PackStats()

    def batches(self, documents: Iterable[Document]) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed)
        buffer: list[Piece] = []
        for doc in documents:
            pieces = split_document(doc, self.max_length, self.split_spans)
            self.stats.add_pieces(pieces)
            buffer += pieces
            if len(buffer) >= self.buffer_size:
                yield from self._flush(buffer, rng)
                buffer = []
        if buffer:
            yield from self._flush(buffer, rng)

    def _flush(self, pieces: list[Piece], rng: np.random.Generator) -> Iterator[Batch]:
        groups: list[list[Piece]] = [[]]
        for piece in sorted(pieces, key=len):  # stable: ties keep arrival order
            if (len(groups[-1]) + 1) * len(piece) > self.max_tokens:
                groups.append([])
            groups[-1].append(piece)
        for i in rng.permutation(len(groups)):
            group = groups[i]
            longest = len(group[-1])
            self.stats.rows += len(group)
            self.stats.batches += 1
            self.stats.tokens += sum(map(len, group))
            self.stats.pad_tokens += longest * len(group) - sum(map(len, group))
            yield collate([layout([p], longest, self.pad_id) for p in group])


# -- dataset --------------------------------------------------------------------------------------
class PackedDataset(IterableDataset):
    """Batches for a DataLoader (``batch_size=None``): packed rows, or token-budget batches.

    Documents are shuffled per epoch (``set_epoch``) from ``seed``, then dealt round-robin to the
    shards, one shard per (rank, DataLoader worker): document i of the epoch's order goes to shard
    i mod (world_size × num_workers) only. Each shard packs its own documents, so the batches
    depend only on (documents, seed, epoch, shard) and not on timing.

    Args:
        documents: a sequence of documents, or a zero-argument callable returning a fresh iterable
            of them (a stream, read in its own order and never shuffled here).
        pad_id: global id of the pad token.
        context: row length for packing; the longest row for token-budget batches.
        batch_size: rows per batch when packing.
        max_tokens: if given, yield ``TokenBudgetBatcher`` batches of this budget instead.
        buffer_size: look-ahead of the packer or batcher, in pieces.
        split_spans: cut a span longer than ``context`` mid-span instead of raising.
        shuffle: shuffle a sequence of documents each epoch.
        seed: seed of the shuffle and of the batch order.
        drop_last: drop a last packed batch smaller than ``batch_size``.
        rank: this process's rank in distributed training.
        world_size: number of distributed processes.
    """

    def __init__(
        self,
        documents: Sequence[Document] | Callable[[], Iterable[Document]],
        pad_id: int,
        context: int = 1024,
        batch_size: int = 8,
        max_tokens: int | None = None,
        buffer_size: int = 256,
        split_spans: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        _check_positive(context=context, batch_size=batch_size, world_size=world_size)
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size={world_size}), got {rank}.")
        self.documents, self.pad_id, self.context = documents, pad_id, context
        self.batch_size, self.max_tokens, self.buffer_size = batch_size, max_tokens, buffer_size
        self.split_spans, self.shuffle, self.seed = split_spans, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.iter_shard(self.rank * workers + worker, self.world_size * workers)

    def iter_shard(self, shard: int, num_shards: int) -> Iterator[Batch]:
        """The batches of one shard of ``num_shards``: documents shard, shard + num_shards, ..."""
        docs = (d for i, d in enumerate(self._ordered()) if i % num_shards == shard)
        if self.max_tokens is not None:
            batcher = TokenBudgetBatcher(
                self.max_tokens, self.pad_id, self.context, self.buffer_size, self.split_spans,
                seed=(self.seed, self.epoch, shard),
            )  # fmt: skip
            return batcher.batches(docs)
        packer = Packer(self.context, self.pad_id, self.buffer_size, self.split_spans)
        return batch_rows(packer.pack(docs), self.batch_size, self.drop_last)

    def _ordered(self) -> Iterable[Document]:
        if callable(self.documents):
            return self.documents()
        if not self.shuffle:
            return self.documents
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.documents))
        return (self.documents[i] for i in order)
