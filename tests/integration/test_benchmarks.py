"""The benchmark scripts run end to end at --quick sizes and write their outputs.

Only the structure of the outputs is checked: timings belong in benchmarks, never in assertions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tokenize_mm.tokenizers.audio.io import save_wav

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
    assert {
        "ratio",
        "read_ratio",
        "packed_ratio",
        "batch",
        "single",
        "identical_ids",
    } <= text.keys()
    assert {"ours", "ours_read", "packed", "raw"} == text["batch"].keys()
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
    methods = ("nearest_code", "matmul_argmin", "cdist_argmin", "scores_only")
    assert {(d, m) for d in (32, 64, 256) for m in methods} <= vq
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
    assert methods == {"nearest_code", "matmul_argmin", "cdist_argmin", "encodec_quantize"}
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


def test_codec_fit_speed_quick(tmp_path):
    out, md = tmp_path / "f.json", tmp_path / "f.md"
    run_script("codec_fit_speed.py", "--out", str(out), "--md", str(md))
    results = json.loads(out.read_text())
    assert set(results["median_s"]) == {"package", "ours, torchaudio's mel",
                                        "ours, autograd's padding gradients", "ours"}  # fmt: skip
    assert results["speedup"] > 0 and results["mel_speedup"] > 0 and results["layout_speedup"] > 0
    assert all(len(t) == 1 for t in results["seconds"].values())  # --quick: one round
    assert md.read_text().startswith("# Codec fit on the CPU")


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


def test_balance_benchmark_tiny_runs_and_reruns_from_its_record(tmp_path):
    """Every strategy's figures, the tables and plots are written; a rerun from the recorded
    balance.json reproduces the figures (CPU training is deterministic for a seed)."""
    script = str(ROOT / "benchmarks" / "balance.py")
    out, cache = tmp_path / "bal", tmp_path / "cache"
    cmd = [sys.executable, script, "--size", "tiny", "--strategies", "token_mean,grad_share",
           "--seeds", "0,1", "--out-dir", str(out), "--cache-dir", str(cache)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("balance.md", "balance.json", "balance.png", "grad_share.png", "grounding.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "balance.json").read_text())
    assert {"meta", "summary", "runs"} <= results.keys()
    assert {"cpu", "torch", "lightning", "command", "seeds", "default_strategy"} <= results[
        "meta"
    ].keys()
    assert [(r["strategy"], r["seed"]) for r in results["runs"]] == [
        ("token_mean", 0), ("grad_share", 0), ("token_mean", 1), ("grad_share", 1)]  # fmt: skip
    run = results["runs"][0]
    assert {"val_loss", "dominance", "grad_share", "grounding", "zero_shot", "config",
            "overrides", "train_seconds", "eval_seconds"} <= run.keys()  # fmt: skip
    assert len(run["grounding"]) == 6 and {"image", "audio"} == run["zero_shot"].keys()
    summary = results["summary"]
    assert set(summary["strategies"]) == {"token_mean", "grad_share"}
    assert {"W", "W_per_seed", "average_loss", "dominance", "grounding", "zero_shot"} <= (
        summary["strategies"]["grad_share"].keys()
    )
    assert {"default", "holds"} <= summary["verdict"].keys()
    against = summary["verdict"]["adaptive"]
    assert against["best_static"] == "token_mean" and set(against["strategies"]) == {"grad_share"}
    assert {"W", "mean_G", "zero_shot", "wins"} <= against["strategies"]["grad_share"].keys()
    markdown = (out / "balance.md").read_text()
    assert markdown.startswith("# Modality-balance benchmark\n\nCommand: `")
    for section in ("## Balance", "## Default strategy", "## Grounding and zero-shot",
                    "## Reproduce"):  # fmt: skip
        assert section in markdown

    rerun = tmp_path / "rerun"
    cmd = [sys.executable, script, "--from-config", str(out / "balance.json"), "--out-dir",
           str(rerun), "--cache-dir", str(cache)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    again = json.loads((rerun / "balance.json").read_text())
    assert again["reproduction"]["max_abs_diff"] == {
        "val_loss": 0.0, "grounding_gain": 0.0, "zero_shot_accuracy": 0.0}  # fmt: skip

    # An interrupted benchmark resumes: a finished run's record in <out-dir>/runs/ is kept.
    resumed = tmp_path / "resumed"
    kept = dict(results["runs"][0], kept_from_before=True)
    (resumed / "runs").mkdir(parents=True)
    (resumed / "runs" / "token_mean-seed0.json").write_text(json.dumps(kept))
    cmd = [sys.executable, script, "--size", "tiny", "--strategies", "token_mean", "--seeds", "0",
           "--out-dir", str(resumed), "--cache-dir", str(cache)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = json.loads((resumed / "balance.json").read_text())
    assert final["meta"]["reused_runs"] == 1 and final["runs"][0]["kept_from_before"]
    assert not (resumed / "runs").exists()  # folded into balance.json


def test_balance_benchmark_refuses_bad_arguments(tmp_path):
    script = str(ROOT / "benchmarks" / "balance.py")
    for args, message in [(["--strategies", "token_mean,nope"], "unknown strategies"),
                          (["--manifest", str(tmp_path / "missing.jsonl")], "does not exist"),
                          (["--seeds", "a,b"], "comma-separated integers")]:  # fmt: skip
        result = subprocess.run([sys.executable, script, *args], capture_output=True, text=True,
                                cwd=ROOT, timeout=120)  # fmt: skip
        assert result.returncode == 2 and message in result.stderr, result.stderr


def test_step_cost_measures_every_variant_on_the_same_batches(tmp_path):
    """Every weighting and the bare loop are timed; the bare loop computes token_mean's loss."""
    out = tmp_path / "cost"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--experiment",
           "balance_bench_tiny", "--steps", "2", "--warmup", "1", "--rounds", "2", "--weightings",
           "token_mean,grad_share,famo,gradnorm_weights", "--cache-dir", str(tmp_path / "cache"),
           "--out-dir",
           str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((out / "step_cost.json").read_text())
    variants = {"token_mean", "grad_share", "famo", "gradnorm_weights", "bare loop"}
    assert record["median_s"].keys() == variants
    assert all(len(r) == 2 for r in record["per_round_median_s"].values())
    assert record["steps_measured"] == dict.fromkeys(variants, 4)
    assert record["weighting_ratio"]["token_mean"] == 1.0
    # the same weights and batch: the bare loop's first loss is token_mean's to float rounding
    first = record["first_loss"]
    assert abs(first["bare loop"] - first["token_mean"]) < 1e-5 * first["token_mean"]
    assert {"cpu", "threads", "torch", "lightning"} <= record["machine"].keys()
    markdown = (out / "step_cost.md").read_text()
    assert markdown.startswith("# Step cost") and "| bare PyTorch loop |" in markdown


