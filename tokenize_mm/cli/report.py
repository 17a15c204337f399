"""The run report of ``tmm-train``: ``report.md`` and ``report.png`` from the run's logged metrics.

Metrics travel once: ``BalancedLM`` (and ``SamplerFeedback``) log them with ``self.log``, Lightning
hands them to the run's logger, and the report reads them back from that logger. With the
configured CSV logger (``conf/logger/csv.yaml``) that is its ``metrics.csv``
(``<out_dir>/logs/version_<n>/metrics.csv``), the run's only per-step record. A run without a CSV
logger (``logger=none``, as the balance benchmark runs) gets a ``MemoryLogger`` from
``tmm-train`` instead, which keeps the same rows in memory; nothing else records metrics.

Steps: Lightning writes a step's rows (its training metrics, and a validation run after it) under
the number of steps finished before it, so the first step's rows hold 0; ``BalancedLM`` writes its
balance metrics under the same number in a row of their own, and the rows of one step are read as
one. ``RunMetrics`` numbers them as ``trainer.global_step`` does after the step: the first
training step is step 1, and a validation after step 3 is at step 3. Lightning writes a training
row every ``trainer.log_every_n_steps`` steps (1 in ``conf/trainer``): the report shows the steps
logged.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, Logger
from lightning.pytorch.utilities import rank_zero_only

from tokenize_mm.core.atomic import write_atomic, write_text_atomic
from tokenize_mm.core.modalities import MODALITIES

_TRAIN = ("train/", "sampling/", "perf/")
_VAL = ("val/",)


@dataclass
class RunMetrics:
    """A run's logged metrics, one row per logging call: ``{"step": s, name: value, ...}``.

    Attributes:
        train: rows of ``train/*``, ``sampling/*`` and ``perf/*`` metrics, one per training step.
        val: rows of ``val/*`` metrics, one per validation.
        source: where they were read from (a ``metrics.csv`` path, or ``"memory"``).
    """

    train: list[dict[str, float]] = field(default_factory=list)
    val: list[dict[str, float]] = field(default_factory=list)
    source: str = "memory"

    @classmethod
    def from_rows(cls, rows: Iterable[Mapping[str, Any]], source: str = "memory") -> RunMetrics:
        """Split logger rows (``step`` as Lightning logs it, plus metric values) into train and
        validation rows, numbering steps as ``global_step`` (see the module's docstring)."""
        out = cls(source=source)
        train: dict[int, dict[str, float]] = {}  # step → its row: a step may be written in parts
        val: dict[int, dict[str, float]] = {}  # (``BalancedLM`` writes its balance metrics itself)
        for row in rows:
            step = int(row["step"]) + 1
            values = {k: float(v) for k, v in row.items() if k not in ("step", "epoch")}
            for kept, prefix in ((train, _TRAIN), (val, _VAL)):
                part = {k: v for k, v in values.items() if k.startswith(prefix)}
                if part:
                    kept.setdefault(step, {"step": step}).update(part)
        out.train, out.val = list(train.values()), list(val.values())
        return out

    @property
    def steps(self) -> tuple[int, int] | None:
        """(first, last) training step of the rows; ``None`` when no step was logged."""
        return (int(self.train[0]["step"]), int(self.train[-1]["step"])) if self.train else None

    def last_train(self) -> dict[str, float]:
        """Each training metric's latest value (a metric missing from the last row, such as a
        modality absent from the last batch or a step counted as skipped, keeps its last one)."""
        out: dict[str, float] = {}
        for row in self.train:
            out.update(row)
        return out

    def last_val(self) -> dict[str, float]:
        """The last validation's row (empty when no validation ran)."""
        return dict(self.val[-1]) if self.val else {}


def read_metrics_csv(path: str | os.PathLike) -> RunMetrics:
    """The rows of a Lightning ``CSVLogger``'s ``metrics.csv`` (empty cells left out)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [{k: v for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(fh)]
    return RunMetrics.from_rows(rows, source=str(path))


class MemoryLogger(Logger):
    """A Lightning logger that keeps the logged rows in memory (``rows``): the report's record for
    a run without a CSV logger. Rank 0 only. Under ``ddp_spawn`` the rows stay in the spawned
    process: use the CSV logger there."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "memory"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.rows.append({"step": int(step or 0), **{k: float(v) for k, v in metrics.items()}})


def csv_logger(loggers: Iterable[Logger]) -> CSVLogger | None:
    """The first ``CSVLogger`` among ``loggers``."""
    return next((lg for lg in loggers if isinstance(lg, CSVLogger)), None)


def run_metrics(loggers: Iterable[Logger]) -> RunMetrics:
    """The metrics a finished fit logged: from its CSV logger's file, else its ``MemoryLogger``."""
    loggers = list(loggers)
    found = csv_logger(loggers)
    if found is not None:
        found.save()
        path = Path(found.log_dir) / "metrics.csv"
        return read_metrics_csv(path) if path.is_file() else RunMetrics(source=str(path))
    memory = next((lg for lg in loggers if isinstance(lg, MemoryLogger)), None)
    return RunMetrics.from_rows(memory.rows) if memory is not None else RunMetrics(source="none")


def write_run_report(
    metrics: RunMetrics, out_dir: str | os.PathLike, settings: dict[str, Any]
) -> Path:
    """Write ``report.md`` and ``report.png`` into ``out_dir``; returns the path of ``report.md``."""
    out = Path(out_dir)
    write_atomic(out / "report.png", lambda tmp: _plot(metrics, tmp))
    last, val = metrics.last_train(), metrics.last_val()
    first_step, last_step = metrics.steps or (0, 0)
    trained = len(metrics.train)
    span = f"step {first_step}" if first_step == last_step else f"steps {first_step}–{last_step}"
    dominance = last.get("train/dominance_mean", float("nan"))
    lines = [
        "# Training run", "",
        f"Command: `{settings.get('command', '?')}`", "",
        f"Weighting `{settings.get('weighting')}`, sampling `{settings.get('sampling')}`, "
        f"{span} ({trained} trained here); the command took {settings.get('seconds', 0):.0f} s "
        "(tokenizers, store, training, the saved model); skipped "
        f"non-finite steps: {int(last.get('train/skipped_steps', 0))}; mean dominance index "
        + ("– (fewer than two modalities had a gradient)" if math.isnan(dominance)
           else f"{dominance:.2f}") + ".", "",
    ]  # fmt: skip
    lines += _stage_lines(settings)
    lines += [
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
    lines += _throughput_lines(metrics.train)
    probs = {k.split("/", 2)[2]: v for k, v in last.items() if k.startswith("sampling/prob/")}
    if probs:
        lines += ["", "Sampling probabilities at the end: "
                  + ", ".join(f"{s} {p:.3f}" for s, p in probs.items()) + "."]  # fmt: skip
    if settings.get("tokenizers"):
        lines += ["", "## Tokenizers", "", "Token rates and each tokenizer's health as its fit "
                  "measured it on held-out data (codebook perplexity and usage, reconstruction):",
                  "", settings["tokenizers"]]  # fmt: skip
        warnings = settings.get("health") or []
        lines += [""] + [f"**Warning:** {w}." for w in warnings] if warnings else [
            "", "No codebook below the collapse floors (perplexity 10 % of the codebook, 25 % of "
            "codes used)."]  # fmt: skip
    lines += settings.get("alignment") or []
    lines += ["", f"Metrics per step: `{metrics.source}`." if metrics.source != "memory" else
              "Metrics per step: kept in memory (no CSV logger configured).", ""]  # fmt: skip
    lines += ["![per-modality loss, gradient share, weight and sampling probability over "
              "steps](report.png)", ""]  # fmt: skip
    return write_text_atomic(out / "report.md", "\n".join(lines))


def _stage_lines(settings: dict[str, Any]) -> list[str]:
    """Where the command's time went, from ``settings["stages"]`` (stage: wall seconds, in the
    order they ran; stages served from the cache are absent); nothing without stages."""
    stages = settings.get("stages") or {}
    if not stages:
        return []
    rest = settings.get("seconds", 0.0) - sum(stages.values())
    parts = [f"{name} {s:.0f} s" for name, s in stages.items()]
    return [f"Where those seconds went: {', '.join(parts)}; {max(rest, 0):.0f} s between them "
            "(reading the cache, building the model and the trainer).", ""]  # fmt: skip


def throughput_means(rows: list[dict[str, float]]) -> dict[str, float] | None:
    """The mean of the ``perf/*`` windows (``cli/throughput.py``), the first (warm-up) left out
    when there are others: ``{"perf/step_s", "perf/positions_per_s", "perf/model_tflops",
    "perf/mfu", "perf/peak_tflops", "windows"}``; ``None`` when the run logged none."""
    # one row per window: Lightning may carry a callback's last logged values onto later rows
    keyed = {
        r.get("perf/window", (r["perf/positions_per_s"], r["perf/step_s"])): r
        for r in rows
        if "perf/mfu" in r
    }
    windows = list(keyed.values())
    if len(windows) > 1:
        windows = windows[1:]
    if not windows:
        return None
    keys = ("perf/step_s", "perf/positions_per_s", "perf/model_tflops", "perf/mfu",
            "perf/peak_tflops")  # fmt: skip
    means = {k: sum(r[k] for r in windows) / len(windows) for k in keys}
    return {**means, "windows": float(len(windows))}


def _throughput_lines(rows: list[dict[str, float]]) -> list[str]:
    """``throughput_means`` as a line of the report; nothing when the run logged none."""
    means = throughput_means(rows)
    if means is None:
        return []
    windows = int(means["windows"])

    def mean(key: str) -> float:
        return means[key]

    return ["", f"Throughput (mean of {windows} windows after the first): "
            f"{mean('perf/positions_per_s'):,.0f} positions/s, {mean('perf/step_s'):.3f} s a "
            f"step, {mean('perf/model_tflops') * 1e3:.1f} model GFLOP/s, MFU "
            f"{mean('perf/mfu'):.1%} of the measured matmul peak "
            f"({mean('perf/peak_tflops') * 1e3:.1f} GFLOP/s; models/flops.py counts the FLOPs)."]  # fmt: skip


#: Line styles by series, so that equal series (equal weights, say) stay visible on one another.
_STYLES = [("-", 2.6), ("--", 2.0), (":", 2.4), ("-.", 1.6)]


def _series(rows: list[dict[str, float]], prefix: str) -> dict[str, list[tuple[float, float]]]:
    names = sorted({k[len(prefix) :] for row in rows for k in row if k.startswith(prefix)})
    return {n: [(row["step"], row[prefix + n]) for row in rows if prefix + n in row] for n in names}


def _equal_groups(series: dict[str, list[tuple[float, float]]]) -> list[str]:
    """Names of series with identical points, as ``"a = b"`` per group of two or more."""
    groups: dict[tuple, list[str]] = {}
    for name, points in series.items():
        groups.setdefault(tuple(points), []).append(name)
    return [" = ".join(names) for names in groups.values() if len(names) > 1]


def _plot(metrics: RunMetrics, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(18, 3.6))
    panels = [("train/loss/", "loss (train)"), ("train/grad_share/", "gradient share"),
              ("train/weight/", "loss weight"), ("sampling/prob/", "sampling probability")]  # fmt: skip
    for ax, (prefix, title) in zip(axes, panels, strict=True):
        series = _series(metrics.train, prefix)
        for i, (name, points) in enumerate(series.items()):
            style, width = _STYLES[i % len(_STYLES)]
            ax.plot(*zip(*points, strict=True), linestyle=style, linewidth=width, label=name)
        ax.set_title(title)
        ax.set_xlabel("step")
        if series:
            ax.legend(fontsize=8)
        equal = _equal_groups(series)
        if equal:
            ax.text(0.02, 0.02, "equal, drawn on one another: " + "; ".join(equal),
                    transform=ax.transAxes, fontsize=7, style="italic")  # fmt: skip
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=90)
    plt.close(fig)
