"""Sequences: laying tokenizer codes out for a decoder. Imports neither Lightning nor Hydra.

``VocabLayout`` (``vocab.py``) gives every tokenizer a disjoint range of global ids;
``interleave`` / ``deinterleave`` (``interleave.py``) turn an example's items into one sequence of
spans and back.

Codebook patterns (``patterns.py``) turn multi-codebook codes (K, T) into a sequence and back::

    from tokenize_mm.sequence import get_pattern

    pattern = get_pattern("delay")  # or "flatten"
    seq = pattern.build(codes, pad_id=-1)  # (K, T + K - 1)
    assert torch.equal(pattern.revert(seq, num_codebooks=codes.shape[0], pad_id=-1), codes)
"""

from tokenize_mm.core.modalities import MODALITY_IDS
from tokenize_mm.sequence.interleave import (
    ORDER_TEMPLATES,
    Interleaved,
    SpanOrder,
    deinterleave,
    interleave,
)
from tokenize_mm.sequence.patterns import (
    CodebookPattern,
    DelayPattern,
    FlattenPattern,
    UnknownPatternError,
    build_batch,
    get_pattern,
    pattern_names,
    revert_batch,
)
from tokenize_mm.sequence.vocab import (
    SPECIALS,
    LayoutError,
    TokenRange,
    VocabLayout,
)

__all__ = [
    "MODALITY_IDS",
    "ORDER_TEMPLATES",
    "SPECIALS",
    "CodebookPattern",
    "DelayPattern",
    "FlattenPattern",
    "Interleaved",
    "LayoutError",
    "SpanOrder",
    "TokenRange",
    "UnknownPatternError",
    "VocabLayout",
    "build_batch",
    "deinterleave",
    "get_pattern",
    "interleave",
    "pattern_names",
    "revert_batch",
]
