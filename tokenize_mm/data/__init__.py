"""Data: where examples come from, before tokenization.

Every source yields ``Example`` objects (text, image, audio items plus split, sub-source and
concept label) and offers ``texts()`` / ``images()`` for fitting tokenizers:

- ``BuiltinSource``: deterministic coloured-shape data, drawn and described, no downloads.
- ``ManifestSource``: your data, as a JSONL manifest (design.md section 4).
- ``FolderSource``: every image, audio or text file under a folder.
"""

from tokenize_mm.data.builtin import BuiltinSource
from tokenize_mm.data.errors import BadRecordError, DataError, DataNotFoundError
from tokenize_mm.data.example import (
    MODALITIES,
    SPLITS,
    AudioRef,
    Example,
    iter_items,
    split_examples,
    split_for_id,
)
from tokenize_mm.data.folder import FolderSource
from tokenize_mm.data.manifest import ManifestSource, SkippedRecord

__all__ = [
    "MODALITIES",
    "SPLITS",
    "AudioRef",
    "BadRecordError",
    "BuiltinSource",
    "DataError",
    "DataNotFoundError",
    "Example",
    "FolderSource",
    "ManifestSource",
    "SkippedRecord",
    "iter_items",
    "split_examples",
    "split_for_id",
]
