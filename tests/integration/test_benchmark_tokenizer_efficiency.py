"""benchmarks/tokenizer_efficiency.py runs end to end at --quick size, reports a modality that a
source lacks as absent, and answers bad input with a message, not a traceback.

Only the structure of the outputs is checked: numbers belong in the report, not in assertions.
Tokenizers are fitted into a cache under tmp_path, never the checkout's .cache.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "tokenizer_efficiency.py"
MODALITIES = ("text", "image", "audio")


def run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    out, md = tmp_path / "out" / "eff.json", tmp_path / "out" / "eff.md"
    # One torch thread: with another process on the 2 cores, two threads made this tiny run
    # (tiny fits included) about 20 times slower (6 s against 113 s), one thread did not.
    cmd = [sys.executable, str(SCRIPT), "--quick", "--threads", "1",
           "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--md", str(md), *args]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    return result, out, md


def test_quick_run_on_builtin_data_writes_every_section(tmp_path):
    result, out, md = run(tmp_path, "--data", "builtin")
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    meta = results["meta"]
    assert {"command", "date", "cpu", "torch", "torchmetrics", "sentencepiece", "torch_threads",
            "load_average_start", "load_average_end", "source", "split"} <= meta.keys()  # fmt: skip
    assert meta["quick"] is True and meta["split"] == "test"
    assert set(meta["tokenizers"]) == set(MODALITIES)
    for m in MODALITIES:
        section = results[m]
        assert {"tokenizer", "num_items", "rates", "bits", "codebooks", "quality",
                "throughput"} <= section.keys()  # fmt: skip
        tok = section["tokenizer"]
        assert {"path", "kind", "manifest_sha256", "origin"} <= tok.keys()
        assert tok["kind"].startswith(m) and Path(tok["path"]).is_relative_to(tmp_path)
        assert {"tokens_per_unit", "num_tokens", "unit"} <= section["rates"].keys()
        assert {"nominal", "unigram", "unigram_miller_madow"} <= section["bits"].keys()
        assert {"items_per_s", "tokens_per_s", "median_s"} <= section["throughput"].keys()
        for stats in section["codebooks"]:
            assert {"used_fraction", "entropy_bits", "codebook_size"} <= stats.keys()
    assert len(results["audio"]["codebooks"]) == 2  # audio_tiny has K = 2
    assert {"round_trip", "normalization"} <= results["text"]["quality"].keys()
    assert {"psnr_db", "ssim"} <= results["image"]["quality"].keys()
    assert {"si_snr_db", "mel_distance"} <= results["audio"]["quality"].keys()
    lines = md.read_text().splitlines()
    assert lines[0] == "# Tokenizer efficiency"
    assert lines[2].startswith("Command: `") and "--quick" in lines[2] and str(md) in lines[2]
    for heading in ("## Summary", "## Codebooks", "## Notes"):
        assert heading in lines


def test_modalities_missing_from_a_manifest_are_reported_absent(tmp_path):
    records = [
        {"id": f"t{i}", "text": f"a short sentence number {i}", "split": split}
        for i, split in enumerate(["train"] * 6 + ["val"] * 2)
    ]
    manifest = tmp_path / "data" / "manifest.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("".join(json.dumps(r) + "\n" for r in records))
    result, out, md = run(tmp_path, "--manifest", str(manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(out.read_text())
    assert results["meta"]["split"] == "val" and "no test records" in results["meta"]["split_note"]
    assert results["text"]["num_items"] == 2
    assert results["image"]["absent"] and results["audio"]["absent"]
    assert "image: absent" in md.read_text()

    result, _, _ = run(tmp_path, "--manifest", str(manifest), "--modalities", "text,image")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no image items" in result.stderr and "--modalities" in result.stderr


def test_missing_manifest_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere" / "manifest.jsonl"
    result, out, _ = run(tmp_path, "--manifest", str(missing))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert str(missing) in result.stderr and "manifest not found" in result.stderr
    assert not out.exists()
