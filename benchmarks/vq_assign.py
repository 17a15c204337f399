"""Nearest-code assignment speed against the machine's float32 matmul speed.

Measures, in one run on one machine: (a) GFLOP/s of a large square float32 matmul, (b) GFLOP/s of
``nearest_code`` counting 2·N·K·D flops, (c) the same for ``torch.cdist(x, E).argmin(1)`` and for
EnCodec's ``EuclideanCodebook.quantize``, and (d) ``nearest_code`` at several ``chunk_rows`` for
the default configuration (K = 1024). Each timing is the median of repeated calls after a warm-up.

    .venv/bin/python benchmarks/vq_assign.py [--quick] [--out PATH.json] [--md PATH.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from encodec.quantization.core_vq import EuclideanCodebook

from tokenize_mm.tokenizers.quantizer import default_chunk_rows, nearest_code


def timeit(fns: dict, min_repeats: int, min_seconds: float) -> dict[str, dict[str, float]]:
    """Median and best seconds per call of each fn(), after a warm-up call of each.

    The functions run in round-robin rounds, so that load from other processes on a shared
    machine falls on all of them alike and their ratios stay honest.
    """
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_repeats or (time.perf_counter() - start < min_seconds and rounds < 100):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {
        name: {"median_s": statistics.median(t), "best_s": min(t), "repeats": len(t)}
        for name, t in times.items()
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


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
    a, b = torch.randn(square, square), torch.randn(square, square)
    matmul = {"matmul": lambda: torch.mm(a, b)}
    matmul_gflops: list[float] = []

    def record(stats: dict, flops: int, **fields) -> list[dict]:
        """Rows of GFLOP/s and ratio to the matmul timed in the same rounds."""
        mm = 2 * square**3 / stats.pop("matmul")["median_s"] / 1e9
        matmul_gflops.append(mm)
        out = []
        for name, t in stats.items():
            g = flops / t["median_s"] / 1e9
            out.append(
                {"method": name, **fields, **t, "gflops": g, "matmul_gflops": mm, "ratio": g / mm}
            )
        return out

    rows = []
    for k in sizes:
        for d in dims:
            x, codebook = torch.randn(n, d), torch.randn(k, d)
            encodec_codebook = EuclideanCodebook(d, k)
            encodec_codebook.embed.copy_(codebook)
            methods = {
                "nearest_code": lambda x=x, e=codebook: nearest_code(x, e),
                "cdist_argmin": lambda x=x, e=codebook: torch.cdist(x, e).argmin(1),
                "encodec_quantize": lambda x=x, c=encodec_codebook: c.quantize(x),
            }
            rows += record(timeit({**matmul, **methods}, reps, secs), 2 * n * k * d, N=n, K=k, D=d)
            print(
                f"K={k:5d} D={d:3d} matmul={matmul_gflops[-1]:6.1f} "
                + " ".join(f"{r['method']}={r['gflops']:6.1f}" for r in rows[-3:])
                + " GFLOP/s",
                flush=True,
            )

    k0, d0 = (1024, 64) if not args.quick else (256, 32)
    x, codebook = torch.randn(n, d0), torch.randn(k0, d0)
    variants = {
        f"chunk_rows={c}": lambda c=c: nearest_code(x, codebook, chunk_rows=c) for c in chunks
    }
    sweep = record(timeit({**matmul, **variants}, reps, secs), 2 * n * k0 * d0, N=n, K=k0, D=d0)

    mm_median = statistics.median(matmul_gflops)
    meta = {
        "cpu": cpu_name(),
        "threads": threads,
        "torch": torch.__version__,
        "matmul_size": square,
        "matmul_gflops_median": mm_median,
        "matmul_gflops_range": [min(matmul_gflops), max(matmul_gflops)],
        "default_chunk_rows": {k: default_chunk_rows(k) for k in sizes},
    }
    by = {(r["K"], r["D"], r["method"]): r for r in rows}
    lines = [
        f"Nearest-code assignment, N = {n} float32 vectors, {threads} threads, {meta['cpu']}, "
        f"torch {torch.__version__}. Float32 matmul {square}^3: **{mm_median:.1f} GFLOP/s** "
        f"(median over the runs; range {min(matmul_gflops):.1f}-{max(matmul_gflops):.1f}). "
        "Cells: GFLOP/s counting 2·N·K·D flops, and the ratio to the matmul timed in the same "
        "interleaved rounds.",
        "",
        "| K | D | matmul | nearest_code | cdist + argmin | encodec quantize |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for k in sizes:
        for d in dims:
            cells = [by[(k, d, m)] for m in ("nearest_code", "cdist_argmin", "encodec_quantize")]
            cols = " | ".join(f"{r['gflops']:.1f} ({r['ratio']:.0%})" for r in cells)
            lines.append(f"| {k} | {d} | {cells[0]['matmul_gflops']:.1f} | {cols} |")
    lines += [
        "",
        f"nearest_code by chunk_rows at K = {k0}, D = {d0} (default {default_chunk_rows(k0)}):",
        "",
        "| chunk_rows | GFLOP/s | ratio to matmul |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {r['method'].split('=')[1]} | {r['gflops']:.1f} | {r['ratio']:.0%} |" for r in sweep
    ]
    markdown = "\n".join(lines) + "\n"
    print()
    print(markdown)

    for path, text in [
        (args.out, json.dumps({"meta": meta, "results": rows, "chunk_sweep": sweep}, indent=2)),
        (args.md, markdown),
    ]:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)


if __name__ == "__main__":
    main()
