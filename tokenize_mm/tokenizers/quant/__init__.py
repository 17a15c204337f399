"""Quantizers of the image and audio tokenizers: the ``Quantizer`` protocol (``base.py``), the
vector quantizer (``vector.py``) with its fused nearest-code kernel (``fused.py``), the residual quantizer built on it (``residual.py``), finite
scalar quantization and its residual form (``fsq.py``) and codebook usage (``usage.py``)."""

from tokenize_mm.tokenizers.quant.base import Quantizer
from tokenize_mm.tokenizers.quant.fsq import FiniteScalarQuantizer, ResidualFiniteScalarQuantizer
from tokenize_mm.tokenizers.quant.residual import ResidualVectorQuantizer
from tokenize_mm.tokenizers.quant.usage import codebook_usage
from tokenize_mm.tokenizers.quant.vector import VectorQuantizer

__all__ = [
    "FiniteScalarQuantizer",
    "Quantizer",
    "ResidualFiniteScalarQuantizer",
    "ResidualVectorQuantizer",
    "VectorQuantizer",
    "codebook_usage",
]
