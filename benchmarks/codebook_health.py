"""Codebook health of the main job's image and audio fits across seeds, thread counts and quantizers.

Each run fits a tokenizer exactly as ``make train`` does (``conf/train.yaml``: ``image_small`` and
``audio_small`` at the main job's 120 steps, on the built-in train split), with its fit seed and
quantizer overridden, under ``torch.set_num_threads(threads)``; then it encodes held-out *real*
data the fit never saw (the dev set's test split: recorded speech, synthetic speech and sound
effects; photographed stamps) and reports codebook perplexity (exp of the code entropy) and the
fraction of codes used, with reconstruction (PSNR, SI-SNR, log-mel distance). Goal (issue 13):
perplexity >= 25 % of the codebook and >= 50 % of codes used in every run.

One process per thread count (``--threads`` in a child, so that the count holds from the start);
the driver writes the table:

    .venv/bin/python benchmarks/codebook_health.py --manifest DEV/manifest.jsonl \\
        --seeds 0 1 2 --threads 1 2 --quantizers vq fsq --out docs/results/codebook_health
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time

from vq_assign import write_outputs

PERPLEXITY_GOAL, USED_GOAL = 0.25, 0.5


def compose_train(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from tokenize_mm.cli.common import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=[*overrides, "out_dir=unused"])


def held_out(manifest: str, modality: str, limit: int) -> list:
    """The dev set's test-split items of ``modality`` (paths), in manifest order."""
    from tokenize_mm.data import ManifestSource, iter_items
    from tokenize_mm.data.example import AudioRef

    examples = [ex for ex in ManifestSource(manifest) if ex.split == "test"]
    items = [i.path if isinstance(i, AudioRef) else i for i in iter_items(examples, modality)]
    return items[:limit]


def run_one(
    overrides: list[str],
    examples: list,
    modality: str,
    quantizer: str,
    seed: int,
    manifest: str,
    limit: int,
    steps: int | None,
) -> dict:
    """Fit one tokenizer as the main job does and measure it on held-out real data."""
    import torch
    from hydra.utils import instantiate

    from tokenize_mm.cli.common import fit_from_source

    cfg = compose_train([*overrides, f"tokenizers.{modality}.fit.seed={seed}",
                         f"tokenizers.{modality}.fit.config.quantizer={quantizer}",
                         *([f"tokenizers.{modality}.fit.max_steps={steps}"] if steps else [])])  # fmt: skip
    start = time.perf_counter()
    tok = fit_from_source(instantiate(cfg.tokenizers[modality].fit), modality, examples,
                          cfg.fit_split)  # fmt: skip
    fit_s = time.perf_counter() - start
    items = held_out(manifest, modality, limit)
    if modality == "image":
        pixels = torch.stack([tok.preprocess(p) for p in items])
        m = tok.evaluate((pixels * 255).round().to(torch.uint8))
        row = {"psnr_db": m["psnr_db"]}
    else:
        m = tok.evaluate([tok.preprocess(p) for p in items])
        m = {k.removesuffix("_0"): v for k, v in m.items()}
        row = {"si_snr_db": m["si_snr_db"], "mel_distance": m["mel_distance"]}
    size = tok.info.codebook_size
    return {
        "modality": modality, "quantizer": quantizer, "seed": seed,
        "threads": torch.get_num_threads(), "codebook_size": size, "held_out_items": len(items),
        "perplexity": m["perplexity"], "perplexity_fraction": m["perplexity"] / size,
        "used_fraction": m["used_fraction"], "fit_s": fit_s,
        "fit_perplexity": tok.info.metrics.get("perplexity", tok.info.metrics.get("perplexity_0")),
        **row,
    }  # fmt: skip


def child(args: argparse.Namespace) -> None:
    import torch
    from hydra.utils import instantiate

    torch.set_num_threads(args.threads)
    examples = list(instantiate(compose_train(args.overrides).data.source))  # the main job's data
    for modality in args.modalities:
        for quantizer in args.quantizers:
            for seed in args.seeds:
                row = run_one(args.overrides, examples, modality, quantizer, seed,
                              args.manifest, args.limit, args.steps)  # fmt: skip
                print("ROW " + json.dumps(row), flush=True)


def print_and_write(text: str, rows: list[dict], out: str | None) -> None:
    """Print the markdown; with ``out``, write ``<out>.md`` and the rows as ``<out>.json``."""
    print(text)
    if out:
        write_outputs(f"{out}.json", rows, f"{out}.md", text)


def table(rows: list[dict]) -> str:
    out = ["| modality | quantizer | seed | threads | perplexity (of K) | used | goal met | "
           "reconstruction | fit s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in sorted(rows, key=lambda r: (r["modality"], r["quantizer"], r["seed"], r["threads"])):
        ok = r["perplexity_fraction"] >= PERPLEXITY_GOAL and r["used_fraction"] >= USED_GOAL
        recon = (f"PSNR {r['psnr_db']:.2f} dB" if "psnr_db" in r else
                 f"SI-SNR {r['si_snr_db']:.1f} dB, mel {r['mel_distance']:.3f}")  # fmt: skip
        out.append(
            f"| {r['modality']} | {r['quantizer']} | {r['seed']} | {r['threads']} | "
            f"{r['perplexity']:.1f} of {r['codebook_size']} ({r['perplexity_fraction']:.0%}) | "
            f"{r['used_fraction']:.0%} | {'yes' if ok else 'NO'} | {recon} | {r['fit_s']:.0f} |"
        )
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True, help="the dev set's manifest.jsonl")
    p.add_argument("--modalities", nargs="+", default=["audio", "image"])
    p.add_argument("--quantizers", nargs="+", default=["vq", "fsq"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--limit", type=int, default=200, help="held-out items per modality")
    p.add_argument("--steps", type=int, default=None, help="fit steps (default: the main job's)")
    p.add_argument("--overrides", nargs="*", default=[], help="tmm-train overrides (smoke tests)")
    p.add_argument("--out", default=None, help="write <out>.md and <out>.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.threads = args.threads[0]
        return child(args)
    rows: list[dict] = []
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--child", "--threads", str(threads), "--manifest",
               args.manifest, "--limit", str(args.limit), *(["--steps", str(args.steps)] if args.steps else []),
               "--modalities", *args.modalities,
               "--quantizers", *args.quantizers, "--seeds", *map(str, args.seeds),
               "--overrides", *args.overrides]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode:
            sys.exit(f"child with {threads} threads failed:\n{proc.stderr[-4000:]}")
        rows += [
            json.loads(line[4:]) for line in proc.stdout.splitlines() if line.startswith("ROW ")
        ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = "\n".join([
        "# Codebook health of the main job's fits on held-out real data", "",
        f"Command: `{shlex.join(sys.orig_argv)}`", "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {load:.2f} at the end; torch threads per run as in the table.", "",
        "Each run fits the main job's tokenizer (conf/train.yaml: image_small / audio_small, "
        "120 steps on the built-in train split) with the given fit seed and quantizer, then "
        "encodes the dev set's test split (real data the fit never saw). Goal: perplexity >= "
        f"{PERPLEXITY_GOAL:.0%} of the codebook and >= {USED_GOAL:.0%} of codes used.", "",
        table(rows), "",
    ])  # fmt: skip
    print_and_write(text, rows, args.out)


if __name__ == "__main__":
    main()
