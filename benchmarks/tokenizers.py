"""Tokenizer throughput, side by side with its reference, in one run on one machine.

Measures three things and checks two goals:

1. Text tokens/s: ``TextTokenizer.encode_batch`` against raw sentencepiece batch encode
   (``SentencePieceProcessor(model_proto=tok.model_proto).encode(texts, out_type=int,
   num_threads=tok.num_threads)``): the same model, the same texts, the same batches and the
   same thread count. Goal: ours/raw >= 0.9. Single-item ``encode`` is timed too, for information.
2. Images/s of ``ImageTokenizer`` at the default architecture (conf/tokenizer/image.yaml, 256x256,
   f = 16) and the CPU-sized one (image_small.yaml, 64x64, f = 4): ``encode_batch`` end to end,
   preprocess only, model only (encoder + quantizer), quantizer only, and ``decode_batch``. The
   models are untrained; one train-mode pass of the quantizer (k-means init + an EMA step) on
   other images sets the codebook, so the assignment is not degenerate (codebook use is reported).
3. GFLOP/s of the VQ nearest-code assignment (``nearest_code``; ``torch.cdist(...).argmin(1)`` as
   the reference) against the machine's float32 matmul (helpers of ``vq_assign.py``). Goal:
   ``nearest_code`` >= 70 % of matmul at every measured shape; the product alone in the same
   blocks ("scores only") is timed beside it, as the ceiling.

Every timing is ``vq_assign.timeit``: one warm-up call of each contender, then interleaved rounds
(A B A B ...) so that load from other processes falls on both alike, and the median per call.

    .venv/bin/python benchmarks/tokenizers.py [--quick] [--text-only] [--out PATH.json] [--md PATH.md]
        [--dev-manifest PATH.jsonl] [--num-texts N] [--vocab-size V]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys

import sentencepiece as spm
import torch
from omegaconf import OmegaConf
from scratch import scratch
from vq_assign import (
    cpu_name,
    fused_kernel_name,
    load_average,
    measure_assignment,
    timeit,
    vector_variants,
    write_outputs,
)

from tokenize_mm import ImageTokenizer, TextTokenizer
from tokenize_mm.data import BuiltinSource, ManifestSource
from tokenize_mm.tokenizers.arch import arch_dict
from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel
from tokenize_mm.tokenizers.image.tokenizer import _make_info
from tokenize_mm.tokenizers.quant.usage import codebook_usage

TEXT_GOAL, VQ_GOAL = 0.9, 0.7  # issue 16's goals
IMAGE_CONFIGS = {"default": "image", "small": "image_small"}  # conf/tokenizer/<name>.yaml
# Sizes; images: case -> (images timed, images whose latents initialise the codebook).
FULL = dict(num_texts=30000, text_batch=4096, single=5000, text_reps=21, text_secs=20.0,
            images={"default": (16, 16), "small": (128, 64)}, image_reps=3,
            vq_n=16384, vq_square=2048, vq_reps=9, vq_secs=4.0)  # fmt: skip
QUICK = dict(num_texts=1500, text_batch=512, single=200, text_reps=2, text_secs=0.0,
             images={"default": (1, 2), "small": (8, 8)}, image_reps=1,
             vq_n=1024, vq_square=256, vq_reps=2, vq_secs=0.0)  # fmt: skip
VQ_K, VQ_DIMS = 1024, (32, 64, 256)  # the image tokenizer's K, its codebook_dim 64, and around it


def machine_facts(quick: bool) -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "command": shlex.join(sys.orig_argv),
        "quick": quick,
        "cpu": cpu_name(),
        "usable_cores": cores,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fused_kernel": fused_kernel_name(),
        "sentencepiece": spm.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }


# -- text -----------------------------------------------------------------------------------------
def text_corpus(num_examples: int, dev_manifest: str | None) -> tuple[list[str], dict]:
    texts = list(BuiltinSource(num_examples=num_examples).texts())
    about = {"builtin_texts": len(texts), "dev_manifest": dev_manifest, "dev_texts": 0}
    if dev_manifest:
        dev = list(ManifestSource(dev_manifest, modalities=("text",)).texts())
        texts += dev
        about["dev_texts"] = len(dev)
    about.update(num_texts=len(texts), num_chars=sum(map(len, texts)))
    about["num_bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    return texts, about


def bench_text(tok: TextTokenizer, texts: list[str], cfg: dict) -> dict:
    """encode_batch vs raw batch encode over the corpus in batches, then one by one on a subset."""
    sp = spm.SentencePieceProcessor(model_proto=tok.model_proto)
    threads, size = tok.num_threads, cfg["text_batch"]
    batches = [texts[i : i + size] for i in range(0, len(texts), size)]
    ours_out = [e for b in batches for e in tok.encode_batch(b)]
    raw_out = [ids for b in batches for ids in sp.encode(b, out_type=int, num_threads=threads)]
    identical = [e.codes[0].tolist() for e in ours_out] == raw_out
    n_tokens, raw_tokens = sum(e.num_steps for e in ours_out), sum(map(len, raw_out))
    single_tokens = sum(map(len, raw_out[: cfg["single"]]))
    del ours_out, raw_out  # live outputs would slow every later garbage collection
    stats = timeit(
        {
            # Each batch's output is dropped before the next, for every contender alike:
            # holding all outputs would time the garbage collector, not the encoders.
            "ours": lambda: _each(tok.encode_batch, batches),
            # the same, with every item then read (each Encoded made): what a loop over it costs
            "ours_read": lambda: _each(lambda b: tok.encode_batch(b).tolist(), batches),
            "packed": lambda: _each(tok.encode_packed, batches),
            "raw": lambda: _each(
                lambda b: sp.encode(b, out_type=int, num_threads=threads), batches
            ),
        },
        cfg["text_reps"],
        cfg["text_secs"],
    )
    tokens = {"ours": n_tokens, "ours_read": n_tokens, "packed": n_tokens, "raw": raw_tokens}
    subset = texts[: cfg["single"]]
    single = timeit(
        {
            "ours": lambda: _each(tok.encode, subset),
            "raw": lambda: _each(lambda t: sp.encode(t, out_type=int), subset),
        },
        cfg["text_reps"],
        cfg["text_secs"],
    )
    return {
        "num_threads": threads,
        "batch_size": size,
        "identical_ids": identical,
        "batch": _rates(stats, len(texts), tokens),
        "single": _rates(single, len(subset), dict.fromkeys(single, single_tokens)),
        "ratio": stats["raw"]["median_s"] / stats["ours"]["median_s"],
        "read_ratio": stats["raw"]["median_s"] / stats["ours_read"]["median_s"],
        "packed_ratio": stats["raw"]["median_s"] / stats["packed"]["median_s"],
        "single_ratio": single["raw"]["median_s"] / single["ours"]["median_s"],
    }


def _each(fn, batches: list) -> None:
    for batch in batches:
        fn(batch)


def _rates(stats: dict, items: int, tokens: dict) -> dict:
    return {
        name: {
            **t,
            "items_per_s": items / t["median_s"],
            "tokens_per_s": tokens[name] / t["median_s"],
        }
        for name, t in stats.items()
    }


# -- image ----------------------------------------------------------------------------------------
def image_fit_conf(config: str):
    """The ``fit`` group of conf/tokenizer/<config>.yaml as Hydra composes it (defaults included)."""
    from hydra import compose, initialize_config_dir

    from tokenize_mm.cli.common import config_dir  # registers the generated arch/ group

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("fit_tokenizer", overrides=[f"tokenizer={config}", "out_dir=unused"])
    return cfg.tokenizer.fit


def image_arch(config: str) -> dict:
    """The ``VQImageConfig`` fields of a tokenizer config, e.g. ``image_arch("image_small")``."""
    arch = OmegaConf.to_container(image_fit_conf(config).config)
    arch.pop("_target_", None)
    return arch


def build_image_tokenizer(arch: dict, init_images: list) -> ImageTokenizer:
    """An untrained model after one train-mode quantizer pass on the latents of ``init_images``:
    for VQ that sets the codebook (k-means init, then one EMA step), so assignment is not
    degenerate; FSQ (the configs' default) has no codebook to set, and its rounding of an
    untrained encoder's near-zero latents gives nearly one code. Neither changes the timings."""
    torch.manual_seed(0)
    config = VQImageConfig(**arch)
    model = VQImageModel(config)
    tok = ImageTokenizer(model, _make_info(config), hparams={"arch": arch_dict(config), "fit": {}})
    pixels = torch.stack([tok.preprocess(im) for im in init_images])  # (B, 3, S, S)
    model.train()
    with torch.no_grad():
        model.quantizer(model._latents(pixels))
    model.eval()
    return tok


def bench_image(tok: ImageTokenizer, images: list, reps: int) -> dict:
    chunks = [
        torch.stack([tok.preprocess(im) for im in images[i : i + tok.batch_size]])
        for i in range(0, len(images), tok.batch_size)
    ]  # (B, 3, S, S) each, as encode_batch stacks them
    with torch.inference_mode():
        latents = [tok.model._latents(c) for c in chunks]  # (B, h*w, latent_dim)
    encoded = tok.encode_batch(images)

    def model_only(fn, xs):
        with torch.inference_mode():
            return [fn(x) for x in xs]

    stats = timeit(
        {
            "encode": lambda: tok.encode_batch(images),
            "preprocess": lambda: [tok.preprocess(im) for im in images],
            "model": lambda: model_only(tok.model.encode, chunks),
            "quantizer": lambda: model_only(tok.model.quantizer.encode, latents),
            "decode": lambda: tok.decode_batch(encoded),
        },
        reps,
        0.0,
    )
    usage = codebook_usage(torch.cat([e.codes for e in encoded]), tok.info.codebook_size)
    return {
        "num_images": len(images),
        "batch_size": tok.batch_size,
        "codebook_usage": usage,
        "timings": {
            name: {**t, "images_per_s": len(images) / t["median_s"]} for name, t in stats.items()
        },
    }


def run_images(cfg: dict) -> dict:
    out = {}
    for name, config in IMAGE_CONFIGS.items():
        arch = image_arch(config)
        n_timed, n_init = cfg["images"][name]
        size = arch["image_size"]
        # Built-in examples are 2/3 image sources; seed 1 keeps the init images apart.
        timed = list(BuiltinSource(num_examples=2 * n_timed, image_size=size).images())[:n_timed]
        init = list(BuiltinSource(num_examples=2 * n_init, image_size=size, seed=1).images())
        tok = build_image_tokenizer(arch, init[:n_init])
        out[name] = {"config": config, "arch": arch, "tokens_per_image": tok.info.tokens_per_image,
                     **bench_image(tok, timed, cfg["image_reps"])}  # fmt: skip
        enc = out[name]["timings"]["encode"]["images_per_s"]
        print(f"image {name}: encode {enc:.2f} images/s", flush=True)
    return out


# -- VQ assignment --------------------------------------------------------------------------------
def run_vq(cfg: dict) -> list[dict]:
    rows = []
    for d in VQ_DIMS:
        rows += measure_assignment(
            cfg["vq_n"], VQ_K, d, cfg["vq_square"], cfg["vq_reps"], cfg["vq_secs"],
            methods=("nearest_code", "matmul_argmin", "cdist_argmin", "scores_only",
                     *(f"fused_{v}" for v in vector_variants())),
        )  # fmt: skip
        ours = next(r for r in rows[::-1] if r["method"] == "nearest_code")
        print(f"vq D={d}: nearest_code {ours['ratio']:.0%} of matmul", flush=True)
    return rows


def goals(text: dict, vq: list[dict]) -> list[dict]:
    out = [
        {"name": f"text {name} tokens/s, ours / raw sentencepiece", "target": TEXT_GOAL,
         "value": text[key], "met": text[key] >= TEXT_GOAL}
        for name, key in (("encode_batch", "ratio"), ("encode_batch, every item read", "read_ratio"),
                          ("encode_packed", "packed_ratio"))
    ]  # fmt: skip
    for r in vq:
        if r["method"] == "nearest_code":
            name = f"nearest_code GFLOP/s / matmul GFLOP/s, N={r['N']} K={r['K']} D={r['D']}"
            out.append(
                {"name": name, "target": VQ_GOAL, "value": r["ratio"], "met": r["ratio"] >= VQ_GOAL}
            )
    return out


# -- report ---------------------------------------------------------------------------------------
def md_header(meta: dict, goal_rows: list[dict]) -> list[str]:
    lines = [
        "# Tokenizer benchmark",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['cpu']}, {meta['usable_cores']} usable cores, torch threads "
        f"{meta['torch_threads']}, fused nearest-code kernel {meta['fused_kernel']}; "
        f"torch {meta['torch']}, sentencepiece {meta['sentencepiece']}, "
        f"Python {meta['python']}; {meta['date']}; load average (1 min) at start "
        f"{meta['load_average_start']}, at end {meta['load_average_end']}.",
        "",
        "Each timing: one warm-up call per contender, then interleaved rounds (A B A B ...), "
        "median seconds per call.",
    ]
    if meta["quick"]:
        lines += [
            "",
            "**--quick run: tiny sizes for a smoke test; these numbers are not results.**",
        ]
    lines += ["", "## Goals", "", "| goal | target | measured | met |", "|---|---:|---:|---|"]
    lines += [
        f"| {g['name']} | ≥ {g['target']:.0%} | {g['value']:.0%} | {'yes' if g['met'] else '**no**'} |"
        for g in goal_rows
    ]
    return lines


