"""Packers and batchers: ``Document`` pieces into rows and (B, L) batches.

``Packer`` fills rows of ``context`` tokens by best fit over a bounded look-ahead buffer (Ding et
al. 2024, "Fewer Truncations Improve Language Modeling", arXiv:2404.10830), streaming and
deterministic; ``batch_rows`` stacks rows into fixed-size batches; ``TokenBudgetBatcher`` puts one
piece per row and bounds B × longest by ``max_tokens`` instead of fixing B. ``PackStats`` counts
what each produced (tokens, padding, splits).
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tokenize_mm.data.errors import DataError
from tokenize_mm.data.packing.batch import Batch, PackedRow, collate, layout
from tokenize_mm.data.packing.documents import Document, Piece, split_document


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


def check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise DataError(f"{name} must be a positive integer, got {value!r}.")


# -- packing --------------------------------------------------------------------------------------
class PiecePool:
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
        check_positive(context=context, buffer_size=buffer_size)
        self.context, self.pad_id = context, pad_id
        self.buffer_size, self.split_spans = buffer_size, split_spans
        self.stats = PackStats()

    def pack(self, documents: Iterable[Document]) -> Iterator[PackedRow]:
        """Yield rows of ``context`` tokens holding every token of ``documents`` exactly once."""
        pool = PiecePool()
        for doc in documents:
            pieces = split_document(doc, self.context, self.split_spans)
            self.stats.add_pieces(pieces)
            for piece in pieces:
                pool.add(piece)
            while len(pool) >= self.buffer_size:
                yield self.fill_row(pool)
        while len(pool):
            yield self.fill_row(pool)

    def fill_row(self, pool: PiecePool) -> PackedRow:
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
    check_positive(batch_size=batch_size)
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
        check_positive(max_tokens=max_tokens, max_length=max_length, buffer_size=buffer_size)
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
