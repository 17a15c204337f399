"""ELU through the native kernel on the CPU: the codec's inference without torch's slow expm1.

SEANet (EnCodec, Défossez et al., 2022) puts an ELU (Clevert et al., 2016) before every
convolution; on the CPU torch's ELU costs about six copies of its tensor (a double-float expm1),
a fifth of batched encoding's time (``benchmarks/audio_profile.py``). ``native/elu.c`` computes
it in one pass at copy speed, within one unit in the last place of the exact value (tested), the
same on every CPU that runs it (``tokenizers/kernels.py``). Its values can differ from torch's in the
last bit, so a latent on a quantizer boundary can take the other code;
``benchmarks/audio_encode.py`` counts the codes that differ from the ``encodec`` package's.

With a gradient to record, ``NativeELU`` (an autograd function) computes the backward from the
output, dL/dx = g (y + 1) below zero in one fused multiply-add, where torch computes exp(x) again.
Both run on torch's number of threads, over fixed chunks (values independent of it).

``FastELU`` is an ``nn.ELU`` that takes the kernel for float32 CPU tensors in dense memory
(contiguous or channels-last) with alpha 1, and torch's ELU otherwise (a GPU, other dtypes, in
place under autograd, a CPU whose best variant is the slow portable one, no compiler).
``CodecModel`` (``audio/model.py``) is built with it, so the codec's CPU fits use it, and
``folded_copy`` (``audio/batch.py``) puts it in the inference copies of every codec.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenize_mm.tokenizers import kernels

_ERRORS = {2: "variant not supported by this CPU"}


def elu(
    x: torch.Tensor,
    out: torch.Tensor | None = None,
    variant: str | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """ELU (alpha 1) of every element of ``x`` by the native kernel.

    Args:
        x: float32 CPU tensor, contiguous or channels-last, any shape.
        out: where to write (``x`` itself for in place); a new tensor in ``x``'s layout if None.
        variant: ``avx2`` or ``portable`` (bitwise the same values); None the best this CPU runs.
        threads: threads over fixed chunks (the values do not depend on it); None torch's count.

    Returns:
        ``out``, or the new tensor, of ``x``'s shape.

    Raises:
        ValueError: a tensor the kernel does not take. kernels.KernelError: no native library,
            or a variant this CPU does not run.
    """
    if not _dense_cpu_float(x):
        raise ValueError(
            f"elu: x must be a float32 CPU tensor in contiguous or channels-last memory, got "
            f"{tuple(x.shape)} {x.dtype} on {x.device} with strides {x.stride()}"
        )
    if out is None:
        out = torch.empty_like(x)  # the same layout (preserve_format keeps dense strides)
    elif out.shape != x.shape or out.stride() != x.stride() or not _dense_cpu_float(out):
        raise ValueError(
            f"elu: out must match x's shape {tuple(x.shape)} and strides {x.stride()}, got "
            f"{tuple(out.shape)} {out.dtype} with strides {out.stride()}"
        )
    variant_id = kernels.variant_id(variant)
    with torch.profiler.record_function("tokenize_mm::elu"):  # profiles show the native call
        rc = kernels.library().tmm_elu(
            x.data_ptr(), out.data_ptr(), x.numel(), variant_id, _threads(threads)
        )
    if rc != 0:
        raise kernels.KernelError(f"elu: {_ERRORS.get(rc, f'error {rc}')} (variant {variant})")
    return out


def elu_backward(
    grad: torch.Tensor, y: torch.Tensor, variant: str | None = None, threads: int | None = None
) -> torch.Tensor:
    """dL/dx of y = ELU(x) (alpha 1) from dL/dy ``grad`` and the output ``y``, by the native kernel.

    Both: float32 CPU tensors of one shape, in contiguous or channels-last memory (``grad`` is
    made dense in ``y``'s layout when it is not); ``variant`` and ``threads`` as ``elu``. Returns
    a new tensor in ``y``'s layout.

    Raises:
        ValueError: tensors the kernel does not take. kernels.KernelError: as ``elu``.
    """
    if not _dense_cpu_float(y) or grad.shape != y.shape or grad.dtype != torch.float32:
        raise ValueError(
            f"elu_backward: grad {tuple(grad.shape)} {grad.dtype} and y {tuple(y.shape)} {y.dtype} "
            "must be float32 CPU tensors of one shape, y in contiguous or channels-last memory"
        )
    if grad.stride() != y.stride():
        grad = torch.empty_like(y).copy_(grad)  # y's layout, so the kernel reads them in step
    out = torch.empty_like(y)
    variant_id = kernels.variant_id(variant)
    with torch.profiler.record_function("tokenize_mm::elu_backward"):
        rc = kernels.library().tmm_elu_backward(
            grad.data_ptr(), y.data_ptr(), out.data_ptr(), y.numel(), variant_id,
            _threads(threads),
        )  # fmt: skip
    if rc != 0:
        raise kernels.KernelError(f"elu_backward: {_ERRORS.get(rc, f'error {rc}')} (variant {variant})")  # fmt: skip
    return out


class NativeELU(torch.autograd.Function):
    """ELU (alpha 1) by the native kernel with its gradient: (*) → (*), x float32 CPU dense."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        y = elu(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return elu_backward(grad, y)


def _threads(threads: int | None) -> int:
    if threads is None:
        return torch.get_num_threads()
    if threads < 1:
        raise ValueError(f"elu: threads must be >= 1, got {threads}")
    return threads


def _dense_cpu_float(x: torch.Tensor) -> bool:
    """float32 on the CPU, its elements one block of memory in order of storage."""
    if x.dtype != torch.float32 or x.device.type != "cpu":
        return False
    if x.is_contiguous():
        return True
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)


def native_is_faster() -> bool:
    """The native library loads and this CPU runs its vector variant (the portable one is slower
    than torch's ELU)."""
    return kernels.available() and kernels.best_variant() != "portable"


class FastELU(nn.ELU):
    """``nn.ELU`` whose forward takes the native kernel where it applies (see the module
    docstring); (*) → (*), in place when ``inplace``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.alpha != 1.0 or not _dense_cpu_float(x) or not native_is_faster():
            return super().forward(x)
        if x.requires_grad and torch.is_grad_enabled():
            if self.inplace:  # in place on a tensor autograd tracks: torch's own bookkeeping
                return super().forward(x)
            return NativeELU.apply(x)
        if not self.inplace:
            return elu(x)
        elu(x, out=x)
        if not x.is_inference():  # as an in-place torch op: a graph that saved x sees it changed
            torch.autograd.graph.increment_version(x)
        return x


def swap_elus(model: nn.Module) -> nn.Module:
    """Replace every ``nn.ELU`` in ``model`` by a ``FastELU`` of the same alpha and in-place
    setting, in place; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.ELU:
                setattr(parent, name, FastELU(alpha=child.alpha, inplace=child.inplace))
    return model
