"""What the narrow codec's exact shortcuts save: the main job's audio_small on one CPU thread.

The main job's codec (``conf/tokenizer/audio_small.yaml``: SEANet 8 filters wide, no LSTM, an FSQ
grid of 256 codes) runs at the full 24 kHz rate on 4 and 8 channels, where the CPU's kernels are
far below their speed. Two shortcuts in ``tokenizers/audio/padding.py`` compute the same values
up to the order of the sums; each is timed here against the path it replaced, side by side in
one process, variants interleaved over ``--rounds`` rounds (median), on one torch thread (what
the fresh-example workers and the store's pretokenizers run with), random weights of that
architecture, a fixed seed:

- ``rows_linear``: a 1x1 convolution with fewer than 16 output channels on pairs of frames,
  against the plain (N, C_in) @ (C_in, C_out) product: ``encode_batch`` of ``--clips`` clips of
  2.76 to 3.24 s (the built-in clips' lengths), and whether the codes are identical;
- ``phase_conv_transpose``: the decoder's transposed convolutions as stride-1 convolutions over
  output phases, against ``conv_transpose2d``: ``decode`` of the same clips one by one (as a
  fit's held-out evaluation decodes them), and the largest difference in the waveforms.

    .venv/bin/python benchmarks/codec_small_paths.py [--clips 16] [--rounds 5] [--out-dir DIR]

Writes ``codec_small_paths.md`` and ``.json`` into ``--out-dir`` (a scratch folder by default).
"""

from __future__ import annotations

import argparse
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

from tokenize_mm.tokenizers.arch import arch_dict
from tokenize_mm.tokenizers.audio import padding
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.audio.tokenizer import AudioTokenizer, _make_info, with_fsq_grid

#: conf/tokenizer/audio_small.yaml's architecture.
ARCH = {"n_filters": 8, "dimension": 64, "lstm": 0, "codebook_size": 256, "fsq_levels": (2,) * 8}


def small_codec(seed: int = 0) -> AudioTokenizer:
    """An ``AudioTokenizer`` of audio_small's architecture with random weights."""
    torch.manual_seed(seed)
    config = with_fsq_grid(CodecConfig(**ARCH))
    return AudioTokenizer(CodecModel(config).eval(), _make_info(config),
                          {"arch": arch_dict(config)}, {})  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--rounds", type=int, default=5)
    out_dir_option(p, "codec_small_paths")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    tok = small_codec()
    g = torch.Generator().manual_seed(0)
    clips = [(0.1 * torch.randn(1, int(24_000 * (2.76 + 0.48 * float(torch.rand((), generator=g)))),
                                generator=g), 24_000) for _ in range(args.clips)]  # fmt: skip
    encoded = tok.encode_batch(clips)

    def encode(pairs: bool):
        with mock.patch.object(padding, "PAIRS_BELOW", 16 if pairs else 0):
            return [e.codes for e in tok.encode_batch(clips)]

    def decode(phases: bool):
        if phases:
            return [tok.decode(e) for e in encoded]
        with mock.patch.object(padding, "_plain_transpose", lambda conv: False):
            return [tok.decode(e) for e in encoded]

    variants = {
        "encode, 1x1 on pairs of frames": lambda: encode(True),
        "encode, plain 1x1 product": lambda: encode(False),
        "decode, phase convolutions": lambda: decode(True),
        "decode, conv_transpose2d": lambda: decode(False),
    }
    for fn in variants.values():
        fn()  # warm-up
    load_start = load_average()
    times, outputs = interleaved(variants, args.rounds)
    median = {name: statistics.median(v) for name, v in times.items()}
    pairs_codes = outputs["encode, 1x1 on pairs of frames"]
    plain_codes = outputs["encode, plain 1x1 product"]
    differing = sum(int((a != b).sum()) for a, b in zip(pairs_codes, plain_codes, strict=True))
    total = sum(a.numel() for a in pairs_codes)
    wave_diff = max(float((a - b).abs().max()) for a, b in zip(
        outputs["decode, phase convolutions"], outputs["decode, conv_transpose2d"], strict=True))  # fmt: skip
    seconds = sum(w.shape[-1] for w, _ in clips) / 24_000
    encode_ratio = median["encode, plain 1x1 product"] / median["encode, 1x1 on pairs of frames"]
    decode_ratio = median["decode, conv_transpose2d"] / median["decode, phase convolutions"]
    record = {
        "command": shlex.join(sys.orig_argv), "clips": args.clips, "audio_seconds": seconds,
        "rounds": args.rounds, "median_s": median, "times_s": times,
        "encode_speedup_pairs": encode_ratio, "decode_speedup_phases": decode_ratio,
        "codes_differing": differing, "codes_total": total, "max_waveform_difference": wave_diff,
        "machine": machine_facts(load_start),
    }  # fmt: skip
    lines = [
        "# The narrow codec's shortcuts: 1x1 convolutions on pairs of frames, transposed "
        "convolutions over phases", "",
        f"Command: `{record['command']}`", "",
        f"Machine: {record['machine']['cpu']}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"(1 thread); load {load_start} at the start, {record['machine']['load_end']} at the end; "
        f"{record['machine']['date']}.", "",
        f"audio_small's architecture (random weights), {args.clips} clips, {seconds:.1f} s of "
        f"audio at 24 kHz; {args.rounds} rounds, variants interleaved; median seconds.", "",
        "| variant | seconds | per-round (s) |", "|---|---|---|",
        *(f"| {n} | {median[n]:.3f} | {' / '.join(f'{t:.3f}' for t in times[n])} |"
          for n in variants),
        "",
        f"Encoding: pairs of frames **{encode_ratio:.2f}x** the plain product's speed; "
        f"{differing} of {total} codes differ. Decoding clip by clip: phase convolutions "
        f"**{decode_ratio:.2f}x** conv_transpose2d's speed; largest waveform difference "
        f"{wave_diff:.1e}.",
    ]  # fmt: skip
    write_record(args.out_dir, "codec_small_paths", record, lines)


if __name__ == "__main__":
    main()
