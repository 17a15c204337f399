"""Codebook usage of the main job's audio fit under one variant, in-domain and on real recordings.

Fits ``audio_small`` as ``make train`` does, with ``--overrides`` (e.g. a quantizer, FSQ levels,
``autoencoder_warmup``, ``max_steps``), then prints the fit's own held-out metrics (built-in clips)
and the codebook usage on the dev set's test-split clips encoded one by one: as they are, at a
quarter and four times their amplitude, and scaled to the built-in clips' median RMS (is loudness
what separates them?), then, for the clips as they are, the perplexity within bands of frame
loudness (dBFS of each 480-sample frame) and the cells holding the most frames with their median
loudness (where do the codes pile up?). The measurements behind docs/results/codebook_health.md's
"Autoencoder warm-up" paragraph and its loudness breakdown:

    .venv/bin/python benchmarks/audio_fit_variants.py --manifest DEV/manifest.jsonl --seed 0 \\
        --overrides tokenizers.audio.fit.autoencoder_warmup=0.25
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch
from codebook_health import compose_train, held_out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--manifest", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--overrides", nargs="*", default=[])
    args = p.parse_args()
    from hydra.utils import instantiate

    from tokenize_mm.cli.common import fit_from_source
    from tokenize_mm.tokenizers.quant.usage import codebook_usage

    torch.set_num_threads(args.threads)
    cfg = compose_train([f"tokenizers.audio.fit.seed={args.seed}", *args.overrides])
    examples = list(instantiate(cfg.data.source))
    tok = fit_from_source(instantiate(cfg.tokenizers.audio.fit), "audio", examples, cfg.fit_split)
    size, rate = tok.info.codebook_size, tok.info.sample_rate
    print(f"Command: `{shlex.join(sys.orig_argv)}`")
    print("in-domain (the fit's held-out built-in clips):",
          {k: round(v, 3) for k, v in tok.info.metrics.items()})  # fmt: skip
    builtin = [tok.preprocess(a) for e in examples[:64] for a in e.audio]
    real = [tok.preprocess(path) for path in held_out(args.manifest, "audio", 200)]

    def rms(w: torch.Tensor) -> torch.Tensor:
        return w.pow(2).mean().sqrt()

    target = torch.stack([rms(w) for w in builtin]).median()
    print(f"median RMS: built-in {float(target):.4f}, "
          f"real {float(torch.stack([rms(w) for w in real]).median()):.4f}")  # fmt: skip
    for name, scale in [("as is", lambda w: w), ("x0.25", lambda w: w * 0.25),
                        ("x4", lambda w: w * 4),
                        ("built-in RMS", lambda w: w * target / rms(w).clamp_min(1e-8))]:  # fmt: skip
        codes = torch.cat([tok.encode((scale(w), rate)).codes for w in real], dim=1)
        usage = codebook_usage(codes, size)
        print(f"real clips, {name}: perplexity {usage['perplexity']:.1f} of {size}, "
              f"{usage['used_fraction']:.1%} used")  # fmt: skip
    loudness_breakdown(tok, real, rate)


def loudness_breakdown(tok, clips: list[torch.Tensor], rate: int, top: int = 3) -> None:
    """Perplexity of the frames within each loudness band, and the ``top`` fullest cells."""
    from tokenize_mm.tokenizers.quant.usage import codebook_usage

    hop, size = tok.model.hop_length, tok.info.codebook_size
    codes, level = [], []
    for w in clips:
        c = tok.encode((w, rate)).codes[0]  # the first codebook, (T,)
        frames = torch.nn.functional.pad(w[0], (0, c.shape[-1] * hop - w.shape[-1]))
        rms = frames.reshape(-1, hop).pow(2).mean(1).sqrt()
        codes.append(c)
        level.append(20 * torch.log10(rms.clamp_min(1e-6)))
    codes, db = torch.cat(codes), torch.cat(level)
    for lo, hi in [(-120, -50), (-50, -40), (-40, -30), (-30, -20), (-20, 0)]:
        band = (db >= lo) & (db < hi)
        if band.any():
            usage = codebook_usage(codes[band][None], size)
            print(f"frames at [{lo}, {hi}) dBFS: {int(band.sum())}, "
                  f"perplexity {usage['perplexity']:.1f}")  # fmt: skip
    counts = torch.bincount(codes, minlength=size)
    for cell in counts.argsort(descending=True)[:top].tolist():
        print(f"cell {cell}: {float(counts[cell] / counts.sum()):.1%} of frames, "
              f"median {float(db[codes == cell].median()):.1f} dBFS")  # fmt: skip


if __name__ == "__main__":
    main()
