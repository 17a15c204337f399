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
be causal within a segment (``attention_mask``, defined in ``core.masks`` and re-exported here:
causal and same segment, block-diagonal), and the target of position t counts only if t + 1 is in
the same segment (``target_mask``). A piece of a split document is a segment of its own: it
starts at position 0 and does not see the piece before it, exactly like a document of its own.
A row of ``context`` 8 holding A = [a0 a1 a2] and B = [b0 b1 b2 b3], padded with P::

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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from tokenize_mm.core.masks import attention_mask
from tokenize_mm.core.modalities import SPECIAL_MODALITY
from tokenize_mm.data.errors import DataError


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
