"""Documents and pieces: what packing packs, and where a document may be split.

Part of packing without cross-contamination (Krell et al. 2021, arXiv:2107.02027) with best-fit
packing (Ding et al. 2024, "Fewer Truncations Improve Language Modeling", arXiv:2404.10830); see
the package docstring.

A ``Document`` is one example already tokenized: global ``tokens`` (N,), one modality id per
position (0 text, 1 image, 2 audio, 3 special) and ``cuts``, the positions where a span (one
modality item in its begin/end markers) begins. A document longer than a row is split only at
cuts (``split_document``); a span longer than a row is cut mid-span only with
``split_spans=True``. Every token of the input lands in exactly one row; none is dropped. A
``Piece`` is a contiguous part of one document: the unit that goes into a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tokenize_mm.core.modalities import SPECIAL_MODALITY
from tokenize_mm.data.errors import DataError


@dataclass(frozen=True, eq=False)
class Document:
    """One tokenized example.

    Attributes:
        tokens: (N,) global token ids, N >= 1 (stored as int64).
        modality: (N,) modality id of each position, 0 to 3 (stored as uint8).
        cuts: (M,) strictly increasing positions in (0, N) where a span begins: the only places a
            document longer than a row may be split (stored as int64).
        doc_id: a number naming the document in errors and in ``PackedRow.spans``.
    """

    tokens: np.ndarray
    modality: np.ndarray
    cuts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    doc_id: int = -1

    def __post_init__(self) -> None:
        name = f"Document {self.doc_id}"
        arrays = {"tokens": self.tokens, "modality": self.modality, "cuts": self.cuts}
        for key, value in arrays.items():
            value = np.asarray(value)
            if value.ndim != 1 or not (value.size == 0 or np.issubdtype(value.dtype, np.integer)):
                raise DataError(
                    f"{name}: {key} must be a 1-D integer array, got {value.dtype} "
                    f"of shape {value.shape}."
                )
            arrays[key] = value
        tokens, modality, cuts = arrays["tokens"], arrays["modality"], arrays["cuts"]
        n = len(tokens)
        if n == 0:
            raise DataError(f"{name} is empty; leave it out of the stream.")
        if len(modality) != n:
            raise DataError(
                f"{name}: modality has {len(modality)} positions but tokens has {n}; "
                "give one modality id per token."
            )
        if modality.min() < 0 or modality.max() > SPECIAL_MODALITY:
            raise DataError(
                f"{name}: modality ids must lie in 0..{SPECIAL_MODALITY}, got "
                f"{int(modality.min())}..{int(modality.max())}."
            )
        if tokens.min() < 0:
            raise DataError(f"{name}: token ids must be non-negative, got {int(tokens.min())}.")
        if len(cuts) and (cuts[0] <= 0 or cuts[-1] >= n or np.any(np.diff(cuts) <= 0)):
            raise DataError(
                f"{name}: cuts must be strictly increasing positions in (0, {n}), "
                f"got {cuts.tolist()}."
            )
        object.__setattr__(self, "tokens", tokens.astype(np.int64, copy=False))
        object.__setattr__(self, "modality", modality.astype(np.uint8, copy=False))
        object.__setattr__(self, "cuts", cuts.astype(np.int64, copy=False))

    @classmethod
    def from_spans(cls, spans: Sequence[tuple[np.ndarray, np.ndarray]], doc_id: int = -1):
        """A document made of ``(tokens, modality)`` spans, each (n_i,), with a cut at each span's
        start but the first's."""
        lengths = [len(tokens) for tokens, _ in spans]
        return cls(
            np.concatenate([np.asarray(t) for t, _ in spans]),
            np.concatenate([np.asarray(m) for _, m in spans]),
            np.cumsum(lengths)[:-1],
            doc_id,
        )

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True, eq=False)
class Piece:
    """A contiguous part of one document, ``tokens[start:stop]``: the unit that goes into a row.

    ``mid_span`` is True when the piece begins inside a span (only with ``split_spans=True``).
    """

    doc_id: int
    start: int
    tokens: np.ndarray
    modality: np.ndarray
    mid_span: bool = False

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def stop(self) -> int:
        return self.start + len(self.tokens)


def split_document(doc: Document, max_length: int, split_spans: bool = False) -> list[Piece]:
    """Split ``doc`` into pieces of at most ``max_length`` tokens, each as long as possible.

    Pieces end at cuts only; a span longer than ``max_length`` is cut mid-span if ``split_spans``.
    A document that fits is one piece. Concatenating the pieces gives the document back.

    Raises:
        DataError: a span is longer than ``max_length`` and ``split_spans`` is False.
    """
    n = len(doc)
    if n <= max_length:
        return [Piece(doc.doc_id, 0, doc.tokens, doc.modality)]
    bounds = np.concatenate([[0], doc.cuts, [n]])
    pieces, start, mid = [], 0, False
    while start < n:
        stop = int(bounds[np.searchsorted(bounds, start + max_length, side="right") - 1])
        if stop <= start:  # the span holding `start` runs past the room
            if not split_spans:
                j = int(np.searchsorted(bounds, start, side="right"))
                raise DataError(
                    f"Document {doc.doc_id}: the span at positions {bounds[j - 1]}..{bounds[j]} "
                    f"has {bounds[j] - bounds[j - 1]} tokens, more than a row of {max_length}; "
                    "pass split_spans=True to cut it mid-span, or raise the context."
                )
            stop = start + max_length
        pieces.append(
            Piece(doc.doc_id, start, doc.tokens[start:stop], doc.modality[start:stop], mid)
        )
        mid = stop < n and bool(bounds[np.searchsorted(bounds, stop)] != stop)
        start = stop
    return pieces
