"""Codebook usage of a short codec fit against the encoder's initial weight gain.

Fits the ``audio_small`` codec (50 Hz, 256 codes, no LSTM) for ``--steps`` steps on the built-in
audio clips, once per ``encoder_init_gain``, and prints the latents' variation over frames at
initialisation and the held-out codebook usage after the fit (``used_fraction_0``). It is the
measurement behind ``CodecModel``'s default gain of 2.

    .venv/bin/python benchmarks/codec_init.py [--steps 120] [--gains 1.0 2.0]
"""

from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys

import torch

import tokenize_mm.tokenizers.audio.tokenizer as audio
from tokenize_mm import AudioTokenizer
from tokenize_mm.data import BuiltinSource
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel

SMALL = CodecConfig(n_filters=8, dimension=64, lstm=0, codebook_size=256)
FIT = dict(batch_size=8, learning_rate=1e-3, seed=0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=120)
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--gains", type=float, nargs="+", default=[1.0, 2.0])
    args = p.parse_args()
    clips = list(BuiltinSource(num_examples=512).clips())[: args.clips]
    print(f"Command: `{shlex.join(sys.orig_argv)}`\n")
    print("| encoder_init_gain | latent variation at init | used_fraction_0 | perplexity_0 |")
    print("|---|---|---|---|")
    for gain in args.gains:
        config = dataclasses.replace(SMALL, encoder_init_gain=gain)
        torch.manual_seed(0)
        probe = CodecModel(config)
        wav = torch.stack([audio.audio_io.to_model_input(c, None, target_rate=24_000, channels=1)
                           [:, :24_000] for c in clips[:8]])  # fmt: skip
        with torch.no_grad():
            z = probe.encoder(wav)
        variation = float(z.std(dim=2).mean() / z.abs().mean())
        m = AudioTokenizer.fit(clips, config=config, max_steps=args.steps, **FIT).info.metrics
        print(f"| {gain} | {variation:.2g} | {m['used_fraction_0']:.3f} | "
              f"{m['perplexity_0']:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
