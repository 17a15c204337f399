"""The balance benchmark's outputs: ``balance.md``, ``balance.json`` and three or four PNG plots.

``balance.png``: per-modality validation loss, worst-modality regret W and dominance index per
strategy (bars: mean over seeds, whiskers: min to max). ``grad_share.png``: each modality's
gradient share over training, one panel per strategy (mean over seeds). ``grounding.png``:
grounding gain G(m <- c) per ordered pair and zero-shot accuracy against chance.
``contrastive.png`` (when a strategy trained with the contrastive objective): zero-shot by
embedding beside by likelihood, and R@5 in every retrieval direction.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tokenize_mm.core.atomic import write_atomic, write_text_atomic
from tokenize_mm.core.modalities import MODALITIES

COLOURS = {"text": "tab:blue", "image": "tab:orange", "audio": "tab:green"}


def _pm(spread: dict[str, float], digits: int = 3) -> str:
    if spread is None or math.isnan(spread["mean"]):
        return "–"
    return f"{spread['mean']:.{digits}f} ± {spread['std']:.{digits}f}"


def markdown(results: dict[str, Any], out_dir: Path) -> str:
    meta, summary, runs = results["meta"], results["summary"], results["runs"]
    table = summary["strategies"]
    cfg = runs[0]["config"]
    steps, rows, context = (cfg["trainer"]["max_steps"], cfg["data"]["batch_size"],
                            cfg["data"]["context"])  # fmt: skip
    source = {k: v for k, v in cfg["data"]["source"].items() if k != "_target_"}
    data = (
        meta["manifest"]
        or f"the built-in data ({', '.join(f'{k}={v}' for k, v in source.items())})"
    )
    lines = [
        "# Modality-balance benchmark", "",
        f"Command: `{meta['command']}`", "",
        f"Size `{meta['size']}`: {len(meta['strategies'])} strategies × {len(meta['seeds'])} "
        f"seeds ({', '.join(map(str, meta['seeds']))}), each run {steps} steps of {rows} × "
        f"{context} positions (an equal token budget; "
        f"{_mean_tokens_trained(table):,.0f} target tokens trained per run on average), on {data}. "
        f"Model: {cfg['model']['d_model']} wide, {cfg['model']['n_layers']} layers; span order "
        f"`{cfg['data']['span_order']}`. Held-out examples for G and zero-shot: "
        f"{meta.get('eval_source', '?')}.", "",
        f"Machine: {meta['cpu']}, {meta['usable_cores']} cores, torch {meta['torch']} "
        f"({meta['torch_threads']} threads), lightning {meta['lightning']}, python "
        f"{meta['python']}; load average {meta['load_average_start']} at the start, "
        f"{meta['load_average_end']} at the end. Whole benchmark: {meta['seconds'] / 60:.1f} min "
        f"({meta['date']}).", "",
        "## Balance", "",
        "Validation loss per modality (nats per token; mean ± std over seeds), the average of the "
        "three, worst-modality regret W over this set of strategies (of the seed-mean losses, and "
        "mean ± std of each seed's W), dominance index D (max / min gradient share, averaged over "
        "training), mean gradient share and mean share of the weighted training loss over "
        "training (text / image / audio, and the alignment objective's where it runs), seconds a "
        "step and model-FLOPs utilisation against the measured matmul peak (the Throughput "
        "callback's windows after the first, data waits included: `cli/throughput.py`), and "
        "seconds per run (train + eval).", "",
        "| strategy | L text | L image | L audio | average | W | W per seed | D | grad share "
        "t / i / a | loss share t / i / a / c | s/step | MFU | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s, e in table.items():
        losses = [_pm(e["val_loss"].get(m)) for m in MODALITIES]
        shares = " / ".join(f"{e['grad_share'].get(m, float('nan')):.2f}" for m in MODALITIES)
        loss_shares = e.get("loss_share", {})
        loss_cells = " / ".join(f"{loss_shares[m]:.2f}" for m in (*MODALITIES, "contrastive")
                                if m in loss_shares) or "–"  # fmt: skip
        step = _pm(e["step_seconds"], 3) if "step_seconds" in e else "–"
        mfu = f"{e['mfu']['mean']:.1%}" if "mfu" in e else "–"
        secs = e["train_seconds"]["mean"] + e["eval_seconds"]["mean"]
        name = f"**{s}**" if s == meta.get("default_strategy") else s
        lines.append(
            f"| {name} | {' | '.join(losses)} | {_pm(e['average_loss'])} | {e['W']:.3f} | "
            f"{_pm(e['W_per_seed'])} | {_pm(e['dominance'], 2)} | {shares} | {loss_cells} | "
            f"{step} | {mfu} | {secs:.0f} |"
        )
    lines += ["", "Bold: the framework's default (`tmm-train`'s weighting and sampler). "
              "Baseline: token_mean with proportional sampling.", ""]  # fmt: skip
    lines += _verdict_lines(summary["verdict"])
    lines += ["", "![validation loss, W and dominance per strategy](balance.png)", "",
              "![gradient share over training](grad_share.png)", ""]  # fmt: skip
    lines += _grounding_lines(table)
    lines += ["", "![grounding gain and zero-shot accuracy](grounding.png)", ""]
    if any("contrastive" in e for e in table.values()):
        lines += _contrastive_lines(table)
        lines += ["", "![zero-shot by embedding and by likelihood; R@5 per direction]"
                  "(contrastive.png)", ""]  # fmt: skip
    lines += ["## Reproduce", "",
              "Every run's resolved config is in `balance.json` (`runs[i].config`, with its "
              "`tmm-train` overrides in `runs[i].overrides`); one run alone is "
              "`tmm-train <overrides>`. The whole set again, compared figure by figure:", "",
              f"    .venv/bin/python benchmarks/balance.py --from-config {out_dir}/balance.json "
              "--out-dir /tmp/balance_rerun", ""]  # fmt: skip
    if "reproduction" in results:
        d = results["reproduction"]["max_abs_diff"]
        lines += [f"This report is such a rerun of `{results['reproduction']['recorded']}`: "
                  f"largest differences val loss {d['val_loss']:.2e}, G {d['grounding_gain']:.2e}, "
                  f"zero-shot accuracy {d['zero_shot_accuracy']:.2e}.", ""]  # fmt: skip
    return "\n".join(lines)


def _mean_tokens_trained(table: dict[str, Any]) -> float:
    values = [e["tokens_trained"] for e in table.values()]
    return sum(values) / len(values) if values else 0.0


def _verdict_lines(v: dict[str, Any]) -> list[str]:
    if v.get("holds") is None:
        lines = ["## Default strategy", "", f"Not evaluated: {v.get('reason')}.", ""]
        return lines + _adaptive_lines(v.get("adaptive"))
    d = v["default"]
    lines = ["## Default strategy", "",
             f"Default `{d}`: W per seed {v['W'][d]:.3f} ± {v['W_std'][d]:.3f}; lowest W "
             f"`{v['lowest_W']}` at {v['W'][v['lowest_W']]:.3f} ± {v['W_std'][v['lowest_W']]:.3f} "
             f"({'tied within the seed spread' if v['tied_within_spread'] else 'not tied'}); "
             f"average loss {'within' if v['average_within_1pct'] else 'not within'} 1 % of the "
             f"best (`{v['best_average']}`). The default's claim "
             f"{'holds' if v['holds'] else 'does NOT hold'} on this run.", ""]  # fmt: skip
    return lines + _adaptive_lines(v.get("adaptive"))


def _adaptive_lines(a: dict[str, Any] | None) -> list[str]:
    """The adaptive strategies against the best static one (``balance.adaptive_verdict``)."""
    if not a or not a.get("strategies"):
        return []
    best = a["best_static"]
    keys = [k for k in ("W", "mean_G", "zero_shot", "embedding_zero_shot")
            if any(k in c for c in a["strategies"].values())]  # fmt: skip
    names = {"W": "W per seed", "mean_G": "mean G", "zero_shot": "zero-shot (likelihood)",
             "embedding_zero_shot": "zero-shot (embedding)"}  # fmt: skip
    lines = ["### Adaptive strategies against the best static one", "",
             f"The best static strategy (lowest W per seed) is `{best}`. An adaptive strategy "
             "clears the bar when its W is no higher, its mean G and zero-shot accuracies no "
             "lower (each within the larger of the two seed spreads) and its average loss within "
             "1 % of the best of the set. Each cell: the strategy's value, then the static one's.",
             "", "| strategy | " + " | ".join(names[k] for k in keys) + " | average within 1 % | "
             "clears the bar |", "|---|" + "---|" * (len(keys) + 2)]  # fmt: skip
    for s, c in a["strategies"].items():
        cells = [
            f"{c[k]['value']:.3f} vs {c[k]['static']:.3f} ({'ok' if c[k]['ok'] else 'no'})"
            if k in c else "–"
            for k in keys
        ]  # fmt: skip
        ok = "yes" if c["average_within_1pct"] else "no"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {ok} | "
                     f"{'**yes**' if c['wins'] else 'no'} |")  # fmt: skip
    return [*lines, ""]


def _grounding_lines(table: dict[str, Any]) -> list[str]:
    pairs = sorted({p for e in table.values() for p in e["grounding"]})
    contexts = sorted({c for e in table.values() for c in e["zero_shot"]})
    head = [f"G({p.replace('<-', ' ← ')})" for p in pairs]
    head += [f"zero-shot from {c} (colour / shape)" for c in contexts]
    zero_shot_text = (
        " Zero-shot: the concept whose caption is most likely after the image (or audio), top-1 "
        "over 64 concepts (chance 1/64 = 0.016; colour and shape alone: chance 1/8 = 0.125)."
        if contexts
        else ""
    )
    lines = ["## Grounding and zero-shot", "",
             "Grounding gain G(m ← c) = L_m with c shuffled across held-out examples − L_m with "
             "the true c (nats per m token; positive: the model reads c)." + zero_shot_text
             + " Mean ± std over seeds.", "",
             "| strategy | " + " | ".join(head) + " |",
             "|---|" + "---|" * len(head)]  # fmt: skip
    for s, e in table.items():
        cells = [_pm(e["grounding"].get(p)) for p in pairs]
        for c in contexts:
            z = e["zero_shot"][c]
            cells.append(f"{_pm(z['accuracy'], 3)} ({z['colour_accuracy']['mean']:.2f} / "
                         f"{z['shape_accuracy']['mean']:.2f})")  # fmt: skip
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    if not contexts:
        lines += ["", "Zero-shot needs concept labels (the built-in data has them); not run."]
    return lines


def _contrastive_lines(table: dict[str, Any]) -> list[str]:
    """Zero-shot by embedding beside by likelihood, and R@k in every direction, per strategy
    trained with the contrastive objective (mean ± std over seeds), with chance levels."""
    clip = {s: e["contrastive"] for s, e in table.items() if "contrastive" in e}
    contexts = sorted({c for e in clip.values() for c in e["zero_shot"]})
    lines = ["## Contrastive alignment", ""]
    captions = all("zero_shot_captions" in e for e in clip.values())
    if contexts:
        kinds = ["by embedding", *(["by caption ensemble"] if captions else []), "by likelihood"]
        lines += ["Zero-shot top-1 over the 64 concepts by embedding similarity (the concept whose "
                  "prompt ensemble, e.g. \"a {}\", \"a picture of a {}\", is most similar), by "
                  "caption ensemble (the same with 16 captions of each concept as the training "
                  "templates write them, `caption_prompts`), and by the likelihood ranking above, "
                  "for the strategies trained with the contrastive objective. Chance 1/64 = "
                  "0.016.", "",
                  "| strategy | " + " | ".join(f"{k}, {c}" for c in contexts for k in kinds)
                  + " |", "|---|" + "---|" * len(kinds) * len(contexts)]  # fmt: skip
        for s, e in clip.items():
            cells = []
            for c in contexts:
                likelihood = table[s]["zero_shot"].get(c, {}).get("accuracy")
                cells += [_pm(e["zero_shot"].get(c)),
                          *([_pm(e["zero_shot_captions"].get(c))] if captions else []),
                          _pm(likelihood)]  # fmt: skip
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines.append("")
    directions = sorted({d for e in clip.values() for d in e["retrieval"]})
    ks = sorted({k for e in clip.values() for d in e["retrieval"].values() for k in d
                 if "concept" not in k}, key=lambda k: int(k[2:]))  # fmt: skip
    lines += ["Retrieval on the held-out examples: R@k, the paired item among the k most similar "
              "of the gallery (the examples holding both modalities: `items` of them); in "
              "brackets, any item of the query's concept among them. Chance: k / items (any item "
              "of the concept: in brackets).", "",
              "| strategy | direction | items | " + " | ".join(ks) + " | chance "
              + " / ".join(ks) + " |",
              "|---|---|---|" + "---|" * (len(ks) + 1)]  # fmt: skip
    for s, e in clip.items():
        for d in directions:
            r, c = e["retrieval"].get(d, {}), e["retrieval_chance"].get(d, {})
            cells = [f"{_pm(r.get(k), 2)} ({r[k + '_concept']['mean']:.2f})"
                     if k + "_concept" in r else _pm(r.get(k), 2) for k in ks]  # fmt: skip
            chance = " / ".join(
                f"{c[f'chance@{k[2:]}']:.2f}" + (f" ({c[f'chance@{k[2:]}_concept']:.2f})"
                if f"chance@{k[2:]}_concept" in c else "") for k in ks if f"chance@{k[2:]}" in c
            )  # fmt: skip
            items = round(1 / c["chance@1"]) if c.get("chance@1") else "?"
            lines.append(f"| {s} | {d.replace('->', ' → ')} | {items} | " + " | ".join(cells)
                         + f" | {chance} |")  # fmt: skip
    return lines


def plot_contrastive(results: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    table = results["summary"]["strategies"]
    names = [s for s, e in table.items() if "contrastive" in e]
    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    cmap = plt.get_cmap("tab10")
    contexts = sorted({c for s in names for c in table[s]["contrastive"]["zero_shot"]})
    bars = [(f"{c}, embedding", [table[s]["contrastive"]["zero_shot"][c] for s in names])
            for c in contexts]  # fmt: skip
    bars += [(f"{c}, likelihood", [table[s]["zero_shot"][c]["accuracy"] for s in names])
             for c in contexts if all(c in table[s]["zero_shot"] for s in names)]  # fmt: skip
    width = 0.8 / max(1, len(bars))
    for k, (label, spreads) in enumerate(bars):
        _bars(axes[0], names, spreads, "zero-shot concept accuracy (64-way)", cmap(k),
              (k - (len(bars) - 1) / 2) * width, width, label)  # fmt: skip
    axes[0].axhline(1 / 64, color="black", lw=0.8, ls="--", label="chance")
    axes[0].legend(fontsize=7)
    directions = sorted({d for s in names for d in table[s]["contrastive"]["retrieval"]})
    width = 0.8 / max(1, len(directions))
    for k, d in enumerate(directions):
        spreads = [table[s]["contrastive"]["retrieval"][d]["R@5"] for s in names]
        _bars(axes[1], names, spreads, "R@5 (paired item), per direction", cmap(k),
              (k - (len(directions) - 1) / 2) * width, width, d.replace("->", " → "))  # fmt: skip
    chances = {table[names[0]]["contrastive"]["retrieval_chance"][d]["chance@5"]
               for d in directions}  # fmt: skip
    if len(chances) == 1:  # one gallery size for every direction: one chance line
        axes[1].axhline(chances.pop(), color="black", lw=0.8, ls="--", label="chance")
    axes[1].legend(fontsize=7, ncol=2)
    _save(fig, axes, names, path)


def _bars(ax, names, spreads, title, colour="tab:grey", offset=0.0, width=0.8, label=None):
    means = [s["mean"] for s in spreads]
    low = [s["mean"] - s["min"] for s in spreads]
    high = [s["max"] - s["mean"] for s in spreads]
    xs = [i + offset for i in range(len(names))]
    ax.bar(xs, means, width, yerr=[low, high], color=colour, capsize=2, label=label)
    ax.set_title(title, fontsize=9)


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, axes, names: list[str], path: str) -> None:
    """Strategy names under every panel, then the PNG."""
    for ax in axes:
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    _pyplot().close(fig)


def plot_balance(results: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    table = results["summary"]["strategies"]
    names = list(table)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / 3
    for k, m in enumerate(MODALITIES):
        spreads = [table[s]["val_loss"].get(m) for s in names]
        if all(spreads):
            _bars(axes[0], names, spreads, "validation loss per modality", COLOURS[m],
                  (k - 1) * width, width, m)  # fmt: skip
    axes[0].legend(fontsize=8)
    _bars(axes[1], names, [table[s]["W_per_seed"] for s in names], "worst-modality regret W")
    _bars(
        axes[2], names, [table[s]["dominance"] for s in names], "dominance index D (1 = balanced)"
    )
    _save(fig, axes, names, path)


def plot_grad_share(results: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    names = list(results["summary"]["strategies"])
    cols = min(3, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 2.6 * nrows), squeeze=False)
    for ax, s in zip(axes.flat, names, strict=False):
        curves = [r["grad_share_curve"] for r in results["runs"] if r["strategy"] == s]
        for m in MODALITIES:
            steps = [p["step"] for p in curves[0]]
            values = [[p[m] for p in c] for c in curves]
            if any(v is None for c in values for v in c):
                continue
            mean = [sum(col) / len(col) for col in zip(*values, strict=False)]
            ax.plot(steps[: len(mean)], mean, color=COLOURS[m], label=m, lw=1)
        ax.set_title(s, fontsize=9)
        ax.set_ylim(0, 1)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle("gradient share at the final hidden states over training (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)


def plot_grounding(results: dict[str, Any], path: str) -> None:
    plt = _pyplot()
    table = results["summary"]["strategies"]
    names = list(table)
    pairs = sorted({p for e in table.values() for p in e["grounding"]})
    contexts = sorted({c for e in table.values() for c in e["zero_shot"]})
    fig, axes = plt.subplots(1, 2, figsize=(14, 4))
    width = 0.8 / max(1, len(pairs))
    cmap = plt.get_cmap("tab10")
    for k, p in enumerate(pairs):
        _bars(axes[0], names, [table[s]["grounding"][p] for s in names],
              "grounding gain G(m ← c), nats per m token", cmap(k),
              (k - (len(pairs) - 1) / 2) * width, width, p.replace("<-", " ← "))  # fmt: skip
    axes[0].axhline(0, color="black", lw=0.5)
    axes[0].legend(fontsize=7, ncol=2)
    width = 0.8 / max(1, len(contexts))
    for k, c in enumerate(contexts):
        _bars(axes[1], names, [table[s]["zero_shot"][c]["accuracy"] for s in names],
              "zero-shot concept accuracy (64-way)", cmap(k),
              (k - (len(contexts) - 1) / 2) * width, width, f"from {c}")  # fmt: skip
    if contexts:
        axes[1].axhline(1 / 64, color="black", lw=0.8, ls="--", label="chance")
        axes[1].legend(fontsize=7)
    _save(fig, axes, names, path)


def write_report(results: dict[str, Any], out_dir: Path) -> None:
    """Write the JSON, the three plots and the markdown (atomically, the markdown last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / "balance.json", json.dumps(results, indent=1))
    write_atomic(out_dir / "balance.png", lambda tmp: plot_balance(results, tmp))
    write_atomic(out_dir / "grad_share.png", lambda tmp: plot_grad_share(results, tmp))
    write_atomic(out_dir / "grounding.png", lambda tmp: plot_grounding(results, tmp))
    if any("contrastive" in e for e in results["summary"]["strategies"].values()):
        write_atomic(out_dir / "contrastive.png", lambda tmp: plot_contrastive(results, tmp))
    write_text_atomic(out_dir / "balance.md", markdown(results, out_dir))
