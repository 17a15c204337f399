"""Report a fitted audio codec on one split of a manifest, next to the same codec at initialisation.

    python benchmarks/audio_fit_report.py --tokenizer ART --manifest M.jsonl --split test \
        --md docs/results/audio_dev_set.md --png docs/results/audio_dev_set.png

"At initialisation" is the codec's architecture with the fit's seed, before any gradient step,
with its codebooks k-means-initialised on one batch of training crops (as the first training step
does): the baseline the fit improves on. Both are measured with ``AudioTokenizer.evaluate``
(SI-SNR, log-mel distance, per-codebook usage) on the clips of ``--split``; the PNG shows the
log-mel spectrogram of one clip: original, reconstruction at initialisation, after the fit.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
import torchaudio

from tokenize_mm import AudioTokenizer, load_tokenizer
from tokenize_mm.data import ManifestSource, iter_items
from tokenize_mm.tokenizers.arch import flat_hparams
from tokenize_mm.tokenizers.audio.fit import SegmentDataset
from tokenize_mm.tokenizers.audio.model import CodecModel


def clips_of(manifest: str, split: str, tok: AudioTokenizer) -> list[torch.Tensor]:
    source = ManifestSource(manifest, split=split, modalities=("audio",))
    return [tok.preprocess(ref.path) for ref in iter_items(source, "audio")]


def initial_codec(tok: AudioTokenizer, train: list[torch.Tensor]) -> AudioTokenizer:
    """The fit's architecture and seed before any gradient step, codebooks k-means-initialised."""
    hp = flat_hparams(tok.hparams)
    torch.manual_seed(hp["seed"])
    model = CodecModel(tok.model.config)
    # The first batch of crops the fit's own sampler would draw from these clips.
    segments = SegmentDataset(train, round(hp["segment_seconds"] * hp["sample_rate"]), hp["seed"])
    crops = list(itertools.islice(segments, hp["batch_size"]))
    with torch.no_grad():
        model.train()(torch.stack(crops))  # the first forward runs the k-means initialisation
    return AudioTokenizer(model.eval(), tok.info, tok.hparams)


def log_mel(wav: torch.Tensor, rate: int) -> torch.Tensor:
    mel = torchaudio.transforms.MelSpectrogram(rate, n_fft=1024, hop_length=256, n_mels=80)
    return torch.log10(mel(wav[0]) + 1e-5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenizer", required=True, help="audio tokenizer artifact directory")
    ap.add_argument("--manifest", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--md", required=True)
    ap.add_argument("--png", required=True)
    ap.add_argument("--clip", type=int, default=0, help="index of the clip shown in the PNG")
    args = ap.parse_args()

    fitted = load_tokenizer(args.tokenizer)
    held = clips_of(args.manifest, args.split, fitted)
    init = initial_codec(fitted, clips_of(args.manifest, "train", fitted))
    rows = {}
    for name, tok in (("at initialisation", init), ("fitted", fitted)):
        start = time.perf_counter()
        rows[name] = {**tok.evaluate(held), "seconds": time.perf_counter() - start}

    rate = fitted.info.sample_rate
    wav = held[args.clip]
    panels = [("original", wav)]
    for name, tok in (("at initialisation", init), ("fitted", fitted)):
        panels.append((name, tok.decode(tok.encode((wav, rate)))))
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 7), sharex=True)
    for ax, (name, x) in zip(axes, panels, strict=True):
        ax.imshow(log_mel(x, rate).numpy(), origin="lower", aspect="auto", cmap="magma")
        ax.set_title(name)
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel(f"frame (hop 256 at {rate} Hz)")
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=80)
    write_report(args, fitted, rows, len(held), sum(c.shape[-1] for c in held) / rate)


def write_report(args, tok: AudioTokenizer, rows: dict, n: int, seconds: float) -> None:
    manifest = json.loads((Path(args.tokenizer) / "manifest.json").read_text())
    hp, fit, info = flat_hparams(manifest["hparams"]), manifest["fit_data"], tok.info
    k = info.num_codebooks
    lines = [
        f"Report command (as run): `python {' '.join(sys.argv)}`",
        "",
        f"Codec: {info.sample_rate} Hz, {info.frame_rate:g} frames per second, K = {k} "
        f"codebook(s) of {info.codebook_size} ({info.tokens_per_second:g} tokens per second); "
        f"SEANet {hp['n_filters']} filters, latent {hp['dimension']}, LSTM layers {hp['lstm']}; "
        f"{hp['max_steps']} steps of {hp['batch_size']} crops of {hp['segment_seconds']} s, "
        f"lr {hp['learning_rate']}, seed {hp['seed']}; trained on {fit['num_train']} clips "
        f"({fit['train_seconds']:.0f} s; loss {fit['loss_start']:.3f} → {fit['loss_end']:.3f}).",
        "",
        f"Evaluated on {n} clips of the `{args.split}` split ({seconds:.0f} s of audio).",
        "",
        "| codec | SI-SNR (dB) | log-mel distance | "
        + " | ".join(f"codebook {i}: perplexity, used" for i in range(k))
        + " | eval seconds |",
        "|---|---:|---:|" + "---:|" * k + "---:|",
    ]
    for name, m in rows.items():
        usage = " | ".join(
            f"{m[f'perplexity_{i}']:.1f}, {m[f'used_fraction_{i}']:.1%}" for i in range(k)
        )
        lines.append(
            f"| {name} | {m['si_snr_db']:.2f} | {m['mel_distance']:.3f} | {usage} | "
            f"{m['seconds']:.1f} |"
        )
    lines += ["", f"![log-mel spectrograms of one {args.split} clip]({Path(args.png).name})", ""]
    Path(args.md).write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
