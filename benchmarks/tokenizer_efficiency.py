"""Tokenizer efficiency on a source's held-out split: rates, bits, codebook use, quality, speed.

For the text (SentencePiece), image (VQ) and audio (50 Hz codec) tokenizers, on the ``test`` split
of a source (``val`` if it has no test records, said in the report):

- token rates: tokens per text word (whitespace-separated), per image, per second of audio;
- bits per token: nominal (log2 of the codebook size) and the unigram entropy of the codes on the
  split, plug-in and Miller–Madow corrected (``tokenize_mm/tokenizers/efficiency.py``);
- codebook usage and entropy of every codebook (audio may have K);
- reconstruction: text exact round-trip rate; image PSNR and SSIM (torchmetrics, data range 1,
  at the tokenizer's size); audio SI-SNR and log-mel distance (``AudioTokenizer.evaluate``);
- encode throughput of ``encode_batch`` over the split's items as the source gives them (strings,
  PIL images or image files, in-memory clips or audio files: reading and resampling included),
  timed by ``vq_assign.timeit``: a warm-up call, then rounds, median seconds.

Tokenizers: by default the main job's small tokenizers for the source, from ``fit_or_reuse`` with
the configs composed from conf/train.yaml (``data=manifest data.source.path=PATH`` for a
manifest, the path as given), so the cache is shared with ``make train`` and a tokenizer is fitted
on the train split only if it is not cached. ``--text/--image/--audio DIR`` report on artifacts.
``--quick`` composes ``+debug=tiny`` (the tiny tokenizers and, for the built-in data, the tiny
source), keeps 8 items per modality and times one round: a smoke test, not results.

    .venv/bin/python benchmarks/tokenizer_efficiency.py [--data builtin | --manifest PATH]
        [--text DIR] [--image DIR] [--audio DIR] [--modalities text,image,audio]
        [--max-items N] [--cache-dir DIR] [--threads N] [--quick] [--out X.json] [--md X.md]
"""

from __future__ import annotations

import argparse
import datetime
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
import torchmetrics
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf
from vq_assign import cpu_name, load_average, timeit, write_outputs

from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.train import fit_or_reuse, source_identity
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.data import iter_items
from tokenize_mm.data.errors import DataError
from tokenize_mm.tokenizers.artifact import MANIFEST, load_tokenizer, read_artifact, sha256_file
from tokenize_mm.tokenizers.efficiency import (
    bits_per_token,
    codebook_stats,
    image_quality,
    round_trip,
)
from tokenize_mm.tokenizers.errors import TokenizeMMError

FULL = dict(max_items=None, reps=5, secs=2.0)
QUICK = dict(max_items=8, reps=1, secs=0.0)
# Where the outputs go without --out/--md: docs/ holds the built-in report; a manifest's or a
# --quick run's lands under benchmarks/results/ unless named.
DEFAULT_OUT = {
    "builtin": "docs/results/tokenizer_efficiency_builtin",
    "manifest": "benchmarks/results/tokenizer_efficiency_manifest",
    "quick": "benchmarks/results/tokenizer_efficiency_quick",
}


class UsageError(Exception):
    """Bad input to this script; the message names the item and the fix."""


# -- source and tokenizers ------------------------------------------------------------------------
def compose_config(args: argparse.Namespace):
    overrides = ["+debug=tiny"] if args.quick else []
    if args.manifest:
        if not Path(args.manifest).expanduser().exists():
            raise UsageError(
                f"manifest not found: {args.manifest}; give a JSONL manifest (or a folder holding "
                "manifest.jsonl), e.g. the dev set of ../shared/data/build_dev_set.sh, or use "
                "--data builtin"
            )
        overrides += ["data=manifest", f"data.source.path={args.manifest}"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=overrides)


def held_out_split(examples: list, name: str) -> tuple[str, str | None]:
    """``test``, else ``val`` with a note; no held-out records at all is an error."""
    splits = {ex.split for ex in examples}
    if "test" in splits:
        return "test", None
    if "val" in splits:
        return "val", f"{name} has no test records: reporting on its val split instead"
    raise UsageError(
        f"{name} has no test or val records, nothing held out to report on; give some records "
        '"split": "test" (records without a split are train)'
    )