def test_step_cost_refuses_a_set_without_the_baseline(tmp_path):
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_cost.py"), "--weightings", "famo"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "must include the baseline token_mean" in result.stderr


def test_host_syncs_counts_one_read_of_balanced_lm_a_step(tmp_path):
    """BalancedLM itself reads the device once a step: the forward statistics and weights with
    the gradient norms and the loss's finiteness, after the backward (FAMO's weights, which
    divide by the global mean losses, too); every read is listed with the line that made it."""
    out = tmp_path / "syncs"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "host_syncs.py"), "--experiment",
           "balance_bench_tiny", "--steps", "3", "--weightings", "token_mean,grad_share,famo",
           "--cache-dir", str(tmp_path / "cache"), "--out-dir", str(out)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((out / "host_syncs.json").read_text())
    for name in ("token_mean", "grad_share", "famo"):
        steps = record["results"][name]
        assert len(steps) == 3
        for step in steps[1:]:  # the first step also reads what it builds on first use
            own = {
                k: v
                for k, v in step["reads"].items()
                if k.startswith("tokenize_mm/models/system.py")
            }
            assert sum(own.values()) == 1 and all(k.endswith(" tolist") for k in own), own
            assert step["cuda_syncs"] is None  # a CPU run
    assert "| token_mean |" in (out / "host_syncs.md").read_text()


