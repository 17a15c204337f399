"""``FastPadConv1d`` and ``FastConvTranspose1d`` (``tokenizers/audio/padding.py``): on (B, C, T)
bit-identical to EnCodec's ``SConv1d`` / ``SConvTranspose1d`` on every length around their special
cases, causal or not; on channels-last (B, C, 1, T) the same values up to rounding; swapped into
a folded codec; ``CodecModel`` runs its encoder and decoder channels-last on the CPU with the 3-D
layers' values and gradients up to rounding."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from encodec.modules.conv import SConv1d, SConvTranspose1d

from tokenize_mm.tokenizers.audio.batch import folded_copy, min_mixed_length, split_encoder
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.padding import (
    FastConvTranspose1d,
    FastPadConv1d,
    ReflectPadChannelsLast,
    TrimChannelsLast,
    phase_conv_transpose,
    polyphase_conv,
    polyphase_weight,
    reflect_pad,
    rows_linear,
    swap_padded_convs,
    takes_channels_last,
    to_channels_last,
    trim_channels_last,
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


def _channels_last_leaf(*shape: int) -> torch.Tensor:
    x = torch.randn(*shape, dtype=torch.float64)
    return to_channels_last(x).requires_grad_()


def _is_channels_last(x: torch.Tensor) -> bool:
    return x.is_contiguous(memory_format=torch.channels_last)


# (T, left, right): causal (left only), split, right only, and short inputs whose two reflected
# ends read the same samples (their gradients add on those samples)
@pytest.mark.parametrize("t,left,right", [(20, 6, 0), (20, 3, 4), (9, 0, 5), (4, 3, 3), (2, 1, 1)])
@pytest.mark.parametrize("batch", [1, 3])  # one example: its slices are dense, still copied
def test_reflect_pad_channels_last_gradient_is_autograds_in_channels_last(t, left, right, batch):
    """``ReflectPadChannelsLast``: reflect_pad's values, and the gradient autograd computes
    through the slice assignments, exactly (float64), in channels-last memory; the incoming
    gradient is left as it was."""
    torch.manual_seed(0)
    x = _channels_last_leaf(batch, 5, 1, t)
    y = ReflectPadChannelsLast.apply(x, left, right)
    assert torch.equal(y[:, :, 0], reflect_pad(x.detach()[:, :, 0], left, right))
    g = to_channels_last(torch.randn(y.shape, dtype=torch.float64))
    g_before = g.clone()
    (grad,) = torch.autograd.grad(y, x, g)
    assert torch.equal(g, g_before)
    ref = torch.nn.functional.pad(x[:, :, 0], (left, right), mode="reflect")
    (ref_grad,) = torch.autograd.grad(ref, x, g[:, :, 0])
    torch.testing.assert_close(grad, ref_grad, rtol=0, atol=1e-12)
    assert _is_channels_last(grad)
    assert torch.autograd.gradcheck(lambda v: ReflectPadChannelsLast.apply(v, left, right), (x,))


@pytest.mark.parametrize("left,right", [(0, 3), (2, 2), (4, 0), (0, 0)])
@pytest.mark.parametrize("batch", [1, 3])
def test_trim_channels_last_is_the_slice_dense_with_its_gradient(left, right, batch):
    """``trim_channels_last`` under autograd: the slice's values in dense channels-last memory (a
    slice of several examples is not dense), and the slice's gradient, channels-last; without
    a gradient to record, the slice itself."""
    torch.manual_seed(0)
    y = _channels_last_leaf(batch, 4, 1, 11)
    out = trim_channels_last(y, left, right)
    assert torch.equal(out, y[..., left : 11 - right]) and _is_channels_last(out)
    if left or right:  # a new tensor, not a view of y
        assert out.data_ptr() != y[..., left:].data_ptr()
    g = to_channels_last(torch.randn(out.shape, dtype=torch.float64))
    (grad,) = torch.autograd.grad(out, y, g)
    (ref,) = torch.autograd.grad(y[..., left : 11 - right], y, g)
    assert torch.equal(grad, ref) and _is_channels_last(grad)
    if left or right:
        assert torch.autograd.gradcheck(lambda v: TrimChannelsLast.apply(v, left, right), (y,))
    with torch.no_grad():  # inference: the slice itself, a view
        view = trim_channels_last(y, left, right)
        assert torch.equal(view, out.detach()) and view.data_ptr() == y[..., left:].data_ptr()


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
@pytest.mark.parametrize("channels", [1, 3])
def test_channels_last_path_matches_sconv(causal, kernel, stride, dilation, channels):
    """(B, C, 1, T) channels-last in, the same layout out, SConv1d's values up to the order of
    the sums (oneDNN's NHWC kernels, a 1x1 convolution as one addmm, one input channel in
    blocks of samples); short inputs included."""
    torch.manual_seed(0)
    sconv = SConv1d(channels, 5, kernel, stride=stride, dilation=dilation, causal=causal)
    fast = FastPadConv1d(sconv)
    for length in range(1, 3 * kernel * dilation + 2 * stride + 3):
        x = torch.randn(2, channels, length)
        y = fast(to_channels_last(x[:, :, None]))
        assert y.dim() == 4 and y.is_contiguous(memory_format=torch.channels_last), length
        torch.testing.assert_close(y[:, :, 0], sconv(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the cached 2-D weight follows a change of the weight
        sconv.conv.conv.weight.mul_(2)
    x = torch.randn(2, channels, 40)
    torch.testing.assert_close(fast(to_channels_last(x[:, :, None]))[:, :, 0], sconv(x))


@pytest.mark.parametrize("kernel", [2, 7, 8, 9, 17])
@pytest.mark.parametrize("p", [1, 4, 8])
def test_polyphase_conv_is_the_convolution(kernel, p):
    """A one-channel convolution on blocks of p samples: the plain convolution's values and
    gradients (input, weight, bias) up to rounding, for outputs shorter than a block, lengths
    that fill whole blocks and lengths that do not."""
    torch.manual_seed(0)
    weight = torch.randn(5, 1, 1, kernel, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    for length in (kernel, kernel + 1, kernel + p - 1, 4 * p + kernel - 1, 4 * p + kernel + 2, 300):
        x = to_channels_last(torch.randn(2, 1, 1, length)).requires_grad_()
        y = polyphase_conv(x, polyphase_weight(weight, p), bias, kernel)
        expected = F.conv2d(x, weight, bias)
        assert y.shape == expected.shape, length
        torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
        grad = torch.randn_like(expected)
        got = torch.autograd.grad(y, (x, weight, bias), grad)
        want = torch.autograd.grad(expected, (x, weight, bias), grad)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


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


@pytest.mark.parametrize("causal,trim", [(True, 1.0), (True, 0.5), (False, 1.0)])
@pytest.mark.parametrize("kernel,stride", [(6, 3), (8, 4), (16, 8), (3, 1), (4, 4)])
def test_fast_conv_transpose_matches_sconvtranspose(causal, trim, kernel, stride):
    """(B, C, T): SConvTranspose1d's values bit for bit; (B, C, 1, T) channels-last: the same
    values up to rounding; with weight normalisation, each call reads the current g and v."""
    torch.manual_seed(0)
    sconvtr = SConvTranspose1d(3, 5, kernel, stride=stride, causal=causal, norm="weight_norm",
                               trim_right_ratio=trim)  # fmt: skip
    fast = FastConvTranspose1d(sconvtr)
    assert list(fast.state_dict()) == list(sconvtr.state_dict())
    for length in range(1, 12):
        x = torch.randn(2, 3, length)
        assert torch.equal(fast(x), sconvtr(x)), length
        y = fast(to_channels_last(x[:, :, None]))
        assert y.dim() == 4, length
        torch.testing.assert_close(y[:, :, 0], sconvtr(x), rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        sconvtr.convtr.convtr.weight_g.mul_(2)
    x = torch.randn(2, 3, 10)
    torch.testing.assert_close(fast(to_channels_last(x[:, :, None]))[:, :, 0], sconvtr(x))


@pytest.mark.parametrize("kernel,stride", [(6, 3), (7, 3), (4, 4)])
def test_fast_conv_transpose_normalises_over_its_own_length(kernel, stride):
    """A norm that pools over time (time_group_norm) sees the transposed convolution's samples
    only, not the phases' bias-only tail: the 3-D values on channels-last input."""
    torch.manual_seed(0)
    sconvtr = SConvTranspose1d(3, 4, kernel, stride=stride, causal=False, norm="time_group_norm")
    fast = FastConvTranspose1d(sconvtr)
    for length in (1, 5):
        x = torch.randn(2, 3, length)
        y = fast(to_channels_last(x[:, :, None]))[:, :, 0]
        torch.testing.assert_close(y, sconvtr(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_in,c_out,n", [(8, 8, 10), (4, 8, 7), (8, 16, 6), (3, 2, 0)])
def test_rows_linear_is_the_matrix_product(c_in, c_out, n):
    """A 1x1 convolution's rows on pairs of frames (narrow outputs, N even) or as they are:
    the plain product's values and gradients up to rounding."""
    torch.manual_seed(0)
    rows = torch.randn(n, c_in, requires_grad=True)
    weight, bias = torch.randn(c_out, c_in, requires_grad=True), torch.randn(c_out)
    got, ref = rows_linear(rows, weight, bias), torch.addmm(bias, rows, weight.t())
    assert got.shape == (n, c_out)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(rows_linear(rows, weight, None), rows @ weight.t())
    if n:
        grads = torch.autograd.grad(got.square().sum(), (rows, weight))
        expected = torch.autograd.grad(ref.square().sum(), (rows, weight))
        for g, e in zip(grads, expected, strict=True):
            torch.testing.assert_close(g, e)


@pytest.mark.parametrize("kernel,stride", [(6, 3), (16, 8), (7, 3), (3, 1), (4, 4), (2, 5)])
def test_phase_conv_transpose_is_the_transposed_convolution(kernel, stride):
    """The stride-1 convolution over phases: ``conv_transpose2d``'s values on every length, its
    input and weight gradients too, then bias only past the transposed convolution's length;
    the output channels-last with no copy."""
    torch.manual_seed(0)
    weight, bias = torch.randn(3, 5, kernel, requires_grad=True), torch.randn(5)
    for length in (1, 2, 7):
        x = to_channels_last(torch.randn(2, 3, 1, length)).requires_grad_()
        got = phase_conv_transpose(x, weight, bias, stride)
        ref = F.conv_transpose2d(x, weight[:, :, None], bias, stride=(1, stride))
        n = ref.shape[-1]
        assert got.shape[-1] >= n and got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got[..., :n], ref, rtol=1e-5, atol=1e-5)
        assert torch.equal(got[..., n:], bias[None, :, None, None].expand_as(got[..., n:]))
        grads = torch.autograd.grad(got[..., :n].square().sum(), (x, weight))
        expected = torch.autograd.grad(ref.square().sum(), (x, weight))
        for g, e in zip(grads, expected, strict=True):
            torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("lstm", [0, 1])
def test_codec_model_runs_channels_last_with_the_3d_values_and_gradients(lstm):
    """On the CPU ``CodecModel`` runs its encoder and decoder channels-last (``latent``,
    ``reconstruct``; an LSTM on (B, C, T)): the 3-D layers' reconstruction and parameter gradients
    up to rounding, also after the weight-norm parameters change in place (an optimizer step):
    every forward reads the weights made from the current g and v."""
    torch.manual_seed(0)
    model = CodecModel(dataclasses.replace(ARCH, lstm=lstm))
    assert takes_channels_last(model.encoder) and takes_channels_last(model.decoder)
    wav = torch.randn(2, 1, 4800)

    def run(channels_last: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        model.zero_grad()
        if channels_last:
            out = model(wav, quantize=False)[0]
        else:
            out = model.decoder(model.encoder(model.compand(wav)))
        out.square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.detach(), grads

    for _ in range(2):
        (out, grads), (ref, ref_grads) = run(True), run(False)
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
        assert grads.keys() == ref_grads.keys() and len(grads) > 10
        for name in grads:
            torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-3, atol=1e-5,
                                       msg=name)  # fmt: skip
        with torch.no_grad():  # as an optimizer step would
            for name, p in model.named_parameters():
                if name.endswith("weight_g"):
                    p.mul_(1.5)


def test_package_modules_keep_the_3d_path(monkeypatch):
    """A model built with EnCodec's own padded convolutions (``benchmarks/codec_fit_speed.py``'s
    reference) runs them on (B, C, T): same values as the swapped model's 3-D layers."""
    import tokenize_mm.tokenizers.audio.model as codec_model

    torch.manual_seed(0)
    fast = CodecModel(ARCH)
    monkeypatch.setattr(codec_model, "swap_padded_convs", lambda module: module)
    package = CodecModel(ARCH)
    package.load_state_dict(fast.state_dict())
    assert not takes_channels_last(package.encoder) and not takes_channels_last(package.decoder)
    wav = torch.randn(1, 1, 2400)
    with torch.no_grad():
        torch.testing.assert_close(package(wav, quantize=False)[0], fast(wav, quantize=False)[0],
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
