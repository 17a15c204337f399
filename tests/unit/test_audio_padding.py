"""``FastPadConv1d`` (``tokenizers/audio/padding.py``): on (B, C, T) bit-identical to EnCodec's
``SConv1d`` on every length around its special cases, causal or not; on channels-last
(B, C, 1, T) the same values up to rounding; swapped into a folded codec."""

from __future__ import annotations

import pytest
import torch
from encodec.modules.conv import SConv1d

from tokenize_mm.tokenizers.audio.batch import folded_copy, min_mixed_length, split_encoder
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.padding import (
    FastPadConv1d,
    reflect_pad,
    swap_padded_convs,
    to_channels_last,
)

ARCH = CodecConfig(
    sample_rate=24_000, channels=1, ratios=(8, 5, 4, 3), n_filters=4, n_residual_layers=1,
    dimension=16, lstm=1, causal=True, num_codebooks=3, codebook_size=64, codebook_dim=None,
    commitment_weight=1.0,
)  # fmt: skip


@pytest.mark.parametrize("left,right", [(0, 0), (1, 0), (0, 2), (6, 0), (3, 4)])
def test_reflect_pad_equals_torch(left, right):
    x = torch.randn(2, 3, 9)
    assert torch.equal(
        reflect_pad(x, left, right), torch.nn.functional.pad(x, (left, right), mode="reflect")
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "kernel,stride,dilation", [(7, 1, 1), (3, 1, 2), (1, 1, 1), (8, 4, 1), (16, 8, 1)]
)
@pytest.mark.parametrize("pad_mode", ["reflect", "constant"])
def test_fast_pad_conv_is_bit_identical(causal, kernel, stride, dilation, pad_mode):
    torch.manual_seed(0)
    sconv = SConv1d(
        3, 5, kernel, stride=stride, dilation=dilation, causal=causal, pad_mode=pad_mode
    )
    fast = FastPadConv1d(sconv)
    # lengths from 1 (shorter than the padding: SEANet's zero-then-reflect case) past a few strides
    for length in range(1, 3 * kernel * dilation + 2 * stride + 3):
        x = torch.randn(2, 3, length)
        assert torch.equal(fast(x), sconv(x)), length


def test_swap_keeps_the_state_dict_and_the_min_mixed_length():
    model = CodecModel(ARCH)
    keys = list(model.state_dict())
    need = min_mixed_length(model.encoder)
    swap_padded_convs(model)
    assert list(model.state_dict()) == keys
    assert not any(isinstance(m, SConv1d) for m in model.modules())
    assert min_mixed_length(model.encoder) == need
    folded = folded_copy(CodecModel(ARCH), lambda: CodecModel(ARCH))
    assert any(isinstance(m, FastPadConv1d) for m in folded.modules())


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(
    "kernel,stride,dilation", [(7, 1, 1), (3, 1, 2), (1, 1, 1), (8, 4, 1), (16, 8, 1)]
)
def test_channels_last_path_matches_sconv(causal, kernel, stride, dilation):
    """(B, C, 1, T) channels-last in, the same layout out, SConv1d's values up to the order of
    the sums (oneDNN's NHWC kernels, and a 1x1 convolution as one addmm); short inputs included."""
    torch.manual_seed(0)
    sconv = SConv1d(3, 5, kernel, stride=stride, dilation=dilation, causal=causal)
    fast = FastPadConv1d(sconv)
    for length in range(1, 3 * kernel * dilation + 2 * stride + 3):
        x = torch.randn(2, 3, length)
        y = fast(to_channels_last(x[:, :, None]))
        assert y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last), length
        torch.testing.assert_close(y[:, :, 0], sconv(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the cached 2-D weight follows a change of the weight
        sconv.conv.conv.weight.mul_(2)
    x = torch.randn(2, 3, 40)
    torch.testing.assert_close(fast(to_channels_last(x[:, :, None]))[:, :, 0], sconv(x))


def test_folded_encoder_in_channels_last_matches_the_model():
    """The folded copy's encoder (channels-last, ELUs in place where safe) gives the model's
    latent up to rounding, and leaves its input untouched."""
    model = CodecModel(ARCH).eval()
    folded = folded_copy(model, lambda: CodecModel(ARCH))
    assert any(m.inplace for m in folded.encoder.modules() if isinstance(m, torch.nn.ELU))
    wav = torch.randn(1, 1, 24_000)
    x = to_channels_last(wav[:, :, None])
    kept = x.clone()
    with torch.inference_mode():
        split = split_encoder(folded.encoder)
        latent = split[1](split[0](x)[:, :, 0].contiguous())
        expected = model.encoder(wav)
    assert torch.equal(x, kept)
    torch.testing.assert_close(latent, expected, rtol=1e-4, atol=1e-4)