TINY_MAIN_JOB = ["data=tiny", "tokenizer@tokenizers.image=image_tiny",
                 "tokenizer@tokenizers.audio=audio_tiny"]  # fmt: skip


def test_codebook_health_runs_on_a_manifest(tmp_path, images, clips):
    """Seeds x threads x quantizers on a manifest's test split, at the tiny configs."""
    lines = []
    for i, img in enumerate(images[:4]):
        img.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"id": f"i{i}", "image": f"{i}.png", "split": "test"}))
    for i, (wav, rate) in enumerate(clips[:3]):
        save_wav(tmp_path / f"{i}.wav", wav, rate)
        lines.append(json.dumps({"id": f"a{i}", "audio": f"{i}.wav", "split": "test"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "health"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "codebook_health.py"), "--manifest",
           str(tmp_path / "manifest.jsonl"), "--seeds", "0", "--threads", "1", "--steps", "2",
           "--quantizers", "fsq", "vq", "--out", str(out), "--overrides", *TINY_MAIN_JOB]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.with_suffix(".json").read_text())
    assert {(r["modality"], r["quantizer"]) for r in rows} == {
        (m, q) for m in ("audio", "image") for q in ("fsq", "vq")}  # fmt: skip
    assert {r["held_out_items"] for r in rows if r["modality"] == "image"} == {4}
    assert all(r["threads"] == 1 and 0 < r["used_fraction"] <= 1 for r in rows)
    assert "| audio | fsq | 0 | 1 |" in out.with_suffix(".md").read_text()


def test_concept_probe_runs(tmp_path):
    out = tmp_path / "probe"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "concept_probe.py"), "--examples", "96",
           "--seeds", "0", "1", "--grid", "--out", str(out), "--overrides", *TINY_MAIN_JOB, "tokenizers.image.fit.max_steps=2",
           "tokenizers.audio.fit.max_steps=2"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [(r["modality"], r["seed"]) for r in rows] == [
        ("image", 0), ("image", 1), ("audio", 0), ("audio", 1)]  # fmt: skip
    assert all(0 <= r["token_accuracy"] <= 1 and 0 <= r["raw_accuracy"] <= 1 for r in rows)
    for modality in ("image", "audio"):  # one raw probe per modality, one fit per seed
        assert len({r["raw_accuracy"] for r in rows if r["modality"] == modality}) == 1
    md = out.with_suffix(".md").read_text()
    mean = sum(r["token_accuracy"] for r in rows if r["modality"] == "audio") / 2
    assert (
        "| image | " in md
        and f"| {mean:.3f} |" in md
        and "| audio | " in md.split("shape alone")[1]
    )
    assert all(
        0 <= r["colour_token_accuracy"] <= 1 and 0 <= r["shape_raw_accuracy"] <= 1 for r in rows
    )
    # --grid: the spatial probe for images only, its pixel reference trained once
    spatial = [r for r in rows if "grid_concept_token" in r]
    assert [r["modality"] for r in spatial] == ["image", "image"]
    assert all(r["grid"] == [4, 4] and 0 <= r["grid_shape_token"] <= 1 for r in spatial)
    assert len({r["grid_concept_raw"] for r in spatial}) == 1
    assert "| image_tiny (4 x 4) |" in md.split("Spatial probe")[1]


