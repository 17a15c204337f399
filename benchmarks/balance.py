"""Modality-balance benchmark: does a modality dominate mixed training, and which strategy stops it?

Every strategy (a loss weighting and a mixture sampler, ``STRATEGIES``) trains the main job's model
(``tmm-train`` with ``experiment=balance_bench[_quick|_tiny]``) at an equal token budget (the same
steps of the same batch_size x context positions) for each seed; the seed sets the model's init
and the data stream (``seed`` and ``data.seed``). Each run is scored on held-out data:

- per-modality validation loss L_m (the store's val split, every batch), and from them, over the
  strategy set, the worst-modality regret W and the average loss (docs/architecture.md §6;
  ``tokenize_mm.evaluation.regret``);
- the dominance index D (max / min gradient share, averaged over training) and the mean gradient
  share of each modality over training (``BalancedLM``'s metrics);
- grounding gain G(m <- c) for every ordered pair of modalities (``evaluation.grounding``), and on
  the built-in data zero-shot concept accuracy from the image and from the audio
  (``evaluation.zero_shot``) against chance;
- wall time of training and of evaluation.

The sizes: ``tiny`` (the test suite's), ``quick`` (minutes), ``default`` (the unimodal regime: the
LM losses alone, random span order, 180 steps; nothing cross-modal is learnt at that budget) and
``grounding`` (the contrastive objective, captions after their media, 400 steps at lr 0.002: the
regime in which text learns to read images and audio, so grounding can rank the strategies).

Held-out examples for G and zero-shot: on the built-in data, trimodal examples of another seed
(``data.source.seed + 1000``: unseen scenes of the same 64 concepts); on a manifest, its test
split. Tokenizers and stores come from the main job's cache (``.cache/tokenize_mm``), fitted or
written on first use. Each finished run is kept in ``--out-dir``/runs/ until the report is
written, so an interrupted benchmark started again with the same arguments resumes after its
last finished run. Writes ``balance.md``, ``balance.json`` (every run's resolved config, the
machine and versions) and ``balance.png`` / ``grounding.png`` into ``--out-dir`` (a scratch
folder unless given: ``--out-dir docs/results/balance`` updates the recorded results).

    .venv/bin/python benchmarks/balance.py [--size tiny|quick|default|grounding] [--manifest PATH]
        [--strategies a,b,...] [--seeds 0,1,2] [--out-dir DIR] [--cache-dir DIR]
    .venv/bin/python benchmarks/balance.py --from-config docs/results/balance/balance.json \\
        --out-dir /tmp/rerun [--only grad_share]   # rerun a recorded benchmark, compare figures
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance_report import write_report
from scratch import scratch
from vq_assign import cpu_name, load_average

from tokenize_mm.cli.report import throughput_means
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.evaluation import (
    average_loss,
    encode_examples,
    grounding_gains,
    seed_spread,
    worst_modality_regret,
    zero_shot,
)

STRATEGIES: dict[str, list[str]] = {
    # name: tmm-train overrides (the weighting, then the sampler)
    "token_mean": ["balance/weighting=token_mean", "balance/sampling=proportional"],
    "modality_mean": ["balance/weighting=modality_mean", "balance/sampling=proportional"],
    "uncertainty": ["balance/weighting=uncertainty", "balance/sampling=proportional"],
    "dwa": ["balance/weighting=dwa", "balance/sampling=proportional"],
    "grad_share": ["balance/weighting=grad_share", "balance/sampling=proportional"],
    "gradnorm": ["balance/weighting=gradnorm", "balance/sampling=proportional"],
    "gradnorm_weights": ["balance/weighting=gradnorm", "balance.weighting.measure_at=weights",
                         "balance/sampling=proportional"],  # the paper's (shared weights)
    "famo": ["balance/weighting=famo", "balance/sampling=proportional"],
    "ogm": ["balance/weighting=ogm", "balance/sampling=proportional"],
    "temperature": ["balance/weighting=token_mean", "balance/sampling=temperature"],
    "adaptive": ["balance/weighting=token_mean", "balance/sampling=adaptive"],
    "odm": ["balance/weighting=token_mean", "balance/sampling=odm"],
    "unimax": ["balance/weighting=token_mean", "balance/sampling=unimax"],
    # an adaptive sampler over a balanced weighting: each modality a third of the loss, and the
    # sources that buy the most loss reduction sampled more
    "modality_mean_odm": ["balance/weighting=modality_mean", "balance/sampling=odm"],
    "ogm_odm": ["balance/weighting=ogm", "balance/sampling=odm"],
    # equal gradient shares among the modalities (the dominance index's own measure) over online
    # data mixing (with contrastive=clip the alignment objective a tenth: grad_share.yaml)
    "grad_share_odm": ["balance/weighting=grad_share", "balance/sampling=odm"],
    # the same with the alignment objective an equal quarter (the default before 2026-12-02)
    "grad_share_odm_equal": ["balance/weighting=grad_share", "balance/sampling=odm",
                             "balance.weighting.targets.contrastive=1.0"],
    # the bandit rewarded by the language-model losses only (before it heard the contrastive one)
    "grad_share_odm_lm": ["balance/weighting=grad_share", "balance/sampling=odm",
                          "balance.sampling.reward_contrastive=false"],
    # the contrastive objective alone (with --override contrastive=clip; the CLIP baseline)
    "contrastive_only": ["balance/weighting=contrastive_only", "balance/sampling=proportional"],
    # the contrastive comparison (docs/results/contrastive/): CLIP-style alignment in early and late
    # fusion beside the LM losses, and the two-tower CLIP baseline (its objective alone)
    "clip_early": ["balance/weighting=modality_mean", "balance/sampling=proportional",
                   "contrastive=clip"],
    "clip_late": ["balance/weighting=modality_mean", "balance/sampling=proportional",
                  "contrastive=clip", "model.fusion=late"],
    "clip_towers": ["balance/weighting=contrastive_only", "balance/sampling=proportional",
                    "contrastive=clip", "model=towers_small", "model.n_layers=0",
                    "model.late_layers=2"],
}  # fmt: skip
NOT_BY_DEFAULT = ("unimax", "contrastive_only", "ogm_odm", "grad_share_odm", "grad_share_odm_lm",
                  "grad_share_odm_equal", "gradnorm_weights")  # fmt: skip
DEFAULT_SET = [
    s for s in STRATEGIES if s not in NOT_BY_DEFAULT and not s.startswith("clip_")
]  # 12 strategies x 3 seeds: about 70 min
# The grounding size trains 400 steps at lr 0.002 with the contrastive objective (2.5 to 3.5 min a
# run on 2 cores, Intel Xeon; a seed's fresh examples rendered once, ahead of its first run): its
# default set is the baseline, the other static strategy and the default (27.7 min at 3 seeds:
# docs/results/balance_grounding/summary.md).
GROUNDING_SET = ["token_mean", "modality_mean", "grad_share_odm"]
BASELINE = "token_mean"
SIZES = {"tiny": "balance_bench_tiny", "quick": "balance_bench_quick", "default": "balance_bench",
         "grounding": "balance_bench_grounding"}  # fmt: skip
EVAL_EXAMPLES = {"tiny": 6, "quick": 24, "default": 32, "grounding": 64}  # for G and zero-shot
EVAL_SEED_OFFSET = 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", choices=list(SIZES), default="default")
    p.add_argument("--manifest", help="a JSONL manifest instead of the built-in data")
    p.add_argument(
        "--strategies",
        help=f"comma-separated, from {list(STRATEGIES)} (default: {len(DEFAULT_SET)} of them; "
        f"at --size grounding {','.join(GROUNDING_SET)})",
    )
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--eval-examples", type=int, help="held-out examples (default: by size)")
    p.add_argument("--out-dir", default=scratch("balance"),
                   help="where the report goes (a scratch folder by default; docs/results/<name> "
                   "to update the recorded results)")  # fmt: skip
    p.add_argument("--cache-dir", default=".cache/tokenize_mm")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra tmm-train override for every run (repeatable), e.g. "
                   "trainer.max_steps=600")  # fmt: skip
    p.add_argument(
        "--from-config",
        help="a balance.json to rerun (its size, data, strategies, "
        "seeds and overrides) and compare with",
    )
    p.add_argument(
        "--only", help="with --from-config: rerun these strategies only (comma-separated)"
    )
    args = p.parse_args(argv)
    if args.from_config:
        recorded = json.loads(Path(args.from_config).read_text())["meta"]
        args.size, args.manifest = recorded["size"], recorded["manifest"]
        args.strategies = ",".join(recorded["strategies"])
        args.seeds = ",".join(map(str, recorded["seeds"]))
        args.eval_examples = recorded["eval_examples"]
        args.override = recorded.get("overrides", [])
        if args.only:
            missing = [s for s in args.only.split(",") if s not in recorded["strategies"]]
            if missing:
                p.error(f"--only {missing}: not in {args.from_config} ({recorded['strategies']})")
            args.strategies = args.only
    if args.strategies is None:
        args.strategies = GROUNDING_SET if args.size == "grounding" else DEFAULT_SET
    if isinstance(args.strategies, str):
        args.strategies = [s for s in args.strategies.split(",") if s]
    unknown = [s for s in args.strategies if s not in STRATEGIES]
    if unknown or not args.strategies:
        p.error(f"unknown strategies {unknown}; choose from {list(STRATEGIES)}")
    try:
        args.seeds = [int(s) for s in str(args.seeds).split(",") if s != ""]
    except ValueError:
        p.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    if not args.seeds:
        p.error("--seeds needs at least one seed")
    if args.manifest and not Path(args.manifest).exists():
        p.error(
            f"--manifest {args.manifest} does not exist; build one with "
            "`bash ../shared/data/build_dev_set.sh` or pass your own JSONL"
        )
    if args.eval_examples is None:
        args.eval_examples = EVAL_EXAMPLES[args.size]
    return args


def overrides(args: argparse.Namespace, strategy: str, seed: int) -> list[str]:
    """The ``tmm-train`` overrides of one run."""
    out = [f"experiment={SIZES[args.size]}", *STRATEGIES[strategy], f"seed={seed}",
           f"data.seed={seed}", f"cache_dir={args.cache_dir}"]  # fmt: skip
    if args.manifest:
        out += ["data=manifest", f"data.source.path={Path(args.manifest).resolve()}"]
    return out + list(args.override)


def compose(over: list[str]):
    from hydra import compose as hydra_compose

    return hydra_compose("train", overrides=[*over, "out_dir=unused"])


def default_strategy() -> str | None:
    """The strategy whose weighting and sampler are ``tmm-train``'s defaults."""
    base = compose([])
    for name, over in STRATEGIES.items():
        cfg = compose(over)
        if (
            cfg.balance.weighting._target_ == base.balance.weighting._target_
            and cfg.balance.sampling._target_ == base.balance.sampling._target_
        ):
            return name
    return None


