"""ELU through the native kernel on the CPU: the codec's inference without torch's slow expm1.

SEANet (EnCodec, Défossez et al., 2022) puts an ELU (Clevert et al., 2016) before every
convolution; on the CPU torch's ELU costs about six copies of its tensor (a double-float expm1),
a fifth of batched encoding's time (``benchmarks/audio_profile.py``). ``native/elu.c`` computes
it in one pass at copy speed, within 0.84 units in the last place of the exact value (torch's:
1.0), the same on every CPU (``tokenizers/kernels.py``). Its values can differ from torch's in the
last bit, so a latent on a quantizer boundary can take the other code;
``benchmarks/audio_encode.py`` counts the codes that differ from the ``encodec`` package's.

``FastELU`` is an ``nn.ELU`` that takes the kernel for float32 CPU tensors in dense memory
(contiguous or channels-last) with alpha 1 and no gradient to record, and torch's ELU otherwise
(a GPU, autograd, other dtypes, a CPU whose best variant is the slow portable one, no compiler).
``folded_copy`` (``audio/batch.py``) puts it in the inference copies of the codecs.
"""

from __future__ import annotations

import torch
from torch import nn

from tokenize_mm.tokenizers import kernels

_ERRORS = {2: "variant not supported by this CPU"}


def elu(
    x: torch.Tensor, out: torch.Tensor | None = None, variant: str | None = None
) -> torch.Tensor:
    """ELU (alpha 1) of every element of ``x`` by the native kernel.

    Args:
        x: float32 CPU tensor, contiguous or channels-last, any shape.
        out: where to write (``x`` itself for in place); a new tensor in ``x``'s layout if None.
        variant: ``avx2`` or ``portable`` (bitwise the same values); None the best this CPU runs.

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
        rc = kernels.library().tmm_elu(x.data_ptr(), out.data_ptr(), x.numel(), variant_id)
    if rc != 0:
        raise kernels.KernelError(f"elu: {_ERRORS.get(rc, f'error {rc}')} (variant {variant})")
    return out


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
        grad = torch.is_grad_enabled() and x.requires_grad
        if self.alpha == 1.0 and not grad and _dense_cpu_float(x) and native_is_faster():
            return elu(x, out=x if self.inplace else None)
        return super().forward(x)


def swap_elus(model: nn.Module) -> nn.Module:
    """Replace every ``nn.ELU`` in ``model`` by a ``FastELU`` of the same alpha and in-place
    setting, in place; returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.ELU:
                setattr(parent, name, FastELU(alpha=child.alpha, inplace=child.inplace))
    return model
