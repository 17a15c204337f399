"""Sequences: laying tokenizer codes out for a decoder. Imports neither Lightning nor Hydra.

Codebook patterns (``patterns.py``) turn multi-codebook codes (K, T) into a sequence and back::

    from tokenize_mm.sequence import get_pattern

    pattern = get_pattern("delay")  # or "flatten"
    seq = pattern.build(codes, pad_id=-1)  # (K, T + K - 1)
    assert torch.equal(pattern.revert(seq, num_codebooks=codes.shape[0], pad_id=-1), codes)
"""

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

__all__ = [
    "CodebookPattern",
    "DelayPattern",
    "FlattenPattern",
    "UnknownPatternError",
    "build_batch",
    "get_pattern",
    "pattern_names",
    "revert_batch",
]
