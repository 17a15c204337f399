"""Batched audio encoding against the ``encodec`` package's per-clip loop, on one machine in one run.

Clips of 1 to 5 s at 24 kHz go through (a) the package's ``EncodecModel.encode`` one clip at a
time (its documented use), (b) ``EncodecTokenizer.encode`` one clip at a time and (c)
``EncodecTokenizer.encode_batch`` (``tokenize_mm/tokenizers/audio_batch.py``), all with the same
24 kHz architecture and the same weights: a checkpoint-shaped random initialisation with random
codebooks (the official weights need a download; speed does not depend on the weight values). Each
clip is zero-padded to whole frames for the package too, as the tokenizer does, so their codes can
be compared code by code. The machine's float32 matmul rate is timed in the same rounds, and each
method's rate is reported as GFLOP/s of the encoder (convolutions and matmuls counted by
``torch.utils.flop_counter``, LSTM layers analytically) and as a fraction of that matmul rate.
Also the real-time factor (compute seconds per second of audio) of the default 50 Hz codec
(``AudioTokenizer`` at the package's full width, K = 1, random weights).

    .venv/bin/python benchmarks/audio_encode.py [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import hashlib
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch
from vq_assign import cpu_name, write_outputs

from tokenize_mm import AudioTokenizer
from tokenize_mm.tokenizers.arch import arch_dict
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.tokenizer import _make_info

RATE, HOP = 24_000, 320


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timeit(fns: dict, device: torch.device, rounds: int) -> dict[str, dict[str, float]]:
    """Median and best seconds of each fn(), after a warm-up call of each; the functions run in
    round-robin rounds so that load from other processes falls on all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {
        n: {"median_s": statistics.median(t), "best_s": min(t), "repeats": len(t)}
        for n, t in times.items()
    }


def make_clips(n: int, seed: int) -> list[torch.Tensor]:
    """n mono clips (1, S) of 1 to 5 s: tones under a moving envelope plus noise."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s = int(RATE * (1 + 4 * float(torch.rand((), generator=g))))
        t = torch.arange(s) / RATE
        f = 100 + 900 * float(torch.rand((), generator=g))
        env = 0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t + float(torch.rand((), generator=g)))
        wav = 0.3 * env * torch.sin(2 * math.pi * f * t) + 0.05 * torch.randn(s, generator=g)
        out.append(wav[None])
    return out


def package_model(state: dict) -> torch.nn.Module:
    from encodec import EncodecModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = EncodecModel.encodec_model_24khz(pretrained=False)
    model.load_state_dict(state)
    return model.eval()


def random_state(seed: int) -> dict:
    from encodec import EncodecModel

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        state = EncodecModel.encodec_model_24khz(pretrained=False).state_dict()
    for key in state:
        if key.endswith("_codebook.embed"):
            state[key] = torch.randn_like(state[key])
        elif key.endswith("_codebook.inited"):
            state[key] = torch.ones_like(state[key])
    return state


def pretrained_from_state(state: dict, num_codebooks: int, folder: Path) -> AudioTokenizer:
    """Through the real offline path: a checkpoint file named by its sha256 prefix."""
    tmp = folder / "tmp.th"
    torch.save(state, tmp)
    name = f"encodec_24khz-{hashlib.sha256(tmp.read_bytes()).hexdigest()[:8]}.th"
    os.replace(tmp, folder / name)
    return AudioTokenizer.from_pretrained(
        "encodec_24khz", num_codebooks=num_codebooks, repository=folder, checkpoint=name
    )


def encoder_flops_per_second(model: torch.nn.Module, encoder: torch.nn.Module, encode) -> float:
    """FLOPs to encode one second of audio: counted convolutions and matmuls, plus each LSTM
    layer's 2 · 4H · (input + H) per frame (the flop counter does not see LSTMs)."""
    x = torch.zeros(1, 1, RATE, device=next(model.parameters()).device)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        encode(x)
    lstm = 0
    for m in encoder.modules():
        if isinstance(m, torch.nn.LSTM):
            h = m.hidden_size
            lstm += sum(2 * 4 * h * (m.input_size if i == 0 else h) + 2 * 4 * h * h
                        for i in range(m.num_layers))  # fmt: skip
    return counter.get_total_flops() + lstm * (RATE / HOP)


