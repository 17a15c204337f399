"""Token accounting: what each modality costs in a pretokenized store.

For a store: examples and tokens per modality and per source, each modality's share of the
tokens, the mean and 95th percentile of tokens per example that has the modality, and the cost
per unit of content: tokens per second of audio, per image, per text word. The audio and image
costs are also predicted from the tokenizers' ``info`` (frame rate × K per second and
``tokens_per_image`` per image, plus the two span markers per item) and checked against the
store's counts: they must agree (audio within the rounding of ceil(d × frame rate) per clip).
Written as markdown, JSON and a PNG of the per-example token-length distributions.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tokenize_mm.core.atomic import write_atomic, write_text_atomic
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.data.store import TokenStore
from tokenize_mm.data.store.json_fields import JsonFile


def account(store: TokenStore) -> dict[str, Any]:
    """The store's token accounting (see the module docstring), JSON-serialisable."""
    layout = store.layout
    per_example = {
        m: [e["tokens"].get(m, 0) for e in store.examples] for m in (*MODALITIES, "special")
    }
    totals = {m: int(sum(v)) for m, v in per_example.items()}
    all_tokens = sum(totals.values())
    modalities = {}
    for m in MODALITIES:
        having = np.array([n for n in per_example[m] if n > 0], dtype=np.float64)
        modalities[m] = {
            "examples": int(having.size), "tokens": totals[m],
            "share": totals[m] / all_tokens if all_tokens else 0.0,
            "mean_per_example": float(having.mean()) if having.size else 0.0,
            "p95_per_example": float(np.percentile(having, 95)) if having.size else 0.0,
        }  # fmt: skip
    sources: dict[str, dict[str, Any]] = defaultdict(lambda: {"examples": 0, "tokens": Counter()})
    for e in store.examples:
        sources[e["source"]]["examples"] += 1
        sources[e["source"]]["tokens"].update(e["tokens"])
    units = {k: sum(e["units"].get(k, 0.0) for e in store.examples)
             for k in ("audio_seconds", "audio_clips", "images", "text_words")}  # fmt: skip
    cost = _costs(layout, totals, units)
    errors = Counter(e["reason"].split(":", 1)[0] for e in store.errors)
    return {
        "store": str(store.path), "fingerprint": store.manifest["fingerprint"],
        "examples": len(store.examples), "tokens": all_tokens, "special_tokens": totals["special"],
        "modalities": modalities,
        "sources": {s: {"examples": v["examples"], "tokens": dict(v["tokens"])}
                    for s, v in sorted(sources.items())},
        "units": units, "cost": cost,
        "errors": {"total": len(store.errors), "by_reason": dict(errors)},
        "source_skipped": _source_skipped(store),
        "per_example": per_example,
    }  # fmt: skip


def _costs(layout, totals: dict[str, int], units: dict[str, float]) -> dict[str, Any]:
    """Measured cost per unit and, for audio and images, the cost predicted from ``info``."""
    out: dict[str, Any] = {}
    if "audio" in layout.infos and units["audio_seconds"]:
        info = layout.infos["audio"]
        k = info.num_codebooks
        extra = 2 + (k * (k - 1) if layout.audio_pattern == "delay" else 0)  # markers, delay pads
        predicted = info.tokens_per_second * units["audio_seconds"] + extra * units["audio_clips"]
        out["audio"] = {
            "unit": "second of audio",
            "measured": totals["audio"] / units["audio_seconds"],
            "predicted": predicted / units["audio_seconds"],
            "agrees": abs(totals["audio"] - predicted) <= k * units["audio_clips"] + 1e-6,
        }  # ceil(d · frame_rate) adds at most one frame (K tokens) per clip
    if "image" in layout.infos and units["images"]:
        info = layout.infos["image"]
        predicted = (info.tokens_per_image + 2) * units["images"]
        out["image"] = {
            "unit": "image", "measured": totals["image"] / units["images"],
            "predicted": predicted / units["images"], "agrees": totals["image"] == predicted,
        }  # fmt: skip
    if "text" in layout.infos and units["text_words"]:
        out["text"] = {
            "unit": "text word", "measured": totals["text"] / units["text_words"],
            "chars_per_token": layout.infos["text"].chars_per_token,
        }  # fmt: skip
    return out


