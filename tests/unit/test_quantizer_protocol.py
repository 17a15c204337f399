"""The ``Quantizer`` protocol (tokenizers/quant/base.py): the image VQ and the audio residual VQ
satisfy it, and encode/decode round trip on their codebook vectors."""

from __future__ import annotations

import torch

from tokenize_mm.tokenizers.quant import Quantizer, ResidualVectorQuantizer, VectorQuantizer
from tokenize_mm.tokenizers.quant.base import Quantizer as QuantizerFromBase

DIM, SIZE = 8, 16


def _set_codebook(vq: VectorQuantizer, embed: torch.Tensor) -> None:
    vq.codebook.embed.data.copy_(embed)
    vq.codebook.inited.data.fill_(1.0)


def test_protocol_is_exported_from_the_package():
    assert Quantizer is QuantizerFromBase


def test_vector_and_residual_quantizers_satisfy_the_protocol():
    vq = VectorQuantizer(DIM, SIZE)
    rvq = ResidualVectorQuantizer(DIM, 3, SIZE)
    assert isinstance(vq, Quantizer) and isinstance(rvq, Quantizer)
    assert (vq.codebook_size, vq.num_codebooks) == (SIZE, 1)
    assert (rvq.codebook_size, rvq.num_codebooks) == (SIZE, 3)
    assert not isinstance(torch.nn.Linear(2, 2), Quantizer)


def test_image_and_audio_models_hold_quantizers(tiny_image, tiny_audio):
    assert isinstance(tiny_image.model.quantizer, Quantizer)
    assert isinstance(tiny_audio.model.quantizer, Quantizer)


def test_vector_quantizer_round_trips_its_codebook_vectors():
    torch.manual_seed(0)
    vq = VectorQuantizer(DIM, SIZE).eval()
    _set_codebook(vq, torch.randn(SIZE, DIM))
    codes = torch.arange(SIZE).reshape(2, SIZE // 2)  # (B, N)
    vectors = vq.decode(codes)  # (B, N, dim)
    assert vectors.shape == (2, SIZE // 2, DIM)
    assert torch.equal(vq.encode(vectors), codes)
    quantized, forward_codes, loss = vq(vectors)
    assert torch.equal(forward_codes, codes) and torch.allclose(quantized, vectors)
    assert float(loss) < 1e-10


def test_residual_quantizer_round_trips_its_codebook_vectors():
    """Stage k's codes are 100**-k the size of stage 0's: the sum of one code per stage is
    nearest to its own stage-0 code, and each residual is exactly the next stage's vector."""
    torch.manual_seed(0)
    k = 3
    rvq = ResidualVectorQuantizer(DIM, k, SIZE).eval()
    for stage, layer in enumerate(rvq.layers):
        _set_codebook(layer, torch.randn(SIZE, DIM) * 100.0**-stage)
    codes = torch.stack([torch.randperm(SIZE) for _ in range(k)]).reshape(1, k, SIZE)  # (B, K, N)
    vectors = rvq.decode(codes)
    assert vectors.shape == (1, SIZE, DIM)
    assert torch.equal(rvq.encode(vectors), codes)
    _, forward_codes, _ = rvq(vectors)
    assert torch.equal(forward_codes, codes)
