"""The tokenizer contract shared by text, image and audio (docs/architecture.md §4).

A tokenizer turns one item into ``Encoded`` codes of shape (K, T) — K codebooks, T steps — and
back. Its ``info`` is a frozen, JSON-serialisable record of the token rates; everything downstream
reads rates from it, never from constants. Trainable tokenizers have a ``fit`` classmethod that
returns a new tokenizer. Every tokenizer saves to and loads from a versioned artifact directory
(see ``artifact.py``); ``load_tokenizer`` dispatches on the artifact's ``kind`` through the
registry (``registry.py``).

The contract is a ``Protocol``, not a base class: a tokenizer is anything with these methods.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.tokenizers.errors import InvalidCodesError, InvalidInputError


@dataclass(frozen=True)
class TokenizerInfo:
    """What a tokenizer produces and at which rate. Frozen and JSON-serialisable.

    Common fields: ``modality`` (``text`` | ``image`` | ``audio``), ``kind`` (the registry key),
    ``codebook_size`` (ids per codebook), ``num_codebooks`` (K).

    Modality fields (``None`` where they do not apply):
        text: ``chars_per_token`` measured on the fit data.
        image: ``image_size`` (side of the square model input), ``grid`` (rows, cols) of codes,
            ``tokens_per_image`` (= rows × cols × K).
        audio: ``sample_rate``, ``frame_rate`` (steps per second), ``tokens_per_second``
            (= frame_rate × K under the flatten pattern).

    ``metrics`` holds quality figures measured at fit time (PSNR, codebook perplexity, ...), and
    ``input_policy`` a one-line description of how raw inputs are converted before encoding.
    """

    modality: str
    kind: str
    codebook_size: int
    num_codebooks: int = 1
    chars_per_token: float | None = None
    image_size: int | None = None
    grid: tuple[int, int] | None = None
    tokens_per_image: int | None = None
    sample_rate: int | None = None
    frame_rate: float | None = None
    tokens_per_second: float | None = None
    input_policy: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise InvalidInputError(
                f"TokenizerInfo.modality must be one of {MODALITIES}, got {self.modality!r}"
            )
        if self.grid is not None:
            object.__setattr__(self, "grid", tuple(int(g) for g in self.grid))
        object.__setattr__(self, "metrics", {str(k): float(v) for k, v in self.metrics.items()})

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (lists for tuples) that ``json.dumps`` accepts."""
        out = dataclasses.asdict(self)
        if out["grid"] is not None:
            out["grid"] = list(out["grid"])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TokenizerInfo:
        """Inverse of ``to_dict``; unknown keys (from newer minor versions) are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, eq=False)
class Encoded:
    """Codes of one item plus whatever decode needs besides them.

    Attributes:
        codes: int64 tensor of shape (K, T): K codebooks, T steps, local ids in
            ``[0, codebook_size)``. Text and image have K = 1.
        extras: tensors decode needs besides the codes (e.g. EnCodec's per-chunk scale), by name.
    """

    codes: torch.Tensor
    extras: Mapping[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.codes, torch.Tensor):
            raise InvalidCodesError(
                f"codes must be a torch.Tensor, got {type(self.codes).__name__}"
            )
        if self.codes.dtype != torch.int64 or self.codes.dim() != 2:
            raise InvalidCodesError(
                f"codes must be an int64 tensor of shape (K, T), got {self.codes.dtype} "
                f"of shape {tuple(self.codes.shape)}; use torch.as_tensor(codes, dtype=torch.long)"
            )

    @property
    def num_codebooks(self) -> int:
        return int(self.codes.shape[0])

    @property
    def num_steps(self) -> int:
        return int(self.codes.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encoded):
            return NotImplemented
        return (
            torch.equal(self.codes, other.codes)
            and self.extras.keys() == other.extras.keys()
            and all(torch.equal(self.extras[k], other.extras[k]) for k in self.extras)
        )

    __hash__ = None  # type: ignore[assignment]


def check_codes(encoded: Encoded, info: TokenizerInfo, *, steps: int | None = None) -> None:
    """Raise ``InvalidCodesError`` unless ``encoded`` can be decoded under ``info``.

    Args:
        encoded: the codes to check.
        info: the tokenizer's info (codebook size and count).
        steps: the exact number of steps required (images), or ``None`` for any.
    """
    if not isinstance(encoded, Encoded):
        raise InvalidCodesError(f"decode expects an Encoded, got {type(encoded).__name__}")
    codes = encoded.codes
    if codes.shape[0] != info.num_codebooks:
        raise InvalidCodesError(
            f"codes have {codes.shape[0]} codebooks but this tokenizer has {info.num_codebooks}"
        )
    if steps is not None and codes.shape[1] != steps:
        raise InvalidCodesError(
            f"codes have {codes.shape[1]} steps; this tokenizer decodes exactly {steps}"
        )
    if codes.numel():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or hi >= info.codebook_size:
            bad = lo if lo < 0 else hi
            raise InvalidCodesError(
                f"id {bad} is out of range [0, {info.codebook_size}) for this tokenizer; "
                "were the codes made by another tokenizer, or are they global ids "
                "(convert with VocabLayout.to_local)?"
            )


@runtime_checkable
class Tokenizer(Protocol):
    """What every tokenizer offers. ``fit`` (trainable ones) and ``from_pretrained`` are classmethods
    specific to each tokenizer and are not part of the protocol's call signature."""

    kind: ClassVar[str]

    @property
    def info(self) -> TokenizerInfo: ...

    def encode(self, item: Any) -> Encoded: ...

    def encode_batch(self, items: Sequence[Any]) -> Sequence[Encoded]: ...

    def decode(self, encoded: Encoded) -> Any: ...

    def decode_batch(self, encoded: Sequence[Encoded]) -> list[Any]: ...

    def save(self, directory: str | Path) -> Path: ...

    @classmethod
    def load(cls, directory: str | Path) -> Tokenizer: ...

    @classmethod
    def from_artifact(cls, artifact: Any) -> Tokenizer: ...


def check_batch(items: Any) -> None:
    """Refuse a single item passed where a batch is expected: a bare ``str`` would be encoded as
    one item per character (``encode_batch("abc")``), a path as one per character of its name."""
    if isinstance(items, (str, bytes, bytearray, os.PathLike, dict)):
        raise InvalidInputError(
            f"a batch must be a list of items, got a single {type(items).__name__}; pass "
            "[item] to encode_batch, or call encode(item)",
            item=repr(items)[:60],
        )


def map_batch(fn: Callable[[Any], Any], items: Iterable[Any]) -> list[Any]:
    """Apply ``fn`` to each item; an ``InvalidInputError`` is re-raised naming the batch index.

    Raises:
        InvalidInputError: ``items`` is a single item (``check_batch``), or ``fn`` raised it.
    """
    check_batch(items)
    out = []
    for i, item in enumerate(items):
        try:
            out.append(fn(item))
        except InvalidInputError as err:
            raise err.at_index(i) from err
    return out
