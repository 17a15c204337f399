"""Codebook patterns: how K parallel codebook streams become one token sequence, and back.

A multi-codebook audio tokenizer gives codes of shape (K, T) — K codebooks, T steps. A decoder
that predicts one token per position needs them laid out as a sequence; a *pattern* says how, and
reverts the layout exactly. Two patterns live here:

- ``flatten``: time-major, K·T positions, no pads. Every codebook of step t is predicted before
  step t + 1, so the model sees all dependencies, at K times the sequence length.
- ``delay``: the MusicGen pattern of Copet et al. 2023, "Simple and Controllable Music
  Generation" (arXiv:2306.05284), section 2.2: stream k is shifted right by k steps, giving K
  parallel streams of T + K − 1 steps. Codebook k of step t is predicted together with codebook
  0 of step t + k, i.e. after the coarser codebooks of the same step.

Pads. ``delay`` fills the positions where a stream has not started or has already ended with
``pad_id``. So that ``revert`` can check a sequence and stay an exact inverse, ``pad_id`` must not
occur in the codes: ``build`` refuses codes that contain it (pick an id outside the code range,
e.g. ``-1`` or ``codebook_size`` for local codes, or the layout's pad id for global tokens).
``revert`` checks that every pad position holds ``pad_id`` and no other position does, and raises
``InvalidCodesError`` naming the first position at fault. ``flatten`` has no pad positions, so its
``revert`` refuses any ``pad_id`` in the sequence.

Both patterns are the identity on a single stream (K = 1): ``flatten`` returns the stream as a
1-D tensor of T positions, ``delay`` returns it unchanged as (1, T). T = 0 is allowed: ``flatten``
gives an empty sequence and ``delay`` a (K, K − 1) grid of pads, so that ``steps`` is one formula.

All operations are vectorised torch (no Python loop over T) and keep the input's device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar, Protocol, runtime_checkable

import torch

from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.tokenizers.base import map_batch
from tokenize_mm.tokenizers.errors import InvalidCodesError


class UnknownPatternError(TokenizeMMError, ValueError):
    """``get_pattern`` was given a name that no codebook pattern has."""


@runtime_checkable
class CodebookPattern(Protocol):
    """What a codebook pattern offers: a layout of (K, T) codes and its exact inverse."""

    name: ClassVar[str]

    def steps(self, num_steps: int, num_codebooks: int) -> int:
        """Length of the built sequence for T = ``num_steps`` and K = ``num_codebooks``."""
        ...

    def build(self, codes: torch.Tensor, pad_id: int) -> torch.Tensor:
        """Lay out int64 codes of shape (K, T) as a sequence."""
        ...

    def revert(self, seq: torch.Tensor, num_codebooks: int, pad_id: int) -> torch.Tensor:
        """Recover the int64 codes of shape (K, T) from a built sequence."""
        ...


class FlattenPattern:
    """Time-major flattening: (K, T) codes → a 1-D sequence of K·T positions, no pads.

    Position ``t * K + k`` holds codebook k of step t. Worked grid for K = 3, T = 4, where
    ``ckt`` is codebook k at step t::

        codes (3, 4):          sequence (12,):
          c00 c01 c02 c03        c00 c10 c20 c01 c11 c21 c02 c12 c22 c03 c13 c23
          c10 c11 c12 c13
          c20 c21 c22 c23

    With ``codes = [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]`` the sequence is
    ``[0, 10, 20, 1, 11, 21, 2, 12, 22, 3, 13, 23]``.
    """

    name: ClassVar[str] = "flatten"

    def steps(self, num_steps: int, num_codebooks: int) -> int:
        """K·T: one position per code."""
        _check_counts(num_steps, num_codebooks)
        return num_steps * num_codebooks

    def build(self, codes: torch.Tensor, pad_id: int) -> torch.Tensor:
        """Flatten codes time-major.

        Args:
            codes: int64 tensor of shape (K, T), K ≥ 1; must not contain ``pad_id``.
            pad_id: the pad id of the sequence (checked absent from the codes, so that the
                sequence can be padded downstream and still reverted).

        Returns:
            int64 tensor of shape (K·T,).
        """
        _check_codes(codes, pad_id, where="FlattenPattern.build")
        return codes.t().reshape(-1)  # (T, K) -> (T·K,): time-major

    def revert(self, seq: torch.Tensor, num_codebooks: int, pad_id: int) -> torch.Tensor:
        """Inverse of ``build``.

        Args:
            seq: int64 tensor of shape (K·T,), without ``pad_id`` anywhere.
            num_codebooks: K.
            pad_id: the pad id used at build time.

        Returns:
            int64 tensor of shape (K, T).
        """
        where = "FlattenPattern.revert"
        _check_tensor(seq, dims=1, where=where, shape_doc="(K·T,)")
        _check_counts(0, num_codebooks)
        if seq.numel() % num_codebooks:
            raise InvalidCodesError(
                f"sequence of length {seq.numel()} is not a whole number of steps of "
                f"{num_codebooks} codebooks; was it built with another K or truncated?",
                item=where,
            )
        bad = (seq == pad_id).nonzero()
        if len(bad):
            pos = int(bad[0, 0])
            raise InvalidCodesError(
                f"position {pos} (step {pos // num_codebooks}, codebook {pos % num_codebooks}) "
                f"holds pad_id {pad_id}, but the flatten pattern has no pad positions; "
                "strip padding before reverting",
                item=where,
            )
        return seq.reshape(-1, num_codebooks).t().contiguous()  # (T, K) -> (K, T)


class DelayPattern:
    """MusicGen delay: (K, T) codes → K streams of T + K − 1 steps, stream k shifted by k.

    Grid position (k, s) holds codebook k of step s − k when k ≤ s < k + T, else ``pad_id``
    (shown as P). Worked grid for K = 3, T = 4, where ``ckt`` is codebook k at step t::

        codes (3, 4):          sequence (3, 6):
          c00 c01 c02 c03        c00 c01 c02 c03 P   P
          c10 c11 c12 c13        P   c10 c11 c12 c13 P
          c20 c21 c22 c23        P   P   c20 c21 c22 c23

    With ``codes = [[0, 1, 2, 3], [10, 11, 12, 13], [20, 21, 22, 23]]`` and ``pad_id = -1``
    the sequence is ``[[0, 1, 2, 3, -1, -1], [-1, 10, 11, 12, 13, -1], [-1, -1, 20, 21, 22,
    23]]``. Stream k has k leading pads and K − 1 − k trailing pads.
    """

    name: ClassVar[str] = "delay"

    def steps(self, num_steps: int, num_codebooks: int) -> int:
        """T + K − 1: the last stream ends K − 1 steps after the first."""
        _check_counts(num_steps, num_codebooks)
        return num_steps + num_codebooks - 1

    def build(self, codes: torch.Tensor, pad_id: int) -> torch.Tensor:
        """Delay stream k by k steps.

        Args:
            codes: int64 tensor of shape (K, T), K ≥ 1; must not contain ``pad_id``.
            pad_id: the id written where a stream has not started or has ended.

        Returns:
            int64 tensor of shape (K, T + K − 1).
        """
        _check_codes(codes, pad_id, where="DelayPattern.build")
        k, t = codes.shape
        out = codes.new_full((k, self.steps(t, k)), pad_id)
        rows, cols = _delayed_index(k, t, codes.device)
        out[rows, cols] = codes
        return out

    def revert(self, seq: torch.Tensor, num_codebooks: int, pad_id: int) -> torch.Tensor:
        """Inverse of ``build``; checks that pads are exactly where ``build`` puts them.

        Args:
            seq: int64 tensor of shape (K, T + K − 1).
            num_codebooks: K.
            pad_id: the pad id used at build time.

        Returns:
            int64 tensor of shape (K, T).
        """
        where = "DelayPattern.revert"
        _check_tensor(seq, dims=2, where=where, shape_doc="(K, T + K − 1)")
        _check_counts(0, num_codebooks)
        k, s = seq.shape
        if k != num_codebooks or s < k - 1:
            raise InvalidCodesError(
                f"sequence of shape {tuple(seq.shape)} cannot come from {num_codebooks} "
                f"codebooks: expected ({num_codebooks}, T + {num_codebooks - 1}) with T ≥ 0",
                item=where,
            )
        t = s - (k - 1)
        rows, cols = _delayed_index(k, t, seq.device)
        is_code = torch.zeros_like(seq, dtype=torch.bool)
        is_code[rows, cols] = True
        _check_pads(seq, is_code, pad_id, where=where)
        return seq[rows, cols]  # (K, T)


def _delayed_index(k: int, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column indices, each (K, T), of codebook k at step t in the delayed grid."""
    rows = torch.arange(k, device=device).unsqueeze(1).expand(k, t)
    cols = torch.arange(t, device=device).unsqueeze(0) + torch.arange(k, device=device)[:, None]
    return rows, cols


