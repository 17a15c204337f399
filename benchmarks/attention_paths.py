"""What the attention paths save: DecoderLM's training step with and without the dense mask, side
by side (models/sparse_attention.py, models/document_attention.py).

The model is the main job's ``small`` preset (4 blocks 128 wide); a batch is ``--batch`` rows of
``--length`` positions with random ids. Five variants, timed in interleaved rounds (A B C D E A
...), median milliseconds per forward + backward:

- ``fast path``: every row one document (then padding), so the blocks call
  ``scaled_dot_product_attention(is_causal=True)`` without a mask;
- ``dense mask``: the same rows and weights with the path switched off (``causal_rows`` patched
  to say no): the (B, 1, L, L) mask is built and read, as before the path existed;
- ``packed rows`` (information): four equal documents a row, under the dense mask;
- ``main-job rows, dense mask`` and ``main-job rows, documents``: rows packed as the main job
  packs the built-in data (documents of about 84, 55, 33 and 5 % of a row, the sizes of its
  trimodal, image-text, audio-text and text-only examples, drawn at random and cut at the row's
  end), under the dense mask and with ``attention="documents"`` (causal attention per document,
  the same weights).

Each pair computes the same hidden states at every non-padding position (checked here, and in
tests/unit/test_sparse_attention.py and test_document_attention.py). Block-sparse
``flex_attention`` is the GPU path and is not timed here: PyTorch's flex has no backward on a CPU.

    .venv/bin/python benchmarks/attention_paths.py [--batch 8] [--length 512] [--rounds 5]
        [--steps 5] [--threads N] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import out_dir_option, rotated, write_record
from vq_assign import load_average, machine_facts

from tokenize_mm.models import DecoderLM, preset

VOCAB = 10_000


def rows(batch: int, length: int, documents: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` rows of ``length``: ``documents`` equal documents a row, the last 10 % padding."""
    g = torch.Generator().manual_seed(seed)
    real = length - length // 10
    per = real // documents
    segment = torch.zeros(length, dtype=torch.long)
    positions = torch.zeros(length, dtype=torch.long)
    for d in range(documents):
        end = real if d == documents - 1 else (d + 1) * per
        segment[d * per : end] = d + 1
        positions[d * per : end] = torch.arange(end - d * per)
    return {
        "tokens": torch.randint(0, VOCAB, (batch, length), generator=g),
        "modality": torch.randint(0, 4, (batch, length), generator=g),
        "positions": positions.expand(batch, -1).clone(),
        "segment_ids": segment.expand(batch, -1).clone(),
    }


