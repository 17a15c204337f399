"""Where a benchmark writes when not told where: a scratch folder, never the recorded results.

``--out docs/results/...`` (or ``RESULTS=docs/results`` for the make targets) updates the record;
the default is ``$TMPDIR/tokenize_mm/<name>``, so rerunning a documented command to check it
leaves docs/results as committed.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

SCRATCH = Path(tempfile.gettempdir()) / "tokenize_mm"


def scratch(name: str) -> str:
    """``$TMPDIR/tokenize_mm/<name>`` as a string (argparse defaults)."""
    return str(SCRATCH / name)


def write_record(out_dir: str, name: str, record: dict[str, Any], lines: list[str]) -> None:
    """``<out_dir>/<name>.json`` (the record) and ``<name>.md`` (the lines), then the lines on
    stdout."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def out_dir_option(parser: argparse.ArgumentParser, name: str) -> None:
    """``--out-dir``, defaulting to ``scratch(name)`` and saying so in ``--help``."""
    parser.add_argument("--out-dir", default=scratch(name),
                        help=f"where the .md and .json go; default: {scratch(name)}")  # fmt: skip


def rotated(names: list[str], r: int) -> list[str]:
    """``names`` started at the ``r``-th (modulo its length): round r's order, so that no variant
    always runs first or after the same one."""
    k = r % len(names)
    return names[k:] + names[:k]


def interleaved(
    variants: Mapping[str, Callable[[], Any]], rounds: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Each variant called once a round for ``rounds`` rounds, in ``rotated`` order: the wall
    seconds of every call per variant, and each variant's last output (side by side in one
    process, so that the machine's drift falls on all of them alike)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, Any] = {}
    for r in range(rounds):
        for name in rotated(list(variants), r):
            start = time.perf_counter()
            outputs[name] = variants[name]()
            times[name].append(time.perf_counter() - start)
    return times, outputs