def test_image_vs_jpeg_runs_on_a_manifest(tmp_path, images):
    lines = []
    for i, img in enumerate(images[:3]):
        img.save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"id": f"i{i}", "image": f"{i}.png", "split": "test"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    out = tmp_path / "jpeg"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "image_vs_jpeg.py"), "--manifest",
           str(tmp_path / "manifest.jsonl"), "--budgets", "1", "8", "--out", str(out),
           "--overrides", *TINY_MAIN_JOB, "tokenizers.image.fit.max_steps=2"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(out.with_suffix(".json").read_text())
    assert rows[0]["counted"] == "nominal bits" and rows[0]["images"] == 3
    assert [(r["budget"], r["counted"]) for r in rows[1:]] == [
        (1, "whole file"), (1, "scan payload"), (8, "whole file"), (8, "scan payload")]  # fmt: skip
    assert all(r["images"] + r["misses"] == 3 for r in rows)


def test_audio_fit_variants_runs_on_a_manifest(tmp_path, clips):
    lines = []
    for i, (wav, rate) in enumerate(clips[:3]):
        save_wav(tmp_path / f"{i}.wav", wav, rate)
        lines.append(json.dumps({"id": f"a{i}", "audio": f"{i}.wav", "split": "test"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, str(ROOT / "benchmarks" / "audio_fit_variants.py"), "--manifest",
           str(tmp_path / "manifest.jsonl"), "--threads", "1", "--overrides", *TINY_MAIN_JOB,
           "tokenizers.audio.fit.max_steps=2", "tokenizers.audio.fit.autoencoder_warmup=0.5"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    for case in ("as is", "x0.25", "x4", "built-in RMS"):
        assert f"real clips, {case}: perplexity" in result.stdout


def test_codec_vs_codec2_runs_on_a_manifest(tmp_path, clips):
    """The benchmark's plumbing at the tiny configs, with a stand-in for Codec 2's binaries that
    hands the 8 kHz samples back unchanged (the real ones are a Debian package, not a test
    dependency): a lossless "Codec 2" must then score a mel distance of 0."""
    lines = []
    for i, (wav, rate) in enumerate(clips[:2]):
        save_wav(tmp_path / f"{i}.wav", wav, rate)
        lines.append(json.dumps({"id": f"a{i}", "audio": f"{i}.wav", "split": "test"}))
    (tmp_path / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("c2enc", "c2dec"):
        (bin_dir / name).write_text('#!/bin/sh\ncp "$2" "$3"\n')
        (bin_dir / name).chmod(0o755)
    out = tmp_path / "codec2"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "codec_vs_codec2.py"), "--manifest",
           str(tmp_path / "manifest.jsonl"), "--threads", "1", "--steps", "2", "--out", str(out),
           "--overrides", *TINY_MAIN_JOB]  # fmt: skip
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = {r["codec"]: r for r in json.loads(out.with_suffix(".json").read_text())}
    assert set(rows) == {"codec K=1", "codec K=2", "Codec 2 450", "Codec 2 700C", "Codec 2 1200"}
    assert all(r["clips"] == 2 for r in rows.values())
    assert rows["Codec 2 450"]["mel_distance"] < 0.01  # the stand-in is lossless (int16)
    assert rows["codec K=1"]["mel_distance"] > rows["Codec 2 450"]["mel_distance"]


def test_the_adaptive_bar_compares_with_the_best_static_strategy():
    """Issue 15's bar: W no higher than the best static strategy's, grounding no lower (within the
    seed spreads), average loss within 1 % of the best; a static strategy is never judged."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import balance

    def entry(w, g, z, avg, std=0.01):
        spread = lambda v: {"mean": v, "std": std}  # noqa: E731
        return {"W_per_seed": spread(w), "mean_G": spread(g), "zero_shot_mean": spread(z),
                "average_loss": spread(avg)}  # fmt: skip

    assert balance.is_static("modality_mean") and balance.is_static("clip_early")
    assert balance.is_static("temperature") and not balance.is_static("grad_share_odm")
    table = {
        "token_mean": entry(0.50, 0.10, 0.20, 2.00),
        "modality_mean": entry(0.20, 0.10, 0.20, 1.90),  # the best static: lowest W
        "grad_share_odm": entry(0.21, 0.095, 0.25, 1.91),  # within the spreads, 0.5 % above
        "odm": entry(0.10, 0.05, 0.25, 1.92),  # lower W, but less grounding
        "famo": entry(0.10, 0.20, 0.30, 1.95),  # more than 1 % above the best average
    }
    got = balance.adaptive_verdict(table)
    assert got["best_static"] == "modality_mean"
    wins = {s: c["wins"] for s, c in got["strategies"].items()}
    assert wins == {"grad_share_odm": True, "odm": False, "famo": False}
    assert got["strategies"]["odm"]["mean_G"]["ok"] is False
    assert got["strategies"]["famo"]["average_within_1pct"] is False
    assert balance.adaptive_verdict({"token_mean": table["token_mean"]})["best_static"] is None


def test_benchmarks_write_to_a_scratch_folder_unless_told():
    """`make bench` and `make bench-balance` leave the recorded results in docs/ alone unless
    RESULTS names them; the scripts' own defaults are scratch folders too."""
    # Under `make test` the outer make's MAKEFLAGS and MAKELEVEL would reach this one.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}

    def recipe(*args: str) -> str:
        done = subprocess.run(["make", "--no-print-directory", "-n", *args], capture_output=True,
                              text=True, cwd=ROOT, env=env)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return next(line for line in done.stdout.splitlines() if "benchmarks/" in line)

    for target in ("bench", "bench-balance"):
        assert "docs/" not in recipe(target)
        assert "docs/results/x" in recipe(target, "RESULTS=docs/results/x")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import balance

    assert "docs" not in Path(balance.parse_args([]).out_dir).parts


@pytest.mark.parametrize("script", ["audio_encode.py", "audio_long.py", "codec_fit_speed.py",
                                    "codec_small_paths.py", "attention_paths.py", "image_fit_speed.py",
                                    "hostile_inputs.py", "packing.py", "tokenizers.py"])  # fmt: skip
def test_result_writing_scripts_default_to_the_scratch_folder(script):
    """Rerunning a documented command to check it leaves docs/results as committed: every script
    that writes a report names the scratch folder as its default (benchmarks/scratch.py)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from scratch import SCRATCH

    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    helptext = " ".join(done.stdout.split())  # argparse wraps long paths
    assert str(SCRATCH) in helptext.replace(" ", "") or str(SCRATCH) in helptext
    assert "default: docs" not in helptext


def test_nuisance_probe_runs_on_a_model_folder(tmp_path, tiny_text, tiny_image, tiny_audio):
    """benchmarks/nuisance_probe.py reads a trained-model folder (here the tiny preset with an
    untrained head): three accuracies in [0, 1], the concept's no higher than its colour's or its
    shape's; a folder without a contrastive head is refused by name."""
    import torch

    from tokenize_mm.models import DecoderLM, preset
    from tokenize_mm.models.bundle import save_trained_model
    from tokenize_mm.models.contrastive import ContrastiveHead
    from tokenize_mm.sequence import VocabLayout

    toks = {"text": tiny_text, "image": tiny_image, "audio": tiny_audio}
    dirs = {m: t.save(tmp_path / "artifacts" / m) for m, t in toks.items()}
    layout = VocabLayout.from_artifacts(dirs)
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    head = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=16)
    with_head = save_trained_model(tmp_path / "model", model, head, dirs, layout, step=1)
    without = save_trained_model(tmp_path / "plain", model, None, dirs, layout, step=1)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "nuisance_probe.py"), str(with_head),
           "--examples", "4"]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["examples"] == 4
    assert all(0 <= out[k] <= 1 for k in ("ensemble", "own_scene", "own_scene_colour",
                                          "own_scene_shape"))  # fmt: skip
    assert out["own_scene"] <= min(out["own_scene_colour"], out["own_scene_shape"])
    cmd[2] = str(without)
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode != 0 and "contrastive" in result.stderr


