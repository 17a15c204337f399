"""Nearest-code assignment speed against the machine's float32 matmul speed.

Measures, in one run on one machine: (a) GFLOP/s of a large square float32 matmul, (b) GFLOP/s of
``nearest_code`` counting 2·N·K·D flops (the fused kernel on the CPU), (c) the same for its
matmul path (``fused=False``), for ``torch.cdist(x, E).argmin(1)`` and for EnCodec's
``EuclideanCodebook.quantize``, and (d) the matmul path at several ``chunk_rows`` for the default
configuration (K = 1024). Each timing is the median of repeated calls after a warm-up.

``benchmarks/tokenizers.py`` imports the helpers here (``timeit``, ``matmul_case``,
``measure_assignment``, ``cpu_name``, ``write_outputs``), so both scripts time and compare alike.

    .venv/bin/python benchmarks/vq_assign.py [--quick] [--out PATH.json] [--md PATH.md]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from encodec.quantization.core_vq import EuclideanCodebook

from tokenize_mm.tokenizers import kernels
from tokenize_mm.tokenizers.quant import fused
from tokenize_mm.tokenizers.quant.vector import default_chunk_rows, nearest_code

METHODS = ("nearest_code", "matmul_argmin", "cdist_argmin", "encodec_quantize")


def timeit(fns: dict, min_repeats: int, min_seconds: float) -> dict[str, dict[str, float]]:
    """Median and best seconds per call of each fn(), after a warm-up call of each.

    The functions run in round-robin rounds, so that load from other processes on a shared
    machine falls on all of them alike and their ratios stay honest. A full garbage collection
    runs before each call, outside the clock, so that no function pays for the garbage another
    left behind; the collector stays on while a function runs, so its own garbage counts.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_repeats or (time.perf_counter() - start < min_seconds and rounds < 100):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {
        name: {"median_s": statistics.median(t), "best_s": min(t), "repeats": len(t)}
        for name, t in times.items()
    }


def load_average() -> float | None:
    """The 1-minute load average: other processes competing for the cores while we measure."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def machine_facts(load_start: float | None) -> dict[str, object]:
    """What a record says of the machine: CPU, cores, torch threads and version, Python, the load
    average at the start (``load_start``, taken before measuring) and now, the date (UTC)."""
    import datetime

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_start": load_start, "load_end": load_average(),
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}  # fmt: skip


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_case(size: int) -> tuple[dict[str, Callable[[], object]], int]:
    """The machine's reference speed: a float32 (size × size) @ (size × size) matmul.

    Returns a ``timeit`` entry named ``"matmul"`` and its flop count (2·size³); time it in the same
    rounds as the code it is compared with, and turn the stats into rows with ``gflops_rows``.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    return {"matmul": lambda: torch.mm(a, b)}, 2 * size**3


def gflops_rows(stats: dict, flops: int, matmul_flops: int, **fields) -> list[dict]:
    """Rows of GFLOP/s and ratio to the matmul timed in the same rounds (``stats["matmul"]``)."""
    stats = dict(stats)
    mm = matmul_flops / stats.pop("matmul")["median_s"] / 1e9
    out = []
    for name, t in stats.items():
        g = flops / t["median_s"] / 1e9
        out.append(
            {"method": name, **fields, **t, "gflops": g, "matmul_gflops": mm, "ratio": g / mm}
        )
    return out


def vector_variants() -> list[str]:
    """The fused kernel's vector variants this CPU runs (none where the kernel is unavailable)."""
    if not fused.available():
        return []
    best = kernels.VARIANTS[fused.best_variant()]
    return [v for v, i in kernels.VARIANTS.items() if 0 < i <= best]


def assignment_methods(x: torch.Tensor, codebook: torch.Tensor, names: Sequence[str]) -> dict:
    """``timeit`` entries assigning the rows of x (N, D) to the codebook (K, D), by name;
    ``fused_<variant>`` is the fused kernel's variant (``vector_variants``) on torch's threads."""
    sqnorm = codebook.pow(2).sum(1)
    make = {
        f"fused_{v}": lambda v=v: (
            lambda: fused.fused_nearest_code(
                x, codebook, sqnorm, threads=torch.get_num_threads(), variant=v
            )
        )
        for v in vector_variants()
    }
    make |= {
        # the fused kernel on the CPU (quant/fused.py)
        "nearest_code": lambda: lambda: nearest_code(x, codebook),
        # nearest_code's matmul path: addmm per block of rows, then the grouped argmin
        "matmul_argmin": lambda: lambda: nearest_code(x, codebook, fused=False),
        "cdist_argmin": lambda: lambda: torch.cdist(x, codebook).argmin(1),
        # the chunked product x Eᵀ alone, as nearest_code blocks it, with no bias and no argmin:
        # the ceiling of any method that scores with a matmul and then reduces
        "scores_only": lambda: _scores_only(x, codebook),
        "encodec_quantize": lambda: _encodec_quantize(codebook, x),
    }
    return {name: make[name]() for name in names}


def _scores_only(x: torch.Tensor, codebook: torch.Tensor) -> Callable[[], None]:
    rows = min(default_chunk_rows(codebook.shape[0]), x.shape[0])
    block, codebook_t = x.new_empty(rows, codebook.shape[0]), codebook.t()

    def run() -> None:
        for start in range(0, x.shape[0], rows):
            chunk = x[start : start + rows]
            torch.mm(chunk, codebook_t, out=block[: chunk.shape[0]])

    return run


