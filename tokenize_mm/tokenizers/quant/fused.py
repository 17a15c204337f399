"""The fused nearest-code kernel: built once from C with the system compiler, cached, called by ctypes.

``native/nearest_code.c`` scores a tile of rows against a tile of codes in vector registers,
folds the scores into each lane's running minimum and keeps them in the tile rows' score lines in
the cache, where each row's first minimum is found, so the (N, K) score matrix that ``addmm`` +
``argmin`` writes to memory and reads again never exists (the register blocking of BLIS
micro-kernels; Van Zee and van de Geijn, 2015). It has AVX-512, AVX2 + FMA and portable variants that compute every score the same way
(one fused multiply-add per term, terms in order), so its codes are bitwise the same on every CPU
and for any number of threads, which a BLAS product is not. The source is plain C (no Python or
torch headers): it compiles in about a second, so it is built on first use into
``$TOKENIZE_MM_NATIVE_DIR``, else ``$XDG_CACHE_HOME/tokenize_mm/native`` or
``~/.cache/tokenize_mm/native``, under a name that hashes the source and the flags (a stale build is
never loaded; concurrent builds each write their own file and rename it into place).
``make install`` builds it (``tools/check_install.py``).

Without a C compiler, or with ``TOKENIZE_MM_FUSED_VQ=0``, ``available()`` is false and
``nearest_code`` uses its matmul path (warned once, with the reason).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from torch import Tensor

NATIVE_DIR = Path(__file__).resolve().parent / "native"
SOURCES = ("nearest_code.c", "nearest_code_kernel.h")
FLAGS = ("-O3", "-std=c11", "-shared", "-fPIC", "-pthread", "-fno-fast-math")
# OpenMP first: its libgomp.so.1 resolves to the copy torch loaded, so the kernel's threads are
# torch's intra-op pool; without OpenMP support the kernel starts POSIX threads of its own.
THREADING = (("-fopenmp",), ())
# Variant ids of the C side (``tmm_best_variant``); the portable one runs everywhere.
VARIANTS = {"portable": 0, "avx2": 1, "avx512": 2}
# Each thread keeps 8 score lines of K floats (128 MiB at this bound); larger codebooks take the
# matmul path.
MAX_CODES = 1 << 22
_ERRORS = {1: "out of memory", 2: "variant not supported by this CPU"}


class FusedKernelError(RuntimeError):
    """The fused kernel could not be built, loaded or run."""


def cache_dir() -> Path:
    """Where built kernels are kept."""
    if path := os.environ.get("TOKENIZE_MM_NATIVE_DIR"):
        return Path(path)
    user = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(user) / "tokenize_mm" / "native"


def _compiler() -> str | None:
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def _library_path(flags: tuple[str, ...]) -> Path:
    digest = hashlib.sha256()
    for name in SOURCES:
        digest.update((NATIVE_DIR / name).read_bytes())
    digest.update(" ".join(flags).encode() + platform.machine().encode())
    return cache_dir() / f"nearest_code-{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """The kernel's shared library, compiled now unless a build of this source is cached: with
    OpenMP where the compiler has it, else with POSIX threads.

    Raises:
        FusedKernelError: no C compiler, or the compiler failed (its message included).
    """
    cc, errors = _compiler(), []
    for threading in THREADING:  # the preferred build, compiled if need be, before a fallback
        path = _library_path((*FLAGS, *threading))
        if path.exists():
            return path
        if cc is None:
            continue
        try:
            return _compile(cc, (*FLAGS, *threading), path)
        except FusedKernelError as err:
            errors.append(str(err))
    if cc is None:
        raise FusedKernelError("no C compiler found (set CC, or install cc / gcc / clang)")
    raise FusedKernelError("\n".join(errors))


def _compile(cc: str, flags: tuple[str, ...], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    cmd = [cc, *flags, str(NATIVE_DIR / SOURCES[0]), "-o", tmp, "-lm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise FusedKernelError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
        os.replace(tmp, path)  # atomic: a concurrent build or a reader sees a whole library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.cache
def _library() -> ctypes.CDLL:
    return load_library(build())


def load_library(path: Path) -> ctypes.CDLL:
    """The kernel library at ``path`` with its functions' C signatures declared."""
    lib = ctypes.CDLL(str(path))
    lib.tmm_nearest_code.restype = ctypes.c_int
    lib.tmm_nearest_code.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.tmm_best_variant.restype = ctypes.c_int
    lib.tmm_best_variant.argtypes = []
    return lib


@functools.cache
def available() -> bool:
    """Whether the kernel is built and loads here (warns once, with the reason, when not)."""
    if os.environ.get("TOKENIZE_MM_FUSED_VQ", "1") == "0":
        return False
    try:
        _library()
    except (FusedKernelError, OSError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"tokenize_mm: the fused nearest-code kernel is unavailable ({err}); nearest_code "
            "uses a matmul and an argmin instead (slower; codes can differ at float rounding)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


def best_variant() -> str:
    """The fastest variant this CPU runs: ``avx512``, ``avx2`` or ``portable``."""
    code = _library().tmm_best_variant()
    return next(name for name, v in VARIANTS.items() if v == code)


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
        threads: POSIX threads over contiguous row ranges; the codes do not depend on it.
        variant: ``avx512``, ``avx2`` or ``portable``; None picks ``best_variant()``.

    Returns:
        int64 tensor (N,).

    Raises:
        FusedKernelError: the kernel is unavailable, or the variant does not run on this CPU.
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
    if variant is not None and variant not in VARIANTS:
        raise ValueError(f"fused_nearest_code: variant must be one of {sorted(VARIANTS)}, got {variant!r}")  # fmt: skip
    x, codebook, sqnorm = x.contiguous(), codebook.contiguous(), codebook_sqnorm.contiguous()
    out = torch.empty(n, dtype=torch.long)
    if n == 0 or d == 0:
        return out.zero_()
    rc = _library().tmm_nearest_code(
        x.data_ptr(), n, d, codebook.data_ptr(), sqnorm.data_ptr(), k, out.data_ptr(),
        -1 if variant is None else VARIANTS[variant], threads,
    )  # fmt: skip
    if rc != 0:
        raise FusedKernelError(f"fused_nearest_code: {_ERRORS.get(rc, f'error {rc}')} (variant {variant})")  # fmt: skip
    return out
