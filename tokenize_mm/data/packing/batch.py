"""Rows and batches: pieces laid out in rows that keep their documents apart, stacked as tensors.

Packing without cross-contamination (Krell et al. 2021, "Efficient Sequence Packing without
Cross-contamination", arXiv:2107.02027): a row holds several documents, and says where each one
starts so that none sees another. ``layout`` lays pieces end to end in a ``PackedRow``;
``collate`` stacks rows into a ``Batch`` of (B, L) tensors.

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from tokenize_mm.core.masks import attention_mask
from tokenize_mm.core.modalities import SPECIAL_MODALITY
from tokenize_mm.data.errors import DataError
from tokenize_mm.data.packing.documents import Piece


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
