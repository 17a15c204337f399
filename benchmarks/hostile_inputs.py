"""Time and peak memory of hostile inputs, each in a fresh process.

Every case runs in its own child process (``python benchmarks/hostile_inputs.py --child CASE``),
which imports ``tokenize_mm``, runs the case once and reports its outcome (``ok`` and the result's
shape, or the raised error's class and message), the case's wall time, and the process's peak
resident memory (``VmHWM`` from ``/proc/self/status``, which is per process, read at the end). The
``baseline`` case only imports ``tokenize_mm``: read the other rows against it (most of it is
torch's shared libraries). Image cases go through the input step of ``ImageTokenizer.encode``
(``image_io.to_model_input``) at the default image size 256; audio cases through
``audio_io.to_model_input`` to 24 kHz mono (``AudioTokenizer.encode``'s step); artifact cases
through ``tokenize_mm.load_tokenizer``. A watchdog thread in the child stops a case whose resident
memory passes ``--rss-cap-mb``, and the parent stops one that runs past ``--timeout``, so that
running this against code without the bounds records the failure instead of exhausting the
machine. Inputs are generated in a temporary folder; nothing is downloaded.

    .venv/bin/python benchmarks/hostile_inputs.py [--quick] [--cases NAME ...]
        [--out docs/results/hostile_inputs.json] [--md docs/results/hostile_inputs.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scratch import scratch

IMAGE_SIZE = 256  # ImageTokenizer's default image_size
AUDIO_RATE = 24_000  # AudioTokenizer's default sample_rate
GOAL_MB, GOAL_S = 1024, 5.0  # per case: peak resident memory and wall time


# -- fixtures (parent) --------------------------------------------------------------------------
def write_images(work: Path, quick: bool) -> None:
    import numpy as np
    from PIL import Image

    Image.new("L", (400_000, 1), 128).save(work / "thin_400000x1.png")
    frames = [Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), c) for c in ("red", "green", "blue")]
    frames[0].save(work / "animated.gif", save_all=True, append_images=frames[1:], duration=100)
    nan = np.full((IMAGE_SIZE, IMAGE_SIZE), np.nan, dtype=np.float32)
    Image.fromarray(nan).save(work / "nan_float.tif")
    if not quick:  # the largest image accepted: MAX_PIXELS, 4 bytes a pixel
        Image.new("RGBA", (8192, 8192), (10, 20, 30, 128)).save(work / "rgba_8192x8192.png")


def write_wavs(work: Path) -> None:
    import numpy as np
    import soundfile as sf

    t = np.arange(24_000) / 44_101  # 24000 int16 samples: a 48 KB file
    tone = np.round(0.5 * np.sin(2 * np.pi * 440.0 * t) * 32767).astype(np.int16)
    sf.write(work / "rate_44101.wav", tone, 44_101, subtype="PCM_16")
    claims = work / "claims_1000003hz.wav"
    sf.write(claims, tone[:2400], 24_000, subtype="PCM_16")
    data = bytearray(claims.read_bytes())  # the fmt chunk's sample rate and byte rate
    data[24:28], data[28:32] = struct.pack("<I", 1_000_003), struct.pack("<I", 2_000_006)
    claims.write_bytes(bytes(data))


def write_artifacts(work: Path) -> None:
    """Tiny image and audio tokenizers, saved, then their manifests edited to a huge model."""
    import torch
    from PIL import Image, ImageDraw

    from tokenize_mm import AudioTokenizer, ImageTokenizer

    images = []
    for i in range(8):
        img = Image.new("RGB", (32, 32), (30 * i, 90, 200 - 20 * i))
        ImageDraw.Draw(img).rectangle((4 + i, 6, 20 + i, 24), fill=(250, 200 - 20 * i, 10))
        images.append(img)
    image = ImageTokenizer.fit(
        images, image_size=32, downsample=8, base_channels=8, latent_dim=16, codebook_size=32,
        codebook_dim=8, batch_size=4, max_steps=2, seed=0, val_fraction=0.25,
    )  # fmt: skip
    t = torch.arange(4_800) / 24_000
    clips = [(0.3 * torch.sin(2 * math.pi * (200 + 50 * i) * t)[None], 24_000) for i in range(6)]
    audio = AudioTokenizer.fit(
        clips, n_filters=4, dimension=16, lstm=0, codebook_size=32, num_codebooks=2,
        batch_size=2, segment_seconds=0.1, max_steps=2, seed=0, val_fraction=0.34,
    )  # fmt: skip
    for name, tok, key in (
        ("image_art", image, "base_channels"),
        ("audio_art", audio, "n_filters"),
    ):
        folder = tok.save(work / name)
        manifest = Path(folder) / "manifest.json"
        data = json.loads(manifest.read_text())
        data["hparams"]["arch"][key] = 4096
        manifest.write_text(json.dumps(data, indent=2))


# -- cases (child) ------------------------------------------------------------------------------
def _shape(x) -> str:
    return f"ok: {tuple(x.shape)}"


def _image(name: str) -> Callable[[Path], str]:
    def run(work: Path) -> str:
        from tokenize_mm.tokenizers.image import io as image_io

        return _shape(image_io.to_model_input(work / name, IMAGE_SIZE))

    return run


def _wav(name: str) -> Callable[[Path], str]:
    def run(work: Path) -> str:
        from tokenize_mm.tokenizers.audio import io as audio_io

        return _shape(audio_io.to_model_input(work / name, target_rate=AUDIO_RATE, channels=1))

    return run


def _artifact(name: str) -> Callable[[Path], str]:
    def run(work: Path) -> str:
        from tokenize_mm import load_tokenizer

        tok = load_tokenizer(work / name)
        return f"ok: loaded {type(tok).__name__}"

    return run


def baseline(work: Path) -> str:
    return "ok: imported tokenize_mm"


def tensor_3x1x400000(work: Path) -> str:
    import torch

    from tokenize_mm.tokenizers.image import io as image_io

    return _shape(image_io.to_model_input(torch.rand(3, 1, 400_000), IMAGE_SIZE))


def tensor_24001hz(work: Path) -> str:
    import torch

    from tokenize_mm.tokenizers.audio import io as audio_io

    t = torch.arange(24_001, dtype=torch.float64) / 24_001
    wav = (0.5 * torch.sin(2 * math.pi * 440.0 * t)).float()[None]  # 1 s
    return _shape(audio_io.to_model_input(wav, 24_001, target_rate=AUDIO_RATE, channels=1))


@dataclass(frozen=True)
class Case:
    input: str  # what it is
    run: Callable[[Path], str]  # the child's work: returns "ok: ..." or raises
    quick: bool = True  # run under --quick
    file: str | None = None  # its input file, whose size the table shows


CASES: dict[str, Case] = {
    "baseline": Case("a process that only imports tokenize_mm", baseline),
    "png_400000x1": Case("PNG of 400000 x 1 pixels", _image("thin_400000x1.png"),
                         file="thin_400000x1.png"),
    "tensor_3x1x400000": Case("float tensor (3, 1, 400000)", tensor_3x1x400000),
    "animated_gif": Case("animated GIF, 3 frames of 256 x 256", _image("animated.gif"),
                         file="animated.gif"),
    "nan_float_tiff": Case("float TIFF (mode F), 256 x 256 NaN", _image("nan_float.tif"),
                           file="nan_float.tif"),
    "tensor_24001hz": Case("1 s tensor at 24001 Hz", tensor_24001hz),
    "wav_44101hz": Case("WAV at 44101 Hz, 24000 samples", _wav("rate_44101.wav"),
                        file="rate_44101.wav"),
    "wav_header_1000003hz": Case("WAV whose header claims 1000003 Hz",
                                 _wav("claims_1000003hz.wav"), file="claims_1000003hz.wav"),
    "image_artifact_huge": Case("image artifact, manifest hparams base_channels 4096",
                                _artifact("image_art"), quick=False),
    "audio_artifact_huge": Case("audio artifact, manifest hparams n_filters 4096",
                                _artifact("audio_art"), quick=False),
    "rgba_8192x8192": Case("largest image accepted: 8192 x 8192 RGBA PNG (MAX_PIXELS)",
                           _image("rgba_8192x8192.png"), quick=False, file="rgba_8192x8192.png"),
}  # fmt: skip


def _status_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _peak_mb() -> float:
    hwm = _status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _emit(result: dict) -> None:
    print("RESULT " + json.dumps(result), flush=True)


def _watchdog(cap_mb: float, started: float) -> None:
    """Stop this process as soon as its resident memory passes ``cap_mb``."""
    while True:
        rss = _status_mb("VmRSS")
        if rss is not None and rss > cap_mb:
            _emit({"outcome": f"stopped: resident memory passed the cap of {cap_mb:.0f} MB",
                   "seconds": time.perf_counter() - started, "peak_mb": _peak_mb()})  # fmt: skip
            os._exit(3)
        time.sleep(0.02)


def child(case: str, work: Path, cap_mb: float) -> None:
    import torch

    import tokenize_mm  # noqa: F401  (the baseline every case pays)

    after_import = _peak_mb()
    started = time.perf_counter()
    threading.Thread(target=_watchdog, args=(cap_mb, started), daemon=True).start()
    try:
        outcome = CASES[case].run(work)
    except Exception as err:  # the outcome is what we measure: record any error, typed or not
        outcome = f"{type(err).__name__}: {err}"
    _emit({"outcome": outcome, "seconds": time.perf_counter() - started, "peak_mb": _peak_mb(),
           "after_import_mb": after_import, "torch_threads": torch.get_num_threads()})  # fmt: skip


# -- parent -------------------------------------------------------------------------------------
def describe_input(case: Case, work: Path) -> str:
    if case.file is None:
        return case.input
    return f"{case.input} ({(work / case.file).stat().st_size / 1000:.1f} KB file)"


def run_case(case: str, work: Path, cap_mb: float, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, "--work", str(work),
           "--rss-cap-mb", str(cap_mb)]  # fmt: skip
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"outcome": f"stopped: ran past the time limit of {timeout:g} s",
                "seconds": None, "peak_mb": None, "process_seconds": timeout}  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
        result = {"outcome": f"process died (exit {proc.returncode}): {tail[0]}",
                  "seconds": None, "peak_mb": None}  # fmt: skip
    else:
        result = json.loads(lines[-1][len("RESULT ") :])
    result["process_seconds"] = time.perf_counter() - start
    return result


def machine_facts(args: argparse.Namespace) -> dict:
    import torch
    from vq_assign import cpu_name, load_average  # not in the children: it imports encodec

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "command": shlex.join(sys.orig_argv),
        "quick": args.quick,
        "cpu": cpu_name(),
        "usable_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
        "rss_cap_mb": args.rss_cap_mb,
        "timeout_s": args.timeout,
        "goal": {"peak_mb": GOAL_MB, "seconds": GOAL_S},
    }


def _fmt(x: float | None, digits: int) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def markdown(meta: dict, rows: list[dict]) -> str:
    base = next((r["peak_mb"] for r in rows if r["case"] == "baseline"), None)
    lines = [
        "# Hostile inputs: outcome, time and peak memory per case",
        "",
        f"Command: `{meta['command']}` ({meta['date']})",
        "",
        f"Machine: {meta['cpu']}, {meta['usable_cores']} usable cores, torch threads "
        f"{meta['torch_threads']}, torch {meta['torch']}, Python {meta['python']}; load average "
        f"{meta['load_average_start']} at the start.",
        "",
        "Each case runs once in a fresh process. *Seconds*: the case alone (after the imports); "
        "*peak MB*: the process's peak resident memory (`VmHWM`), imports included; *over "
        "baseline*: minus the `baseline` row, a process that only imports `tokenize_mm`. Image "
        f"cases: `image_io.to_model_input(item, {IMAGE_SIZE})` (the input step of "
        f"`ImageTokenizer.encode`); audio cases: `audio_io.to_model_input(..., target_rate="
        f"{AUDIO_RATE}, channels=1)`; artifact cases: `tokenize_mm.load_tokenizer`. Goal: each "
        f"case under {GOAL_MB} MB peak and {GOAL_S:g} s. A case is stopped at "
        f"{meta['rss_cap_mb']:.0f} MB resident or {meta['timeout_s']:g} s.",
        "",
        "| case | input | outcome | seconds | peak MB | over baseline MB | within goal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        over = None if base is None or r["peak_mb"] is None else r["peak_mb"] - base
        outcome = r["outcome"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['case']} | {r['input']} | {outcome} | {_fmt(r['seconds'], 3)} | "
            f"{_fmt(r['peak_mb'], 0)} | {_fmt(over, 0)} | {'yes' if within_goal(r) else 'no'} |"
        )
    if any(r["case"] == "rgba_8192x8192" for r in rows):
        lines += [
            "",
            "`rgba_8192x8192` is not hostile: it is the largest image the bounds accept "
            "(`MAX_PIXELS` = 8192 x 8192, RGBA, composited onto white), so its row is the most "
            "memory and time an accepted image file costs: the decoded image, the white "
            "background and the composite, 4 bytes a pixel each, before the resize.",
        ]
    return "\n".join(lines) + "\n"


def within_goal(row: dict) -> bool:
    """Peak resident memory under ``GOAL_MB`` and the case under ``GOAL_S`` seconds."""
    if row["peak_mb"] is None or row["seconds"] is None:
        return False
    return row["peak_mb"] <= GOAL_MB and row["seconds"] <= GOAL_S


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="skip the artifact fits and largest image")
    p.add_argument("--cases", nargs="+", choices=list(CASES), help="run only these cases")
    p.add_argument("--out", default=scratch("hostile_inputs.json"), help="default: %(default)s")
    p.add_argument("--md", default=scratch("hostile_inputs.md"), help="default: %(default)s")
    p.add_argument("--rss-cap-mb", type=float, default=4096.0)
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--child", choices=list(CASES), help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, Path(args.work), args.rss_cap_mb)
        return
    from vq_assign import write_outputs

    names = args.cases or [n for n, c in CASES.items() if c.quick or not args.quick]
    with tempfile.TemporaryDirectory(prefix="hostile_") as tmp:
        work = Path(tmp)
        write_images(work, quick="rgba_8192x8192" not in names)
        write_wavs(work)
        if {"image_artifact_huge", "audio_artifact_huge"} & set(names):
            write_artifacts(work)
        rows = []
        for name in names:
            result = {"case": name, "input": describe_input(CASES[name], work),
                      **run_case(name, work, args.rss_cap_mb, args.timeout)}  # fmt: skip
            result["outcome"] = result["outcome"].replace(str(work), "<tmp>")
            result["within_goal"] = within_goal(result)
            print(f"{name}: {result['outcome']} ({_fmt(result['seconds'], 3)} s, "
                  f"{_fmt(result['peak_mb'], 0)} MB)", flush=True)  # fmt: skip
            rows.append(result)
    meta = machine_facts(args)
    text = markdown(meta, rows)
    write_outputs(args.out, {"meta": meta, "results": rows}, args.md, text)
    print(text)


if __name__ == "__main__":
    main()