def default_codec(device: torch.device) -> AudioTokenizer:
    """The 50 Hz codec at ``AudioTokenizer.fit``'s default (full) width, K = 1, random codes."""
    torch.manual_seed(0)
    config = CodecConfig(
        sample_rate=RATE, channels=1, ratios=(8, 5, 4, 3), n_filters=32, n_residual_layers=1,
        dimension=128, lstm=2, causal=True, num_codebooks=1, codebook_size=1024,
        codebook_dim=None, commitment_weight=1.0,
    )  # fmt: skip
    model = CodecModel(config)
    for layer in getattr(model.quantizer, "layers", []):  # VQ: random codebooks; FSQ has none
        layer.codebook.embed.normal_()
        layer.codebook.inited.fill_(1.0)
    hparams = {"arch": arch_dict(config), "fit": {}}
    return AudioTokenizer(model, _make_info(config), hparams).to(device)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--num-codebooks", type=int, default=8, help="K (8: 6 kbps)")
    p.add_argument("--batch-seconds", type=float, default=None, help="default: the tokenizer's")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="4 clips, 1 round: a smoke run")
    p.add_argument("--out", default=None, help=f"default: {scratch('audio_encode_<device>.json')}")
    p.add_argument("--md", default=None, help=f"default: {scratch('audio_encode_<device>.md')}")
    args = p.parse_args()
    if args.quick:
        args.clips, args.rounds = 4, 1
    device = torch.device(args.device)
    stem = scratch(f"audio_encode_{device.type}")  # docs/results/... updates the record
    out, md = args.out or stem + ".json", args.md or stem + ".md"

    state = random_state(0)
    with tempfile.TemporaryDirectory() as folder:
        tok = pretrained_from_state(state, args.num_codebooks, Path(folder)).to(device)
    tok.batch_seconds = args.batch_seconds
    raw = package_model(state).to(device)
    raw.set_target_bandwidth(tok.hparams["bandwidth_kbps"])
    clips = make_clips(args.clips, seed=1)
    padded = [torch.nn.functional.pad(c, (0, -c.shape[-1] % HOP)) for c in clips]
    raw_inputs = [c[None].to(device) for c in padded]  # already on the device: favours the loop
    items = [(c, RATE) for c in clips]
    audio_seconds = sum(c.shape[-1] for c in clips) / RATE

    def raw_loop():
        with torch.no_grad():
            return [raw.encode(x)[0][0][0] for x in raw_inputs]

    size = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(size, size, device=device), torch.randn(size, size, device=device)
    codec = default_codec(device)
    codec_codes = codec.encode_batch(items)
    fns = {
        "matmul": lambda: a @ b,
        "package_loop": raw_loop,
        "ours_loop": lambda: [tok.encode(it) for it in items],
        "ours_batch": lambda: tok.encode_batch(items),
        "codec50_batch": lambda: codec.encode_batch(items),
        "codec50_decode": lambda: codec.decode_batch(codec_codes),
    }
    stats = timeit(fns, device, args.rounds)

    # identical codes: ours against the package, and batch against one by one
    ref = [c.cpu() for c in raw_loop()]
    batch = [e.codes for e in tok.encode_batch(items)]
    loop = [e.codes for e in (tok.encode(it) for it in items)]
    differ = sum(int((x != y).sum()) for x, y in zip(ref, batch, strict=True))
    total = sum(x.numel() for x in ref)
    codec_decode_s = stats["codec50_decode"]["median_s"]

    flops = encoder_flops_per_second(raw, raw.encoder, lambda x: raw.encode(x)) * audio_seconds
    mm = 2 * size**3 / stats["matmul"]["median_s"] / 1e9
    rows = {}
    for name in ("package_loop", "ours_loop", "ours_batch"):
        t = stats[name]["median_s"]
        gflops = flops / t / 1e9
        rows[name] = {**stats[name], "gflops": gflops, "fraction_of_matmul": gflops / mm,
                      "speedup_vs_package": stats["package_loop"]["median_s"] / t,
                      "realtime_factor": t / audio_seconds}  # fmt: skip
    meta = {
        "command": shlex.join(sys.orig_argv),
        "quick": args.quick,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    settings = {
        "clips": args.clips,
        "audio_seconds": audio_seconds,
        "rounds": args.rounds,
        "num_codebooks": args.num_codebooks,
        "batch_seconds": tok.batch_samples / RATE,
        "matmul_size": size,
    }
    pairs = list(zip(ref, batch, strict=True))
    codes = {
        "identical_clips_vs_package": sum(torch.equal(x, y) for x, y in pairs),
        "differing_codes_vs_package": differ,
        "total_codes": total,
        "batch_equals_loop": all(torch.equal(x, y) for x, y in zip(batch, loop, strict=True)),
    }
    codec50 = {
        "encode_batch_s": stats["codec50_batch"]["median_s"],
        "encode_realtime_factor": stats["codec50_batch"]["median_s"] / audio_seconds,
        "decode_s": codec_decode_s,
        "decode_realtime_factor": codec_decode_s / audio_seconds,
    }
    results = {
        "meta": meta,
        "settings": settings,
        "matmul_gflops": mm,
        "encoder_gflop_per_audio_second": flops / audio_seconds / 1e9,
        "methods": rows,
        "codes": codes,
        "codec50": codec50,
    }
    write_outputs(out, results, md, markdown(results, out))
    print(markdown(results, out))


def markdown(r: dict, json_path: str) -> str:
    m, s, c = r["meta"], r["settings"], r["codes"]
    lines = [
        f"# Audio encoding: batched against the package's per-clip loop ({m['device']})",
        "",
        f"Command: `{m['command']}` (results also in `{json_path}`)",
        "",
        f"{s['clips']} clips of 1 to 5 s ({s['audio_seconds']:.1f} s of audio) at 24 kHz; EnCodec "
        f"24 kHz architecture, K = {s['num_codebooks']}, checkpoint-shaped random weights; median "
        f"of {s['rounds']} round-robin rounds. torch {m['torch']}, {m['torch_threads']} threads, "
        f"{m['date']}. Matmul ({s['matmul_size']}², float32): {r['matmul_gflops']:.0f} GFLOP/s; "
        f"the encoder costs {r['encoder_gflop_per_audio_second']:.2f} GFLOP per second of audio.",
        "",
        "| method | seconds | speed-up vs package loop | encoder GFLOP/s | fraction of matmul "
        "| real-time factor |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in r["methods"].items():
        lines.append(
            f"| {name} | {row['median_s']:.3f} | {row['speedup_vs_package']:.2f}× | "
            f"{row['gflops']:.1f} | {100 * row['fraction_of_matmul']:.1f} % | "
            f"{row['realtime_factor']:.4f} |"
        )
    k = r["codec50"]
    lines += [
        "",
        f"Codes: {c['identical_clips_vs_package']} of {s['clips']} clips identical to the "
        f"package's ({c['differing_codes_vs_package']} of {c['total_codes']} codes differ); "
        f"encode_batch equals one-by-one encode: {c['batch_equals_loop']}.",
        "",
        f"Default 50 Hz codec (full width, K = 1, random weights): encode_batch real-time factor "
        f"{k['encode_realtime_factor']:.4f} ({k['encode_batch_s']:.2f} s), decode "
        f"{k['decode_realtime_factor']:.4f} ({k['decode_s']:.2f} s, clip by clip).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
