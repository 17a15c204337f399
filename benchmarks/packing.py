"""Packing against naive padding, and loader tokens/s against a training step, in one run.

1. Non-pad fraction at context 1024 (goal >= 98 % for our packing): ``Packer`` (best fit over a
   look-ahead buffer, several buffer sizes) and ``TokenBudgetBatcher`` against naive per-example
   padding: examples in input order, fixed batches of 8, each padded (a) to the longest in its
   batch and (b) to the context. Every method gets the same pieces (documents longer than the
   context split at cuts, as ``split_document`` does), so all count the same tokens.
2. Loader tokens/s: ``PackedDataset`` (shuffle, pack, collate to torch tensors; one process) over
   the documents, against the tokens/s that a training step consumes: a small decoder
   (``nn.TransformerEncoder``, 4 layers, d_model 256, 4 heads, feed-forward 1024, causal and
   segment mask from ``attention_mask``, LM head, masked next-token loss, AdamW) forward + backward
   + step on CPU on packed batches of 8 × 1024, measured in the same run. Goal: the loader is at
   least 10 times faster. The step's FLOPs per token are counted too (``FlopCounterMode``), to say
   what an accelerator would consume.

The documents are synthetic, shaped like the built-in tri-modal data (``synthetic_documents``),
or, with ``--store PATH``, the examples of a pretokenized store (``tmm-pretokenize``).

    .venv/bin/python benchmarks/packing.py [--quick] [--num-docs N] [--out PATH.json] [--md PATH.md]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch
from vq_assign import cpu_name, write_outputs

from tokenize_mm.data import (
    SPECIAL_MODALITY,
    Document,
    PackedDataset,
    Packer,
    TokenBudgetBatcher,
    split_document,
)

CONTEXT, BATCH, GOAL, SPEED_GOAL = 1024, 8, 0.98, 10.0
# Global vocabulary: specials, then text, image and audio codes (the sizes only set the LM head).
SPLIT_SPANS = False  # cut spans longer than the context mid-span (set by --split-spans / --store)
PAD, BOS, EOS, IMAGE_BEGIN, IMAGE_END, AUDIO_BEGIN, AUDIO_END = range(7)
TEXT_OFFSET, TEXT_SIZE = 16, 8000
IMAGE_OFFSET, IMAGE_SIZE = TEXT_OFFSET + TEXT_SIZE, 1024
AUDIO_OFFSET, AUDIO_SIZE = IMAGE_OFFSET + IMAGE_SIZE, 1024
VOCAB = AUDIO_OFFSET + AUDIO_SIZE


# -- data -----------------------------------------------------------------------------------------
def synthetic_documents(num_docs: int, seed: int = 0, long_fraction: float = 0.05):
    """Documents shaped like the built-in data: bos, modality spans, eos; a cut at each span.

    Items: caption, text 10-40 tokens; paragraph, text 40-120; image, 64 codes in begin/end
    markers (66); audio, 100-150 codes in markers (102-152), all lengths uniform. A document is a
    text-only paragraph (25 %), a uniformly drawn non-empty subset of {caption, image, audio} in
    random order (70 %, as the built-in ``trimodal``/``image_text`` sub-sources), or with
    probability ``long_fraction`` a long interleaved document of 6 to 16 items drawn from
    {paragraph, image, audio} (some exceed the context and are split at cuts). bos joins the first
    span and eos the last. Mean length about 160 tokens.
    """
    rng = np.random.default_rng(seed)

    def text(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(rng.integers(lo, hi + 1))
        return TEXT_OFFSET + rng.integers(0, TEXT_SIZE, n), np.zeros(n, np.uint8)

    def coded(begin: int, end: int, offset: int, size: int, n: int, modality: int):
        tokens = np.concatenate([[begin], offset + rng.integers(0, size, n), [end]])
        ids = np.full(n + 2, modality, np.uint8)
        ids[[0, -1]] = SPECIAL_MODALITY
        return tokens, ids

    items = {
        "caption": lambda: text(10, 40),
        "paragraph": lambda: text(40, 120),
        "image": lambda: coded(IMAGE_BEGIN, IMAGE_END, IMAGE_OFFSET, IMAGE_SIZE, 64, 1),
        "audio": lambda: coded(
            AUDIO_BEGIN, AUDIO_END, AUDIO_OFFSET, AUDIO_SIZE, int(rng.integers(100, 151)), 2
        ),
    }
    docs = []
    for i in range(num_docs):
        u = rng.random()
        if u < long_fraction:
            names = rng.choice(["paragraph", "image", "audio"], int(rng.integers(6, 17))).tolist()
        elif u < long_fraction + 0.25:
            names = ["paragraph"]
        else:
            subset = int(rng.integers(1, 8))  # a non-empty subset of three, as a bit mask
            names = [n for b, n in enumerate(("caption", "image", "audio")) if subset >> b & 1]
            names = [names[j] for j in rng.permutation(len(names))]
        spans = [items[name]() for name in names]
        spans[0] = (np.concatenate([[BOS], spans[0][0]]), np.concatenate([[3], spans[0][1]]))
        spans[-1] = (np.concatenate([spans[-1][0], [EOS]]), np.concatenate([spans[-1][1], [3]]))
        docs.append(Document.from_spans(spans, doc_id=i))
    return docs


# -- 1. padding -----------------------------------------------------------------------------------
def padding(docs: list[Document], buffers: list[int]) -> list[dict]:
    lengths = [len(p) for d in docs for p in split_document(d, CONTEXT, SPLIT_SPANS)]
    tokens = sum(lengths)
    longest = [max(lengths[i : i + BATCH]) for i in range(0, len(lengths), BATCH)]
    padded = {
        f"naive: batches of {BATCH}, each padded to its longest": sum(
            m * len(lengths[i * BATCH : (i + 1) * BATCH]) for i, m in enumerate(longest)
        ),
        f"naive: each example padded to the context ({CONTEXT})": len(lengths) * CONTEXT,
    }
    out = [
        {"method": name, "rows": len(lengths), "tokens": tokens, "pad_tokens": total - tokens,
         "split_documents": sum(len(d) > CONTEXT for d in docs), "non_pad_fraction": tokens / total}
        for name, total in padded.items()
    ]  # fmt: skip
    for size in buffers:
        packer = Packer(CONTEXT, PAD, buffer_size=size, split_spans=SPLIT_SPANS)
        for _ in packer.pack(docs):
            pass
        out.append({"method": f"Packer, buffer_size {size}", **packer.stats.as_dict()})
    budget = TokenBudgetBatcher(
        BATCH * CONTEXT, PAD, max_length=CONTEXT, buffer_size=1024, split_spans=SPLIT_SPANS
    )
    for _ in budget.batches(docs):
        pass
    out.append(
        {"method": f"TokenBudgetBatcher, max_tokens {BATCH * CONTEXT}, buffer_size 1024",
         **budget.stats.as_dict()}
    )  # fmt: skip
    return out


# -- 2. loader against a training step ------------------------------------------------------------
def loader_rate(docs: list[Document], rounds: int, name: str, **kwargs) -> dict:
    """Tokens/s of one pass of a ``PackedDataset`` over ``docs``, median over rounds."""
    times, real, total = [], 0, 0
    for epoch in range(rounds):
        data = PackedDataset(
            docs, PAD, context=CONTEXT, batch_size=BATCH, seed=0, split_spans=SPLIT_SPANS, **kwargs
        )
        data.set_epoch(epoch)
        start, real, total = time.perf_counter(), 0, 0
        for batch in data:
            real += batch.num_tokens
            total += batch.tokens.numel()
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    return {"loader": name, "seconds": t, "tokens_per_s": real / t, "row_tokens_per_s": total / t,
            "rounds": rounds}  # fmt: skip


class TinyDecoder(nn.Module):
    """Token + position embeddings, a causal TransformerEncoder, an LM head."""

    def __init__(self, vocab: int, d_model: int = 256, layers: int = 4, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.embed, self.pos = nn.Embedding(vocab, d_model), nn.Embedding(CONTEXT, d_model)
        layer = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, 0.0, batch_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, batch) -> torch.Tensor:
        x = self.embed(batch.tokens) + self.pos(batch.positions)
        blocked = ~batch.attention_mask().repeat_interleave(self.heads, 0)  # (B·H, L, L)
        logits = self.head(self.body(x, mask=blocked))
        mask = batch.target_mask()[:, :-1]
        return F.cross_entropy(logits[:, :-1][mask], batch.tokens[:, 1:][mask])


def train_rate(docs: list[Document], batch_size: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = TinyDecoder(VOCAB)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = iter(
        PackedDataset(docs, PAD, context=CONTEXT, batch_size=batch_size, split_spans=SPLIT_SPANS)
    )

    def step(batch) -> None:
        opt.zero_grad(set_to_none=True)
        model(batch).backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step(next(batches))  # the warm-up step, counted
    times = []
    for _ in range(steps):
        batch = next(batches)
        start = time.perf_counter()
        step(batch)
        times.append(time.perf_counter() - start)
    t = statistics.median(times)
    return {
        "batch": batch_size, "context": CONTEXT, "steps": steps, "step_seconds": t,
        "tokens_per_s": batch_size * CONTEXT / t, "params": sum(p.numel() for p in model.parameters()),
        "flops_per_token": counter.get_total_flops() / (batch_size * CONTEXT),
    }  # fmt: skip


# -- report ---------------------------------------------------------------------------------------
def markdown(meta: dict, pad_rows: list[dict], loader: dict, train: dict, goals: list) -> str:
    lines = [
        "# Packing and batching", "", f"Command: `{meta['command']}`", "",
        f"Machine: {meta['cpu']}, {meta['usable_cores']} usable cores, torch threads "
        f"{meta['torch_threads']}; torch {meta['torch']}, numpy {meta['numpy']}, Python "
        f"{meta['python']}; {meta['date']}; load average (1 min, other processes on the cores) "
        f"{meta['load_average_start']} at start, {meta['load_average_end']} at end. "
        f"{meta['num_docs']} {meta['data']} (mean {meta['mean_length']:.0f} "
        f"tokens, longest {meta['max_length']}, {meta['tokens']} tokens in all), context "
        f"{CONTEXT}.",
    ]  # fmt: skip
    if meta["quick"]:
        lines += [
            "",
            "**--quick run: tiny sizes for a smoke test; these numbers are not results.**",
        ]
    lines += ["", "## Goals", "", "| goal | target | measured | met |", "|---|---:|---:|---|"]
    lines += [f"| {name} | {target} | {value} | {'yes' if met else '**no**'} |"
              for name, target, value, met in goals]  # fmt: skip
    lines += [
        "", "## Non-pad fraction", "",
        "Same pieces for every method (documents over the context split at cuts). Rows: sequences "
        "of the context (packers, naive padding to the context) or of the batch's longest piece "
        "(token budget, naive batches). `buffer_size 1` is no look-ahead: one piece per row.", "",
        "| method | non-pad fraction | rows | pad tokens | split documents |", "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in pad_rows:
        lines.append(
            f"| {r['method']} | {r['non_pad_fraction']:.2%} | {r['rows']} | {r['pad_tokens']} | "
            f"{r['split_documents']} |"
        )
    ratio = loader["packed"]["tokens_per_s"] / train["tokens_per_s"]
    gpu = 1e14 / train["flops_per_token"]
    lines += [
        "", "## Loader against a training step", "",
        "Loader: one pass of `PackedDataset` (shuffle, split, pack, collate to torch tensors) over "
        f"the documents in one process, median of {loader['packed']['rounds']} passes; tokens/s "
        "counts non-pad tokens (row tokens include padding).", "",
        "| loader | tokens/s | row tokens/s |", "|---|---:|---:|",
    ]  # fmt: skip
    for r in loader.values():
        lines.append(f"| {r['loader']} | {r['tokens_per_s']:,.0f} | {r['row_tokens_per_s']:,.0f} |")
    lines += [
        "",
        f"Training step: `TinyDecoder` ({train['params'] / 1e6:.1f} M parameters: 4 layers, "
        f"d_model 256, 4 heads, LM head over {VOCAB} ids), forward + backward + AdamW on packed "
        f"batches of {train['batch']} × {CONTEXT}, CPU, median of {train['steps']} steps after one "
        f"warm-up: **{train['step_seconds']:.2f} s per step, {train['tokens_per_s']:,.0f} "
        f"tokens/s**. The packed loader is **{ratio:,.0f} times** faster.",
        "",
        f"On an accelerator: the step costs {train['flops_per_token'] / 1e6:.0f} MFLOP per token "
        "(counted by `FlopCounterMode`, forward + backward), so a GPU sustaining 100 TFLOP/s on it "
        f"would consume {gpu:,.0f} tokens/s: the packed loader in one process gives "
        f"{loader['packed']['tokens_per_s'] / gpu:.1f} times that; DataLoader workers "
        "(`PackedDataset` shards over them) multiply it.",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (seconds), a smoke test")
    ap.add_argument("--num-docs", type=int, help="synthetic documents (default 20000; quick 1000)")
    ap.add_argument("--store", help="pack the documents of a pretokenized store instead")
    ap.add_argument(
        "--split-spans",
        action="store_true",
        help="cut spans longer than the context (on by default with --store)",
    )
    ap.add_argument("--out", default=scratch("packing.json"), help="default: %(default)s")
    ap.add_argument("--md", default=scratch("packing.md"), help="default: %(default)s")
    args = ap.parse_args()
    global SPLIT_SPANS
    SPLIT_SPANS = args.split_spans or bool(args.store)
    if args.store:
        from tokenize_mm.data.store import TokenStore

        docs = TokenStore(args.store).documents()[: args.num_docs]
        num_docs = len(docs)
    else:
        num_docs = args.num_docs or (1000 if args.quick else 20000)
        docs = synthetic_documents(num_docs, seed=0)
    lengths = [len(d) for d in docs]
    meta = {
        "command": shlex.join(sys.orig_argv), "quick": args.quick, "cpu": cpu_name(),
        "usable_cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "data": (f"examples of the store {args.store}" if args.store else "synthetic documents "
                 "shaped like the built-in tri-modal data (`synthetic_documents`, seed 0)"),
        "num_docs": num_docs, "tokens": sum(lengths), "mean_length": float(np.mean(lengths)),
        "max_length": max(lengths), "context": CONTEXT, "batch": BATCH,
        "load_average_start": round(os.getloadavg()[0], 2),
    }  # fmt: skip
    pad_rows = padding(docs, [1, 16, 64, 256, 1024])
    for r in pad_rows:
        print(f"{r['method']}: non-pad {r['non_pad_fraction']:.2%}", flush=True)
    rounds = 1 if args.quick else 3
    loader = {
        "packed": loader_rate(docs, rounds, f"packed, batch {BATCH} × {CONTEXT}, buffer 256"),
        "token_budget": loader_rate(
            docs, rounds, f"token budget, max_tokens {BATCH * CONTEXT}, buffer 1024",
            max_tokens=BATCH * CONTEXT, buffer_size=1024,
        ),
    }  # fmt: skip
    print(f"loader: {loader['packed']['tokens_per_s']:,.0f} tokens/s", flush=True)
    train = train_rate(docs, 2 if args.quick else BATCH, 1 if args.quick else 5)
    print(f"train step: {train['tokens_per_s']:,.0f} tokens/s", flush=True)
    meta["load_average_end"] = round(os.getloadavg()[0], 2)
    ours = next(r for r in pad_rows if r["method"] == "Packer, buffer_size 256")
    ratio = loader["packed"]["tokens_per_s"] / train["tokens_per_s"]
    goals = [
        ("non-pad fraction, Packer (buffer 256) at context 1024", f"≥ {GOAL:.0%}",
         f"{ours['non_pad_fraction']:.2%}", ours["non_pad_fraction"] >= GOAL),
        ("loader tokens/s / training-step tokens/s (CPU, same run)", f"≥ {SPEED_GOAL:.0f}×",
         f"{ratio:,.0f}×", ratio >= SPEED_GOAL),
    ]  # fmt: skip
    results = {
        "meta": meta, "padding": pad_rows, "loader": loader, "train_step": train,
        "goals": [dict(zip(("name", "target", "value", "met"), g, strict=True)) for g in goals],
    }  # fmt: skip
    write_outputs(args.out, results, args.md, markdown(meta, pad_rows, loader, train, goals))
    print(f"wrote {args.out} and {args.md}")


if __name__ == "__main__":
    main()
