"""The image tokenizer's convolutions channels-last against NCHW: the main job's image_small fit.

``VQImageModel`` runs its encoder on channels-last pixels (``_latents``), and the fit's loss reads
channels-last pixels too (``VQImageFitModule.training_step``); the decoder's input is channels-last
already (the latents' (B, h·w, D) rows seen as (B, D, h, w)). oneDNN's convolutions of 16
channels at 64 x 64 are far from the CPU's speed in NCHW. This times both layouts side by side in
one process, variants interleaved over ``--rounds`` rounds (median), random weights of
image_small's architecture (``conf/tokenizer/image_small.yaml``), random pixels, a fixed seed:

- a fit step as ``VQImageFitModule`` takes it (forward with the quantizer, L1 + MSE and the chroma
  loss, backward, AdamW) on ``--batch`` images, at torch's default thread count (the fit's);
- ``encode`` of ``--batch`` images on one thread (the fresh-example workers' and pretokenizers'),
  and how many codes differ between the layouts (the same values up to the order of the sums).

    .venv/bin/python benchmarks/image_fit_speed.py [--batch 32] [--steps 5] [--rounds 6] [--out-dir DIR]

Writes ``image_fit_speed.md`` and ``.json`` into ``--out-dir`` (a scratch folder by default).
"""

from __future__ import annotations

import argparse
import copy
import os
import shlex
import statistics
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import interleaved, out_dir_option, write_record
from vq_assign import load_average, machine_facts

from tokenize_mm.tokenizers.image.fit import chroma, l1_mse
from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel

#: conf/tokenizer/image_small.yaml's architecture.
ARCH = {"image_size": 64, "downsample": 4, "base_channels": 16, "latent_dim": 64,
        "codebook_size": 256, "codebook_dim": 32}  # fmt: skip
#: conf/tokenizer/image.yaml's chroma loss weight.
CHROMA_WEIGHT = 3.0


def nchw_latents(self: VQImageModel, pixels: torch.Tensor) -> torch.Tensor:
    """``VQImageModel._latents`` as it was: the encoder on NCHW pixels."""
    z = self.encoder(pixels * 2.0 - 1.0)
    return z.flatten(2).transpose(1, 2)


def fit_steps(model: VQImageModel, pixels: torch.Tensor, steps: int, channels_last: bool) -> None:
    """``steps`` fit steps of ``model`` on ``pixels`` in the given layout."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99))
    if channels_last:
        pixels = pixels.contiguous(memory_format=torch.channels_last)
    with mock.patch.object(VQImageModel, "_latents", VQImageModel._latents if channels_last
                           else nchw_latents):  # fmt: skip
        for _ in range(steps):
            recon, _, commit = model(pixels)
            target = pixels * 2.0 - 1.0
            rec = l1_mse(recon, target) + CHROMA_WEIGHT * l1_mse(chroma(recon), chroma(target))
            opt.zero_grad(set_to_none=True)
            (rec + commit).backward()
            opt.step()


def encode(model: VQImageModel, pixels: torch.Tensor, channels_last: bool) -> torch.Tensor:
    with mock.patch.object(VQImageModel, "_latents", VQImageModel._latents if channels_last
                           else nchw_latents):  # fmt: skip
        return model.encode(pixels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=5, help="fit steps a round")
    p.add_argument("--rounds", type=int, default=6)
    out_dir_option(p, "image_fit_speed")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    pixels = torch.rand(args.batch, 3, ARCH["image_size"], ARCH["image_size"])
    base = VQImageModel(VQImageConfig(**ARCH))
    base(pixels)  # one forward first: both copies start from the same (lazily initialised) state
    fit_threads = torch.get_num_threads()
    models = {layout: copy.deepcopy(base) for layout in ("channels-last", "NCHW")}
    encoder = copy.deepcopy(base).eval()

    def encode_one_thread(channels_last: bool) -> torch.Tensor:
        torch.set_num_threads(1)
        try:
            return encode(encoder, pixels, channels_last)
        finally:
            torch.set_num_threads(fit_threads)

    variants = {
        "fit step, channels-last": lambda: fit_steps(models["channels-last"], pixels, args.steps,
                                                     True),
        "fit step, NCHW": lambda: fit_steps(models["NCHW"], pixels, args.steps, False),
        "encode (1 thread), channels-last": lambda: encode_one_thread(True),
        "encode (1 thread), NCHW": lambda: encode_one_thread(False),
    }  # fmt: skip
    for fn in variants.values():
        fn()  # warm-up
    load_start = load_average()
    times, outputs = interleaved(variants, args.rounds)
    for name in ("fit step, channels-last", "fit step, NCHW"):  # seconds a step
        times[name] = [t / args.steps for t in times[name]]
    median = {name: statistics.median(v) for name, v in times.items()}
    a, b = outputs["encode (1 thread), channels-last"], outputs["encode (1 thread), NCHW"]
    differing, total = int((a != b).sum()), a.numel()
    fit_ratio = median["fit step, NCHW"] / median["fit step, channels-last"]
    encode_ratio = median["encode (1 thread), NCHW"] / median["encode (1 thread), channels-last"]
    record = {
        "command": shlex.join(sys.orig_argv), "batch": args.batch, "steps": args.steps,
        "rounds": args.rounds, "fit_threads": fit_threads, "median_s": median, "times_s": times,
        "fit_speedup_channels_last": fit_ratio, "encode_speedup_channels_last": encode_ratio,
        "codes_differing": differing, "codes_total": total, "machine": machine_facts(load_start),
    }  # fmt: skip
    lines = [
        "# The image tokenizer channels-last against NCHW (image_small's fit and encoding)", "",
        f"Command: `{record['command']}`", "",
        f"Machine: {record['machine']['cpu']}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({fit_threads} threads for the fit steps, 1 for encoding); load {load_start} at the "
        f"start, {record['machine']['load_end']} at the end; {record['machine']['date']}.", "",
        f"image_small's architecture (random weights), {args.batch} random 64 x 64 images; "
        f"{args.rounds} rounds, variants interleaved; median seconds (a fit step: the mean of "
        f"{args.steps}).", "",
        "| variant | seconds | per-round (s) |", "|---|---|---|",
        *(f"| {n} | {median[n]:.4f} | {' / '.join(f'{t:.4f}' for t in times[n])} |"
          for n in variants),
        "",
        f"A fit step channels-last **{fit_ratio:.2f}x** NCHW's speed; encoding "
        f"**{encode_ratio:.2f}x**, {differing} of {total} codes different.",
    ]  # fmt: skip
    write_record(args.out_dir, "image_fit_speed", record, lines)


if __name__ == "__main__":
    main()
