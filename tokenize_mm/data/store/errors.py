"""The store's errors: every one is a ``StoreError``, a ``DataError`` of the ``TokenizeMMError``
family.

- ``StoreError``: a store is missing, incomplete, or cannot be written.
- ``StoreMismatchError``: tokens laid out by other tokenizers, or parts of different jobs.
- ``StoreResumeError`` (a ``StoreMismatchError``): a part was started as another job.
- ``StoreFormatError``: a store file is malformed (names the file and the key).
- ``StoreIntegrityError``: a store's data disagrees with its index.
"""

from __future__ import annotations

from tokenize_mm.data.errors import DataError


class StoreError(DataError):
    """A store is missing, incomplete, or cannot be written."""


class StoreMismatchError(StoreError):
    """A store's tokens were laid out by other tokenizers or another layout."""


class StoreResumeError(StoreMismatchError):
    """A part was started as another job (other source, order, chunk size, shard or layout), so
    resuming it would mix two jobs' chunks."""


class StoreFormatError(StoreError):
    """A store file is not what the format says: not JSON, a missing key, a field of the wrong
    type, or a path that is not one of the store's own names."""


class StoreIntegrityError(StoreError):
    """A store's data disagrees with its index: a truncated or changed chunk file, an id outside
    the vocabulary, or a record missing from, or twice in, the store."""
