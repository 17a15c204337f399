"""Registry of artifact kinds: ``load_tokenizer`` (``artifact.py``) dispatches on an artifact's
``kind`` through it.

Each tokenizer module registers its class on import (``@register_tokenizer``); the registry also
knows which module provides each built-in kind, so ``load_tokenizer`` works on a fresh interpreter.
"""

from __future__ import annotations

import importlib
from typing import TypeVar

from tokenize_mm.tokenizers.errors import UnknownKindError

T = TypeVar("T")
_REGISTRY: dict[str, type] = {}
_BUILTIN_KINDS = {
    "text.sentencepiece": "tokenize_mm.tokenizers.text.tokenizer",
    "image.vq": "tokenize_mm.tokenizers.image.tokenizer",
    "audio.codec": "tokenize_mm.tokenizers.audio.tokenizer",
    "audio.encodec": "tokenize_mm.tokenizers.audio.pretrained",
}


def register_tokenizer(cls: type[T]) -> type[T]:
    """Class decorator: make ``load_tokenizer`` able to load artifacts of ``cls.kind``."""
    kind = cls.kind  # type: ignore[attr-defined]
    if kind in _REGISTRY and _REGISTRY[kind] is not cls:
        raise ValueError(
            f"tokenizer kind {kind!r} is already registered by {_REGISTRY[kind].__name__}"
        )
    _REGISTRY[kind] = cls
    return cls


def registered_kinds() -> list[str]:
    return sorted(set(_REGISTRY) | set(_BUILTIN_KINDS))


def tokenizer_class(kind: str) -> type:
    """The class registered for ``kind``; raises ``UnknownKindError`` naming the known kinds."""
    if kind not in _REGISTRY and kind in _BUILTIN_KINDS:
        importlib.import_module(_BUILTIN_KINDS[kind])
    if kind not in _REGISTRY:
        raise UnknownKindError(
            f"unknown tokenizer kind {kind!r}; known kinds: {', '.join(registered_kinds())}. "
            "Was the artifact written by a newer tokenize_mm or by a plugin that is not imported?"
        )
    return _REGISTRY[kind]