def _reproduce_module():
    import importlib

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("reproduce")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_reproduce_classes_numbers_and_compares_within_the_tolerance():
    rep = _reproduce_module()
    assert rep.classify("text.batch.ours.best_s") == "machine"
    assert rep.classify("runs[0].train_seconds") == "machine"
    assert rep.classify("vq_assign[0].gflops") == "machine"
    assert rep.classify("meta.seeds[1]") == "setting"
    assert rep.classify("runs[2].val_loss.text") == "figure"
    assert rep.classify("padding[1].tokens") == "figure"
    entry = rep.Entry("x", "x.py --out {out}/x.json", "x.json", quick=True, atol=0.05)
    old = {"meta": {"seeds": [0, 1]}, "loss": 2.0, "count": 7, "step_s": 1.0}
    same = rep.compare(old, {**old, "loss": 2.04, "step_s": 3.0}, entry)
    assert not same["outside"] and not same["missing"]
    assert same["machine"]["worst"] == pytest.approx(2.0)  # reported, not failed
    off = rep.compare(old, {**old, "loss": 2.1, "meta": {"seeds": [0, 2]}}, entry)
    assert {p for p, _, _ in off["outside"]} == {"loss", "meta.seeds[1]"}
    gone = rep.compare(old, {"meta": old["meta"], "loss": 2.0}, entry)
    assert gone["missing"] == ["count"]