def main_job_rows(batch: int, length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """``batch`` rows packed as the main job packs the built-in data (module docstring)."""
    g = torch.Generator().manual_seed(seed)
    fractions = torch.tensor([0.84, 0.55, 0.33, 0.05])
    segment = torch.zeros(batch, length, dtype=torch.long)
    positions = torch.zeros(batch, length, dtype=torch.long)
    carry = 0  # what the last document left for the next row (cut at the row's end)
    for b in range(batch):
        t, doc = 0, 1
        while t < length:
            if carry == 0:
                jitter = 0.9 + 0.2 * float(torch.rand((), generator=g))
                pick = int(torch.randint(len(fractions), (), generator=g))
                carry = max(1, round(float(fractions[pick]) * jitter * length))
            n = min(carry, length - t)
            segment[b, t : t + n], positions[b, t : t + n] = doc, torch.arange(n)
            t, doc, carry = t + n, doc + 1, carry - n
    return {
        "tokens": torch.randint(0, VOCAB, (batch, length), generator=g),
        "modality": torch.randint(0, 4, (batch, length), generator=g),
        "positions": positions,
        "segment_ids": segment,
    }


def step(model: DecoderLM, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    hidden = model(**batch)
    hidden.square().mean().backward()
    return hidden.detach()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    out_dir_option(p, "attention_paths")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = DecoderLM(preset("small"), vocab_size=VOCAB)
    by_document = DecoderLM(dataclasses.replace(preset("small"), attention="documents"),
                            vocab_size=VOCAB)  # fmt: skip
    by_document.load_state_dict(model.state_dict())
    single, packed = rows(args.batch, args.length, 1), rows(args.batch, args.length, 4)
    main_job = main_job_rows(args.batch, args.length)

    def dense_mask() -> torch.Tensor:
        with mock.patch("tokenize_mm.models.transformer.causal_rows", lambda _: False):
            return step(model, single)

    variants = {
        "fast path": lambda: step(model, single),
        "dense mask": dense_mask,
        "packed rows": lambda: step(model, packed),
        "main-job rows, dense mask": lambda: step(model, main_job),
        "main-job rows, documents": lambda: step(by_document, main_job),
    }
    real = single["segment_ids"] != 0
    same = torch.allclose(variants["fast path"]()[real], variants["dense mask"]()[real],
                          atol=1e-5, rtol=1e-5)  # fmt: skip
    same_documents = torch.allclose(variants["main-job rows, documents"](),
                                    variants["main-job rows, dense mask"](),
                                    atol=1e-5, rtol=1e-5)  # fmt: skip
    load_start = load_average()
    times: dict[str, list[float]] = {name: [] for name in variants}
    per_round: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.rounds):
        for name in rotated(list(variants), r):
            variants[name]()  # warm-up
            got = []
            for _ in range(args.steps):
                start = time.perf_counter()
                variants[name]()
                got.append(time.perf_counter() - start)
            times[name] += got
            per_round[name].append(statistics.median(got))
    median = {name: statistics.median(v) for name, v in times.items()}
    ratio = median["dense mask"] / median["fast path"]
    ratio_documents = median["main-job rows, dense mask"] / median["main-job rows, documents"]
    record = {
        "command": shlex.join(sys.orig_argv),
        "batch": args.batch, "length": args.length, "rounds": args.rounds, "steps": args.steps,
        "median_s": median, "per_round_median_s": per_round,
        "speedup_fast_over_dense": ratio, "same_hidden_states": same,
        "speedup_documents_over_dense": ratio_documents,
        "same_hidden_states_documents": same_documents,
        "main_job_documents_per_row": [len(r.unique_consecutive()) for r in main_job["segment_ids"]],
        "machine": machine_facts(load_start),
    }  # fmt: skip
    lines = [
        "# Attention paths: the causal fast path and per-document attention against the dense "
        "mask", "",
        f"Command: `{record['command']}`", "",
        f"Machine: {record['machine']['cpu']}, {os.cpu_count()} cores, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads); load {load_start} at the start, "
        f"{record['machine']['load_end']} at the end; {record['machine']['date']}.", "",
        f"DecoderLM `small` (4 blocks, 128 wide, vocab {VOCAB:,}), forward + backward of "
        f"{args.batch} rows x {args.length} positions (the last 10 % padding); {args.rounds} "
        f"rounds of {args.steps} steps per variant, interleaved; median over every step.", "",
        "| variant | ms per step | per-round medians (ms) |", "|---|---|---|",
        *(f"| {n} | {median[n] * 1e3:.1f} | "
          f"{' / '.join(f'{t * 1e3:.1f}' for t in per_round[n])} |" for n in variants),
        "",
        f"Fast path over dense mask: **{ratio:.2f}x** the speed; hidden states at every "
        f"non-padding position equal to 1e-5: {same}.", "",
        f"Main-job rows ({' / '.join(map(str, record['main_job_documents_per_row']))} documents "
        f"a row), causal attention per document over the dense mask: **{ratio_documents:.2f}x** "
        f"the speed; hidden states at every position equal to 1e-5: {same_documents}.",
    ]  # fmt: skip
    write_record(args.out_dir, "attention_paths", record, lines)


if __name__ == "__main__":
    main()
