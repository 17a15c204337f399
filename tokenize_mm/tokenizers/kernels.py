"""The native kernels: plain C built once with the system compiler, cached, called by ctypes.

``native/`` holds the C sources of one shared library: the fused nearest-code kernel
(``nearest_code.c``, used by ``quant/fused.py``) and the ELU (``elu.c``, used by ``audio/elu.py``).
Each kernel has vector variants (nearest code: AVX-512 and AVX2 + FMA; ELU: AVX2 + FMA) and a
portable one that compute the same numbers, so the kernels' results are the same on every CPU
that runs them (where the library is unavailable, or only its slow portable ELU runs, callers
take torch's paths, whose results can differ at rounding). The sources have no Python or torch
headers: the library compiles in about a second, so it is built on first use into
``$TOKENIZE_MM_NATIVE_DIR``, else ``$XDG_CACHE_HOME/tokenize_mm/native`` or
``~/.cache/tokenize_mm/native``, under a name that hashes the sources and the flags (a stale build
is never loaded; concurrent builds each write their own file and rename it into place). ``make install`` builds it (``tools/check_install.py``).

Without a C compiler ``available()`` is false (warned once, with the reason) and every caller
takes its torch path.
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

NATIVE_DIR = Path(__file__).resolve().parent / "native"
SOURCES = ("nearest_code.c", "elu.c")  # compiled, in this order
HEADERS = ("nearest_code_kernel.h",)  # included by them: part of the build's hash
# -ffp-contract=off: only the fused multiply-adds the sources write (clang would fuse others)
FLAGS = (
    "-O3", "-std=c11", "-shared", "-fPIC", "-pthread", "-fno-fast-math", "-ffp-contract=off",
)  # fmt: skip
# OpenMP first: its libgomp.so.1 resolves to the copy torch loaded, so the kernels' threads are
# torch's intra-op pool; without OpenMP support the nearest-code kernel starts POSIX threads.
THREADING = (("-fopenmp",), ())
# Variant ids of the C side (``tmm_best_variant``); the portable one runs everywhere.
VARIANTS = {"portable": 0, "avx2": 1, "avx512": 2}


class KernelError(RuntimeError):
    """A native kernel could not be built, loaded or run."""


def cache_dir() -> Path:
    """Where built libraries are kept."""
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
    for name in (*SOURCES, *HEADERS):
        digest.update((NATIVE_DIR / name).read_bytes())
    digest.update(" ".join(flags).encode() + platform.machine().encode())
    return cache_dir() / f"kernels-{digest.hexdigest()[:16]}.so"


def build() -> Path:
    """The kernels' shared library, compiled now unless a build of these sources is cached: with
    OpenMP where the compiler has it, else with POSIX threads.

    Raises:
        KernelError: no C compiler, or the compiler failed (its message included).
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
        except KernelError as err:
            errors.append(str(err))
    if cc is None:
        raise KernelError("no C compiler found (set CC, or install cc / gcc / clang)")
    raise KernelError("\n".join(errors))


def _compile(cc: str, flags: tuple[str, ...], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    cmd = [cc, *flags, *(str(NATIVE_DIR / name) for name in SOURCES), "-o", tmp, "-lm"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise KernelError(f"{' '.join(cmd)} failed:\n{done.stderr.strip()}")
        os.replace(tmp, path)  # atomic: a concurrent build or a reader sees a whole library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


@functools.cache
def library() -> ctypes.CDLL:
    """The built library, loaded once.

    Raises:
        KernelError: it cannot be built. OSError: it cannot be loaded.
    """
    return load_library(build())


def load_library(path: Path) -> ctypes.CDLL:
    """The library at ``path`` with its functions' C signatures declared."""
    lib = ctypes.CDLL(str(path))
    lib.tmm_nearest_code.restype = ctypes.c_int
    lib.tmm_nearest_code.argtypes = [
        ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
        ctypes.c_int64, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.tmm_elu.restype = ctypes.c_int
    lib.tmm_elu.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int,
    ]  # fmt: skip
    lib.tmm_elu_backward.restype = ctypes.c_int
    lib.tmm_elu_backward.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int,
        ctypes.c_int,
    ]  # fmt: skip
    lib.tmm_best_variant.restype = ctypes.c_int
    lib.tmm_best_variant.argtypes = []
    return lib


@functools.cache
def available() -> bool:
    """Whether the library is built and loads here (warns once, with the reason, when not)."""
    try:
        library()
    except (KernelError, OSError, subprocess.SubprocessError) as err:
        warnings.warn(
            f"tokenize_mm: the native kernels are unavailable ({err}); nearest-code assignment "
            "and the codec's ELU take their torch paths instead (slower; results can differ at "
            "float rounding)",
            RuntimeWarning,
            stacklevel=2,
        )
        return False
    return True


@functools.cache
def best_variant() -> str:
    """The fastest variant this CPU runs: ``avx512``, ``avx2`` or ``portable`` (asked once: every
    ``FastELU`` forward reads it)."""
    code = library().tmm_best_variant()
    return next(name for name, v in VARIANTS.items() if v == code)


def variant_id(variant: str | None) -> int:
    """The C side's id of ``variant``; -1 (the best this CPU runs) for None.

    Raises:
        ValueError: an unknown name.
    """
    if variant is None:
        return -1
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, got {variant!r}")
    return VARIANTS[variant]


def clear_caches() -> None:
    """Forget the loaded library and ``available()``'s answer (after the environment changed)."""
    library.cache_clear()
    available.cache_clear()
    best_variant.cache_clear()
