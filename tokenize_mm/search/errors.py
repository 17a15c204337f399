"""The errors of search: each names the index or item concerned and what to do."""

from __future__ import annotations

from tokenize_mm.core.errors import TokenizeMMError


class SearchError(TokenizeMMError, ValueError):
    """Search cannot go on (a missing folder, a damaged index); the message names it."""


class IndexMismatchError(SearchError):
    """The index was built with another model than the one given for the query."""


class EmptyIndexError(SearchError):
    """The index holds no item (of the modality asked for)."""
