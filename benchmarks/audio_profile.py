"""Where batched audio encoding spends its time on the CPU, and what the exact shortcuts save.

Five measurements on one machine in one run, all on one torch thread:

1. ``EncodecTokenizer.encode_batch`` of ``--clips`` clips (the 24 kHz EnCodec architecture,
   K = 8, checkpoint-shaped random weights, as ``audio_encode.py``) with one worker, under the
   torch profiler: self time per op (the native ELU's calls as ``tokenize_mm::elu``).
2. Reflection padding: ``F.pad(mode="reflect")`` against ``reflect_pad`` (slices), on the
   encoder's first activation shape.
3. Codebook scoring: EnCodec's ``EuclideanCodebook.quantize`` against ``encodec_nearest_code``
   (the same indices) on the frames of 194 s of audio.
4. The encoder's convolution shapes, channels-first (``conv1d``, what the package runs) against
   channels-last (``conv2d`` on an NHWC tensor, layout converted outside the clock): what a
   layout change could gain, and the largest difference in the outputs it would bring.
5. ELU of the encoder's first activation shape: torch's against the native kernel
   (``audio/elu.py``), and the largest difference between them in units of the last place.

Each timing is the median of repeated calls after a warm-up.

    .venv/bin/python benchmarks/audio_profile.py [--clips 16] [--out PATH.json] [--md PATH.md]
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from encodec.quantization.core_vq import EuclideanCodebook

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audio_encode import RATE, make_clips, pretrained_from_state, random_state
from scratch import scratch
from vq_assign import cpu_name, write_outputs

from tokenize_mm.tokenizers import kernels
from tokenize_mm.tokenizers.audio.elu import elu
from tokenize_mm.tokenizers.audio.padding import reflect_pad
from tokenize_mm.tokenizers.quant.vector import encodec_nearest_code

# (in channels, out channels, kernel, stride, input length): the 24 kHz encoder on a 5 s clip
CONV_SHAPES = [
    (1, 32, 7, 1, 120_000), (32, 16, 3, 1, 120_000), (16, 32, 1, 1, 120_000),
    (32, 64, 4, 2, 120_000), (64, 32, 3, 1, 60_000), (64, 128, 8, 4, 60_000),
    (128, 64, 3, 1, 15_000), (128, 256, 10, 5, 15_000), (256, 128, 3, 1, 3_000),
    (256, 512, 16, 8, 3_000), (512, 128, 7, 1, 375),
]  # fmt: skip


def median_ms(fn, repeats: int = 9) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def profile_encode(clips: int) -> dict:
    state = random_state(0)
    with tempfile.TemporaryDirectory() as folder:
        tok = pretrained_from_state(state, 8, Path(folder))
    items = [(c, RATE) for c in make_clips(clips, seed=1)]
    tok.encode_batch(items)  # warm-up; one torch thread = one worker
    with torch.profiler.profile() as prof:
        tok.encode_batch(items)
    rows = [(e.key, e.self_cpu_time_total / 1e3) for e in prof.key_averages()]
    total = sum(ms for _, ms in rows)
    rows = sorted(rows, key=lambda r: -r[1])[:12]
    return {"clips": clips, "total_ms": total,
            "ops": [{"op": k, "self_ms": ms, "share": ms / total} for k, ms in rows]}  # fmt: skip


def padding() -> dict:
    x = torch.randn(1, 32, 96_000)
    out = {}
    for left, right in [(6, 0), (2, 0), (0, 0)]:
        out[f"{left},{right}"] = {
            "reflect_ms": median_ms(lambda: F.pad(x, (left, right), mode="reflect")),  # noqa: B023
            "slices_ms": median_ms(lambda: reflect_pad(x, left, right)),  # noqa: B023
        }
    return out


def elu_paths() -> dict:
    """torch's ELU against the native kernel on a (1, 32, 1, 120000) channels-last input."""
    x = (2 * torch.randn(1, 32, 1, 120_000)).contiguous(memory_format=torch.channels_last)
    ours, theirs = elu(x), F.elu(x)
    step = (torch.nextafter(theirs, torch.tensor(float("inf"))) - theirs).abs()
    return {"torch_ms": median_ms(lambda: F.elu(x)), "native_ms": median_ms(lambda: elu(x)),
            "variant": kernels.best_variant(),
            "max_ulp_vs_torch": float(((ours - theirs).abs() / step).max())}  # fmt: skip