def describe_source(cfg, source, examples: list) -> dict:
    about: dict[str, Any] = {
        "config": OmegaConf.to_container(cfg.data.source),
        "repr": repr(source),
    }
    about["num_examples"] = len(examples)
    if hasattr(source, "skip_counts"):  # a manifest
        about.update(kind="manifest", path=str(source.path), sha256=sha256_file(source.path),
                     skipped=dict(source.skip_counts()))  # fmt: skip
    else:
        about["kind"] = type(source).__name__
    return about


def get_tokenizer(m: str, args, cfg, source, source_id: str, train_counts: dict) -> tuple:
    """(tokenizer, facts about its artifact): the given artifact, else the cached or fitted one."""
    given = getattr(args, m)
    if given:
        path, origin = Path(given), "given"
    else:
        tcfg = cfg.tokenizers[m]
        if not train_counts[m]:
            raise UsageError(
                f"cannot fit {tcfg.name}: the train split of {source!r} has no {m} items; pass "
                f"--{m} ARTIFACT_DIR, or leave {m} out with --modalities"
            )
        cache = Path(args.cache_dir or cfg.cache_dir)
        before = set((cache / "tokenizers").glob("*/manifest.json"))
        start = time.perf_counter()
        path = fit_or_reuse(tcfg, source, source_id, cache, cfg.fit_split)
        seconds = time.perf_counter() - start
        how = "reused from the cache" if path / MANIFEST in before else f"fitted in {seconds:.0f} s"
        origin = f"{tcfg.name} by fit_or_reuse, {how}"
    tok = load_tokenizer(path)
    if tok.info.modality != m:
        raise UsageError(
            f"--{m} {path}: that artifact's tokenizer is for {tok.info.modality}, not {m}; "
            f"pass a {m} tokenizer artifact"
        )
    artifact = read_artifact(path)
    facts = {"path": str(path), "origin": origin, "kind": artifact.kind,
             "manifest_sha256": sha256_file(path / MANIFEST), "info": tok.info.to_dict(),
             "fit_data": artifact.fit_data}  # fmt: skip
    return tok, facts


# -- measurements ---------------------------------------------------------------------------------
def throughput(tok, items: list, num_tokens: int, cfg: dict) -> dict:
    t = timeit({"encode_batch": lambda: tok.encode_batch(items)}, cfg["reps"], cfg["secs"])
    t = t["encode_batch"]
    return {**t, "num_items": len(items), "items_per_s": len(items) / t["median_s"],
            "tokens_per_s": num_tokens / t["median_s"]}  # fmt: skip


def token_figures(encoded: list, info, units: float) -> tuple[dict, list, dict]:
    """(rates, per-codebook stats, bits) of the codes of ``encoded`` over ``units`` input units."""
    codes = torch.cat([e.codes for e in encoded], dim=1)  # (K, total steps)
    stats = codebook_stats(codes, info.codebook_size)
    bits = bits_per_token(stats)
    per_unit = codes.numel() / units
    bits.update(
        per_unit_nominal=bits["nominal"] * per_unit, per_unit_unigram=bits["unigram"] * per_unit
    )
    return {"num_tokens": codes.numel(), "units": units, "tokens_per_unit": per_unit}, stats, bits


