"""Reusable tokenizers: importable without Lightning or Hydra.

``fit`` of the image tokenizer trains with Lightning, which it imports only when called.
"""

from tokenize_mm.tokenizers.artifact import load_tokenizer, read_artifact
from tokenize_mm.tokenizers.audio import AudioTokenizer
from tokenize_mm.tokenizers.base import Encoded, Tokenizer, TokenizerInfo, registered_kinds
from tokenize_mm.tokenizers.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    InvalidCodesError,
    InvalidInputError,
    NotFittedError,
    PretrainedWeightsError,
    TokenizeMMError,
    UnknownKindError,
    UnsafeArtifactError,
)
from tokenize_mm.tokenizers.image import ImageTokenizer
from tokenize_mm.tokenizers.text import TextTokenizer

__all__ = [
    "ArtifactError",
    "ArtifactIntegrityError",
    "ArtifactVersionError",
    "AudioTokenizer",
    "Encoded",
    "ImageTokenizer",
    "InvalidCodesError",
    "InvalidInputError",
    "NotFittedError",
    "PretrainedWeightsError",
    "TextTokenizer",
    "TokenizeMMError",
    "Tokenizer",
    "TokenizerInfo",
    "UnknownKindError",
    "UnsafeArtifactError",
    "load_tokenizer",
    "read_artifact",
    "registered_kinds",
]
