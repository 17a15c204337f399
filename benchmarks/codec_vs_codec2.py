"""Reconstruction at equal bits: the 50 Hz codec against Codec 2 on held-out real speech.

Codec 2 (Rowe, codec2.org; Debian's ``codec2`` package, ``c2enc``/``c2dec``) is a classical
narrowband speech codec at 8 kHz. Our codec at 256 codes per codebook and 50 frames per second
spends 8 bits per codebook per frame: 400 bit/s with K = 1, 800 bit/s with K = 2 (a K = 2 fit
decoded from its first codebook only gives the 400 bit/s figure: residual stages are coarse to
fine). Codec 2 runs at 450, 700 (700C) and 1200 bit/s.

Each held-out clip (the dev set's test split, real speech with transcripts) is read at 24 kHz
for our codec and band-limited to 8 kHz for Codec 2; both reconstructions are compared at 8 kHz
with the 8 kHz reference: log-mel distance (64 mels, ``tokenizers/audio/metrics.py``) and
SI-SNR. Our codec is fitted as the main job fits it (``audio_small``) with K = 2, on the built-in
data by default, or on the dev set's train split with ``--fit-on-manifest`` and a step budget
(``--steps``): the issue's "15-minute CPU fit" is a budget in steps measured on this machine.

    apt-get install codec2   # c2enc, c2dec
    .venv/bin/python benchmarks/codec_vs_codec2.py --manifest DEV/manifest.jsonl \\
        [--fit-on-manifest --steps 2400] [--limit 40] [--threads 2] [--out /tmp/bench/codec2]
"""

from __future__ import annotations

import argparse
import math
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchaudio
from codebook_health import compose_train, print_and_write

NARROW = 8_000
CODEC2_MODES = {"450": 450, "700C": 700, "1200": 1200}


def codec2_roundtrip(wav: torch.Tensor, mode: str, workdir: Path) -> torch.Tensor:
    """wav (1, S) float at 8 kHz → Codec 2's decoding at ``mode``, (1, S) float."""
    pcm = (wav[0].clamp(-1, 1) * 32767).round().to(torch.int16).numpy().tobytes()
    raw, bits, out = workdir / "in.raw", workdir / "out.bit", workdir / "out.raw"
    raw.write_bytes(pcm)
    subprocess.run(["c2enc", mode, str(raw), str(bits)], check=True, capture_output=True)
    subprocess.run(["c2dec", mode, str(bits), str(out)], check=True, capture_output=True)
    dec = torch.frombuffer(bytearray(out.read_bytes()), dtype=torch.int16).float() / 32767
    s = wav.shape[-1]
    dec = dec[:s] if dec.numel() >= s else torch.nn.functional.pad(dec, (0, s - dec.numel()))
    return dec[None]


def held_out_speech(manifest: str, limit: int) -> list[str]:
    """Paths of the test split's real speech: audio whose ``kind`` is ``speech`` (or unstated)
    and that is not ``synthetic``, in manifest order."""
    from tokenize_mm.data import ManifestSource

    paths = []
    for ex in ManifestSource(manifest, split="test"):
        for ref in ex.audio:
            meta = getattr(ref, "meta", {})
            if meta.get("kind", "speech") == "speech" and not meta.get("synthetic"):
                paths.append(str(ref.path))
    return paths[:limit]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--limit", type=int, default=40, help="held-out speech clips")
    p.add_argument(
        "--fit-on-manifest", action="store_true", help="fit on the dev set's train split"
    )
    p.add_argument("--steps", type=int, default=None, help="fit steps (default: the main job's)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overrides", nargs="*", default=[], help="tmm-train overrides")
    p.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    args = p.parse_args()
    if not (shutil.which("c2enc") and shutil.which("c2dec")):
        sys.exit("needs Codec 2's c2enc and c2dec: apt-get install codec2")
    from hydra.utils import instantiate

    from tokenize_mm.cli.common import fit_from_source
    from tokenize_mm.data import ManifestSource
    from tokenize_mm.tokenizers.audio.metrics import log_mel_distance, si_snr

    torch.set_num_threads(args.threads)
    overrides = ["tokenizers.audio.fit.config.num_codebooks=2", *args.overrides]
    if args.steps:
        overrides.append(f"tokenizers.audio.fit.max_steps={args.steps}")
    cfg = compose_train(overrides)
    source = ManifestSource(args.manifest) if args.fit_on_manifest else instantiate(cfg.data.source)
    examples = [ex for ex in source if not args.fit_on_manifest or ex.split != "test"]
    start = time.perf_counter()
    tok = fit_from_source(instantiate(cfg.tokenizers.audio.fit), "audio", examples, "train")
    fit_s = time.perf_counter() - start
    rate = tok.info.sample_rate
    to_narrow = torchaudio.transforms.Resample(rate, NARROW)
    scores: dict[str, list[tuple[float, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for path in held_out_speech(args.manifest, args.limit):
            wav = tok.preprocess(path)  # (1, S) at 24 kHz
            reference = to_narrow(wav)
            codes = tok.model.encode(wav[None])  # (1, 2, T)
            for k in (1, 2):
                with torch.no_grad():
                    recon = tok.model.decode(codes[:, :k])[0, :, : wav.shape[-1]]
                est = to_narrow(recon)
                scores.setdefault(f"codec K={k}", []).append(
                    (log_mel_distance(est, reference, NARROW), si_snr(est, reference))
                )
            for mode in CODEC2_MODES:
                est = codec2_roundtrip(reference, mode, Path(tmp))
                scores.setdefault(f"Codec 2 {mode}", []).append(
                    (log_mel_distance(est, reference, NARROW), si_snr(est, reference))
                )
    per_codebook = math.log2(tok.info.codebook_size) * tok.info.frame_rate  # 8 x 50 at 256 codes
    bits = {
        **{f"codec K={k}": round(k * per_codebook) for k in (1, 2)},
        **{f"Codec 2 {m}": b for m, b in CODEC2_MODES.items()},
    }
    rows = [
        {"codec": name, "bit_s": bits[name], "clips": len(v),
         "mel_distance": sum(a for a, _ in v) / len(v), "si_snr_db": sum(b for _, b in v) / len(v)}
        for name, v in sorted(scores.items(), key=lambda kv: bits[kv[0]])
    ]  # fmt: skip
    fit_desc = (f"the dev set's train split, {cfg.tokenizers.audio.fit.max_steps} steps"
                if args.fit_on_manifest else
                f"the built-in data, {cfg.tokenizers.audio.fit.max_steps} steps")  # fmt: skip
    lines = [
        "# Reconstruction at equal bits: the 50 Hz codec against Codec 2",
        "",
        f"Command: `{shlex.join(sys.orig_argv)}`",
        "",
        f"Machine: {platform.machine()}, torch threads {args.threads}. Codec fitted on {fit_desc} "
        f"(audio_small, K = 2, {fit_s:.0f} s); {rows[0]['clips']} held-out real speech clips "
        f"(test split), both codecs scored at 8 kHz against the 8 kHz reference.",
        "",
        "| codec | bit/s | log-mel distance (lower is better) | SI-SNR dB |",
        "|---|---|---|---|",
        *[
            f"| {r['codec']} | {r['bit_s']} | {r['mel_distance']:.3f} | {r['si_snr_db']:.1f} |"
            for r in rows
        ],
    ]
    print_and_write("\n".join(lines), [{**r, "fit_s": fit_s} for r in rows], args.out)


if __name__ == "__main__":
    main()
