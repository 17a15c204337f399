"""The benchmark scripts run end to end at --quick sizes and write their outputs.

Only the structure of the outputs is checked: timings belong in benchmarks, never in assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tokenize_mm.tokenizers.audio_io import save_wav

ROOT = Path(__file__).resolve().parents[2]


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), "--quick", *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_tokenizer_benchmark_quick(tmp_path):
    out, md = tmp_path / "tmp" / "x.json", tmp_path / "tmp" / "x.md"
    run_script("tokenizers.py", "--out", str(out), "--md", str(md))
    results = json.loads(out.read_text())
    assert {"meta", "settings", "goals", "text", "image", "vq_assign"} <= results.keys()
    meta = results["meta"]
    assert meta["quick"] is True
    assert {"cpu", "torch_threads", "torch", "sentencepiece", "date", "command"} <= meta.keys()
    text = results["text"]
    assert {"ratio", "packed_ratio", "batch", "single", "identical_ids"} <= text.keys()
    assert {"ours", "packed", "raw"} == text["batch"].keys()
    assert {"ours", "raw"} == text["single"].keys()
    for mode in ("batch", "single"):
        assert {"tokens_per_s", "items_per_s", "median_s"} <= text[mode]["ours"].keys()
    assert {"default", "small"} == results["image"].keys()
    for case in results["image"].values():
        timings = case["timings"]
        assert {"encode", "preprocess", "model", "decode"} <= timings.keys()
        assert all("images_per_s" in t for t in timings.values())
    assert results["image"]["default"]["arch"]["image_size"] == 256
    assert results["image"]["small"]["arch"]["image_size"] == 64
    vq = {(r["D"], r["method"]) for r in results["vq_assign"]}
    assert {(d, m) for d in (32, 64, 256) for m in ("nearest_code", "cdist_argmin")} <= vq
    assert all({"gflops", "matmul_gflops", "ratio"} <= r.keys() for r in results["vq_assign"])
    assert all({"name", "target", "value", "met"} <= g.keys() for g in results["goals"])
    markdown = md.read_text()
    assert markdown.startswith("# Tokenizer benchmark\n\nCommand: `")
    assert "--quick" in markdown.splitlines()[2] and str(md) in markdown.splitlines()[2]
    for section in ("## Goals", "## Text", "## Image", "## VQ"):
        assert section in markdown


def test_vq_assign_quick(tmp_path):
    out, md = tmp_path / "vq.json", tmp_path / "vq.md"
    run_script("vq_assign.py", "--out", str(out), "--md", str(md))
    results = json.loads(out.read_text())
    assert {"meta", "results", "chunk_sweep"} <= results.keys()
    assert {"cpu", "threads", "matmul_gflops_median"} <= results["meta"].keys()
    methods = {r["method"] for r in results["results"]}
    assert methods == {"nearest_code", "cdist_argmin", "encodec_quantize"}
    assert all({"gflops", "matmul_gflops", "ratio"} <= r.keys() for r in results["results"])
    assert results["chunk_sweep"] and "| K | D |" in md.read_text()


def test_image_fit_report(tmp_path, tiny_image, images):
    art = tiny_image.save(tmp_path / "art")
    lines = []
    for i, img in enumerate(images[:6]):
        img.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"id": str(i), "image": f"{i}.png", "split": "test"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "image_fit_report.py"), "--tokenizer",
           str(art), "--manifest", str(tmp_path / "manifest.jsonl"), "--md", str(md),
           "--png", str(png), "--grid", "4"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "| test | 6 |" in md.read_text() and "Report command" in md.read_text()
    size = tiny_image.info.image_size
    assert Image.open(png).size == (4 * size, 2 * size)


def test_audio_fit_report(tmp_path, tiny_audio, clips):
    art = tiny_audio.save(tmp_path / "art")
    lines = []
    for i, (wav, rate) in enumerate(clips[:6]):
        save_wav(tmp_path / f"{i}.wav", wav, rate)
        split = "test" if i < 2 else "train"
        lines.append(json.dumps({"id": str(i), "audio": f"{i}.wav", "split": split}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    md, png = tmp_path / "r.md", tmp_path / "r.png"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "audio_fit_report.py"), "--tokenizer",
           str(art), "--manifest", str(tmp_path / "manifest.jsonl"), "--md", str(md),
           "--png", str(png)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    text = md.read_text()
    assert "| at initialisation |" in text and "| fitted |" in text and "2 clips" in text
    assert Image.open(png).size[0] > 0


def test_audio_encode_quick(tmp_path):
    out, md = tmp_path / "a.json", tmp_path / "a.md"
    run_script("audio_encode.py", "--out", str(out), "--md", str(md))
    results = json.loads(out.read_text())
    assert {"meta", "settings", "methods", "codes", "codec50", "matmul_gflops"} <= results.keys()
    assert set(results["methods"]) == {"package_loop", "ours_loop", "ours_batch"}
    for row in results["methods"].values():
        assert {"median_s", "gflops", "fraction_of_matmul", "speedup_vs_package"} <= row.keys()
    assert results["codes"]["total_codes"] > 0
    assert {"encode_realtime_factor", "decode_realtime_factor"} <= results["codec50"].keys()
    assert md.read_text().startswith("# Audio encoding")
