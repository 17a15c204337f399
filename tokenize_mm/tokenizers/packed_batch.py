"""A batch of encoded items kept packed, each ``Encoded`` made when it is first read.

``TextTokenizer.encode_batch`` gets every id of a batch from sentencepiece as one buffer; turning
that into B tensors and B ``Encoded`` at once costs more than the encoding itself for short texts
(4,096 captions: ~16 ms of small-object work against ~25 ms of sentencepiece). ``EncodedBatch`` is
the list users had, as a read-only ``Sequence[Encoded]``: indexing, iteration, ``len``, slicing
and equality behave as on that list (and item i equals ``encode(texts[i])``), while each item is
made only when first read (iteration makes all of them in one pass). An item's codes are a view
into the packed tensor, so an item kept alive keeps the batch's ids alive (8 bytes an id: about
1 MB for 4,096 captions); ``.clone()`` its codes to keep one alone. ``packed`` gives the tensor and
the offsets themselves, to code that wants all ids at once.

Measured (docs/results/tokenizer_benchmark.md): encoding 4,096 captions into B tensors and B
``Encoded`` at once took 3.7 times sentencepiece's own batch encode (two thirds of it in the
cyclic garbage collector, one copy per item the rest); lazily it takes about as long as
sentencepiece, and about 1.4 times with every item read.

Shapes: tokens (K, N) int64 over all items; offsets (B + 1,) int64, item i is
``tokens[:, offsets[i]:offsets[i + 1]]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import torch

from tokenize_mm.core.gc_pause import gc_paused
from tokenize_mm.tokenizers.base import Encoded


class EncodedBatch(Sequence[Encoded]):
    """B encoded items stored as one packed tensor.

    Args:
        tokens: (K, N) int64, all items' codes one after the other.
        offsets: (B + 1,) int64, starting at 0, non-decreasing, ending at N.
    """

    __slots__ = ("_bounds", "_items", "_offsets", "_tokens")

    def __init__(self, tokens: torch.Tensor, offsets: torch.Tensor):
        if tokens.dim() != 2 or offsets.dim() != 1 or len(offsets) < 1:
            raise ValueError(
                f"tokens must be (K, N) and offsets (B + 1,), got {tuple(tokens.shape)} and "
                f"{tuple(offsets.shape)}"
            )
        if int(offsets[0]) != 0 or int(offsets[-1]) != tokens.shape[1]:
            raise ValueError(
                f"offsets must run from 0 to N = {tokens.shape[1]}, got {int(offsets[0])} to "
                f"{int(offsets[-1])}"
            )
        self._tokens, self._offsets = tokens, offsets
        self._items: list[Encoded | None] = [None] * (len(offsets) - 1)
        self._bounds: list[int] | None = None  # offsets as ints, made on the first read

    @property
    def packed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens (K, N), offsets (B + 1,))``, shared with the batch (not copied)."""
        return self._tokens, self._offsets

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> Encoded: ...

    @overload
    def __getitem__(self, index: slice) -> list[Encoded]: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = range(len(self))[index]  # negative indices; IndexError out of range
        item = self._items[i]
        if item is None:
            if self._bounds is None:
                self._bounds = self._offsets.tolist()
            start, stop = self._bounds[i], self._bounds[i + 1]
            item = self._items[i] = Encoded(self._tokens[:, start:stop])
        return item

    def __iter__(self) -> Iterator[Encoded]:
        if any(item is None for item in self._items):
            # every item at once: one split into views, B new objects that all survive made
            # with the collector paused (core/gc_pause.py)
            with gc_paused():
                lengths = self._offsets.diff().tolist()
                parts = torch.split(self._tokens, lengths, dim=1)
                items = self._items
                for i, part in enumerate(parts):
                    if items[i] is None:
                        items[i] = Encoded(part)
        return iter(self._items)  # type: ignore[arg-type]

    def tolist(self) -> list[Encoded]:
        """Every item, as a list."""
        return list(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"EncodedBatch({len(self)} items, {self._tokens.shape[0]} x {self._tokens.shape[1]} "
            "codes)"
        )