def _check_pads(seq: torch.Tensor, is_code: torch.Tensor, pad_id: int, *, where: str) -> None:
    """Raise naming the first (codebook, step) whose pad-ness disagrees with ``is_code``."""
    bad = ((seq == pad_id) == is_code).nonzero()
    if len(bad):
        row, col = (int(i) for i in bad[0])
        found = int(seq[row, col])
        if is_code[row, col]:
            why = f"holds pad_id {pad_id} where the pattern puts a code"
        else:
            why = f"holds {found} where the pattern puts pad_id {pad_id}"
        raise InvalidCodesError(
            f"position (codebook {row}, step {col}) {why}; the sequence is corrupted, was "
            "built with another pad_id or K, or was not built by this pattern",
            item=where,
        )


def _check_counts(num_steps: int, num_codebooks: int) -> None:
    for label, value, low in (("num_steps", num_steps, 0), ("num_codebooks", num_codebooks, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{label} must be an int ≥ {low}, got {value!r}")


def _check_tensor(x: torch.Tensor, *, dims: int, where: str, shape_doc: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise InvalidCodesError(f"expected a torch.Tensor, got {type(x).__name__}", item=where)
    if x.dtype != torch.int64 or x.dim() != dims:
        raise InvalidCodesError(
            f"expected an int64 tensor of shape {shape_doc}, got {x.dtype} of shape "
            f"{tuple(x.shape)}; use torch.as_tensor(x, dtype=torch.long)",
            item=where,
        )


def _check_codes(codes: torch.Tensor, pad_id: int, *, where: str) -> None:
    """Codes must be int64 (K, T) with K ≥ 1 and must not contain ``pad_id``."""
    _check_tensor(codes, dims=2, where=where, shape_doc="(K, T)")
    if isinstance(pad_id, bool) or not isinstance(pad_id, int):
        raise ValueError(f"pad_id must be an int, got {pad_id!r}")
    if codes.shape[0] == 0:
        raise InvalidCodesError("codes have K = 0 codebooks; K must be ≥ 1", item=where)
    hit = (codes == pad_id).nonzero()
    if len(hit):
        row, col = (int(i) for i in hit[0])
        raise InvalidCodesError(
            f"codes hold pad_id {pad_id} at (codebook {row}, step {col}), so the sequence "
            "could not be reverted unambiguously; choose a pad_id outside the code range "
            "(e.g. -1 or codebook_size for local codes)",
            item=where,
        )


_PATTERNS: dict[str, type[CodebookPattern]] = {p.name: p for p in (FlattenPattern, DelayPattern)}


def pattern_names() -> list[str]:
    """The names ``get_pattern`` accepts, sorted."""
    return sorted(_PATTERNS)


def get_pattern(name: str) -> CodebookPattern:
    """A new pattern by name (``"flatten"`` or ``"delay"``).

    Raises:
        UnknownPatternError: ``name`` is not a known pattern; the message lists the known names.
    """
    if name not in _PATTERNS:
        raise UnknownPatternError(
            f"unknown codebook pattern {name!r}; known patterns: {', '.join(pattern_names())}"
        )
    return _PATTERNS[name]()


def build_batch(
    pattern: CodebookPattern, codes: Sequence[torch.Tensor], pad_id: int
) -> list[torch.Tensor]:
    """``pattern.build`` on each (K, T_i) codes tensor; errors name the batch index."""
    return map_batch(lambda c: pattern.build(c, pad_id), codes)


def revert_batch(
    pattern: CodebookPattern, seqs: Sequence[torch.Tensor], num_codebooks: int, pad_id: int
) -> list[torch.Tensor]:
    """``pattern.revert`` on each built sequence; errors name the batch index."""
    return map_batch(lambda s: pattern.revert(s, num_codebooks, pad_id), seqs)