def md_text(text: dict, corpus: dict, tok: dict) -> list[str]:
    dev = (
        f" + {corpus['dev_texts']} from {corpus['dev_manifest']}" if corpus["dev_manifest"] else ""
    )
    short = " (all the data supports)" if tok["vocab_size"] < tok["vocab_asked"] else ""
    lines = [
        "", "## Text: tokens/s", "",
        f"Corpus: {corpus['builtin_texts']} built-in texts{dev}; {corpus['num_chars']} characters, "
        f"{corpus['num_bytes'] / 1e6:.2f} MB. Tokenizer: {tok.get('model_type', 'unigram')}, "
        f"vocab_size {tok['vocab_asked']} asked, {tok['vocab_size']} learned{short}, "
        f"{tok['chars_per_token']:.2f} characters per token. Batches of {text['batch_size']} texts, "
        f"{text['num_threads']} sentencepiece threads for both; ids identical: "
        f"{text['identical_ids']}. Ratio = raw median time / our median time on the same texts.",
        "", "| path | texts/s | tokens/s | median s | ours / raw |", "|---|---:|---:|---:|---:|",
    ]  # fmt: skip
    names = {
        ("batch", "ours"): "TextTokenizer.encode_batch (EncodedBatch, items made when read)",
        ("batch", "ours_read"): "TextTokenizer.encode_batch, then every item read (.tolist())",
        ("batch", "packed"): "TextTokenizer.encode_packed (one tensor + offsets)",
        ("batch", "raw"): "SentencePieceProcessor.encode(batch, num_threads)",
        ("single", "ours"): "TextTokenizer.encode, one by one (information)",
        ("single", "raw"): "SentencePieceProcessor.encode, one by one (information)",
    }
    for (mode, who), label in names.items():
        t = text[mode][who]
        ratio = {("batch", "ours"): text["ratio"], ("batch", "ours_read"): text["read_ratio"],
                 ("batch", "packed"): text["packed_ratio"],
                 ("single", "ours"): text["single_ratio"]}.get((mode, who), 1.0)  # fmt: skip
        lines.append(
            f"| {label} | {t['items_per_s']:,.0f} | {t['tokens_per_s']:,.0f} | "
            f"{t['median_s']:.4f} | {ratio:.2f} |"
        )
    return lines