def codebook() -> dict:
    torch.manual_seed(0)
    book = EuclideanCodebook(128, 1024)
    book.embed.normal_()
    x = torch.randn(14_520, 128)  # 193.6 s at 75 frames a second
    same = torch.equal(book.quantize(x), encodec_nearest_code(x, book.embed))
    return {"frames": x.shape[0], "package_ms": median_ms(lambda: book.quantize(x), 5),
            "blocked_ms": median_ms(lambda: encodec_nearest_code(x, book.embed), 5),
            "identical": same}  # fmt: skip


def conv_layouts() -> list[dict]:
    out = []
    for cin, cout, k, s, length in CONV_SHAPES:
        x, w, b = torch.randn(1, cin, length), torch.randn(cout, cin, k), torch.randn(cout)
        x4 = x[:, :, None].contiguous(memory_format=torch.channels_last)
        w4 = w[:, :, None].contiguous(memory_format=torch.channels_last)
        ncw = median_ms(lambda: F.conv1d(x, w, b, stride=s), 5)  # noqa: B023
        nhwc = median_ms(lambda: F.conv2d(x4, w4, b, stride=(1, s)), 5)  # noqa: B023
        y1, y2 = F.conv1d(x, w, b, stride=s), F.conv2d(x4, w4, b, stride=(1, s))[:, :, 0]
        out.append({"shape": [cin, cout, k, s, length], "ncw_ms": ncw, "nhwc_ms": nhwc,
                    "max_abs_diff": float((y1 - y2).abs().max())})  # fmt: skip
    return out


def markdown(res: dict) -> str:
    m = res["meta"]
    lines = [
        "# Where batched audio encoding spends its time (CPU, one thread)", "",
        f"Command: `{m['command']}`", "",
        f"{m['cpu']}, torch {m['torch']}, 1 thread, {m['date']}.", "",
        f"## encode_batch of {res['profile']['clips']} clips, one worker: self time per op", "",
        f"Total self time {res['profile']['total_ms']:.0f} ms.", "",
        "| op | self ms | share |", "|---|---:|---:|",
    ]  # fmt: skip
    lines += [
        f"| {o['op']} | {o['self_ms']:.1f} | {o['share']:.1%} |" for o in res["profile"]["ops"]
    ]
    lines += ["", "## Reflection padding of a (1, 32, 96000) input", "",
              "| left, right | F.pad reflect ms | slices ms |", "|---|---:|---:|"]  # fmt: skip
    lines += [f"| {k} | {v['reflect_ms']:.2f} | {v['slices_ms']:.2f} |"
              for k, v in res["padding"].items()]  # fmt: skip
    c = res["codebook"]
    lines += ["", f"## Codebook scoring, {c['frames']} frames, D = 128, K = 1024", "",
              f"EuclideanCodebook.quantize {c['package_ms']:.1f} ms, encodec_nearest_code "
              f"{c['blocked_ms']:.1f} ms; identical indices: {c['identical']}.", "",
              "## The encoder's convolutions, channels-first against channels-last", "",
              "| C_in, C_out, k, stride, length | conv1d ms | NHWC conv2d ms | ratio | "
              "max abs difference |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    for r in res["convs"]:
        lines.append(f"| {', '.join(map(str, r['shape']))} | {r['ncw_ms']:.2f} | "
                     f"{r['nhwc_ms']:.2f} | {r['ncw_ms'] / r['nhwc_ms']:.2f} | "
                     f"{r['max_abs_diff']:.1e} |")  # fmt: skip
    ncw, nhwc = sum(r["ncw_ms"] for r in res["convs"]), sum(r["nhwc_ms"] for r in res["convs"])
    lines += ["", f"All shapes: {ncw:.1f} ms channels-first, {nhwc:.1f} ms channels-last "
              f"({ncw / nhwc:.2f} times)."]  # fmt: skip
    e = res["elu"]
    lines += ["", "## ELU of a (1, 32, 1, 120000) channels-last input", "",
              f"torch {e['torch_ms']:.2f} ms, native ({e['variant']}) {e['native_ms']:.2f} ms "
              f"({e['torch_ms'] / e['native_ms']:.1f} times); largest difference "
              f"{e['max_ulp_vs_torch']:.0f} ulp."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--out", default=scratch("audio_profile.json"))
    p.add_argument("--md", default=scratch("audio_profile.md"))
    args = p.parse_args()
    torch.set_num_threads(1)
    meta = {"command": shlex.join(sys.orig_argv), "cpu": cpu_name(),
            "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}  # fmt: skip
    res = {"meta": meta, "profile": profile_encode(args.clips), "padding": padding(),
           "codebook": codebook(), "convs": conv_layouts(), "elu": elu_paths()}  # fmt: skip
    md = markdown(res)
    print(md)
    write_outputs(args.out, res, args.md, md)


if __name__ == "__main__":
    main()