def eval_source(cfg, args: argparse.Namespace):
    """Held-out examples for G and zero-shot: unseen built-in scenes, or the manifest's test split."""
    from hydra.utils import instantiate

    from tokenize_mm.data import BuiltinSource, ManifestSource

    if args.manifest:  # up to eval_examples of each set of modalities, in manifest order
        kept: dict[tuple[str, ...], list] = {}
        for ex in ManifestSource(args.manifest, split="test"):
            group = kept.setdefault(tuple(ex.modalities), [])
            if len(group) < args.eval_examples:
                group.append(ex)
        counts = ", ".join(f"{len(v)} {'+'.join(k)}" for k, v in kept.items())
        return [
            ex for group in kept.values() for ex in group
        ], f"{args.manifest} test split: {counts}"
    base = instantiate(cfg.data.source)
    source = BuiltinSource(
        num_examples=args.eval_examples, image_size=base.image_size,
        audio_seconds=base.audio_seconds, sample_rate=base.sample_rate,
        seed=base.seed + EVAL_SEED_OFFSET, sources=("trimodal",),
    )  # fmt: skip
    return list(source), repr(source)


def train_summary(metrics) -> dict[str, Any]:
    """Per-run figures from the run's logged metrics (``tokenize_mm.cli.report.RunMetrics``, one
    row per step): val losses, dominance, shares, tokens, curves."""
    rows, val, last = metrics.train, metrics.last_val(), metrics.last_train()

    def mean_of(key: str) -> float | None:
        values = [r[key] for r in rows if key in r]
        return statistics.fmean(values) if values else None

    every = max(1, len(rows) // 100)
    return {
        "val_loss": {m: val[f"val/loss/{m}"] for m in MODALITIES if f"val/loss/{m}" in val},
        "val_acc": {m: val[f"val/acc/{m}"] for m in MODALITIES if f"val/acc/{m}" in val},
        "dominance": last.get("train/dominance_mean"),
        "grad_share": {m: mean_of(f"train/grad_share/{m}") for m in MODALITIES},
        "token_share": {m: mean_of(f"train/token_share/{m}") for m in MODALITIES},
        # each objective's share of the weighted training loss, the alignment's too
        "loss_share": {m: mean_of(f"train/loss_share/{m}") for m in (*MODALITIES, "contrastive")},
        # step time and MFU (the Throughput callback's windows, warm-up left out)
        "throughput": throughput_means(rows),
        "tokens_trained": {
            m: sum(r.get(f"train/tokens/{m}", 0.0) for r in rows) for m in MODALITIES
        },
        "final_weight": {m: last.get(f"train/weight/{m}") for m in MODALITIES} if rows else {},
        "final_sampling": {
            k.split("/", 2)[2]: v for k, v in last.items() if k.startswith("sampling/prob/")
        },
        "skipped_steps": int(last.get("train/skipped_steps", 0)),
        "grad_share_curve": [
            {"step": r["step"], **{m: r.get(f"train/grad_share/{m}") for m in MODALITIES}}
            for r in rows[::every]
        ],
    }


def _mean_loss_shares(per_seed: list[dict[str, Any]]) -> dict[str, float]:
    """Each objective's loss share (``train_summary``), averaged over the seeds that logged it
    (records written before loss shares were kept have none)."""
    out = {}
    for m in (*MODALITIES, "contrastive"):
        values = [
            r["loss_share"][m] for r in per_seed if r.get("loss_share", {}).get(m) is not None
        ]
        if values:
            out[m] = statistics.fmean(values)
    return out


def evaluate(run, layout, tokenizers, examples, seed: int, builtin: bool) -> dict[str, Any]:
    """G(m <- c) for every pair, and zero-shot accuracy from image and audio (built-in only)."""
    from tokenize_mm.data.builtin import BuiltinSource, caption_prompts, concept_caption

    model = run.module.model
    out: dict[str, Any] = {"grounding": grounding_gains(model, layout, examples, seed=seed)}
    out["zero_shot"] = {}
    if builtin:
        captions = {c: concept_caption(c) for c in BuiltinSource.concepts()}
        for context in ("image", "audio"):
            result = zero_shot(model, layout, tokenizers["text"], examples, captions, context)
            pairs = result.pop("predictions")
            result["colour_accuracy"] = _part_accuracy(pairs, 0)
            result["shape_accuracy"] = _part_accuracy(pairs, 1)
            result["part_chance"] = 1 / 8
            out["zero_shot"][context] = result
    head = getattr(run.module, "contrastive", None)
    if head is not None:  # CLIP-style figures: zero-shot by embedding, retrieval R@k
        from tokenize_mm.evaluation import SpanEmbedder, contrastive_evaluation

        embedder = SpanEmbedder(model, head, layout, truncate=True)  # long real clips: their start
        out["contrastive"] = contrastive_evaluation(
            embedder, tokenizers["text"], examples,
            concepts=BuiltinSource.concepts() if builtin else None,
            concept_prompts=caption_prompts if builtin else None,
        )  # fmt: skip
        out["contrastive"]["truncated_items"] = embedder.truncated
    return out


def _part_accuracy(pairs: list[tuple[str, str]], part: int) -> float:
    if not pairs:
        return float("nan")
    return sum(t.split(" ")[part] == p.split(" ")[part] for t, p in pairs) / len(pairs)


def summarise(runs: list[dict], strategies: list[str], seeds: list[int]) -> dict[str, Any]:
    """Per strategy: spreads over seeds of every figure; W from the seed-mean losses and per seed."""
    by = {(r["strategy"], r["seed"]): r for r in runs}
    summary: dict[str, Any] = {"strategies": {}}
    mean_losses = {}
    for s in strategies:
        per_seed = [by[(s, seed)] for seed in seeds]
        mods = [m for m in MODALITIES if all(m in r["val_loss"] for r in per_seed)]
        mean_losses[s] = {m: statistics.fmean(r["val_loss"][m] for r in per_seed) for m in mods}
        entry: dict[str, Any] = {
            "val_loss": {m: seed_spread([r["val_loss"][m] for r in per_seed]) for m in mods},
            "average_loss": seed_spread(
                [statistics.fmean(r["val_loss"][m] for m in mods) for r in per_seed]
            ),
            "dominance": seed_spread(
                [r["dominance"] for r in per_seed if r["dominance"]] or [float("nan")]
            ),
            "grad_share": {
                m: statistics.fmean(
                    r["grad_share"][m] for r in per_seed if r["grad_share"][m] is not None
                )
                for m in mods
            },
            "loss_share": _mean_loss_shares(per_seed),
            "train_seconds": seed_spread([r["train_seconds"] for r in per_seed]),
            "eval_seconds": seed_spread([r["eval_seconds"] for r in per_seed]),
            "tokens_trained": statistics.fmean(sum(r["tokens_trained"].values()) for r in per_seed),
            "grounding": {
                pair: seed_spread([r["grounding"][pair]["gain"] for r in per_seed])
                for pair in per_seed[0]["grounding"]
            },
            "zero_shot": {
                ctx: {
                    k: seed_spread([r["zero_shot"][ctx][k] for r in per_seed])
                    for k in ("accuracy", "colour_accuracy", "shape_accuracy")
                }
                for ctx in per_seed[0]["zero_shot"]
            },
        }
        # one number each for the adaptive-default criterion (``verdict``): the six gains and the
        # zero-shot accuracies averaged within a run, then spread over seeds
        entry["mean_G"] = seed_spread(
            [statistics.fmean(g["gain"] for g in r["grounding"].values()) for r in per_seed]
        )
        if per_seed[0]["zero_shot"]:
            entry["zero_shot_mean"] = seed_spread(
                [statistics.fmean(z["accuracy"] for z in r["zero_shot"].values()) for r in per_seed]
            )
        if all(r.get("throughput") for r in per_seed):
            entry["step_seconds"] = seed_spread([r["throughput"]["perf/step_s"] for r in per_seed])
            entry["mfu"] = seed_spread([r["throughput"]["perf/mfu"] for r in per_seed])
        if all("contrastive" in r for r in per_seed):
            entry["contrastive"] = contrastive_summary([r["contrastive"] for r in per_seed])
            entry["embedding_zero_shot_mean"] = seed_spread(
                [statistics.fmean(z["accuracy"] for z in r["contrastive"]["zero_shot"].values())
                 for r in per_seed]
            )  # fmt: skip
        summary["strategies"][s] = entry
    w_of_means = worst_modality_regret(mean_losses)
    per_seed_w = {
        seed: worst_modality_regret({s: by[(s, seed)]["val_loss"] for s in strategies})
        for seed in seeds
    }
    averages = average_loss(mean_losses)
    for s in strategies:
        entry = summary["strategies"][s]
        entry["W"] = w_of_means[s]
        entry["W_per_seed"] = seed_spread([per_seed_w[seed][s] for seed in seeds])
        entry["average_loss_of_means"] = averages[s]
    return summary


def contrastive_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Spreads over seeds of the contrastive figures: zero-shot by embedding per context, and
    R@k (paired, and any item of the concept) per retrieval direction, with their chance levels."""
    first = results[0]
    by_captions = all("zero_shot_captions" in r for r in results)  # runs before it lack it
    return {
        "zero_shot": {c: seed_spread([r["zero_shot"][c]["accuracy"] for r in results])
                      for c in first["zero_shot"]},
        **({"zero_shot_captions": {c: seed_spread([r["zero_shot_captions"][c]["accuracy"]
                                                   for r in results])
                                   for c in first["zero_shot_captions"]}} if by_captions else {}),
        "zero_shot_chance": {c: z["chance"] for c, z in first["zero_shot"].items()},
        "retrieval": {d: {k: seed_spread([r["retrieval"][d][k] for r in results])
                          for k in first["retrieval"][d] if k.startswith("R@")}
                      for d in first["retrieval"]},
        "retrieval_chance": {d: {k: v for k, v in first["retrieval"][d].items()
                                 if k.startswith("chance@")} for d in first["retrieval"]},
    }  # fmt: skip


#: Weightings and samplers that never change during training; a strategy of one of each is static.
STATIC_WEIGHTINGS = {"token_mean", "modality_mean", "fixed", "contrastive_only"}
STATIC_SAMPLERS = {"proportional", "temperature", "unimax", "fixed"}


def is_static(strategy: str) -> bool:
    """Neither the strategy's weighting nor its sampler adapts during training."""
    choice = dict(o.split("=", 1) for o in STRATEGIES[strategy] if o.startswith("balance/"))
    return (
        choice.get("balance/weighting") in STATIC_WEIGHTINGS
        and choice.get("balance/sampling") in STATIC_SAMPLERS
    )


def adaptive_verdict(table: dict[str, Any]) -> dict[str, Any]:
    """Issue 15's bar for an adaptive default, for every adaptive strategy of the set: W no higher
    than the best static strategy's (the static one of lowest W), grounding no lower (mean G and
    zero-shot, by likelihood and, with the contrastive objective, by embedding), both within the
    larger of the two seed spreads, and an average loss within 1 % of the best of the set."""
    static = [s for s in table if is_static(s)]
    adaptive = [s for s in table if not is_static(s)]
    if not static or not adaptive:
        return {"best_static": None, "strategies": {},
                "reason": "the set needs a static and an adaptive strategy"}  # fmt: skip
    best = min(static, key=lambda s: table[s]["W_per_seed"]["mean"])
    best_avg = min(e["average_loss"]["mean"] for e in table.values())

    def compare(s: str, key: str, higher_is_better: bool) -> dict[str, Any] | None:
        if key not in table[s] or key not in table[best]:
            return None
        a, b = table[s][key], table[best][key]
        slack = max(a["std"], b["std"])
        ok = a["mean"] >= b["mean"] - slack if higher_is_better else a["mean"] <= b["mean"] + slack
        return {"value": a["mean"], "static": b["mean"], "slack": slack, "ok": bool(ok)}

    out = {}
    for s in adaptive:
        checks = {
            "W": compare(s, "W_per_seed", higher_is_better=False),
            "mean_G": compare(s, "mean_G", higher_is_better=True),
            "zero_shot": compare(s, "zero_shot_mean", higher_is_better=True),
            "embedding_zero_shot": compare(s, "embedding_zero_shot_mean", higher_is_better=True),
        }
        checks = {k: v for k, v in checks.items() if v is not None}
        average = table[s]["average_loss"]["mean"]
        within = average <= best_avg * 1.01
        out[s] = {**checks, "average_within_1pct": within,
                  "wins": bool(within and all(c["ok"] for c in checks.values()))}  # fmt: skip
    return {"best_static": best, "strategies": out}


def verdict(summary: dict[str, Any], default: str | None) -> dict[str, Any]:
    """Does the default have the lowest W (or tie within the seed spread), average loss within 1 %?
    And which adaptive strategies clear issue 15's bar against the best static one
    (``adaptive_verdict``)?"""
    table = summary["strategies"]
    against_static = adaptive_verdict(table)
    if default not in table:
        return {"default": default, "holds": None, "reason": "the default was not run",
                "adaptive": against_static}  # fmt: skip
    w = {s: e["W_per_seed"]["mean"] for s, e in table.items()}
    spread = {s: e["W_per_seed"]["std"] for s, e in table.items()}
    best_w = min(w, key=w.get)
    tied = w[default] - w[best_w] <= max(spread[default], spread[best_w])
    avg = {s: e["average_loss"]["mean"] for s, e in table.items()}
    best_avg = min(avg, key=avg.get)
    within = avg[default] <= avg[best_avg] * 1.01
    return {
        "default": default,
        "lowest_W": best_w,
        "W": w,
        "W_std": spread,
        "tied_within_spread": tied,
        "best_average": best_avg,
        "average_within_1pct": within,
        "holds": bool(tied and within),
        "adaptive": against_static,
    }


def machine(args: argparse.Namespace) -> dict[str, Any]:
    import lightning
    import torchaudio

    return {
        "command": shlex.join(sys.orig_argv), "size": args.size, "manifest": args.manifest,
        "strategies": args.strategies, "seeds": args.seeds, "eval_examples": args.eval_examples,
        "overrides": args.override,
        "cpu": cpu_name(), "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "torchaudio": torchaudio.__version__, "lightning": lightning.__version__,
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": load_average(),
    }  # fmt: skip


def run_path(out_dir: Path, strategy: str, seed: int) -> Path:
    """Where a finished run's record is kept until the benchmark completes."""
    return out_dir / "runs" / f"{strategy}-seed{seed}.json"


def finished_run(out_dir: Path, strategy: str, seed: int, over: list[str]) -> dict | None:
    """The record of this run if an earlier, interrupted benchmark finished it with the same
    overrides (a crash loses no finished run); ``None`` otherwise."""
    path = run_path(out_dir, strategy, seed)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if record.get("overrides") == over else None


def compare(recorded_path: str, runs: list[dict]) -> dict[str, Any]:
    """Largest differences between this rerun and the recorded runs, figure by figure."""
    recorded = {(r["strategy"], r["seed"]): r for r in json.loads(Path(recorded_path).read_text())["runs"]}  # fmt: skip
    diffs = {"val_loss": 0.0, "grounding_gain": 0.0, "zero_shot_accuracy": 0.0}
    for r in runs:
        old = recorded[(r["strategy"], r["seed"])]
        for m, v in r["val_loss"].items():
            diffs["val_loss"] = max(diffs["val_loss"], abs(v - old["val_loss"][m]))
        for pair, g in r["grounding"].items():
            d = abs(g["gain"] - old["grounding"][pair]["gain"])
            diffs["grounding_gain"] = max(diffs["grounding_gain"], d)
        for ctx, z in r["zero_shot"].items():
            d = abs(z["accuracy"] - old["zero_shot"][ctx]["accuracy"])
            diffs["zero_shot_accuracy"] = max(diffs["zero_shot_accuracy"], d)
    return {"recorded": recorded_path, "max_abs_diff": diffs}


def main(argv: list[str] | None = None) -> int:
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    from tokenize_mm.cli.common import config_dir
    from tokenize_mm.cli.train import prepare, train
    from tokenize_mm.core.atomic import write_text_atomic
    from tokenize_mm.tokenizers.artifact import load_tokenizer

    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(dataloader_iter|num_workers|does not have many workers).*")  # fmt: skip
    start = time.perf_counter()
    meta = machine(args)
    meta["reused_runs"] = 0
    out_dir = Path(args.out_dir)
    runs: list[dict] = []
    encoded: dict[str, tuple] = {}  # layout fingerprint → (tokenizers, held-out examples)
    with initialize_config_dir(config_dir=str(Path(config_dir()).resolve()), version_base="1.3"):
        meta["default_strategy"] = default_strategy()
        for seed in args.seeds:
            for strategy in args.strategies:
                over = overrides(args, strategy, seed)
                done = finished_run(out_dir, strategy, seed, over)
                if done is not None:  # a finished run of an interrupted benchmark: kept
                    print(f"== {strategy} seed {seed}: reusing {run_path(out_dir, strategy, seed)}")
                    runs.append(done)
                    meta["reused_runs"] += 1
                    continue
                cfg = compose(over)
                prepared = prepare(cfg)
                layout = prepared.layout
                if layout.fingerprint not in encoded:
                    tokenizers = {m: load_tokenizer(p) for m, p in prepared.artifacts.items()}
                    examples, about = eval_source(cfg, args)
                    encoded[layout.fingerprint] = (
                        tokenizers,
                        encode_examples(examples, tokenizers),
                    )
                    meta["eval_source"] = about
                tokenizers, examples = encoded[layout.fingerprint]
                print(f"== {strategy} seed {seed}: {' '.join(over)}", flush=True)
                t0 = time.perf_counter()
                run = train(cfg, prepared)
                t1 = time.perf_counter()
                scores = evaluate(run, layout, tokenizers, examples, seed, not args.manifest)
                t2 = time.perf_counter()
                record = {
                    "strategy": strategy,
                    "seed": seed,
                    "overrides": over,
                    "train_seconds": t1 - t0,
                    "eval_seconds": t2 - t1,
                    **train_summary(run.metrics),
                    **scores,
                    "config": OmegaConf.to_container(cfg, resolve=True),
                }
                runs.append(record)
                write_text_atomic(run_path(out_dir, strategy, seed), json.dumps(record))
                print(json.dumps({k: record[k] for k in ("val_loss", "dominance")}), flush=True)
    meta["seconds"] = time.perf_counter() - start
    meta["load_average_end"] = load_average()
    summary = summarise(runs, args.strategies, args.seeds)
    summary["verdict"] = verdict(summary, meta["default_strategy"])
    results = {"meta": meta, "summary": summary, "runs": runs}
    if args.from_config:
        results["reproduction"] = compare(args.from_config, runs)
    write_report(results, out_dir)
    for r in runs:  # every figure is in balance.json now
        run_path(out_dir, r["strategy"], r["seed"]).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (out_dir / "runs").rmdir()
    print(f"balance benchmark: {len(runs)} runs in {meta['seconds']:.0f} s → {args.out_dir}")
    if args.from_config:
        print(json.dumps(results["reproduction"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
