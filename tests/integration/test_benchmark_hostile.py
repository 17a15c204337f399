"""``benchmarks/hostile_inputs.py`` runs end to end on two cases and writes its outputs.

Only the structure is checked (and that the hostile PNG is refused): timings belong in the
benchmark's results, never in assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def test_hostile_inputs_quick(tmp_path):
    out, md = tmp_path / "h.json", tmp_path / "h.md"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "hostile_inputs.py"), "--quick", "--cases",
           "baseline", "png_400000x1", "--out", str(out), "--md", str(md)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    assert {"cpu", "usable_cores", "torch_threads", "command", "date"} <= data["meta"].keys()
    rows = {r["case"]: r for r in data["results"]}
    assert rows.keys() == {"baseline", "png_400000x1"}
    assert all({"outcome", "seconds", "peak_mb", "input"} <= r.keys() for r in rows.values())
    assert rows["baseline"]["outcome"].startswith("ok")
    assert rows["png_400000x1"]["outcome"].startswith("InvalidInputError")
    assert "<tmp>/thin_400000x1.png" in rows["png_400000x1"]["outcome"]
    text = md.read_text()
    assert text.startswith("# Hostile inputs") and "Command: `" in text
    assert "| case | input | outcome | seconds | peak MB | over baseline MB |" in text
