"""Report a fitted image tokenizer on one split of a manifest: PSNR, codebook usage, a picture.

    python benchmarks/image_fit_report.py --tokenizer ART --manifest M.jsonl --split test \
        --md docs/results/image_dev_set.md --png docs/results/image_dev_set.png

Measures what ``ImageTokenizer.fit`` measures at the end of a fit (``ImageTokenizer.evaluate``),
on the images of ``--split``, and writes a markdown report (with the fit's recorded
hyper-parameters and this command) and a PNG grid: originals above, reconstructions below.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch
from PIL import Image

from tokenize_mm import load_tokenizer
from tokenize_mm.data import ManifestSource
from tokenize_mm.tokenizers.arch import flat_hparams
from tokenize_mm.tokenizers.image.io import to_pil


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="image tokenizer artifact directory")
    ap.add_argument("--manifest", required=True, help="JSONL manifest")
    ap.add_argument("--split", default="test")
    ap.add_argument("--md", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--grid", type=int, default=8, help="images shown in the PNG")
    args = ap.parse_args()

    tok = load_tokenizer(args.tokenizer)
    source = ManifestSource(args.manifest, split=args.split, modalities=("image",))
    paths = [ex.image for ex in source]
    pixels = torch.stack([tok.preprocess(p) for p in paths])  # (N, 3, S, S) in [0, 1]
    u8 = (pixels * 255).round().to(torch.uint8)
    start = time.perf_counter()
    metrics = tok.evaluate(u8)
    seconds = time.perf_counter() - start

    shown = u8[: args.grid].float() / 255
    recon = tok.decode_batch(tok.encode_batch(list(shown)))
    size = tok.info.image_size
    sheet = Image.new("RGB", (size * len(shown), size * 2), "white")
    for i, (a, b) in enumerate(zip(shown, recon, strict=True)):
        sheet.paste(to_pil(a), (i * size, 0))
        sheet.paste(to_pil(b), (i * size, size))
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.png)

    manifest = json.loads((Path(args.tokenizer) / "manifest.json").read_text())
    write_report(args, tok.info, manifest, metrics, len(paths), seconds, dict(source.skip_counts()))


def write_report(args, info, manifest, metrics, n, seconds, skipped) -> None:
    fit = manifest["fit_data"]
    hp = flat_hparams(manifest["hparams"])
    lines = [
        f"# Image tokenizer on `{Path(args.manifest).name}`, split `{args.split}`",
        "",
        f"Report command: `python {' '.join(sys.argv)}`",
        "",
        f"Tokenizer: {info.image_size}x{info.image_size} px, f = {hp['downsample']}, "
        f"{info.tokens_per_image} tokens per image, {info.codebook_size} codes "
        f"(dimension {hp['codebook_dim']}), base channels {hp['base_channels']}, "
        f"{hp['max_steps']} steps of batch {hp['batch_size']}, lr {hp['learning_rate']}, "
        f"seed {hp['seed']}; trained on {fit['num_train']} images "
        f"(loss {fit['loss_start']:.3f} → {fit['loss_end']:.3f}); tokenize_mm "
        f"{manifest['library_version']}, torch {torch.__version__}, {platform.processor() or platform.machine()}.",
        "",
        "| split | images | PSNR (dB) | codebook perplexity | codes used | eval seconds |",
        "|---|---:|---:|---:|---:|---:|",
        f"| {args.split} | {n} | {metrics['psnr_db']:.2f} | {metrics['perplexity']:.1f} "
        f"of {info.codebook_size} | {metrics['used_fraction']:.1%} | {seconds:.1f} |",
        "",
        f"Skipped manifest records: {skipped or 'none'}.",
        "",
        f"![originals (top) and reconstructions (bottom)]({Path(args.png).name})",
        "",
    ]
    Path(args.md).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
