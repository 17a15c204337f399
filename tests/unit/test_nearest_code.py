"""The fused nearest-code kernel (``quant/fused.py``): every variant this CPU runs returns bitwise
the portable variant's codes for any thread count, the codes are the float64 nearest up to
rounding at near-ties, ties go to the lowest index, and a build without a compiler falls back."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_same_nearest

from tokenize_mm.tokenizers import kernels
from tokenize_mm.tokenizers.quant import fused
from tokenize_mm.tokenizers.quant.vector import nearest_code


def _runnable() -> list[str]:
    best = kernels.best_variant()
    return [v for v in kernels.VARIANTS if kernels.VARIANTS[v] <= kernels.VARIANTS[best]]


def _float64_nearest(x, codebook):
    return torch.cdist(x.double(), codebook.double()).argmin(1)


def _assert_nearest_up_to_rounding(codes, x, codebook):
    """Each code is a float64 nearest entry, or as near as makes no float32 difference."""
    assert_same_nearest(codes, _float64_nearest(x, codebook), x, codebook)


# Shapes around every tile edge: rows not a multiple of 6 or 8, codes not a multiple of 16 or 32,
# D = 1, a single row, a single code.
SHAPES = [(1, 1, 1), (7, 5, 3), (13, 17, 1), (100, 33, 9), (1001, 1024, 32), (95, 100, 64),
          (50, 1000, 256)]  # fmt: skip


@pytest.mark.parametrize(("n", "k", "d"), SHAPES)
def test_every_variant_and_thread_count_gives_the_same_codes(n, k, d):
    gen = torch.Generator().manual_seed(n + k + d)
    x, codebook = torch.randn(n, d, generator=gen), torch.randn(k, d, generator=gen)
    sqnorm = codebook.pow(2).sum(1)
    reference = fused.fused_nearest_code(x, codebook, sqnorm, threads=1, variant="portable")
    assert reference.dtype == torch.int64 and reference.shape == (n,)
    _assert_nearest_up_to_rounding(reference, x, codebook)
    for variant in _runnable():
        for threads in (1, 2, 3, 7):
            codes = fused.fused_nearest_code(x, codebook, sqnorm, threads=threads, variant=variant)
            assert torch.equal(codes, reference), (variant, threads)


def test_nearest_code_takes_the_fused_kernel_on_cpu_float32():
    gen = torch.Generator().manual_seed(0)
    x, codebook = torch.randn(600, 16, generator=gen), torch.randn(300, 16, generator=gen)
    sqnorm = codebook.pow(2).sum(1)
    expected = fused.fused_nearest_code(x, codebook, sqnorm, variant="portable")
    assert torch.equal(nearest_code(x, codebook), expected)
    assert torch.equal(nearest_code(x, codebook, fused=True), expected)
    # non-contiguous inputs are the same vectors
    assert torch.equal(nearest_code(x.t().contiguous().t(), codebook[:, :].t().contiguous().t()),
                       expected)  # fmt: skip
    _assert_nearest_up_to_rounding(nearest_code(x, codebook, fused=False), x, codebook)
    # float64 takes the matmul path
    assert torch.equal(nearest_code(x.double(), codebook.double()), _float64_nearest(x, codebook))


def test_exact_ties_go_to_the_lowest_index():
    # Small integers make every score exact. Entry i ties with i + 1 (same tile, next lane),
    # i + 40 (another tile) and i + 120; rows are entries, so the tie is at the minimum.
    base = torch.randint(-3, 4, (40, 4), generator=torch.Generator().manual_seed(1)).float()
    codebook = torch.cat([base.repeat_interleave(2, 0), base, base])  # (160, 4)
    x = codebook[torch.randint(0, 160, (333,), generator=torch.Generator().manual_seed(2))]
    sqnorm = codebook.pow(2).sum(1)
    first = torch.tensor(
        [next(j for j in range(160) if torch.equal(codebook[j], row)) for row in x]
    )
    scores = sqnorm - 2 * x @ codebook.t()
    assert torch.equal(scores.argmin(1), first)  # the test's own premise: exact, first index
    for variant in _runnable():
        codes = fused.fused_nearest_code(x, codebook, sqnorm, threads=2, variant=variant)
        assert torch.equal(codes, first), variant


def test_nan_scores_never_win():
    codebook = torch.randn(50, 8, generator=torch.Generator().manual_seed(3))
    codebook[[0, 17, 33]] = float("nan")
    x = torch.randn(40, 8, generator=torch.Generator().manual_seed(4))
    x[5] = float("nan")
    ok = torch.ones(40, dtype=torch.bool)
    ok[5] = False
    clean = torch.ones(50, dtype=torch.bool)
    clean[[0, 17, 33]] = False
    kept = torch.nonzero(clean).squeeze(1)
    for variant in _runnable():
        codes = fused.fused_nearest_code(x, codebook, codebook.pow(2).sum(1), variant=variant)
        assert not torch.isin(codes[ok], torch.tensor([0, 17, 33])).any(), variant
        assert torch.equal(codes[ok], kept[_float64_nearest(x[ok], codebook[clean])]), variant
        assert codes[5] == 0, variant  # every score NaN: code 0


def test_fused_rejects_what_it_cannot_run():
    x, codebook = torch.randn(4, 3), torch.randn(5, 3)
    sqnorm = codebook.pow(2).sum(1)
    with pytest.raises(ValueError, match="x must be a 2-d float32 CPU tensor"):
        fused.fused_nearest_code(x.double(), codebook, sqnorm)
    with pytest.raises(ValueError, match="do not match"):
        fused.fused_nearest_code(x, torch.randn(5, 2), sqnorm)
    with pytest.raises(ValueError, match="threads"):
        fused.fused_nearest_code(x, codebook, sqnorm, threads=0)
    with pytest.raises(ValueError, match="variant"):
        fused.fused_nearest_code(x, codebook, sqnorm, variant="sse9")
    for variant in set(kernels.VARIANTS) - set(_runnable()):
        with pytest.raises(kernels.KernelError, match="not supported by this CPU"):
            fused.fused_nearest_code(x, codebook, sqnorm, variant=variant)
    assert fused.fused_nearest_code(x[:0], codebook, sqnorm).shape == (0,)


def test_build_is_cached_under_a_hash_of_the_source(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENIZE_MM_NATIVE_DIR", str(tmp_path))
    path = kernels.build()
    assert path.parent == tmp_path and path.name.startswith("kernels-")
    stamp = path.stat().st_mtime_ns
    assert kernels.build() == path and path.stat().st_mtime_ns == stamp  # not rebuilt
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_without_a_compiler_nearest_code_falls_back_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENIZE_MM_NATIVE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(kernels, "_compiler", lambda: None)
    kernels.clear_caches()
    try:
        with pytest.warns(RuntimeWarning, match="no C compiler found"):
            assert not fused.available()
        x, codebook = torch.randn(200, 8), torch.randn(64, 8)
        _assert_nearest_up_to_rounding(nearest_code(x, codebook), x, codebook)
        with pytest.raises(kernels.KernelError, match="no C compiler"):
            nearest_code(x, codebook, fused=True)
    finally:
        kernels.clear_caches()


def test_the_posix_threads_build_gives_the_same_codes(tmp_path, monkeypatch):
    """The build a compiler without OpenMP makes (``THREADING``'s fallback) threads alike."""
    monkeypatch.setenv("TOKENIZE_MM_NATIVE_DIR", str(tmp_path))
    monkeypatch.setattr(kernels, "THREADING", ((),))
    plain = kernels.load_library(kernels.build())
    assert "-fopenmp" not in kernels.FLAGS
    gen = torch.Generator().manual_seed(5)
    x, codebook = torch.randn(777, 24, generator=gen), torch.randn(130, 24, generator=gen)
    sqnorm = codebook.pow(2).sum(1)
    expected = fused.fused_nearest_code(x, codebook, sqnorm, threads=1, variant="portable")
    monkeypatch.setattr(kernels, "library", lambda: plain)
    for threads in (1, 2, 5):
        assert torch.equal(fused.fused_nearest_code(x, codebook, sqnorm, threads=threads), expected)
