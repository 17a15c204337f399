"""Reusable tokenizers: importable without Lightning or Hydra.

Shared at this level: the contract (``base.py``), the registry of artifact kinds
(``registry.py``), artifacts (``artifact.py``, ``module_artifact.py``), errors, token files,
efficiency measures and the Lightning fit loop (``fit_loop.py``). One subpackage per modality,
each read as io → model → tokenizer → fit (``text/``, ``image/``, ``audio/``), and the quantizers
(``quant/``). ``fit`` of the image and audio tokenizers trains with Lightning, which it imports
only when called.
"""

from tokenize_mm.tokenizers.artifact import load_tokenizer, read_artifact
from tokenize_mm.tokenizers.audio.tokenizer import AudioTokenizer
from tokenize_mm.tokenizers.base import Encoded, Tokenizer, TokenizerInfo
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
from tokenize_mm.tokenizers.image.tokenizer import ImageTokenizer
from tokenize_mm.tokenizers.registry import registered_kinds
from tokenize_mm.tokenizers.text.tokenizer import TextTokenizer

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
