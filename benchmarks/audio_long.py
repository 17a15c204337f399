"""Peak memory of encoding a long recording chunk by chunk, against encoding it in one piece.

A recording of ``--minutes`` (default 10) of noise at 24 kHz goes through the default 50 Hz codec
at full width (random weights: memory does not depend on them), once with the tokenizer's chunked
path (``chunk_seconds`` 30, 1 s of left context) and once as a single piece, each in a fresh child
process whose peak resident memory (``ru_maxrss``) is read after the encode. Also checks that both
give exactly ceil(d × 50) frames.

    .venv/bin/python benchmarks/audio_long.py [--minutes 10] [--md PATH]
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from scratch import scratch

CHILD = """
import json, resource, sys, time, torch
from tokenize_mm import AudioTokenizer
from tokenize_mm.tokenizers.audio.tokenizer import _make_info
from tokenize_mm.tokenizers.arch import arch_dict
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
minutes, chunk = float(sys.argv[1]), float(sys.argv[2])
config = CodecConfig(sample_rate=24000, channels=1, ratios=(8, 5, 4, 3), n_filters=32,
                     n_residual_layers=1, dimension=128, lstm=2, causal=True, num_codebooks=1,
                     codebook_size=1024, codebook_dim=None, commitment_weight=1.0)
torch.manual_seed(0)
tok = AudioTokenizer(CodecModel(config), _make_info(config), {"arch": arch_dict(config), "fit": {}},
                     chunk_seconds=chunk)
wav = 0.1 * torch.randn(1, int(minutes * 60 * 24000))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
enc = tok.encode((wav, 24000))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": enc.num_steps, "seconds": seconds,
                  "rss_before_mb": before / 1024, "rss_peak_mb": peak / 1024}))
"""


def run_child(minutes: float, chunk: float) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(minutes), str(chunk)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument(
        "--md",
        default=scratch("audio_long.md"),
        help="default: %(default)s (docs/results/audio_long.md updates the record)",
    )
    args = p.parse_args()
    expected = int(args.minutes * 60 * 50)
    rows = {"chunked (30 s + 1 s context)": run_child(args.minutes, 30.0),
            "one piece": run_child(args.minutes, 1e9)}  # fmt: skip
    lines = [
        f"# Encoding a {args.minutes:g}-minute recording: chunked against one piece",
        "",
        f"Command: `{shlex.join(sys.orig_argv)}` ({time.strftime('%Y-%m-%d')}); default 50 Hz "
        "codec at full width, 24 kHz noise, each case in a fresh process; peak resident memory "
        "from `ru_maxrss` (the input waveform alone is "
        f"{args.minutes * 60 * 24000 * 4 / 2**20:.0f} MiB).",
        "",
        "| path | frames (expected) | encode seconds | peak RSS MiB | RSS before encode MiB |",
        "|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['frames']} ({expected}) | {r['seconds']:.1f} | "
            f"{r['rss_peak_mb']:.0f} | {r['rss_before_mb']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    Path(args.md).parent.mkdir(parents=True, exist_ok=True)
    Path(args.md).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
