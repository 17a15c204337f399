"""Packing and batching: tokenized documents into fixed-shape training batches.

The idea is sequence packing without cross-contamination (Krell et al. 2021, "Efficient Sequence
Packing without Cross-contamination", arXiv:2107.02027) with best-fit packing (Ding et al. 2024,
"Fewer Truncations Improve Language Modeling", arXiv:2404.10830): several documents share one row
of ``context`` tokens, and the row says where each one starts so that none sees another.

One module per idea:

- ``documents.py``: ``Document`` (one tokenized example, with the cuts where it may be split),
  ``Piece`` and ``split_document``.
- ``batch.py``: ``PackedRow`` and ``layout`` (pieces laid end to end in a row), ``Batch`` and
  ``collate`` (rows stacked into (B, L) tensors), ``target_mask``, and ``attention_mask`` (from
  ``core.masks``, re-exported): how a row keeps its documents apart.
- ``packer.py``: ``Packer`` (best fit over a look-ahead buffer), ``batch_rows``,
  ``TokenBudgetBatcher`` and ``PackStats``.
- ``dataset.py``: ``PackedDataset``, either of them as a seeded, sharded ``IterableDataset``.

Three ways to batch: ``Packer`` + ``batch_rows`` (fixed (B, context) batches, the default),
``TokenBudgetBatcher`` (one document per row, variable B with B × longest <= ``max_tokens``) and
``PackedDataset``, an ``IterableDataset`` over either, seeded and sharded over DataLoader workers
and ranks. Imports numpy and torch only (no Lightning, no Hydra).
"""

from tokenize_mm.data.packing.batch import (
    Batch,
    PackedRow,
    attention_mask,
    collate,
    layout,
    target_mask,
)
from tokenize_mm.data.packing.dataset import PackedDataset
from tokenize_mm.data.packing.documents import Document, Piece, split_document
from tokenize_mm.data.packing.packer import (
    Packer,
    PackStats,
    PiecePool,
    TokenBudgetBatcher,
    batch_rows,
    check_positive,
)

__all__ = [
    "Batch",
    "Document",
    "PackStats",
    "PackedDataset",
    "PackedRow",
    "Packer",
    "Piece",
    "PiecePool",
    "TokenBudgetBatcher",
    "attention_mask",
    "batch_rows",
    "check_positive",
    "collate",
    "layout",
    "split_document",
    "target_mask",
]
