"""Typed errors raised by the data sources.

Every error names the file (and, for a manifest, the line and record id) at fault and says what
to do about it. ``DataError`` belongs to the package's error family (``TokenizeMMError``) and
also derives from ``ValueError`` so that generic code that catches ``ValueError`` keeps working.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenize_mm.core.errors import TokenizeMMError

if TYPE_CHECKING:
    from tokenize_mm.data.manifest import SkippedRecord


class DataError(TokenizeMMError, ValueError):
    """A data source cannot be read, or an argument given to it is invalid."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A manifest file or a data folder does not exist."""


class BadRecordError(DataError):
    """A manifest record is invalid and the source was opened with ``strict=True``.

    Attributes:
        record: the line, id and reason of the offending record.
    """

    def __init__(self, message: str, record: SkippedRecord):
        super().__init__(message)
        self.record = record

    def __reduce__(self):  # keep ``record`` through pickling (DataLoader workers)
        return (type(self), (self.args[0], self.record))
