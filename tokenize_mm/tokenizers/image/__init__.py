"""The image tokenizer, read in this order: the input policy (``io.py``), the VQ autoencoder
(``model.py``), ``ImageTokenizer`` on the contract (``tokenizer.py``), and its Lightning training
(``fit.py``, imported only by ``ImageTokenizer.fit``). The quantizer is in ``tokenizers/quant/``."""

from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel
from tokenize_mm.tokenizers.image.tokenizer import ImageTokenizer

__all__ = ["ImageTokenizer", "VQImageConfig", "VQImageModel"]
