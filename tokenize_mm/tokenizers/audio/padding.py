"""SEANet's padded convolution with its reflection padding done by slicing: the same numbers.

EnCodec's ``SConv1d`` (Défossez et al., 2022, "High Fidelity Neural Audio Compression";
``encodec.modules.conv``) pads every convolution's input, causally (all on the left) or split
around it, by reflection, and adds zeros' worth of frames on the right so that the last window is
full. ``F.pad(mode="reflect")`` runs a gather per element: on one CPU thread it took 2.4 ms for a
(1, 32, 96000) input where copying the same values as slices took 0.9 ms (6.9 against 1.0 ms for a
left pad of 6), and it copies the input even when a 1x1 convolution pads nothing. In the 24 kHz
EnCodec encoder the padding took a fifth of the time before the LSTM (``benchmarks/audio_encode.py``
measures the encoder end to end).

``FastPadConv1d`` wraps an ``SConv1d``'s inner convolution and repeats its ``forward`` with
``reflect_pad``: the padded tensor is the same values in the same places, so the outputs are
bit-identical (tested against ``SConv1d`` on all lengths around its special cases). Inputs no
longer than their padding, which SEANet pads with zeros before reflecting, and other padding modes
go through EnCodec's own ``pad1d``.
"""

from __future__ import annotations

import torch
from encodec.modules.conv import SConv1d, get_extra_padding_for_conv1d, pad1d
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.padding_total
        extra = get_extra_padding_for_conv1d(x, self.kernel_size, self.stride, total)
        if self.causal:
            left, right = total, extra
        else:
            left, right = total - total // 2, total // 2 + extra
        if self.pad_mode == "reflect" and x.shape[-1] > max(left, right):
            x = reflect_pad(x, left, right)
        else:  # other modes, and SEANet's short input (zeros appended before reflecting)
            x = pad1d(x, (left, right), mode=self.pad_mode)
        return self.conv(x)


def swap_padded_convs(model: nn.Module) -> nn.Module:
    """Replace every ``SConv1d`` in ``model`` by a ``FastPadConv1d`` around the same
    convolution, in place; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, SConv1d):
                setattr(parent, name, FastPadConv1d(child))
    return model