def _source_skipped(store: TokenStore) -> dict[str, Any]:
    """Records the source refused before tokenization (a manifest's missing files), by reason.

    Raises:
        StoreFormatError: a part's ``part.json`` is malformed (the message names it and the key).
    """
    reasons: Counter[str] = Counter()
    for part in sorted((store.path / "parts").glob("part-*")):
        report_file = JsonFile(part / "part.json", "run its pretokenize again, then merge_store")
        report = report_file.load()
        for k, skipped in enumerate(report_file.field(report, "source_skipped", list)):
            reasons[report_file.field(skipped, "reason", str, where=f"source_skipped[{k}]")] += 1
    return {"total": sum(reasons.values()), "by_reason": dict(reasons)}


def markdown(report: dict[str, Any], command: str | None = None) -> str:
    lines = ["# Token accounting", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"Store `{report['store']}` (fingerprint `{report['fingerprint'][:12]}`): "
        f"{report['examples']} examples, {report['tokens']:,} tokens "
        f"({report['special_tokens']:,} bos/eos). Errors: {report['errors']['total']} "
        f"{report['errors']['by_reason'] or ''}; records the source skipped: "
        f"{report['source_skipped']['total']} {report['source_skipped']['by_reason'] or ''}.",
        "",
        "| modality | examples with it | tokens | share | mean per example | p95 per example |",
        "|---|---|---|---|---|---|",
    ]
    for m, r in report["modalities"].items():
        lines.append(
            f"| {m} | {r['examples']} | {r['tokens']:,} | {100 * r['share']:.1f} % | "
            f"{r['mean_per_example']:.1f} | {r['p95_per_example']:.0f} |"
        )
    lines += ["", "| cost | measured tokens | predicted from info | agrees |", "|---|---|---|---|"]
    for m, c in report["cost"].items():
        predicted = f"{c['predicted']:.2f}" if "predicted" in c else "–"
        agrees = {True: "yes", False: "NO"}.get(c.get("agrees"), "–")
        lines.append(f"| per {c['unit']} ({m}) | {c['measured']:.2f} | {predicted} | {agrees} |")
    lines += ["", "| source | examples | " + " | ".join(f"{m} tokens" for m in MODALITIES) + " |",
              "|---|---|" + "---|" * len(MODALITIES)]  # fmt: skip
    for s, r in report["sources"].items():
        cells = " | ".join(f"{r['tokens'].get(m, 0):,}" for m in MODALITIES)
        lines.append(f"| {s} | {r['examples']} | {cells} |")
    return "\n".join(lines) + "\n"


def write_report(
    store: TokenStore, out_prefix: str | os.PathLike, command: str | None = None
) -> dict[str, Any]:
    """Write ``<prefix>.md``, ``<prefix>.json`` and ``<prefix>.png``; returns the report."""
    report = account(store)
    prefix = Path(out_prefix)
    write_text_atomic(prefix.with_suffix(".md"), markdown(report, command))
    slim = {k: v for k, v in report.items() if k != "per_example"}
    write_text_atomic(
        prefix.with_suffix(".json"), json.dumps({**slim, "command": command}, indent=2)
    )
    write_atomic(prefix.with_suffix(".png"), lambda tmp: _plot(report, tmp))
    return report


def _plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MODALITIES), figsize=(4 * len(MODALITIES), 3))
    for ax, m in zip(axes, MODALITIES, strict=True):
        values = [n for n in report["per_example"][m] if n > 0]
        if values:
            ax.hist(values, bins=30, color={"text": "C0", "image": "C1", "audio": "C2"}[m])
        ax.set_title(f"{m}: tokens per example")
        ax.set_xlabel("tokens")
    axes[0].set_ylabel("examples")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
