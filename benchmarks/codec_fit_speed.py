"""A codec fit on the CPU with the package's SEANet modules against ours, side by side in one run.

``CodecModel`` is built with reflection padding by slicing (``audio/padding.py``) and the native
ELU (``audio/elu.py``, whose backward runs from the output), and on the CPU runs its encoder and
decoder channels-last, the waveform's convolution on blocks of samples (``CodecModel.latent`` /
``reconstruct``); the package builds ``SConv1d`` with ``F.pad(mode="reflect")`` and ``nn.ELU``
and runs them on (B, C, T), and its mel loss is torchaudio's ``MelSpectrogram`` (our fit's is
``spectrum.MelPower``: the same values, a cheaper backward through the FFT; the middle variant is
ours with torchaudio's loss; the third is ours with the padding's and the transposed
convolutions' trim's gradients left to autograd, which writes them in the default layout, as before
``padding.ReflectPadChannelsLast`` and ``TrimChannelsLast``). Values and gradients differ at
rounding. This times
``AudioTokenizer.fit`` of the main job's ``audio_small`` architecture (n_filters 8, 64-d latents,
no LSTM, binary FSQ grid; conf/tokenizer/audio_small.yaml) for ``--steps`` steps of 16
one-second crops, the four ways in turn in each round (the package's way by skipping the swap in
``CodecModel`` and in ``folded_copy``, which the fit's held-out evaluation encodes with), on
synthetic clips; the median of ``--rounds`` rounds.

    .venv/bin/python benchmarks/codec_fit_speed.py [--steps 20] [--rounds 3] [--quick] [--out J] [--md M]
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
import torchaudio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch
from vq_assign import cpu_name, write_outputs

import tokenize_mm.tokenizers.audio.batch as codec_batch
import tokenize_mm.tokenizers.audio.fit as codec_fit
import tokenize_mm.tokenizers.audio.model as codec_model
import tokenize_mm.tokenizers.audio.padding as padding
from tokenize_mm import AudioTokenizer
from tokenize_mm.tokenizers.audio.model import CodecConfig

# conf/tokenizer/audio_small.yaml's fit.config
ARCH = CodecConfig(n_filters=8, dimension=64, lstm=0, codebook_size=256, fsq_levels=(2,) * 8)


def clips(n: int, seconds: float, seed: int) -> list[tuple[torch.Tensor, int]]:
    """n mono clips of noise at 24 kHz (speed does not depend on what they hold)."""
    g = torch.Generator().manual_seed(seed)
    return [(0.2 * torch.randn(1, int(24_000 * seconds), generator=g), 24_000) for _ in range(n)]


def fit_seconds(data: list, steps: int, package: bool, torchaudio_mel: bool = False,
                autograd_layout: bool = False) -> float:  # fmt: skip
    """Wall seconds of one fit; ``package`` builds the model with the package's modules;
    ``torchaudio_mel`` computes the mel loss with torchaudio's ``MelSpectrogram`` (whose FFT's
    backward is PyTorch's full-length complex one) instead of ``spectrum.MelPower``;
    ``autograd_layout`` pads and trims as before ``ReflectPadChannelsLast`` and
    ``TrimChannelsLast``: slice assignments and a slice, whose gradients autograd writes in the
    default layout."""
    swaps = codec_model.swap_elus, codec_model.swap_padded_convs, codec_batch.swap_elus
    if package:
        keep = lambda module: module  # noqa: E731
        codec_model.swap_elus = codec_model.swap_padded_convs = codec_batch.swap_elus = keep
    mel = codec_fit.MelPower
    if torchaudio_mel:
        codec_fit.MelPower = torchaudio.transforms.MelSpectrogram
    pad, trim = padding.ReflectPadChannelsLast.apply, padding.trim_channels_last
    if autograd_layout:
        padding.ReflectPadChannelsLast.apply = padding._write_reflect_pad
        padding.trim_channels_last = lambda y, left, right: y[..., left : y.shape[-1] - right]
    try:
        t0 = time.perf_counter()
        AudioTokenizer.fit(data, config=ARCH, max_steps=steps, batch_size=16,
                           learning_rate=1e-3, seed=0)  # fmt: skip
        return time.perf_counter() - t0
    finally:
        codec_model.swap_elus, codec_model.swap_padded_convs, codec_batch.swap_elus = swaps
        codec_fit.MelPower = mel
        padding.ReflectPadChannelsLast.apply, padding.trim_channels_last = pad, trim


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="2 steps, 1 round: a smoke run")
    p.add_argument("--out", default=scratch("codec_fit_speed.json"),
                   help=f"default: {scratch('codec_fit_speed.json')}")  # fmt: skip
    p.add_argument("--md", default=scratch("codec_fit_speed.md"),
                   help=f"default: {scratch('codec_fit_speed.md')}")  # fmt: skip
    args = p.parse_args()
    if args.quick:
        args.steps, args.rounds = 2, 1
    data = clips(12 if args.quick else 40, 3.0, seed=0)
    fit_seconds(data, 2, package=False)  # warm-up: the native library, first allocations
    variants = {  # name: (package, torchaudio_mel, autograd_layout)
        "package": (True, True, False),
        "ours, torchaudio's mel": (False, True, False),
        "ours, autograd's padding gradients": (False, False, True),
        "ours": (False, False, False),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (package, torchaudio_mel, autograd_layout) in variants.items():
            times[name].append(fit_seconds(data, args.steps, package, torchaudio_mel,
                                           autograd_layout))  # fmt: skip
    med = {name: statistics.median(t) for name, t in times.items()}
    res = {
        "meta": {"command": shlex.join(sys.orig_argv), "cpu": cpu_name(),
                 "torch": torch.__version__, "threads": torch.get_num_threads(),
                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")},
        "steps": args.steps, "rounds": args.rounds, "seconds": times, "median_s": med,
        "speedup": med["package"] / med["ours"],
        "mel_speedup": med["ours, torchaudio's mel"] / med["ours"],
        "layout_speedup": med["ours, autograd's padding gradients"] / med["ours"],
    }  # fmt: skip
    m = res["meta"]
    md = "\n".join([
        "# Codec fit on the CPU: the package's SEANet modules against ours", "",
        f"Command: `{m['command']}`", "",
        f"{m['cpu']}, torch {m['torch']}, {m['threads']} threads, {m['date']}. "
        f"`AudioTokenizer.fit` of audio_small's architecture, {args.steps} steps of 16 one-second "
        f"crops, median of {args.rounds} alternating rounds (the fit's held-out evaluation "
        "included).", "",
        "| modules | seconds | each round |", "|---|---:|---|",
        *(f"| {n} | {med[n]:.2f} | {', '.join(f'{t:.2f}' for t in times[n])} |" for n in times),
        "", f"Ours: **{res['speedup']:.2f} times** the package's speed; the mel loss by "
        f"`spectrum.MelPower` against torchaudio's `MelSpectrogram`: **{res['mel_speedup']:.2f} "
        "times**; the padding's and the transposed convolutions' trim's gradients kept "
        "channels-last (`ReflectPadChannelsLast`, `TrimChannelsLast`) against autograd's: "
        f"**{res['layout_speedup']:.2f} times**.", "",
    ])  # fmt: skip
    print(md)
    write_outputs(args.out, res, args.md, md)


if __name__ == "__main__":
    main()
