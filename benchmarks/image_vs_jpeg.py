"""The image tokenizer against JPEG at equal bytes per image, on held-out real images.

The tokenizer is fitted as ``make train`` fits it (``image_small``: 64 x 64, 256 tokens of a
256-code book, 120 steps on the built-in train split), so one image costs 256 x 8 bits = 256
bytes (nominal: log2 of the codebook per token). JPEG (Pillow, baseline, 4:2:0) gets the same
budget, counted two ways: the whole file, and the entropy-coded payload only (the bytes after the
start-of-scan header; the quantisation and Huffman tables are fixed, as the tokenizer's decoder
weights are). For each image JPEG may pick any quality (1-95) and any thumbnail side (8 to 64
pixels, upscaled back with bicubic), and takes the best PSNR that fits the budget; an image where
nothing fits is counted as a miss. Scored on the dev set's test split at 64 x 64 (the tokenizer's
resolution), PSNR and SSIM (torchmetrics).

    .venv/bin/python benchmarks/image_vs_jpeg.py --manifest DEV/manifest.jsonl \\
        [--budgets 1 2 4] [--out docs/results/image_vs_jpeg]
"""

from __future__ import annotations

import argparse
import io
import math
import os
import platform
import shlex
import sys
import time

import torch
from codebook_health import compose_train, held_out, print_and_write
from PIL import Image

SIDES = (8, 12, 16, 24, 32, 48, 64)
QUALITIES = (1, 5, 10, 20, 30, 50, 70, 95)


def jpeg_payload(data: bytes) -> int:
    """Bytes of the entropy-coded scan: after the SOS segment's header, up to EOI."""
    sos = data.index(b"\xff\xda")
    header = int.from_bytes(data[sos + 2 : sos + 4], "big")
    return len(data) - (sos + 2 + header) - 2  # minus the EOI marker


def to_tensor(image: Image.Image) -> torch.Tensor:
    data = torch.tensor(list(image.convert("RGB").getdata()), dtype=torch.float32)
    return data.reshape(image.height, image.width, 3).permute(2, 0, 1) / 255.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).pow(2).mean().clamp_min(1e-10)))


def best_jpeg(image: Image.Image, budget: int, payload_only: bool):
    """(PSNR, bytes, side, quality) of the best JPEG within ``budget`` bytes, or None."""
    size, target = image.size[0], to_tensor(image)
    best = None
    for side in SIDES:
        small = image.resize((side, side), Image.BICUBIC) if side != size else image
        for quality in QUALITIES:
            buf = io.BytesIO()
            small.save(buf, format="JPEG", quality=quality, optimize=True)
            data = buf.getvalue()
            cost = jpeg_payload(data) if payload_only else len(data)
            if cost > budget:
                continue
            decoded = Image.open(io.BytesIO(data)).convert("RGB").resize((size, size),
                                                                        Image.BICUBIC)  # fmt: skip
            score = psnr(to_tensor(decoded), target)
            if best is None or score > best[0]:
                best = (score, cost, side, quality, to_tensor(decoded))
    return best


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--budgets", type=float, nargs="+", default=[1, 2, 4],
                   help="multiples of the tokenizer's bytes per image")  # fmt: skip
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--overrides", nargs="*", default=[], help="tmm-train overrides (smoke tests)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from hydra.utils import instantiate
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    from tokenize_mm.cli.common import fit_from_source

    cfg = compose_train(args.overrides)
    start = time.perf_counter()
    tok = fit_from_source(instantiate(cfg.tokenizers.image.fit), "image",
                          list(instantiate(cfg.data.source)), cfg.fit_split)  # fmt: skip
    fit_s = time.perf_counter() - start
    info = tok.info
    token_bytes = info.tokens_per_image * math.log2(info.codebook_size) / 8
    paths = held_out(args.manifest, "image", args.limit)
    size = info.image_size
    targets = [Image.fromarray((tok.preprocess(p) * 255).round().byte().permute(1, 2, 0).numpy())
               for p in paths]  # the tokenizer's own 64 x 64 crop of each image  # fmt: skip
    truth = torch.stack([to_tensor(t) for t in targets])
    recon = torch.stack([tok.decode(tok.encode(t)) for t in targets]).clamp(0, 1)
    rows = [{
        "codec": f"{cfg.tokenizers.image.name} ({tok.model.config.quantizer})", "budget": 1.0,
        "bytes": token_bytes, "counted": "nominal bits", "images": len(targets), "misses": 0,
        "psnr_db": sum(psnr(r, t) for r, t in zip(recon, truth, strict=True)) / len(truth),
        "ssim": float(ssim(recon, truth, data_range=1.0)), "fit_s": fit_s,
    }]  # fmt: skip
    for multiple in args.budgets:
        budget = int(multiple * token_bytes)
        for payload_only in (False, True):
            picks = [best_jpeg(t, budget, payload_only) for t in targets]
            fits = [(pick, t) for pick, t in zip(picks, truth, strict=True) if pick is not None]
            row = {"codec": "JPEG", "budget": multiple, "bytes": budget,
                   "counted": "scan payload" if payload_only else "whole file",
                   "images": len(fits), "misses": len(targets) - len(fits)}  # fmt: skip
            if fits:
                decoded = torch.stack([pick[4] for pick, _ in fits])
                row.update(
                    psnr_db=sum(pick[0] for pick, _ in fits) / len(fits),
                    ssim=float(ssim(decoded, torch.stack([t for _, t in fits]), data_range=1.0)),
                    mean_bytes=sum(pick[1] for pick, _ in fits) / len(fits),
                )
            rows.append(row)
    lines = ["| codec | budget (x tokenizer) | bytes per image | counted | images within budget | "
             "PSNR dB | SSIM |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        within = f"{r['images']} of {r['images'] + r['misses']}"
        score = f"{r['psnr_db']:.2f} | {r['ssim']:.3f}" if "psnr_db" in r else "- | -"
        lines.append(f"| {r['codec']} | {r['budget']:g} | {r['bytes']:g} | {r['counted']} | "
                     f"{within} | {score} |")  # fmt: skip
    text = "\n".join([
        "# The image tokenizer against JPEG at equal bytes", "",
        f"Command: `{shlex.join(sys.orig_argv)}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores. {len(targets)} held-out images "
        f"of the dev set's test split, each at the tokenizer's {size} x {size} crop. The "
        f"tokenizer costs {token_bytes:g} bytes per image ({info.tokens_per_image} tokens x "
        f"log2 {info.codebook_size} bits). JPEG: best PSNR over qualities {list(QUALITIES)} and "
        f"thumbnail sides {list(SIDES)} (bicubic up) within the budget; images where nothing "
        "fits are left out of its means.", "",
        *lines, "",
    ])  # fmt: skip
    print_and_write(text, rows, args.out)


if __name__ == "__main__":
    main()