def _encodec_quantize(codebook: torch.Tensor, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    encodec_codebook = EuclideanCodebook(codebook.shape[1], codebook.shape[0])
    encodec_codebook.embed.copy_(codebook)
    return lambda: encodec_codebook.quantize(x)


def measure_assignment(
    n: int, k: int, d: int, square: int, repeats: int, seconds: float, methods=METHODS
) -> list[dict]:
    """Assignment of N random vectors to K random codes of dimension D, one row per method:
    GFLOP/s (2·N·K·D flops) and the ratio to a ``square``³ matmul timed in the same rounds."""
    x, codebook = torch.randn(n, d), torch.randn(k, d)
    matmul, matmul_flops = matmul_case(square)
    stats = timeit({**matmul, **assignment_methods(x, codebook, methods)}, repeats, seconds)
    return gflops_rows(stats, 2 * n * k * d, matmul_flops, N=n, K=k, D=d)


def fused_kernel_name() -> str:
    """The fused kernel's variant on this CPU, or why it is not used."""
    return fused.best_variant() if fused.available() else "unavailable (matmul path)"


def write_outputs(json_path: str | Path, data: dict, md_path: str | Path, markdown: str) -> None:
    """Write the machine-readable results and the markdown, creating folders as needed."""
    for path, text in [(json_path, json.dumps(data, indent=2)), (md_path, markdown)]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


def chunk_sweep(n: int, k: int, d: int, chunks: list[int], square: int, reps: int, secs: float):
    """``nearest_code``'s matmul path at several ``chunk_rows``, with the matmul timed in the same
    rounds."""
    x, codebook = torch.randn(n, d), torch.randn(k, d)
    matmul, matmul_flops = matmul_case(square)
    variants = {
        f"chunk_rows={c}": lambda c=c: nearest_code(x, codebook, chunk_rows=c, fused=False)
        for c in chunks
    }
    stats = timeit({**matmul, **variants}, reps, secs)
    return gflops_rows(stats, 2 * n * k * d, matmul_flops, N=n, K=k, D=d)


def markdown_table(rows: list[dict], sweep: list[dict], meta: dict, sizes, dims) -> str:
    n, square, mm = rows[0]["N"], meta["matmul_size"], meta["matmul_gflops_median"]
    lo, hi = meta["matmul_gflops_range"]
    k0, d0 = sweep[0]["K"], sweep[0]["D"]
    lines = [
        "# VQ nearest-code assignment against matmul",
        "",
        f"Command: `python {' '.join(sys.argv)}`",
        "",
        f"Nearest-code assignment, N = {n} float32 vectors, {meta['threads']} threads, "
        f"{meta['cpu']}, torch {meta['torch']}, fused kernel: {meta['fused_kernel']}. Float32 matmul {square}^3: **{mm:.1f} GFLOP/s** "
        f"(median over the runs; range {lo:.1f}-{hi:.1f}). "
        "Cells: GFLOP/s counting 2·N·K·D flops, and the ratio to the matmul timed in the same "
        "interleaved rounds.",
        "",
        "| K | D | matmul | nearest_code (fused) | matmul + argmin | cdist + argmin "
        "| encodec quantize |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    by = {(r["K"], r["D"], r["method"]): r for r in rows}
    for k in sizes:
        for d in dims:
            cells = [by[(k, d, m)] for m in METHODS]
            cols = " | ".join(f"{r['gflops']:.1f} ({r['ratio']:.0%})" for r in cells)
            lines.append(f"| {k} | {d} | {cells[0]['matmul_gflops']:.1f} | {cols} |")
    lines += [
        "",
        f"nearest_code's matmul path by chunk_rows at K = {k0}, D = {d0} "
        f"(default {default_chunk_rows(k0)}):",
        "",
        "| chunk_rows | GFLOP/s | ratio to matmul |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method'].split('=')[1]} | {r['gflops']:.1f} | {r['ratio']:.0%} |" for r in sweep
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    parser.add_argument("--out", default="benchmarks/results/vq_assign.json")
    parser.add_argument("--md", default="benchmarks/results/vq_assign.md")
    args = parser.parse_args()

    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(threads or 1)
    torch.manual_seed(0)
    if args.quick:
        square, n, sizes, dims, chunks, reps, secs = 256, 1024, [256], [32], [256, 1024], 3, 0.0
    else:
        square, n, sizes, dims = 2048, 16384, [256, 1024, 8192], [32, 64, 256]
        chunks, reps, secs = [128, 256, 512, 1024, 2048, 4096, 16384], 5, 1.0

    rows: list[dict] = []
    matmul_gflops: list[float] = []
    for k in sizes:
        for d in dims:
            config = measure_assignment(n, k, d, square, reps, secs)
            rows += config
            matmul_gflops.append(config[0]["matmul_gflops"])
            print(
                f"K={k:5d} D={d:3d} matmul={matmul_gflops[-1]:6.1f} "
                + " ".join(f"{r['method']}={r['gflops']:6.1f}" for r in config)
                + " GFLOP/s",
                flush=True,
            )
    k0, d0 = (1024, 64) if not args.quick else (256, 32)
    sweep = chunk_sweep(n, k0, d0, chunks, square, reps, secs)
    matmul_gflops.append(sweep[0]["matmul_gflops"])

    meta = {
        "cpu": cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "fused_kernel": fused_kernel_name(),
        "matmul_size": square,
        "matmul_gflops_median": statistics.median(matmul_gflops),
        "matmul_gflops_range": [min(matmul_gflops), max(matmul_gflops)],
        "default_chunk_rows": {k: default_chunk_rows(k) for k in sizes},
    }
    markdown = markdown_table(rows, sweep, meta, sizes, dims)
    print()
    print(markdown)
    write_outputs(
        args.out, {"meta": meta, "results": rows, "chunk_sweep": sweep}, args.md, markdown
    )


if __name__ == "__main__":
    main()
