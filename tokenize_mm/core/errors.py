"""The root of every error tokenize_mm raises on purpose.

Each layer defines its own typed errors (``tokenizers.errors``, ``data.errors``, the store, the
sequence layout, the models, the command line) and every one of them derives from
``TokenizeMMError``, so a caller can catch the whole family with one ``except``. Errors about a
value the caller passed also derive from ``ValueError``, so generic code keeps working. This module
imports nothing, so every layer can use it.
"""

from __future__ import annotations


class TokenizeMMError(Exception):
    """Base class of every error raised on purpose by tokenize_mm."""


class ConfigError(TokenizeMMError, ValueError):
    """A run's configuration holds a value that cannot work; the message names the key."""


class CheckpointError(TokenizeMMError, ValueError):
    """A training checkpoint cannot be resumed from safely (remote, missing, or holding code)."""


class ForeignFolderError(TokenizeMMError, FileExistsError):
    """A folder this library would replace whole (an artifact, a model, an index) exists and
    holds something it did not write, or the path is a file: nothing was replaced or deleted;
    the message names the path and the way out."""
