"""How an audio codec's FSQ grid inputs spread: correlation and covariance eigenvalues of the
normalised grid input, and codebook usage, on held-out built-in clips and on the dev set's
held-out real recordings; with ``--recalibrate``, the same after ``CodecModel.calibrate`` on the
built-in training clips. The diagnosis behind docs/results/codebook_health.md's first section:

    .venv/bin/python benchmarks/grid_inputs.py --artifact .cache/tokenize_mm/tokenizers/audio_small-HASH \\
        --manifest DEV/manifest.jsonl --recalibrate
"""

from __future__ import annotations

import argparse
import shlex
import sys

import torch
from codebook_health import compose_train, held_out


def report(tok, name: str, clips: list[torch.Tensor]) -> None:
    """Print the grid inputs' correlation, covariance eigenvalues and the codebook usage."""
    from tokenize_mm.tokenizers.quant.usage import codebook_usage

    model, q = tok.model.eval(), tok.model.quantizer
    with torch.no_grad():
        y = torch.cat(
            [q._grid_input(model.encoder(model.compand(w[None])).transpose(1, 2))[0] for w in clips]
        )
    codes = torch.cat([tok.encode((w, tok.info.sample_rate)).codes for w in clips], dim=1)
    usage = codebook_usage(codes, tok.info.codebook_size)
    corr = torch.corrcoef(y.T)
    off = corr[~torch.eye(len(corr), dtype=torch.bool)].abs()
    mean = [round(float(v), 2) for v in y.mean(0)]
    eig = [round(float(v), 3) for v in torch.linalg.eigvalsh(torch.cov(y.T))]
    print(f"{name}: {y.shape[0]} frames, mean {mean}, "
          f"|r| {float(off.min()):.2f} to {float(off.max()):.2f}, covariance eigenvalues "
          f"{eig}, perplexity "
          f"{usage['perplexity']:.1f} of {tok.info.codebook_size}, "
          f"{usage['used_fraction']:.1%} used")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True)
    p.add_argument("--manifest", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--recalibrate", action="store_true")
    args = p.parse_args()
    from hydra.utils import instantiate

    from tokenize_mm.tokenizers import load_tokenizer

    torch.set_num_threads(args.threads)
    print(f"Command: `{shlex.join(sys.orig_argv)}`")
    tok = load_tokenizer(args.artifact)
    examples = list(instantiate(compose_train([]).data.source))
    train = [tok.preprocess(a) for e in examples if e.split == "train" for a in e.audio]
    builtin = [tok.preprocess(a) for e in examples if e.split != "train" for a in e.audio][:64]
    real = [tok.preprocess(path) for path in held_out(args.manifest, "audio", 200)]
    report(tok, "built-in held-out", builtin)
    report(tok, "real held-out", real)
    if args.recalibrate:
        tok.model.calibrate(train)
        tok._folded = None  # encode reads a folded copy of the model: build it again
        report(tok, "recalibrated, built-in held-out", builtin)
        report(tok, "recalibrated, real held-out", real)


if __name__ == "__main__":
    main()
