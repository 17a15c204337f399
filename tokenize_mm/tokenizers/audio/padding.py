"""SEANet's padded convolutions, faster on the CPU: reflection padding as slices, channels-last.

EnCodec's ``SConv1d`` (Défossez et al., 2022, "High Fidelity Neural Audio Compression";
``encodec.modules.conv``) pads every convolution's input, causally (all on the left) or split
around it, by reflection, and adds zeros' worth of frames on the right so that the last window is
full. ``F.pad(mode="reflect")`` runs a gather per element, slower than copying the same values as
slices, and it copies the input even when a 1x1 convolution pads nothing
(``benchmarks/audio_profile.py`` times both).

``FastPadConv1d`` wraps an ``SConv1d``'s inner convolution and repeats its ``forward``:

- on (B, C, T), with ``reflect_pad``: the padded tensor is the same values in the same places, so
  the outputs are bit-identical (tested against ``SConv1d`` on all lengths around its special
  cases). The GPU and the pretrained codecs' decoders run this way.
- on (B, C, 1, T) in channels-last memory (``to_channels_last``): as a 2-D convolution, which
  oneDNN runs faster in that layout (``benchmarks/audio_profile.py``), a 1x1 one as one matrix
  product, the padding written straight into channels-last memory, and a convolution of one
  input channel (the waveform's) on blocks of samples (``polyphase_conv``). On the CPU the
  folded codec's encoder runs its convolutions before the LSTM this way (``audio/batch.py``),
  and ``CodecModel`` its encoder and decoder, in fits too (``channels_last_forward``;
  ``FastConvTranspose1d`` for the decoder's transposed convolutions). The sums run in another
  order, so values differ from the 3-D path in the last bits (tested to 1e-5) and a latent on a
  quantizer boundary can take the other code; ``benchmarks/audio_encode.py`` counts the codes
  that differ from the ``encodec`` package's.

Under autograd the channels-last padding and the transposed convolutions' trim are autograd
functions of their own (``ReflectPadChannelsLast``, ``TrimChannelsLast``) whose gradients stay in
channels-last memory: autograd's backward of a slice writes the gradient into zeros in the default
layout, and every channels-last kernel before it then copied it across element by element (in a
profile of audio_small's fit step, the op with the most CPU time). The trim's output is then dense
too, so the native ELU after it takes it (a slice of several examples is not dense, and it fell
back to torch's); without a gradient to record it stays the slice.
``benchmarks/codec_fit_speed.py`` times the fit with and without them.

Inputs no longer than their padding, which SEANet pads with zeros before reflecting, and other
padding modes go through EnCodec's own ``pad1d``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from encodec.modules.conv import SConv1d, SConvTranspose1d, get_extra_padding_for_conv1d, pad1d
from encodec.modules.lstm import SLSTM
from torch import nn


def reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``F.pad(x, (left, right), mode="reflect")`` for x (..., L) with L > max(left, right), as
    slices and one concatenation; x itself when both are 0."""
    if left == 0 and right == 0:
        return x
    parts = [x[..., 1 : left + 1].flip(-1)] if left else []
    parts.append(x)
    if right:
        parts.append(x[..., -right - 1 : -1].flip(-1))
    return torch.cat(parts, dim=-1)