def measure_text(tok, texts: list[str], cfg: dict) -> dict:
    encoded = tok.encode_batch(texts)
    words = sum(len(t.split()) for t in texts)
    rates, stats, bits = token_figures(encoded, tok.info, words)
    rates.update(unit="word", num_chars=sum(map(len, texts)),
                 chars_per_token=sum(map(len, texts)) / rates["num_tokens"],
                 chars_per_token_fit=tok.info.chars_per_token)  # fmt: skip
    # What SentencePiece's normaliser does to these texts: with the identity rule it only writes
    # spaces as U+2581; anything else (NFKC folding, squeezed or added spaces) would show here.
    sp = spm.SentencePieceProcessor(model_proto=tok.model_proto)
    plain = [t for t in texts if "\u2581" not in t]
    same = sum(sp.normalize(t).replace("\u2581", " ") == t for t in plain)
    quality = {
        "round_trip": round_trip(texts, tok.decode_batch(encoded)),
        "normalizer_identity": {"num_items": len(plain), "num_unchanged": same},
        "normalization": "none: TextTokenizer trains and requires normalization_rule_name="
        "identity, add_dummy_prefix=False, remove_extra_whitespaces=False, byte_fallback=True",
    }
    return {"num_items": len(texts), "rates": rates, "bits": bits, "codebooks": stats,
            "quality": quality, "throughput": throughput(tok, texts, rates["num_tokens"], cfg)}  # fmt: skip


def measure_image(tok, images: list, cfg: dict) -> dict:
    pixels = torch.stack([tok.preprocess(im) for im in images])  # (N, 3, S, S) in [0, 1]
    encoded = tok.encode_batch(images)
    rates, stats, bits = token_figures(encoded, tok.info, len(images))
    rates.update(unit="image", nominal=tok.info.tokens_per_image, image_size=tok.info.image_size)
    quality = image_quality(torch.stack(tok.decode_batch(encoded)), pixels)
    quality["fit_metrics"] = dict(tok.info.metrics)
    return {"num_items": len(images), "rates": rates, "bits": bits, "codebooks": stats,
            "quality": quality, "throughput": throughput(tok, images, rates["num_tokens"], cfg)}  # fmt: skip


def measure_audio(tok, clips: list, cfg: dict) -> dict:
    wavs = [tok.preprocess(c) for c in clips]  # (C, S) each, at the model's rate
    seconds = sum(w.shape[-1] for w in wavs) / tok.info.sample_rate
    rates, stats, bits = token_figures(tok.encode_batch(clips), tok.info, seconds)
    rates.update(unit="second", nominal=tok.info.tokens_per_second,
                 frame_rate=tok.info.frame_rate, num_codebooks=tok.info.num_codebooks)  # fmt: skip
    evaluated = tok.evaluate(wavs)  # encode + decode as encode/decode do; SI-SNR, log-mel
    quality = {"si_snr_db": evaluated["si_snr_db"], "mel_distance": evaluated["mel_distance"],
               "fit_metrics": dict(tok.info.metrics)}  # fmt: skip
    return {"num_items": len(clips), "rates": rates, "bits": bits, "codebooks": stats,
            "quality": quality, "throughput": throughput(tok, clips, rates["num_tokens"], cfg)}  # fmt: skip


MEASURE = {"text": measure_text, "image": measure_image, "audio": measure_audio}


# -- report ---------------------------------------------------------------------------------------
def quality_cell(m: str, r: dict) -> str:
    q = r["quality"]
    if m == "text":
        rt = q["round_trip"]
        return f"exact round trip {rt['num_exact']}/{rt['num_items']} ({rt['rate']:.1%})"
    if m == "image":
        return f"PSNR {q['psnr_db']:.2f} dB, SSIM {q['ssim']:.3f}"
    return f"SI-SNR {q['si_snr_db']:.2f} dB, log-mel distance {q['mel_distance']:.3f}"


