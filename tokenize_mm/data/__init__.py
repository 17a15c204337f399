"""Data: where examples come from, before tokenization.

Every source yields ``Example`` objects (text, image, audio items plus split, sub-source and
concept label) and offers ``texts()`` / ``images()`` for fitting tokenizers:

- ``BuiltinSource``: deterministic coloured-shape data, drawn, described and played, no
  downloads (the ``builtin`` package).
- ``ManifestSource``: your data, as a JSONL manifest (docs/architecture.md §5).
- ``FolderSource``: every image, audio or text file under a folder.

After tokenization (docs/architecture.md §2, §8):

- ``pretokenize`` / ``merge_store`` / ``TokenStore``: examples tokenized once into memory-mapped,
  fingerprinted, resumable shards (the ``store`` package), with a token-accounting report
  (``accounting.py``).
- ``Document``, ``Packer``, ``TokenBudgetBatcher``, ``PackedDataset``: documents packed into
  training batches with document boundaries kept (the ``packing`` package).
"""

from tokenize_mm.core.modalities import MODALITIES, SPECIAL_MODALITY
from tokenize_mm.data.builtin import BuiltinSource
from tokenize_mm.data.errors import BadRecordError, DataError, DataNotFoundError
from tokenize_mm.data.example import (
    SPLITS,
    AudioRef,
    Example,
    iter_items,
    split_examples,
    split_for_id,
)
from tokenize_mm.data.folder import FolderSource
from tokenize_mm.data.manifest import ManifestSource, SkippedRecord
from tokenize_mm.data.packing import (
    Batch,
    Document,
    PackedDataset,
    PackedRow,
    Packer,
    PackStats,
    Piece,
    TokenBudgetBatcher,
    attention_mask,
    batch_rows,
    collate,
    layout,
    split_document,
    target_mask,
)
from tokenize_mm.data.store import (
    StoreError,
    StoreFormatError,
    StoreIntegrityError,
    StoreMismatchError,
    StoreResumeError,
    TokenStore,
    merge_store,
    pretokenize,
)

__all__ = [
    "MODALITIES",
    "SPECIAL_MODALITY",
    "SPLITS",
    "AudioRef",
    "BadRecordError",
    "Batch",
    "BuiltinSource",
    "DataError",
    "DataNotFoundError",
    "Document",
    "Example",
    "FolderSource",
    "ManifestSource",
    "PackStats",
    "PackedDataset",
    "PackedRow",
    "Packer",
    "Piece",
    "SkippedRecord",
    "StoreError",
    "StoreFormatError",
    "StoreIntegrityError",
    "StoreMismatchError",
    "StoreResumeError",
    "TokenBudgetBatcher",
    "TokenStore",
    "attention_mask",
    "batch_rows",
    "collate",
    "iter_items",
    "layout",
    "merge_store",
    "pretokenize",
    "split_document",
    "split_examples",
    "split_for_id",
    "target_mask",
]
