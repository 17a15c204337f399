"""What balancing costs per step: every loss weighting against token_mean, Lightning against a bare loop.

Two ratios, measured side by side in one process on the same model initialisation and the same
batches (drawn once from the main job's train stream, ``experiment=balance_bench``):

- **weighting cost**: the ``BalancedLM`` training step under each loss weighting, over token_mean's
  (goal: at most 1.03; docs/results/step_cost.md);
- **framework cost**: a bare PyTorch loop (forward, token-mean cross-entropy over the targets,
  backward, AdamW, the learning-rate schedule; nothing else) over the Lightning step of
  ``BalancedLM`` with token_mean (goal: at least 0.97, i.e. the framework's step keeps 97 % of a
  bare loop's throughput; its per-modality statistics, gradient-share hooks and logging included).

A step's time is the interval between the ends of consecutive steps (data fetch from memory,
forward, backward, optimizer, callbacks, logging), after ``--warmup`` steps. The variants run in
rounds (every variant once per round) so that drift in the machine's speed falls on all of them
alike, each round in its own order (a shuffle seeded by the round's number): in a rotating order
each variant always ran after the same one, so whatever a run leaves for the next (garbage, the
allocator's state) fell on the same variant every round (docs/results/balance_adaptive/summary.md,
"Cost per step"). The last run's garbage is collected before each run. The figure is the median
over every measured step of every round. Lightning's ``Trainer`` start-up is outside the
measured interval.

    .venv/bin/python benchmarks/step_cost.py [--steps 15] [--warmup 5] [--rounds 10]
        [--weightings token_mean,modality_mean,...] [--override KEY=VALUE ...]
        [--threads N] [--out-dir DIR]

Writes ``step_cost.md`` and ``step_cost.json`` into ``--out-dir`` (a scratch folder by default).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import itertools
import json
import os
import platform
import random
import shlex
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from balance import STRATEGIES
from scratch import scratch
from vq_assign import cpu_name, load_average

from tokenize_mm.core.modalities import SPECIAL_MODALITY

WEIGHTINGS = [
    "token_mean",
    "modality_mean",
    "uncertainty",
    "dwa",
    "grad_share",
    "gradnorm",
    "gradnorm_weights",
    "famo",
    "ogm",
]  # fmt: skip (strategies of balance.py)
BASELINE = "token_mean"
BARE = "bare loop"
GOALS = {"weighting": 1.03, "framework": 0.97}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=15, help="measured steps per variant per round")
    p.add_argument("--warmup", type=int, default=5, help="unmeasured steps before them")
    p.add_argument("--rounds", type=int, default=10,
                   help="rounds (a round's median moved by up to 15 %% on the 2-core machine, so "
                        "more, shorter rounds spread the drift over every variant)")  # fmt: skip
    p.add_argument("--weightings", default=",".join(WEIGHTINGS))
    p.add_argument("--experiment", default="balance_bench", help="the tmm-train experiment")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="an extra tmm-train override (repeatable), e.g. contrastive=clip")  # fmt: skip
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    p.add_argument("--cache-dir", default=".cache/tokenize_mm")
    p.add_argument("--out-dir", default=scratch("step_cost"))
    args = p.parse_args(argv)
    args.weightings = [w for w in args.weightings.split(",") if w]
    if BASELINE not in args.weightings:
        p.error(f"--weightings must include the baseline {BASELINE}")
    unknown = [w for w in args.weightings
               if "balance/sampling=proportional" not in STRATEGIES.get(w, [])]  # fmt: skip
    if unknown:
        p.error(f"--weightings: {unknown} are not weightings of benchmarks/balance.py; "
                f"choose from {WEIGHTINGS}")  # fmt: skip
    if min(args.steps, args.rounds) < 1 or args.warmup < 1:
        p.error("--steps and --rounds must be at least 1, --warmup at least 1")
    return args


def compose(args: argparse.Namespace, weighting: str = BASELINE):
    from hydra import compose as hydra_compose

    # the balance benchmark's strategy of that name: the weighting with proportional sampling
    over = [f"experiment={args.experiment}", *STRATEGIES[weighting],
            f"cache_dir={args.cache_dir}", "out_dir=unused", *args.override]  # fmt: skip
    return hydra_compose("train", overrides=over)


def draw_batches(cfg, prepared, n: int) -> list[Any]:
    """The first ``n`` batches of the run's train stream (proportional sampling)."""
    from tokenize_mm.cli.train import build_datamodule

    data = build_datamodule(cfg, prepared)
    data.setup("fit")
    stream = iter(data.train_dataloader())
    batches = [next(stream) for _ in range(n)]
    data.teardown("fit")
    return batches