def markdown(results: dict) -> str:
    meta = results["meta"]
    lines = [
        "# Tokenizer efficiency",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Source: {meta['source']['repr']}; split **{meta['split']}**"
        + (f" ({meta['split_note']})" if meta["split_note"] else "") + ". "
        f"Machine: {meta['cpu']}, torch threads {meta['torch_threads']}; torch {meta['torch']}, "
        f"torchmetrics {meta['torchmetrics']}, sentencepiece {meta['sentencepiece']}; "
        f"{meta['date']}. Load average (1 min) {meta['load_average_start']} at start, "
        f"{meta['load_average_end']} at end: other processes on the cores slow the throughput "
        "columns; no other figure depends on load.",
    ]  # fmt: skip
    if meta["quick"]:
        lines += ["", "**--quick run: tiny tokenizers and data; these numbers are not results.**"]
    lines += [
        "", "## Summary", "",
        "| modality | tokenizer | items | tokens per unit | bits/token nominal | bits/token unigram "
        "(Miller–Madow) | bits per unit nominal / unigram | codes used | reconstruction "
        "| encode items/s | encode tokens/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]  # fmt: skip
    absent = []
    for m in MODALITIES:
        r = results[m]
        if r.get("absent"):
            absent.append(f"- {m}: absent ({r['reason']}).")
            continue
        tk, rates, b, t = r["tokenizer"], r["rates"], r["bits"], r["throughput"]
        used = ", ".join(f"{s['used_fraction']:.1%}" for s in r["codebooks"])
        lines.append(
            f"| {m} | {Path(tk['path']).name} | {r['num_items']} | "
            f"{rates['tokens_per_unit']:.2f} per {rates['unit']} | {b['nominal']:.2f} | "
            f"{b['unigram']:.2f} ({b['unigram_miller_madow']:.2f}) | "
            f"{b['per_unit_nominal']:.0f} / {b['per_unit_unigram']:.0f} per {rates['unit']} | "
            f"{used} | {quality_cell(m, r)} | {t['items_per_s']:,.1f} | {t['tokens_per_s']:,.0f} |"
        )
    lines += [
        "", "## Codebooks", "",
        "| modality | codebook | size | tokens | codes used | used fraction | entropy bits "
        "(Miller–Madow) | perplexity |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for m in MODALITIES:
        for s in results[m].get("codebooks", []):
            lines.append(
                f"| {m} | {s['codebook']} | {s['codebook_size']} | {s['num_tokens']} | "
                f"{s['used_codes']} | {s['used_fraction']:.1%} | {s['entropy_bits']:.2f} "
                f"({s['entropy_bits_miller_madow']:.2f}) | {s['perplexity']:.1f} |"
            )
    lines += ["", "## Notes", "", *absent]
    if meta["source"].get("skipped"):
        lines.append(f"- Manifest records skipped as bad: {meta['source']['skipped']}.")
    if "rates" in results["text"]:
        tq = results["text"]["quality"]
        ni = tq["normalizer_identity"]
        lines.append(
            f"- Text normalisation: {tq['normalization']}. Measured: SentencePiece's normaliser "
            f"left {ni['num_unchanged']} of {ni['num_items']} texts unchanged (spaces written as "
            "U+2581 aside). Words are whitespace-separated."
        )
    if "rates" in results["audio"]:
        a = results["audio"]["rates"]
        lines.append(
            f"- Audio: {a['units']:.1f} s in {results['audio']['num_items']} clips after "
            f"resampling; nominal {a['nominal']:g} tokens/s; each clip is padded to whole frames."
        )
    lines += [
        "- Bits per token: nominal = log2(codebook size); unigram = entropy of the codes' "
        "histogram on this split (each token coded on its own; biased low on small splits, "
        "Miller–Madow in brackets); with K codebooks, the mean over codebooks.",
        "- Throughput: `encode_batch` over all the split's items as the source gives them "
        f"(reading and resampling included), one warm-up call, then at least {meta['reps']} "
        f"round(s) and {meta['min_seconds']} s; median seconds per call.",
        "",
        "Tokenizer artifacts:",
        "",
        *(
            f"- {m}: `{results[m]['tokenizer']['path']}` ({results[m]['tokenizer']['kind']}, "
            f"manifest sha256 {results[m]['tokenizer']['manifest_sha256'][:16]}…, "
            f"{results[m]['tokenizer']['origin']})"
            for m in MODALITIES
            if "tokenizer" in results[m]
        ),
    ]
    return "\n".join(lines) + "\n"


# -- main -----------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> dict:
    sizes = dict(QUICK if args.quick else FULL)
    if args.max_items is not None:
        sizes["max_items"] = args.max_items
    wanted = [m.strip() for m in args.modalities.split(",") if m.strip()]
    if not wanted or set(wanted) - set(MODALITIES):
        raise UsageError(f"--modalities {args.modalities!r}: use a comma-separated subset of "
                         f"{','.join(MODALITIES)}")  # fmt: skip
    cfg = compose_config(args)
    source, source_id = instantiate(cfg.data.source), source_identity(cfg.data.source)
    examples = list(source)
    name = f"manifest {args.manifest}" if args.manifest else repr(source)
    split, note = held_out_split(examples, name)
    held = [ex for ex in examples if ex.split == split]
    train = [ex for ex in examples if ex.split == cfg.fit_split]
    train_counts = {m: sum(1 for _ in iter_items(train, m)) for m in MODALITIES}
    meta = {
        "command": shlex.join(sys.orig_argv), "quick": args.quick, "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchmetrics": torchmetrics.__version__, "sentencepiece": spm.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(), "source": describe_source(cfg, source, examples),
        "split": split, "split_note": note, "reps": sizes["reps"], "min_seconds": sizes["secs"],
        "max_items": sizes["max_items"], "tokenizers": {},
    }  # fmt: skip
    results: dict[str, Any] = {"meta": meta}
    explicit = args.modalities != ",".join(MODALITIES)
    for m in MODALITIES:
        items = list(iter_items(held, m))[: sizes["max_items"]]
        if m not in wanted:
            results[m] = {"absent": True, "reason": "left out by --modalities"}
            continue
        if not items:
            if explicit or getattr(args, m):
                raise UsageError(
                    f"the {split} split of {name} has no {m} items; leave {m} out of "
                    f"--modalities, or use a source with {m} records in that split"
                )
            results[m] = {"absent": True, "reason": f"no {m} items in the {split} split"}
            print(f"{m}: absent from the {split} split", flush=True)
            continue
        tok, facts = get_tokenizer(m, args, cfg, source, source_id, train_counts)
        meta["tokenizers"][m] = facts
        start = time.perf_counter()
        results[m] = {"tokenizer": facts, **MEASURE[m](tok, items, sizes)}
        results[m]["seconds"] = time.perf_counter() - start
        print(f"{m}: {len(items)} items measured in {results[m]['seconds']:.1f} s", flush=True)
    meta["load_average_end"] = load_average()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--data", choices=["builtin"], default="builtin",
                       help="the built-in source of conf/data/builtin.yaml (default)")  # fmt: skip
    group.add_argument("--manifest", help="a JSONL manifest (or a folder holding manifest.jsonl)")
    for m in MODALITIES:
        parser.add_argument(f"--{m}", metavar="ARTIFACT_DIR", help=f"report on this {m} artifact")
    parser.add_argument("--modalities", default=",".join(MODALITIES))
    parser.add_argument("--max-items", type=int, help="at most this many items per modality")
    parser.add_argument("--cache-dir", help="tokenizer cache (default: train.yaml's cache_dir)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    parser.add_argument("--quick", action="store_true", help="tiny configs and sizes, a smoke test")
    parser.add_argument("--out", help="JSON results (default: see DEFAULT_OUT)")
    parser.add_argument("--md", help="markdown report (default: see DEFAULT_OUT)")
    args = parser.parse_args()
    stem = DEFAULT_OUT["quick" if args.quick else "manifest" if args.manifest else "builtin"]
    args.out, args.md = args.out or f"{stem}.json", args.md or f"{stem}.md"
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        results = run(args)
    except (UsageError, DataError, TokenizeMMError, InstantiationException) as err:
        print(f"tokenizer_efficiency: error: {err}", file=sys.stderr)
        sys.exit(2)
    text = markdown(results)
    print()
    print(text)
    write_outputs(args.out, strict_json(results), args.md, text)


def strict_json(value):
    """``value`` with every non-finite float as ``None`` (an exact image reconstruction has an
    infinite PSNR; strict JSON has no Infinity), so any JSON parser reads the report."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    return value


if __name__ == "__main__":
    main()