def md_images(images: dict) -> list[str]:
    lines = [
        "", "## Image: images/s", "",
        "Untrained weights (speed does not depend on training); inputs are built-in PIL images "
        "already at the model size, so preprocess does no resize. Model = encoder + quantizer on "
        "stacked pixels; quantizer = projection + the configured quantizer (FSQ: rounding; VQ: "
        "nearest code) on precomputed latents. *Codes used* is the untrained model's, a check "
        "that encoding ran, not the tokenizer's health: an untrained encoder's latents round to "
        "nearly one FSQ code (a fitted tokenizer's usage: codebook_health.md).",
        "", "| config | quantizer | image | f | tokens | K | images | encode (end to end) "
        "| preprocess | model | quantizer | decode | codes used (untrained) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for r in images.values():
        a, t = r["arch"], r["timings"]
        cells = " | ".join(
            f"{t[k]['images_per_s']:.2f}"
            for k in ("encode", "preprocess", "model", "quantizer", "decode")
        )
        lines.append(
            f"| {r['config']} | {a['quantizer']} | {a['image_size']} | {a['downsample']} | "
            f"{r['tokens_per_image']} | "
            f"{a['codebook_size']} | {r['num_images']} | {cells} | "
            f"{round(r['codebook_usage']['used_fraction'] * a['codebook_size'])} of "
            f"{a['codebook_size']} |"
        )
    return lines


def md_vq(vq: list[dict]) -> list[str]:
    lines = [
        "", "## VQ nearest-code assignment vs matmul", "",
        "GFLOP/s counting 2·N·K·D flops; in brackets the ratio to a float32 square matmul timed in "
        "the same interleaved rounds (vq_assign.py). D = 64 is the image tokenizer's default. "
        "*nearest_code*: the fused kernel (quant/fused.py), no score matrix in memory; "
        "*matmul + argmin*: its matmul path (fused=False). "
        "*Scores only*: the product x Eᵀ alone in the matmul path's row blocks, no bias and no "
        "argmin, the most any method that scores with a matmul and then reduces can reach. "
        "*Each vector variant*: the fused kernel's variants this CPU runs, each called by name "
        "(they return bitwise the same codes; nearest_code takes `kernels.best_variant()`).",
        "", "| N | K | D | matmul GFLOP/s | nearest_code | matmul + argmin | cdist + argmin "
        "| scores only | each vector variant |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]  # fmt: skip
    by = {(r["D"], r["method"]): r for r in vq}
    for d in sorted({r["D"] for r in vq}):
        ours = by[(d, "nearest_code")]
        cells = " | ".join(
            f"{r['gflops']:.1f} ({r['ratio']:.0%})"
            for r in (by[(d, m)] for m in ("nearest_code", "matmul_argmin", "cdist_argmin", "scores_only"))
        )  # fmt: skip
        each = ", ".join(
            f"{r['method'].removeprefix('fused_')} {r['gflops']:.1f} ({r['ratio']:.0%})"
            for r in vq if r["D"] == d and r["method"].startswith("fused_")
        ) or "-"  # fmt: skip
        lines.append(
            f"| {ours['N']} | {ours['K']} | {d} | {ours['matmul_gflops']:.1f} | {cells} | {each} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (< ~1 min), a smoke test")
    # docs/results/... updates the record
    parser.add_argument("--out", default=scratch("tokenizer_benchmark.json"),
                        help="default: %(default)s")  # fmt: skip
    parser.add_argument(
        "--md", default=scratch("tokenizer_benchmark.md"), help="default: %(default)s"
    )
    parser.add_argument("--dev-manifest", help="JSONL manifest whose texts join the text corpus")
    parser.add_argument("--num-texts", type=int, help="built-in examples for the text corpus")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--model-type", default="unigram", choices=("unigram", "bpe"),
                        help="the text tokenizer's model (default: %(default)s)")  # fmt: skip
    parser.add_argument("--text-only", action="store_true",
                        help="the text part alone (no images, no VQ): about a minute")  # fmt: skip
    args = parser.parse_args()
    cfg = dict(QUICK if args.quick else FULL)
    cfg["num_texts"] = args.num_texts or cfg["num_texts"]
    meta = machine_facts(args.quick)

    texts, corpus = text_corpus(cfg["num_texts"], args.dev_manifest)
    tok = TextTokenizer.fit(texts, vocab_size=args.vocab_size, model_type=args.model_type)
    tok_about = {"model_type": args.model_type, "vocab_asked": args.vocab_size,
                 "vocab_size": tok.vocab_size,
                 "chars_per_token": tok.info.chars_per_token}  # fmt: skip
    text = bench_text(tok, texts, cfg)
    print(f"text: ours / raw = {text['ratio']:.2f}", flush=True)
    images = None if args.text_only else run_images(cfg)
    vq = [] if args.text_only else run_vq(cfg)
    meta["load_average_end"] = load_average()

    goal_rows = goals(text, vq)
    lines = md_header(meta, goal_rows) + md_text(text, corpus, tok_about)
    if not args.text_only:
        lines += [*md_images(images), *md_vq(vq)]
    markdown = "\n".join(lines) + "\n"
    print()
    print(markdown)
    results = {"meta": meta, "settings": cfg, "goals": goal_rows,
               "text": {"corpus": corpus, "tokenizer": tok_about, **text},
               "image": images, "vq_assign": vq}  # fmt: skip
    write_outputs(args.out, results, args.md, markdown)


if __name__ == "__main__":
    main()