class FastPadConv1d(nn.Module):
    """``SConv1d.forward`` with ``reflect_pad``: input (B, C_in, T) → (B, C_out, T').

    Args:
        sconv: the ``SConv1d`` whose convolution (``sconv.conv``, a ``NormConv1d``) is reused,
            with its ``causal`` and ``pad_mode``.
    """

    def __init__(self, sconv: SConv1d):
        super().__init__()
        self.conv = sconv.conv  # the same name as in SConv1d: state dict keys are unchanged
        self.causal, self.pad_mode = sconv.causal, sconv.pad_mode
        inner = sconv.conv.conv
        self.kernel_size, self.stride = inner.kernel_size[0], inner.stride[0]
        self.padding_total = (self.kernel_size - 1) * inner.dilation[0] - (self.stride - 1)
        self._weight_2d: torch.Tensor | None = None  # the weight as (C_out, C_in, 1, k)
        self._weight_key: tuple[int, int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), or (B, C_in, 1, T) channels-last (``to_channels_last``) → the same
        layout with C_out channels."""
        total = self.padding_total
        extra = get_extra_padding_for_conv1d(x, self.kernel_size, self.stride, total)
        if self.causal:
            left, right = total, extra
        else:
            left, right = total - total // 2, total // 2 + extra
        if x.dim() == 4:
            return self._forward_channels_last(x, left, right)
        if self.pad_mode == "reflect" and x.shape[-1] > max(left, right):
            x = reflect_pad(x, left, right)
        else:  # other modes, and SEANet's short input (zeros appended before reflecting)
            x = pad1d(x, (left, right), mode=self.pad_mode)
        return self.conv(x)

    def _forward_channels_last(self, x: torch.Tensor, left: int, right: int) -> torch.Tensor:
        """The same convolution over (B, C, 1, T) in channels-last memory, which oneDNN runs
        faster on the CPU (``benchmarks/audio_profile.py``), and a 1x1 one as the matrix product
        it is (PyTorch sends a 1x1 convolution on one thread to its slow path, which copies out
        of channels-last). The sums run in another order than the 3-D path's, so outputs differ
        from it in the last bits."""
        if self.pad_mode == "reflect" and x.shape[-1] > max(left, right):
            x = _reflect_pad_channels_last(x, left, right)
        elif left or right:
            x = to_channels_last(pad1d(x[:, :, 0], (left, right), mode=self.pad_mode)[:, :, None])
        inner = self.conv.conv
        hooks = inner._forward_pre_hooks  # F.conv2d bypasses inner's __call__
        _run_pre_hooks(inner, x)
        if self.kernel_size == 1 and self.stride == 1:  # (B·T, C_in) @ (C_in, C_out) in place
            b, _, _, t = x.shape
            rows = x.permute(0, 2, 3, 1).reshape(b * t, -1)  # a view of channels-last memory
            out = rows_linear(rows, inner.weight[:, :, 0], inner.bias)
            return self.conv.norm(out.view(b, 1, t, -1).permute(0, 3, 1, 2))
        # the waveform (one channel), stride 1: as POLYPHASE phases (polyphase_conv)
        phases = inner.in_channels == 1 and self.stride == 1 and inner.dilation[0] == 1
        if hooks or inner.weight.requires_grad:  # a weight made per call, or a fit's graph
            weight = inner.weight[:, :, None]
            weight = polyphase_weight(weight, POLYPHASE) if phases else weight
        else:  # a folded copy's plain weight, laid out once
            w = inner.weight  # remade if it changes (an inference tensor has no version)
            key = (w.data_ptr(), -1 if w.is_inference() else w._version)
            if self._weight_2d is None or self._weight_key != key:
                weight = inner.weight[:, :, None].detach()
                weight = polyphase_weight(weight, POLYPHASE) if phases else weight
                self._weight_2d, self._weight_key = to_channels_last(weight), key
            weight = self._weight_2d
        if phases:
            y = polyphase_conv(x, weight, inner.bias, self.kernel_size)
        else:
            y = F.conv2d(x, weight, inner.bias, stride=(1, self.stride),
                         dilation=(1, inner.dilation[0]))  # fmt: skip
        return self.conv.norm(y)


#: A 1x1 convolution with fewer output channels than this runs on pairs of frames (``rows_linear``).
PAIRS_BELOW = 16


def rows_linear(
    rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> torch.Tensor:
    """rows (N, C_in) → rows @ weight.t() + bias, (N, C_out): a 1x1 convolution over
    channels-last frames. With fewer than ``PAIRS_BELOW`` output channels and N even, on pairs of
    frames: (N / 2, 2 · C_in) @ blockdiag(weight.t(), weight.t()), whose output is the same memory.
    The CPU's matrix product runs N x 8 by 8 x 8 far below its speed (the full-rate 1x1
    convolutions of a codec 8 filters wide), 16 columns near it: audio_small's ``encode_batch``
    1.19 times as fast on one thread, the same codes (``benchmarks/codec_small_paths.py``). The
    same products plus zeros: values equal up to the order of the sums. Differentiable."""
    n, c_out = rows.shape[0], weight.shape[0]
    if c_out < PAIRS_BELOW and n % 2 == 0 and n > 0:
        rows, weight = rows.view(n // 2, -1), torch.block_diag(weight, weight)
        bias = None if bias is None else bias.repeat(2)
    out = rows @ weight.t() if bias is None else torch.addmm(bias, rows, weight.t())
    return out.view(n, c_out)


#: Samples per block when a one-channel convolution runs on blocks (``polyphase_conv``).
POLYPHASE = 8


def polyphase_weight(weight: torch.Tensor, p: int) -> torch.Tensor:
    """A one-channel convolution's weight (C_out, 1, 1, k) → the weight that ``polyphase_conv``
    applies to blocks of ``p`` samples: (p · C_out, p, 1, taps), taps = ceil((k - 1 + p) / p),
    entry [(s, c), q, 0, r] = weight[c, 0, 0, p·r + q - s] where that index is in [0, k), else 0.
    Differentiable in ``weight`` (an index into it and one zero)."""
    c_out, k = weight.shape[0], weight.shape[-1]
    taps = -(-(k - 1 + p) // p)
    s, q, r = torch.arange(p)[:, None, None], torch.arange(p)[None, :, None], torch.arange(taps)
    j = p * r + q - s  # (p, p, taps): the tap of output phase s, input phase q, block r
    j = torch.where((j >= 0) & (j < k), j, k)  # k: the zero appended below
    flat = torch.cat([weight.reshape(c_out, k), weight.new_zeros(c_out, 1)], dim=1)
    return flat[:, j].permute(1, 0, 2, 3).reshape(p * c_out, p, 1, taps)


def polyphase_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kernel_size: int
) -> torch.Tensor:
    """A stride-1 convolution of a one-channel x (B, 1, 1, T) (T >= k) → (B, C_out, 1, T - k + 1)
    in channels-last memory, computed on the signal's blocks of p samples as channels: ``weight``
    from ``polyphase_weight``, (p · C_out, p, 1, taps). Output sample t = p·m + s is output
    channel (s, c) of block m, so channels-last memory of (B, p · C_out, 1, M) is already that
    of (B, C_out, 1, p · M). oneDNN runs a convolution of one input channel far below its speed
    on a few channels, the first layer of every SEANet encoder. The products and sums are the
    plain convolution's plus zeros: values equal up to the order of the sums."""
    b, t = x.shape[0], x.shape[-1]
    p, taps = weight.shape[1], weight.shape[-1]
    c_out, t_out = weight.shape[0] // p, t - kernel_size + 1
    blocks = -(-t_out // p) + taps - 1  # input blocks the last output block reads
    flat = x.reshape(b, t)
    flat = F.pad(flat, (0, p * blocks - t)) if p * blocks > t else flat[:, : p * blocks]
    y = F.conv2d(flat.reshape(b, blocks, p).permute(0, 2, 1)[:, :, None], weight,
                 None if bias is None else bias.repeat(p))  # fmt: skip
    m = blocks - taps + 1
    y = y.permute(0, 2, 3, 1).reshape(b, m * p, c_out)[:, :t_out].permute(0, 2, 1)[:, :, None]
    return y if m * p == t_out else to_channels_last(y)  # dense again (a copy) after a cut


def _reflect_pad_channels_last(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``reflect_pad`` of x (B, C, 1, T), written straight into channels-last memory; under
    autograd through ``ReflectPadChannelsLast``, whose gradient stays channels-last."""
    if left == 0 and right == 0:
        return to_channels_last(x)
    if torch.is_grad_enabled() and x.requires_grad:
        return ReflectPadChannelsLast.apply(x, left, right)
    return _write_reflect_pad(x, left, right)


class ReflectPadChannelsLast(torch.autograd.Function):
    """``_write_reflect_pad`` with its gradient in channels-last memory: (B, C, 1, T) → (B, C, 1,
    left + T + right) and back.

    Autograd's own backward of the slice assignments starts each part from a zero tensor in the
    default (B, C, T)-major layout, so the gradient leaves the padding in that layout and every
    channels-last kernel before it (the ELU's, oneDNN's convolution) first copies it across,
    element by element (the module docstring). Here the gradient is the padded gradient's middle,
    copied once (each example's frames are one block), plus the reflected ends added onto the
    samples they came from."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, left: int,
                right: int) -> torch.Tensor:  # fmt: skip
        ctx.pads = (left, right)
        return _write_reflect_pad(x, left, right)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        left, right = ctx.pads
        t = grad.shape[-1] - left - right
        # a copy even where the slice is dense already (one example): the ends are added onto it
        out = grad[..., left : left + t].clone(memory_format=torch.channels_last)
        if left:  # out[..., :left] held x[..., 1 : left + 1] reversed
            out[..., 1 : left + 1] += grad[..., :left].flip(-1)
        if right:  # out[..., left + t :] held x[..., t - right - 1 : t - 1] reversed
            out[..., t - right - 1 : t - 1] += grad[..., left + t :].flip(-1)
        return out, None, None


def trim_channels_last(y: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """y (B, C, 1, W)[..., left : W - right]: under autograd a new dense channels-last tensor
    (``TrimChannelsLast``, whose gradient stays channels-last), else the slice itself (a view,
    as decoding always took it)."""
    if (left or right) and torch.is_grad_enabled() and y.requires_grad:
        return TrimChannelsLast.apply(y, left, right)
    return y[..., left : y.shape[-1] - right]


class TrimChannelsLast(torch.autograd.Function):
    """``trim_channels_last`` with its gradient in channels-last memory: (B, C, 1, W) → (B, C, 1,
    W - left - right) and back. Autograd's backward of a slice writes the gradient into zeros in
    the default layout (``ReflectPadChannelsLast`` says what that costs); here the zeros are
    channels-last."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, y: torch.Tensor, left: int,
                right: int) -> torch.Tensor:  # fmt: skip
        ctx.pads = (left, right)
        return y[..., left : y.shape[-1] - right].clone(memory_format=torch.channels_last)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor):
        left, right = ctx.pads
        b, c, h, t = grad.shape
        out = torch.empty((b, c, h, left + t + right), dtype=grad.dtype, device=grad.device,
                          memory_format=torch.channels_last)  # fmt: skip
        out[..., :left] = 0
        out[..., left : left + t] = grad
        out[..., left + t :] = 0
        return out, None, None


def _write_reflect_pad(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """``reflect_pad`` of x (B, C, 1, T) into a new channels-last tensor (left, right not both 0)."""
    b, c, _, t = x.shape
    out = torch.empty(
        (b, c, 1, left + t + right), dtype=x.dtype, device=x.device,
        memory_format=torch.channels_last,
    )  # fmt: skip
    out[..., left : left + t] = x
    if left:
        out[..., :left] = x[..., 1 : left + 1].flip(-1)
    if right:
        out[..., left + t :] = x[..., -right - 1 : -1].flip(-1)
    return out


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A (B, C, 1, T) tensor in channels-last memory (each time step's C values together)."""
    return x.contiguous(memory_format=torch.channels_last)


def _run_pre_hooks(module: nn.Module, x: torch.Tensor) -> None:
    """``module``'s forward pre-hooks, which its ``__call__`` would run: a caller that uses its
    weight in a functional call runs them first (weight normalisation recomputes ``weight`` from
    ``weight_g`` and ``weight_v`` there in a fit)."""
    for hook in list(module._forward_pre_hooks.values()):
        hook(module, (x,))


class FastConvTranspose1d(nn.Module):
    """``SConvTranspose1d.forward`` on (B, C_in, T) (the same ops), and on (B, C_in, 1, T) in
    channels-last memory as a 2-D transposed convolution, so that a decoder runs channels-last
    throughout (``channels_last_forward``). The fixed padding is trimmed by slicing.

    Args:
        sconvtr: the ``SConvTranspose1d`` whose ``convtr`` (a ``NormConvTranspose1d``) is reused:
            the state dict keys are unchanged.
    """

    def __init__(self, sconvtr: SConvTranspose1d):
        super().__init__()
        self.convtr = sconvtr.convtr
        inner = sconvtr.convtr.convtr
        total = inner.kernel_size[0] - inner.stride[0]
        right = math.ceil(total * sconvtr.trim_right_ratio) if sconvtr.causal else total // 2
        self.trim = (total - right, right)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T), or (B, C_in, 1, T) channels-last → the same layout with C_out
        channels and T · stride frames."""
        if x.dim() == 3:
            y = self.convtr(x)
        else:
            inner = self.convtr.convtr
            _run_pre_hooks(inner, x)
            if _plain_transpose(inner):
                # cut to the transposed convolution's own length (the phases run past it)
                # before the norm, which may pool over time (time_group_norm)
                length = (x.shape[-1] - 1) * inner.stride[0] + inner.kernel_size[0]
                y = phase_conv_transpose(x, inner.weight, inner.bias, inner.stride[0])
                y = y[..., :length]
            else:
                y = F.conv_transpose2d(
                    x, inner.weight[:, :, None], inner.bias, stride=(1, inner.stride[0]),
                    output_padding=(0, inner.output_padding[0]), groups=inner.groups,
                    dilation=(1, inner.dilation[0]),
                )  # fmt: skip
            y = self.convtr.norm(y)
            return trim_channels_last(y, *self.trim)
        left, right = self.trim
        return y[..., left : y.shape[-1] - right]


def _plain_transpose(conv: nn.ConvTranspose1d) -> bool:
    """No groups, dilation or output padding: what ``phase_conv_transpose`` computes (SEANet's)."""
    return conv.groups == 1 and conv.dilation[0] == 1 and conv.output_padding[0] == 0


def phase_weight(weight: torch.Tensor, stride: int) -> torch.Tensor:
    """A transposed convolution's weight (C_in, C_out, k) → the weight of the stride-1 convolution
    that ``phase_conv_transpose`` runs: (stride · C_out, C_in, 1, M), M = ceil(k / stride), entry
    [(r, o), i, 0, M - 1 - m] = weight[i, o, m · stride + r] (0 past k). Differentiable."""
    c_in, c_out, k = weight.shape
    taps = -(-k // stride)
    if taps * stride > k:
        weight = F.pad(weight, (0, taps * stride - k))
    w = weight.reshape(c_in, c_out, taps, stride).permute(3, 1, 0, 2).flip(-1)
    return w.reshape(stride * c_out, c_in, 1, taps)


def phase_conv_transpose(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int
) -> torch.Tensor:
    """A transposed convolution (no groups, dilation or output padding) of x (B, C_in, 1, T) in
    channels-last memory → (B, C_out, 1, (T + M - 1) · stride), channels-last, whose first
    (T - 1) · stride + k samples are ``conv_transpose2d``'s (the rest: bias only).

    Output sample q · stride + r is the sum over m of weight[:, :, m · stride + r] applied to
    input frame q - m: a stride-1 convolution of M taps with stride · C_out output channels, one
    group of C_out per output phase r (the sub-pixel convolution of Shi et al. 2016,
    arXiv:1609.05158). Its channels-last output (B, T + M - 1, stride, C_out) is already the
    memory of the interleaved signal, so nothing is copied. oneDNN runs the transposed
    convolution itself below its speed on a few channels at a high rate (a codec decoder's last
    upsampling, 16 → 8 channels at 24 kHz): audio_small decoded clip by clip 1.06 times as fast
    this way (``benchmarks/codec_small_paths.py``). The same products, summed in another
    order."""
    taps = -(-weight.shape[-1] // stride)
    y = F.conv2d(x, phase_weight(weight, stride), None if bias is None else bias.repeat(stride),
                 padding=(0, taps - 1))  # fmt: skip
    b, channels, _, frames = y.shape
    y = to_channels_last(y).permute(0, 2, 3, 1)  # (B, 1, T + M - 1, stride · C_out)
    return y.reshape(b, 1, frames * stride, channels // stride).permute(0, 3, 1, 2)


def takes_channels_last(module: nn.Module) -> bool:
    """Whether ``channels_last_forward`` can run ``module``'s layers: its padded convolutions are
    all ``FastPadConv1d`` / ``FastConvTranspose1d`` (``swap_padded_convs``), none EnCodec's own."""
    return not any(isinstance(m, (SConv1d, SConvTranspose1d)) for m in module.modules())


def channels_last_forward(layers: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A SEANet encoder's or decoder's ``model`` on x (B, C, T) → (B, C', T'), its layers run
    on (B, C, 1, T) in channels-last memory (what ``FastPadConv1d``, ``FastConvTranspose1d``, the
    ELU and the residual sums take) and its LSTMs on (B, C, T); the layout changes only around an
    LSTM. The same layers as ``layers(x)``; sums in another order, so values differ in the last
    bits."""
    four = False
    for layer in layers:
        if isinstance(layer, SLSTM):
            if four:
                x, four = x[:, :, 0], False
        elif not four:
            x, four = to_channels_last(x[:, :, None]), True
        x = layer(x)
    return x[:, :, 0] if four else x


def swap_padded_convs(model: nn.Module) -> nn.Module:
    """Replace every ``SConv1d`` in ``model`` by a ``FastPadConv1d`` around the same
    convolution, and every ``SConvTranspose1d`` by a ``FastConvTranspose1d``, in place;
    returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SConv1d):
                setattr(parent, name, FastPadConv1d(child))
            elif isinstance(child, SConvTranspose1d):
                setattr(parent, name, FastConvTranspose1d(child))
    return model
