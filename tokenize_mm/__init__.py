"""tokenize_mm: discrete tokenizers for text, images and audio, and token-rate-balanced training.

The public API, stable from the first release::

    from tokenize_mm import TextTokenizer, ImageTokenizer, Encoded, TokenizerInfo, load_tokenizer
"""

__version__ = "0.1.0"

from tokenize_mm.tokenizers import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    AudioTokenizer,
    Encoded,
    ImageTokenizer,
    InvalidCodesError,
    InvalidInputError,
    NotFittedError,
    PretrainedWeightsError,
    TextTokenizer,
    TokenizeMMError,
    TokenizerInfo,
    UnknownKindError,
    UnsafeArtifactError,
    load_tokenizer,
)

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
    "TokenizerInfo",
    "UnknownKindError",
    "UnsafeArtifactError",
    "__version__",
    "load_tokenizer",
]
