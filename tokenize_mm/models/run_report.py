"""The run report: per-step balance metrics kept during training, written as markdown, JSON and PNG.

``MetricsHistory`` (a Lightning callback) keeps, after every training step, the metrics that
``BalancedLM`` logs (per-modality loss, gradient share, weights, sampling probabilities,
dominance) and, after every validation, the per-modality validation losses. ``write_run_report``
turns them into ``report.md`` (final values and the run's settings), ``history.json`` and
``report.png`` (four panels over steps: loss, gradient share, weight, sampling probability).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L

from tokenize_mm.core.atomic import write_atomic, write_text_atomic
from tokenize_mm.core.modalities import MODALITIES

_KEPT = ("train/", "sampling/", "val/")


class MetricsHistory(L.Callback):
    """Keeps ``train/*`` and ``sampling/*`` metrics per step and ``val/*`` per validation."""

    def __init__(self) -> None:
        self.train: list[dict[str, float]] = []
        self.val: list[dict[str, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        row = {k: float(v) for k, v in trainer.callback_metrics.items()
               if k.startswith(("train/", "sampling/"))}  # fmt: skip
        self.train.append({"step": trainer.global_step, **row})

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.val.append({"step": trainer.global_step, **row})


def write_run_report(
    history: MetricsHistory, out_dir: str | os.PathLike, settings: dict[str, Any]
) -> Path:
    """Write ``report.md``, ``history.json`` and ``report.png`` into ``out_dir``."""
    out = Path(out_dir)
    write_text_atomic(out / "history.json", json.dumps(
        {"settings": settings, "train": history.train, "val": history.val}, indent=1))  # fmt: skip
    write_atomic(out / "report.png", lambda tmp: _plot(history, tmp))
    last = history.train[-1] if history.train else {}
    val = history.val[-1] if history.val else {}
    lines = [
        "# Training run", "",
        f"Command: `{settings.get('command', '?')}`", "",
        f"Weighting `{settings.get('weighting')}`, sampling `{settings.get('sampling')}`, "
        f"{last.get('step', 0)} steps in {settings.get('seconds', 0):.0f} s; skipped non-finite "
        f"steps: {int(last.get('train/skipped_steps', 0))}; mean dominance index "
        f"{last.get('train/dominance_mean', float('nan')):.2f}.", "",
        "| modality | train loss | val loss | val acc | token share | grad share | weight |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for m in MODALITIES:
        cells = [last.get(f"train/loss/{m}"), val.get(f"val/loss/{m}"), val.get(f"val/acc/{m}"),
                 last.get(f"train/token_share/{m}"), last.get(f"train/grad_share/{m}"),
                 last.get(f"train/weight/{m}")]  # fmt: skip
        lines.append(
            f"| {m} | " + " | ".join("–" if c is None else f"{c:.3f}" for c in cells) + " |"
        )
    probs = {k.split("/", 2)[2]: v for k, v in last.items() if k.startswith("sampling/prob/")}
    if probs:
        lines += ["", "Sampling probabilities at the end: "
                  + ", ".join(f"{s} {p:.3f}" for s, p in probs.items()) + "."]  # fmt: skip
    lines += ["", "![per-modality loss, gradient share, weight and sampling probability over "
              "steps](report.png)", ""]  # fmt: skip
    return write_text_atomic(out / "report.md", "\n".join(lines))


def _plot(history: MetricsHistory, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6))
    panels = [("train/loss/", "loss (train)"), ("train/grad_share/", "gradient share"),
              ("train/weight/", "loss weight"), ("sampling/prob/", "sampling probability")]  # fmt: skip
    for ax, (prefix, title) in zip(axes, panels, strict=True):
        names = sorted(
            {k[len(prefix) :] for row in history.train for k in row if k.startswith(prefix)}
        )
        for name in names:
            points = [
                (row["step"], row[prefix + name]) for row in history.train if prefix + name in row
            ]
            if points:
                ax.plot(*zip(*points, strict=True), label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if names:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
