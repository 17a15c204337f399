"""The text tokenizer, read in this order: the input policy (``io.py``), ``TextTokenizer`` on the
contract (``tokenizer.py``; the quirks of sentencepiece and what we do about each are in its
docstring), and the SentencePiece training (``fit.py``, imported only by ``TextTokenizer.fit``)."""

from tokenize_mm.tokenizers.text.tokenizer import TextTokenizer

__all__ = ["TextTokenizer"]