def test_reproduce_widens_the_tolerance_for_a_record_of_another_cpu():
    """A record written on another CPU model: the entry's other-CPU tolerance; an adaptive
    strategy's one-step state (a trajectory) reported there, compared on the same CPU."""
    rep = _reproduce_module()
    assert rep.classify("runs[0].grad_share_curve[3].text") == "trajectory"
    assert rep.classify("runs[1].final_weight.image") == "trajectory"
    assert rep.classify("runs[1].tokens_trained.audio") == "trajectory"
    assert rep.classify("meta.tokenizers.audio.fit_data.loss_end") == "figure"  # not a setting
    assert rep.classify("meta.tokenizers.audio.name") == "setting"
    assert rep.recorded_cpu({"meta": {"cpu": "AMD EPYC"}}) == "AMD EPYC"
    assert rep.recorded_cpu({"machine": {"cpu": "Intel"}}) == "Intel"
    assert rep.recorded_cpu({"runs": []}) is None
    entry = rep.Entry("x", "x.py", "x.json", quick=True, atol=0.05, other_cpu_atol=0.1)
    assert entry.tolerance(True) == (0.05, 0.0) and entry.tolerance(False) == (0.1, 0.0)
    old = {"loss": 2.0, "runs": [{"final_weight": {"text": 0.2}}]}
    new = {"loss": 2.08, "runs": [{"final_weight": {"text": 0.3}}]}
    here = rep.compare(old, new, entry, same_cpu=True)
    assert {p for p, _, _ in here["outside"]} == {"loss", "runs[0].final_weight.text"}
    there = rep.compare(old, new, entry, same_cpu=False)
    assert not there["outside"] and there["trajectory"]["worst"] == pytest.approx(0.1)
    assert rep.compare(old, {**new, "loss": 2.2}, entry, same_cpu=False)["outside"]


