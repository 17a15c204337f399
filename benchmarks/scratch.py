"""Where a benchmark writes when not told where: a scratch folder, never the recorded results.

``--out docs/results/...`` (or ``RESULTS=docs/results`` for the make targets) updates the record;
the default is ``$TMPDIR/tokenize_mm/<name>``, so rerunning a documented command to check it
leaves docs/results as committed.
"""

from __future__ import annotations

import json
import tempfile
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