class StepClock(L.Callback):
    """The time at the end of every training step, and the losses the steps returned."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.losses: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, *_: Any) -> None:
        self.ends.append(time.perf_counter())
        self.losses.append(float(outputs["loss"]) if outputs else float("nan"))


def train_steps(cfg, prepared, batches: list[Any], seed: int, callback: L.Callback,
                accelerator: str = "cpu") -> None:  # fmt: skip
    """``BalancedLM`` under ``cfg``'s weighting, trained by Lightning on ``batches`` (one step
    each) with ``callback`` and nothing else: no validation, checkpoint or progress bar."""
    from tokenize_mm.cli.report import MemoryLogger
    from tokenize_mm.cli.train import build_module

    L.seed_everything(seed, verbose=False)
    module = build_module(cfg, prepared.layout)
    trainer = L.Trainer(
        accelerator=accelerator, devices=1, max_steps=len(batches), precision="32-true",
        logger=MemoryLogger(), callbacks=[callback], enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
        limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(batches, batch_size=None, shuffle=False)
    trainer.fit(module, train_dataloaders=loader)


def lightning_steps(cfg, prepared, batches: list[Any], seed: int) -> list[float]:
    """Seconds per step of ``BalancedLM`` under ``cfg``'s weighting, trained by Lightning, and
    the first step's loss."""
    clock = StepClock()
    train_steps(cfg, prepared, batches, seed, clock)
    return intervals(clock.ends), clock.losses[0]


def intervals(ends: list[float]) -> list[float]:
    """Seconds of steps 2, 3, ... from the times at which steps 1, 2, ... ended."""
    return [b - a for a, b in itertools.pairwise(ends)]


