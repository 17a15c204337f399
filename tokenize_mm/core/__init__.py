"""``tokenize_mm.core``: the bottom layer (docs/architecture.md §2).

What every other layer shares, importing nothing else from tokenize_mm (torch only, for the mask
and the schedule; neither Lightning nor Hydra):

- ``errors.py``: ``TokenizeMMError``, the root of every error raised on purpose, and the generic
  ``ConfigError`` and ``CheckpointError``;
- ``atomic.py``: atomic file writes (``write_atomic`` and friends);
- ``files.py``: what a path is, whether it can be read as an input, and its identity, from
  ``os.stat`` alone;
- ``modalities.py``: ``MODALITIES``, ``MODALITY_IDS`` and ``SPECIAL_MODALITY``;
- ``schedules.py``: the warm-up + cosine learning-rate schedule ``warmup_cosine``;
- ``masks.py``: the causal, same-segment ``attention_mask`` of packed documents.
"""

from tokenize_mm.core.atomic import (
    fsync_dir,
    new_dir_mode,
    new_file_mode,
    write_atomic,
    write_bytes_atomic,
    write_text_atomic,
)
from tokenize_mm.core.errors import CheckpointError, ConfigError, TokenizeMMError
from tokenize_mm.core.files import file_identity, file_kind, input_file_problem
from tokenize_mm.core.masks import attention_mask
from tokenize_mm.core.modalities import MODALITIES, MODALITY_IDS, SPECIAL_MODALITY
from tokenize_mm.core.schedules import warmup_cosine

__all__ = [
    "MODALITIES",
    "MODALITY_IDS",
    "SPECIAL_MODALITY",
    "CheckpointError",
    "ConfigError",
    "TokenizeMMError",
    "attention_mask",
    "file_identity",
    "file_kind",
    "fsync_dir",
    "input_file_problem",
    "new_dir_mode",
    "new_file_mode",
    "warmup_cosine",
    "write_atomic",
    "write_bytes_atomic",
    "write_text_atomic",
]
