"""The fused nearest-code kernel: the product and the argmin in one pass, in C, called by ctypes.

``native/nearest_code.c`` (built and loaded by ``tokenizers/kernels.py``) scores a tile of rows
against a tile of codes in vector registers, folds the scores into each lane's running minimum and
keeps them in the tile rows' score lines in the cache, where each row's first minimum is found, so
the (N, K) score matrix that ``addmm`` + ``argmin`` writes to memory and reads again never exists
(the register blocking of BLIS micro-kernels; Van Zee and van de Geijn, 2015). It has AVX-512,
AVX2 + FMA and portable variants that compute every score the same way (one fused multiply-add
per term, terms in order), so its codes are bitwise the same on every CPU and for any number of
threads, which a BLAS product is not.

Without a C compiler, or with ``TOKENIZE_MM_FUSED_VQ=0``, ``available()`` is false and
``nearest_code`` uses its matmul path (warned once, with the reason).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from tokenize_mm.tokenizers import kernels
from tokenize_mm.tokenizers.kernels import KernelError, best_variant

__all__ = ["MAX_CODES", "KernelError", "available", "best_variant", "fused_nearest_code"]

# Each thread keeps 6 score lines of K floats (96 MiB at this bound); larger codebooks take the
# matmul path.
MAX_CODES = 1 << 22
_ERRORS = {1: "out of memory", 2: "variant not supported by this CPU"}


def available() -> bool:
    """Whether the kernel runs here: the native library loads (``kernels.available()``, which
    warns once when it does not) and ``TOKENIZE_MM_FUSED_VQ`` is not ``0``."""
    return os.environ.get("TOKENIZE_MM_FUSED_VQ", "1") != "0" and kernels.available()


def fused_nearest_code(
    x: Tensor,
    codebook: Tensor,
    codebook_sqnorm: Tensor,
    threads: int = 1,
    variant: str | None = None,
) -> Tensor:
    """``argmin_k |E_k|^2 - 2 x E_k`` for every row of ``x``, first index on ties.

    Args:
        x: float32 CPU tensor (N, D). codebook: float32 CPU tensor (K, D), K < ``MAX_CODES``.
        codebook_sqnorm: float32 CPU tensor (K,).
        threads: threads taking chunks of rows; the codes do not depend on it.
        variant: ``avx512``, ``avx2`` or ``portable``; None picks ``best_variant()``.

    Returns:
        int64 tensor (N,).

    Raises:
        KernelError: the library is unavailable, or the variant does not run on this CPU.
        ValueError: shapes, dtypes or devices that the kernel does not take.
    """
    for name, t, dim in (("x", x, 2), ("codebook", codebook, 2), ("codebook_sqnorm", codebook_sqnorm, 1)):  # fmt: skip
        if t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != dim:
            raise ValueError(
                f"fused_nearest_code: {name} must be a {dim}-d float32 CPU tensor, got "
                f"{tuple(t.shape)} {t.dtype} on {t.device}"
            )
    (n, d), k = x.shape, codebook.shape[0]
    if codebook.shape[1] != d or codebook_sqnorm.shape[0] != k:
        raise ValueError(
            f"fused_nearest_code: x {tuple(x.shape)}, codebook {tuple(codebook.shape)} and "
            f"codebook_sqnorm {tuple(codebook_sqnorm.shape)} do not match"
        )
    if not 0 < k < MAX_CODES:
        raise ValueError(f"fused_nearest_code: needs 0 < K < {MAX_CODES} codes, got {k}")
    if threads < 1:
        raise ValueError(f"fused_nearest_code: threads must be >= 1, got {threads}")
    try:
        variant_id = kernels.variant_id(variant)
    except ValueError as err:
        raise ValueError(f"fused_nearest_code: {err}") from None
    x, codebook, sqnorm = x.contiguous(), codebook.contiguous(), codebook_sqnorm.contiguous()
    out = torch.empty(n, dtype=torch.long)
    if n == 0 or d == 0:
        return out.zero_()
    rc = kernels.library().tmm_nearest_code(
        x.data_ptr(), n, d, codebook.data_ptr(), sqnorm.data_ptr(), k, out.data_ptr(),
        variant_id, threads,
    )  # fmt: skip
    if rc != 0:
        raise KernelError(f"fused_nearest_code: {_ERRORS.get(rc, f'error {rc}')} (variant {variant})")  # fmt: skip
    return out