def test_reproduce_runs_an_entry_into_scratch_and_fails_on_a_difference(tmp_path, monkeypatch):
    rep = _reproduce_module()
    script = tmp_path / "writer.py"
    script.write_text(
        "import json, sys\n"
        "out = sys.argv[sys.argv.index('--out') + 1]\n"
        "json.dump({'tokens': int(sys.argv[-1]), 'wall_s': 0.5}, open(out, 'w'))\n"
    )
    results = tmp_path / "results"
    results.mkdir()
    (results / "w.json").write_text(json.dumps({"tokens": 10, "wall_s": 9.0}))
    monkeypatch.setattr(rep, "RESULTS", results)
    for value, status in ((10, 0), (11, 1)):
        entry = rep.Entry("w", f"{script} --out {{out}}/w.json {value}", "w.json", quick=True)
        monkeypatch.setattr(rep, "ENTRIES", (entry,))
        out = tmp_path / f"scratch{value}"
        assert rep.main(["--out-dir", str(out)]) == status
        report = json.loads((out / "reproduce.json").read_text())
        assert report["meta"]["usable_cores"] >= 1 and "torch_threads" in report["meta"]
        row = report["entries"][0]
        assert row["status"] == ("agrees" if status == 0 else "outside tolerance")
        assert "wall_s" in (out / "reproduce.md").read_text()
        seconds = row["seconds"]
        assert rep.main(["--out-dir", str(out), "--no-run"]) == status  # compared again, not rerun
        again = json.loads((out / "reproduce.json").read_text())
        assert again["entries"][0]["seconds"] == seconds
        assert again["meta"]["outputs_written"]["date"] == report["meta"]["date"]
    assert json.loads((results / "w.json").read_text())["tokens"] == 10  # the record untouched


def test_attention_paths_times_the_fast_path_against_the_dense_mask(tmp_path):
    """Each pair of paths runs the same rows to the same hidden states (the causal fast path and
    the dense mask; per-document attention and the dense mask on main-job rows); every variant
    is timed."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "attention_paths.py"), "--batch", "2",
           "--length", "64", "--rounds", "2", "--steps", "1", "--threads", "1", "--out-dir",
           str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "attention_paths.json").read_text())
    assert record["same_hidden_states"] is True and record["same_hidden_states_documents"] is True
    assert record["median_s"].keys() == {
        "fast path",
        "dense mask",
        "packed rows",
        "main-job rows, dense mask",
        "main-job rows, documents",
    }
    assert all(len(v) == 2 for v in record["per_round_median_s"].values())
    assert record["speedup_fast_over_dense"] > 0 and record["speedup_documents_over_dense"] > 0
    assert record["machine"]["threads"] == 1
    assert all(n >= 1 for n in record["main_job_documents_per_row"])
    assert "| main-job rows, documents |" in (tmp_path / "attention_paths.md").read_text()


def test_codec_small_paths_times_both_shortcuts_against_what_they_replaced(tmp_path):
    """audio_small's encoding with and without pairs of frames gives the same codes, its decoding
    over phases the transposed convolution's waveform; every variant is timed."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "codec_small_paths.py"), "--clips", "2",
           "--rounds", "2", "--out-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "codec_small_paths.json").read_text())
    assert record["codes_differing"] == 0 and record["codes_total"] > 0
    assert record["max_waveform_difference"] < 1e-4
    assert all(len(v) == 2 for v in record["times_s"].values()) and len(record["times_s"]) == 4
    assert record["encode_speedup_pairs"] > 0 and record["machine"]["threads"] == 1
    assert "| decode, phase convolutions |" in (tmp_path / "codec_small_paths.md").read_text()


def test_image_fit_speed_times_both_layouts_with_the_same_codes(tmp_path):
    """image_small's fit step and encoding, channels-last and NCHW: every variant timed, the
    codes of both layouts identical."""
    cmd = [sys.executable, str(ROOT / "benchmarks" / "image_fit_speed.py"), "--batch", "4",
           "--steps", "1", "--rounds", "2", "--out-dir", str(tmp_path)]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = json.loads((tmp_path / "image_fit_speed.json").read_text())
    assert record["codes_differing"] == 0 and record["codes_total"] == 4 * 256
    assert all(len(v) == 2 for v in record["times_s"].values()) and len(record["times_s"]) == 4
    assert record["fit_speedup_channels_last"] > 0 and record["encode_speedup_channels_last"] > 0
    assert "| fit step, NCHW |" in (tmp_path / "image_fit_speed.md").read_text()
