"""Typed errors for users of the tokenizers.

Every error names the item at fault and says what to do about it. All of them derive from
``TokenizeMMError`` (``tokenize_mm.core.errors``) so that a caller can catch the whole family at once;
input errors also derive from ``ValueError`` so that generic code that catches ``ValueError`` keeps working.
"""

from __future__ import annotations

from tokenize_mm.core.errors import TokenizeMMError  # the root, re-exported here for old imports


class InvalidInputError(TokenizeMMError, ValueError):
    """An item given to ``encode`` (or codes given to ``decode``) cannot be used.

    Attributes:
        item: a short description of the offending item (a path, ``"tensor"``, ...), or ``None``.
        index: position of the item in a batch, or ``None`` for a single item.
        reason: what is wrong and how to fix it, without the item prefix.
    """

    def __init__(self, reason: str, *, item: str | None = None, index: int | None = None):
        self.reason = reason
        self.item = item
        self.index = index
        where = []
        if index is not None:
            where.append(f"batch item {index}")
        if item is not None:
            where.append(item)
        prefix = (" (".join(where) + (")" if len(where) > 1 else "") + ": ") if where else ""
        super().__init__(prefix + reason)

    def at_index(self, index: int) -> InvalidInputError:
        """The same error, re-addressed to position ``index`` of a batch."""
        return type(self)(self.reason, item=self.item, index=index)

    def __reduce__(self):  # keep the keyword arguments through pickling (DataLoader workers)
        return (_rebuild_input_error, (type(self), self.reason, self.item, self.index))


def _rebuild_input_error(cls, reason, item, index):
    return cls(reason, item=item, index=index)


class InvalidCodesError(InvalidInputError):
    """Codes given to ``decode`` have the wrong shape, dtype, or ids outside the codebook."""


class ArtifactError(TokenizeMMError):
    """A tokenizer artifact directory cannot be loaded."""


class ArtifactVersionError(ArtifactError):
    """The artifact was written by a newer (or unknown) artifact format."""


class ArtifactIntegrityError(ArtifactError):
    """A payload file is missing, has the wrong size, or its sha256 does not match the manifest."""


class UnknownKindError(ArtifactError):
    """The artifact's ``kind`` names no registered tokenizer."""


class UnsafeArtifactError(ArtifactError):
    """The artifact holds a pickle (or a torch.save archive); loading it could execute code."""


class PretrainedWeightsError(ArtifactError):
    """Pretrained weights are missing, fail their checksum, or do not fit the model."""


class NotFittedError(TokenizeMMError):
    """A fit was asked to run on data that cannot train the tokenizer (e.g. no items)."""
