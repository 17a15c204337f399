"""The audio tokenizers, read in this order: the input policy (``io.py``, resampling in
``resample.py``), the 50 Hz codec model (``model.py``), batched exact inference (``batch.py``),
reconstruction metrics (``metrics.py``), the shared codec path ``CodecTokenizer`` (``codec.py``),
its two siblings ``AudioTokenizer`` (fitted here, kind ``audio.codec``, ``tokenizer.py``) and
``EncodecTokenizer`` (pretrained EnCodec, kind ``audio.encodec``, ``pretrained.py``), and the
Lightning training of the 50 Hz codec (``fit.py``, imported only by ``AudioTokenizer.fit``). The
residual quantizer is in ``tokenizers/quant/``."""

from tokenize_mm.tokenizers.audio.codec import CodecTokenizer
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.pretrained import EncodecTokenizer
from tokenize_mm.tokenizers.audio.tokenizer import AudioTokenizer

__all__ = ["AudioTokenizer", "CodecConfig", "CodecModel", "CodecTokenizer", "EncodecTokenizer"]
