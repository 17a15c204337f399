"""Quantizers of the image and audio tokenizers: the ``Quantizer`` protocol (``base.py``), the
vector quantizer (``vector.py``), the residual quantizer built on it (``residual.py``) and
codebook usage (``usage.py``)."""

from tokenize_mm.tokenizers.quant.base import Quantizer
from tokenize_mm.tokenizers.quant.residual import ResidualVectorQuantizer
from tokenize_mm.tokenizers.quant.usage import codebook_usage
from tokenize_mm.tokenizers.quant.vector import VectorQuantizer

__all__ = ["Quantizer", "ResidualVectorQuantizer", "VectorQuantizer", "codebook_usage"]