def bare_steps(cfg, prepared, batches: list[Any], seed: int) -> list[float]:
    """Seconds per step of a bare loop (the same model, optimizer and schedule, token-mean loss),
    and the first step's loss: token_mean's under Lightning on the same batch and weights."""
    from tokenize_mm.cli.train import build_module

    L.seed_everything(seed, verbose=False)
    module = build_module(cfg, prepared.layout)
    model = module.model
    config = module.configure_optimizers()
    optimizer = config["optimizer"] if isinstance(config, dict) else config
    scheduler = config["lr_scheduler"]["scheduler"] if isinstance(config, dict) else None
    model.train()
    ends, losses = [], []
    for batch in batches:
        hidden = model(batch.tokens, batch.modality, batch.positions, batch.segment_ids)
        target, target_modality = batch.tokens[:, 1:], batch.modality[:, 1:].long()
        valid = batch.target_mask()[:, :-1] & (target_modality != SPECIAL_MODALITY)  # no eos
        logits = model.logits(hidden[:, :-1], target_modality)
        ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none")
        ce = ce.view(target.shape)  # as BalancedLM computes it
        loss = (ce * valid).sum() / valid.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        ends.append(time.perf_counter())
        losses.append(float(loss))
    return intervals(ends), losses[0]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from hydra import initialize_config_dir

    from tokenize_mm.cli.common import config_dir
    from tokenize_mm.cli.train import prepare

    warnings.filterwarnings("ignore", message=".*dataloader_iter.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfgs = {w: compose(args, w) for w in args.weightings}
    base = cfgs[BASELINE]
    prepared = prepare(base)
    batches = draw_batches(base, prepared, args.warmup + args.steps)
    variants = [*args.weightings, BARE]
    times: dict[str, list[float]] = {v: [] for v in variants}
    per_round: dict[str, list[float]] = {v: [] for v in variants}
    first_loss: dict[str, float] = {}
    for r in range(args.rounds):
        order = random.Random(r).sample(variants, len(variants))
        for v in order:
            gc.collect()  # the last run's garbage, outside every measured interval
            if v == BARE:
                steps, first_loss[v] = bare_steps(base, prepared, batches, seed=int(base.seed))
            else:
                steps, first_loss[v] = lightning_steps(cfgs[v], prepared, batches, int(base.seed))
            kept = steps[args.warmup - 1 :]  # steps warmup + 1, ..., warmup + steps
            times[v] += kept
            per_round[v].append(statistics.median(kept))
            print(f"round {r + 1}/{args.rounds} {v:>14}: {statistics.median(kept) * 1e3:7.1f} "
                  f"ms/step (load {load_average()})", flush=True)  # fmt: skip
    median = {v: statistics.median(t) for v, t in times.items()}
    tokens = sum(int(b.target_mask()[:, :-1].sum()) for b in batches) / len(batches)
    return {
        "median_s": median,
        "per_round_median_s": per_round,
        "steps_measured": {v: len(t) for v, t in times.items()},
        "first_loss": first_loss,  # the bare loop's equals token_mean's: the same computation
        "weighting_ratio": {v: median[v] / median[BASELINE] for v in args.weightings},
        "framework_ratio": median[BARE] / median[BASELINE],
        "batch": {"shape": list(batches[0].tokens.shape), "target_tokens_mean": tokens},
        "config": {
            "experiment": args.experiment,
            "overrides": args.override,
            "model": dict(base.model),
            "seed": int(base.seed),
        },
    }


def write_report(result: dict[str, Any], args: argparse.Namespace, out: Path, command: str) -> None:
    m, wr = result["median_s"], result["weighting_ratio"]
    fr = result["framework_ratio"]
    machine = result["machine"]
    lines = [
        "# Step cost: loss weightings against token_mean, Lightning against a bare loop",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']} "
        f"({machine['threads']} threads), lightning {machine['lightning']}; load average "
        f"{machine['load_start']} at the start, {machine['load_end']} at the end; "
        f"{machine['seconds']:.0f} s in all ({machine['date']}).",
        "",
        f"Batches: {result['batch']['shape'][0]} × {result['batch']['shape'][1]} positions "
        f"({result['batch']['target_tokens_mean']:.0f} target tokens a step on average), the same "
        f"{args.warmup + args.steps} batches for every variant; experiment `{args.experiment}`"
        + (f", overrides `{' '.join(args.override)}`" if args.override else "")
        + f"; {args.rounds} rounds (each in its own shuffled order) × {args.steps} measured "
        f"steps after {args.warmup} warm-up steps. Median over every measured step.",
        "",
        "| variant | ms / step | per-round medians (ms) | ratio to token_mean | goal | met |",
        "|---|---|---|---|---|---|",
    ]
    for v in [*args.weightings, BARE]:
        rounds = " / ".join(f"{t * 1e3:.1f}" for t in result["per_round_median_s"][v])
        if v == BARE:
            ratio, goal = fr, f"token_mean's step ≥ {GOALS['framework']} × bare speed"
            met = fr >= GOALS["framework"]
            label = "bare PyTorch loop"
        elif v == BASELINE:
            ratio, goal, met, label = 1.0, "(baseline)", None, "token_mean (Lightning)"
        else:
            ratio, goal = wr[v], f"≤ {GOALS['weighting']}"
            met, label = wr[v] <= GOALS["weighting"], v
        verdict = "" if met is None else ("yes" if met else "**no**")
        lines.append(
            f"| {label} | {m[v] * 1e3:.1f} | {rounds} | {ratio:.3f} | {goal} | {verdict} |"
        )
    lines += [
        "",
        "The bare loop's ratio is bare time over token_mean's Lightning time: the fraction of a "
        "bare loop's throughput the framework's step keeps.",
        "",
    ]
    (out / "step_cost.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join([".venv/bin/python", "benchmarks/step_cost.py", *(argv or sys.argv[1:])])
    load_start, start = load_average(), time.perf_counter()
    result = measure(args)
    result["machine"] = {
        "cpu": cpu_name(), "cores": os.cpu_count(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
        "lightning": L.__version__, "python": platform.python_version(),
        "load_start": load_start, "load_end": load_average(),
        "seconds": time.perf_counter() - start,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }  # fmt: skip
    result["command"] = command
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "step_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    write_report(result, args, out, command)
    print((out / "step_cost.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
