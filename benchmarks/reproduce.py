"""Reproduce the recorded results: rerun their commands into a scratch folder and compare.

``make results`` (this script) reruns the commands that wrote the JSON records in docs/results,
each into a scratch folder (``$TMPDIR/tokenize_mm/reproduce`` unless ``--out-dir``; ``--update``
writes over the record instead), then compares every number of each new JSON with the recorded
one and writes ``reproduce.md`` and ``reproduce.json`` beside them, with the machine (CPU, cores,
torch threads, versions) and the seeds each command uses.

Every number falls in one of four classes, by its key (``classify``):

- **machine**: timings, rates and what depends on the load or the core count (``*_s``, seconds,
  per second, GFLOP/s, MFU, speed ratios and the goal tables over them, load average, repeats,
  ...). Reported (the largest
  relative difference) and never failed: a 2-core shared machine moves them by about 10 % from
  one run to the next, and another CPU by more.
- **setting**: the command's own settings and the machine description (``meta``, ``settings``,
  ``config``): compared exactly, as a check that the same command ran.
- **figure**: everything else (token counts, padding, bits per token, codebook usage, PSNR, losses,
  retrieval, zero-shot, ...): compared within the entry's tolerance, ``|new - old| <= atol +
  rtol * |old|``. Counts and pure-Python figures are exact on every machine (tolerance 0). What
  runs through float matmuls (tokenizer fits, training) is exact on the machine that wrote it and
  drifts on another CPU: a different vector width (AVX2 against AVX-512) or BLAS kernel sums in
  another order, and training amplifies last-bit differences. Those entries state their
  tolerance and say so, and a second, wider one for a record written on another CPU (the
  record's ``cpu``, against this machine's), measured between two CPUs (docs/results/
  reproduce_other_cpu.md).
- **trajectory**: where an adaptive strategy's path went (the last step's weights and sampling
  probabilities, the per-step gradient-share samples, the tokens each source got): a figure on
  the CPU that wrote the record; on another CPU the drift steers the adaptive strategy along
  another path of the same distribution, so these are reported, not failed (the figures over
  the whole training and the final losses are compared). The worst difference reported is
  absolute, so token counts dominate it.

The exit status is 1 if a figure or setting is outside its tolerance (the report names each), 0
otherwise. ``--list`` prints the entries and their commands; ``--only`` picks some; the default
set is the quick one (about 12 minutes on 2 cores); ``--all`` adds the long ones (hours).

    .venv/bin/python benchmarks/reproduce.py                  # the quick set, into scratch
    .venv/bin/python benchmarks/reproduce.py --only packing   # one entry
    .venv/bin/python benchmarks/reproduce.py --all --out-dir /tmp/repro
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scratch import scratch

from tokenize_mm.core.atomic import write_text_atomic

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
# The commands run from the repository root, so paths inside it are written relative to it (the
# records' "Command:" lines then read as the README's do).
PY = (
    os.path.relpath(sys.executable, ROOT)
    if Path(sys.executable).is_relative_to(ROOT)
    else sys.executable
)


@dataclass(frozen=True)
class Entry:
    """One recorded result: the command that writes it and how closely a rerun must agree.

    ``argv`` (a command line after ``python``) holds ``{out}`` where the output folder goes (and
    ``{devset}`` the dev set's manifest); ``json`` is the file (relative to that
    folder, and to docs/results for the record) compared; ``rtol`` / ``atol`` the tolerance of its
    figures; ``why`` says why a tolerance is above 0; ``quick`` puts it in the default set.
    """

    name: str
    argv: str
    json: str
    quick: bool
    rtol: float = 0.0
    atol: float = 0.0
    why: str = "counts and pure-Python figures: exact on every machine"
    needs_devset: bool = False  # reads the dev set's manifest ({devset})
    # the tolerance when the record was written on another CPU (None: the same as on its own)
    other_cpu_rtol: float | None = None
    other_cpu_atol: float | None = None
    other_cpu_why: str = ""

    def tolerance(self, same_cpu: bool) -> tuple[float, float]:
        """(atol, rtol) for a record written on this CPU model or on another one."""
        if same_cpu:
            return self.atol, self.rtol
        return (self.atol if self.other_cpu_atol is None else self.other_cpu_atol,
                self.rtol if self.other_cpu_rtol is None else self.other_cpu_rtol)  # fmt: skip

    def command(self, out: Path, devset: str | None = None) -> list[str]:
        line = self.argv.replace("{devset}", shlex.quote(devset or "<--devset>"))
        return [PY, *shlex.split(line.replace("{out}", shlex.quote(str(out))))]


FIT_DRIFT = ("tokenizer fits and encodes run float convolutions and matmuls: exact on the machine "
             "that wrote the record; another CPU sums in another order")  # fmt: skip
TRAIN_DRIFT = ("training amplifies last-bit differences of the float kernels: exact on the machine "
               "that wrote the record (docs/results/balance_rerun); on another CPU the tokenizers "
               "are fitted anew, and the main job's audio codec lands elsewhere: 600-step audio "
               "losses moved 0.24 to 0.29 nats, text up to 0.06 and image up to 0.03 "
               "(docs/results/balance_grounding/summary.md)")  # fmt: skip
# measured between an AMD EPYC (the records) and an Intel Xeon with AVX-512, 2026-12-02
# (docs/results/reproduce_other_cpu.md); each tolerance about twice the largest difference seen
FIT_OTHER_CPU = ("on another CPU the 120-step audio codec fit lands elsewhere: its training "
                 "perplexity moved 11 %, SI-SNR (about -50 dB) 9 %, used codes 1 of 256; the "
                 "image fit 0.1 %")  # fmt: skip
LONG_OTHER_CPU = ("the AMD EPYC records of balance_shape and contrastive_shape rerun on an Intel "
                  "Xeon (docs/results/reproduce_long_other_cpu.md): losses within 0.14 nats, G "
                  "within 0.02, zero-shot accuracies within 0.22; the grounding size's losses "
                  "0.24 to 0.29 nats apart on the two CPUs (audio, the codec fitted on each)")  # fmt: skip
TRAIN_OTHER_CPU = ("on another CPU the tokenizers are fitted there too and training drifts from "
                   "its first step (step-0 loss 1.5e-4 relative): quick-size losses moved up to "
                   "0.055, zero-shot one item of 24")  # fmt: skip

ENTRIES: tuple[Entry, ...] = (
    Entry("packing", "benchmarks/packing.py --out {out}/packing.json --md {out}/packing.md",
          "packing.json", quick=True),
    Entry("tokenizer_benchmark", "benchmarks/tokenizers.py --out {out}/tokenizer_benchmark.json "
          "--md {out}/tokenizer_benchmark.md", "tokenizer_benchmark.json", quick=True),
    Entry("tokenizer_efficiency_builtin", "benchmarks/tokenizer_efficiency.py --data builtin "
          "--threads 1 --out {out}/tokenizer_efficiency_builtin.json --md "
          "{out}/tokenizer_efficiency_builtin.md", "tokenizer_efficiency_builtin.json",
          quick=True, rtol=1e-3, atol=1e-3, why=FIT_DRIFT, other_cpu_rtol=0.2,
          other_cpu_why=FIT_OTHER_CPU),
    Entry("step_cost", "benchmarks/step_cost.py --out-dir {out}/step_cost",
          "step_cost/step_cost.json", quick=True, rtol=1e-3, atol=1e-4, why=TRAIN_DRIFT,
          other_cpu_atol=0.01, other_cpu_why=TRAIN_OTHER_CPU),
    Entry("balance_quick", "benchmarks/balance.py --size quick --seeds 0,1,2 --strategies "
          "grad_share_odm,modality_mean,token_mean --out-dir {out}/balance_quick",
          "balance_quick/balance.json", quick=True, atol=0.05, why=TRAIN_DRIFT,
          other_cpu_atol=0.1, other_cpu_why=TRAIN_OTHER_CPU),
    Entry("balance_shape", "benchmarks/balance.py --size default --seeds 0,1,2 --strategies "
          "grad_share_odm,modality_mean,token_mean,modality_mean_odm,ogm_odm --out-dir "
          "{out}/balance_shape",
          "balance_shape/balance.json", quick=False, atol=0.05, why=TRAIN_DRIFT,
          other_cpu_atol=0.3, other_cpu_why=LONG_OTHER_CPU),
    Entry("contrastive_shape", "benchmarks/balance.py --size default --seeds 0,1,2 --strategies "
          "clip_early --override trainer.max_steps=600 --eval-examples 64 --out-dir "
          "{out}/contrastive_shape",
          "contrastive_shape/balance.json", quick=False, atol=0.1, why=TRAIN_DRIFT,
          other_cpu_atol=0.3, other_cpu_why=LONG_OTHER_CPU),
    Entry("balance_grounding", "benchmarks/balance.py --size grounding --seeds 0,1,2 "
          "--out-dir {out}/balance_grounding",
          "balance_grounding/balance.json", quick=False, atol=0.05, why=TRAIN_DRIFT,
          other_cpu_atol=0.3, other_cpu_why=LONG_OTHER_CPU),
    Entry("tokenizer_efficiency_dev", "benchmarks/tokenizer_efficiency.py --manifest {devset} "
          "--threads 1 --out {out}/tokenizer_efficiency_dev.json --md "
          "{out}/tokenizer_efficiency_dev.md", "tokenizer_efficiency_dev.json", quick=False,
          rtol=1e-3, atol=1e-3, why=FIT_DRIFT, needs_devset=True, other_cpu_rtol=0.2,
          other_cpu_why=FIT_OTHER_CPU + " (on the built-in data; the dev-set record, written "
          "on an Intel Xeon, not rerun on another CPU)"),
)  # fmt: skip

# -- classes of numbers ---------------------------------------------------------------------------
_MACHINE = re.compile(
    r"(_s$|_s\b|seconds|per_s\b|/s\b|gflop|tflop|mfu|ratio|speedup|rtf|real_time|load_|^machine\.|"
    r"^goals\b|"
    r"usable_cores|threads|repeats|rounds|steps_measured|throughput|timings|wall|elapsed|"
    r"duration|rss|memory|peak|date|time|goal_met|met$)",
    re.IGNORECASE,
)
_SETTING = re.compile(r"^(meta|settings|config)\b|\.config\.|\.overrides|\.command", re.IGNORECASE)
# a fitted tokenizer's own figures, which records copy into their settings (meta.tokenizers)
_FIT_FIGURE = re.compile(r"\.(info\.metrics|fit_data)\.")
_TRAJECTORY = re.compile(r"_curve\b|\.tokens_trained\b|\.final_weight\b|\.final_sampling\b")


def classify(path: str) -> str:
    """``"machine"``, ``"setting"``, ``"trajectory"`` or ``"figure"`` for a number at ``path``
    (module docstring)."""
    if _MACHINE.search(path):
        return "machine"
    if _SETTING.search(path) and not _FIT_FIGURE.search(path):
        return "setting"
    if _TRAJECTORY.search(path):
        return "trajectory"
    return "figure"


def recorded_cpu(record: Any) -> str | None:
    """The CPU a record was written on (its ``meta.cpu`` or ``machine.cpu``), if it says."""
    for section in ("meta", "machine"):
        cpu = record.get(section, {}).get("cpu") if isinstance(record, dict) else None
        if isinstance(cpu, str):
            return cpu
    return None


def leaves(obj: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every number, string and bool of a JSON document."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from leaves(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield from leaves(value, f"{path}[{i}]")
    else:
        yield path, obj


def compare(old: Any, new: Any, entry: Entry, same_cpu: bool = True) -> dict[str, Any]:
    """Every number of ``old`` against ``new``: per class the count, the worst difference, and
    the figures and settings outside the tolerance (paths, old, new). ``same_cpu``: the record
    was written on this CPU model (the entry's own tolerance, trajectories compared as figures),
    else on another (its other-CPU tolerance, trajectories reported)."""
    fresh = dict(leaves(new))
    out: dict[str, Any] = {c: {"compared": 0, "worst": 0.0, "worst_path": None}
                           for c in ("figure", "setting", "machine", "trajectory")}  # fmt: skip
    atol, rtol = entry.tolerance(same_cpu)
    failures, missing = [], []
    for path, value in leaves(old):
        kind = classify(path)
        checked = kind == "figure" or (kind == "trajectory" and same_cpu)
        if not checked:  # a timing, a setting, or a trajectory on another CPU
            if path not in fresh:
                continue  # a timing or setting the new version no longer writes
        elif path not in fresh:
            missing.append(path)
            continue
        got = fresh[path]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (value, got))
        stats = out[kind]
        stats["compared"] += 1
        if not numeric:
            if (checked or kind == "setting") and value != got and not isinstance(value, str):
                failures.append((path, value, got))
            continue
        if math.isnan(value) and math.isnan(got):
            continue
        diff = abs(got - value)
        scale = diff / abs(value) if kind == "machine" and value else diff
        if scale > stats["worst"]:
            stats["worst"], stats["worst_path"] = scale, path
        if checked and not diff <= atol + rtol * abs(value):
            failures.append((path, value, got))
        if kind == "setting" and diff:
            failures.append((path, value, got))
    out["outside"] = failures
    out["missing"] = missing
    return out


def machine() -> dict[str, Any]:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor())  # fmt: skip
    return {
        "cpu": cpu, "usable_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_start": os.getloadavg()[0],
    }  # fmt: skip


def where(stats: dict) -> str:
    return f" (`{stats['worst_path']}`)" if stats["worst_path"] else ""


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Reproduction of the recorded results", "",
        f"Command: `{meta['command']}`", "",
        f"Machine: {meta['cpu']}, {meta['usable_cores']} cores, torch {meta['torch']} "
        f"({meta['torch_threads']} threads), python {meta['python']}; load average "
        f"{meta['load_average_start']:.2f} at the start; {meta['date']}."
        + (f" The outputs compared were written by `{meta['outputs_written']['command']}` on "
           f"{meta['outputs_written']['date']}." if "outputs_written" in meta else ""), "",
        "Each entry's command ran into this folder; every number of its JSON is compared with the "
        "record in docs/results (`benchmarks/reproduce.py` says how numbers are classed). "
        "Figures must agree within the tolerance; settings exactly; machine-dependent numbers "
        "(timings, rates) are reported, never failed. A record written on another CPU model is "
        "compared within the entry's other-CPU tolerance, and its trajectories (where an "
        "adaptive strategy's path went: last weights and sampling, per-step gradient shares, "
        "tokens per source) are reported, not failed.", "",
        "| entry | status | s | figures (tolerance) | worst figure diff | trajectories: worst diff | settings | machine numbers: worst relative diff | why the tolerance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        if r["status"] in ("skipped", "failed to run"):
            lines.append(f"| {r['name']} | {r['status']}: {r['reason']} | | | | | | | |")
            continue
        c = r["comparison"]
        fig, mach, sett, traj = c["figure"], c["machine"], c["setting"], c["trajectory"]
        tol = f"atol {r['atol']:g}, rtol {r['rtol']:g}"
        lines.append(
            f"| {r['name']} | {r['status']} | {r['seconds']:.0f} | {fig['compared']} ({tol}) | "
            f"{fig['worst']:.3g}{where(fig)} | {traj['worst']:.3g} of {traj['compared']}"
            f"{where(traj)} | {sett['compared']} | "
            f"{mach['worst']:.2f} of {mach['compared']}{where(mach)} | {r['why']} |"
        )
    for r in rows:
        c = r.get("comparison")
        if c and (c["outside"] or c["missing"]):
            lines += ["", f"## {r['name']}: outside the tolerance", ""]
            lines += [f"- `{p}`: recorded {o!r}, now {n!r}" for p, o, n in c["outside"][:50]]
            lines += [f"- `{p}`: recorded, not written now" for p in c["missing"][:50]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out-dir", default=scratch("reproduce"), help="default: %(default)s")
    p.add_argument("--all", action="store_true", help="the long entries too (hours)")
    p.add_argument("--only", help="comma-separated entry names (see --list)")
    p.add_argument("--list", action="store_true", help="print the entries and their commands")
    p.add_argument("--devset", help="the dev set's manifest.jsonl (entries that read it)")
    p.add_argument("--no-run", action="store_true",
                   help="compare the outputs already in --out-dir (a finished run) again")  # fmt: skip
    p.add_argument("--update", action="store_true",
                   help="write into docs/results (the record) instead of comparing")  # fmt: skip
    args = p.parse_args(argv)
    names = [e.name for e in ENTRIES]
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(names))
        if unknown:
            p.error(f"--only {unknown}: not an entry; the entries are {names}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    chosen = [e for e in ENTRIES
              if (e.name in args.only.split(",") if args.only else e.quick or args.all)]  # fmt: skip
    out = RESULTS.relative_to(ROOT) if args.update else Path(args.out_dir).resolve()
    if args.list:
        for e in chosen:
            print(f"{e.name} ({'quick' if e.quick else 'long'}): "
                  f"{shlex.join(e.command(out, args.devset))}")  # fmt: skip
        return 0
    (ROOT / out).mkdir(parents=True, exist_ok=True)
    meta = {"command": shlex.join(sys.orig_argv), **machine()}
    earlier: dict[str, dict] = {}
    if args.no_run and (out / "reproduce.json").is_file():
        before = json.loads((out / "reproduce.json").read_text())
        earlier = {r["name"]: r for r in before["entries"]}
        # the machine and date of the run that wrote the outputs
        meta["outputs_written"] = before["meta"].get("outputs_written", before["meta"])
    rows: list[dict[str, Any]] = []
    for entry in chosen:
        command = entry.command(out, args.devset)
        row: dict[str, Any] = {"name": entry.name, "command": shlex.join(command),
                               "rtol": entry.rtol, "atol": entry.atol, "why": entry.why}  # fmt: skip
        rows.append(row)
        if entry.needs_devset and not (args.devset and Path(args.devset).is_file()):
            row.update(status="skipped", reason="needs the dev set's manifest: --devset PATH")
            continue
        if args.no_run:  # the seconds of the run that wrote the outputs, if it said
            done = subprocess.CompletedProcess(command, 0 if (out / entry.json).is_file() else 1)
            row["seconds"] = earlier.get(entry.name, {}).get("seconds", float("nan"))
        else:
            print(f"== {entry.name}: {row['command']}", flush=True)
            start = time.perf_counter()
            done = subprocess.run(command, cwd=ROOT, check=False)
            row["seconds"] = time.perf_counter() - start
        if done.returncode:
            row.update(status="failed to run", reason=f"exit status {done.returncode}")
            continue
        if args.update:
            row.update(status="recorded", comparison=None)
            continue
        old = json.loads((RESULTS / entry.json).read_text())
        new = json.loads((out / entry.json).read_text())
        row["record_cpu"] = recorded_cpu(old)
        # the CPU that wrote the outputs: this one, or with --no-run the earlier run's
        same_cpu = row["record_cpu"] == meta.get("outputs_written", meta)["cpu"]
        row["atol"], row["rtol"] = entry.tolerance(same_cpu)
        if not same_cpu:
            written = row["record_cpu"] or "an unstated CPU"
            row["why"] += f"; written on {written}: {entry.other_cpu_why or 'the same tolerance'}"
        row["comparison"] = compare(old, new, entry, same_cpu)
        bad = row["comparison"]["outside"] or row["comparison"]["missing"]
        row["status"] = "outside tolerance" if bad else "agrees"
    if args.update:
        return 0 if all(r["status"] == "recorded" for r in rows) else 1
    write_text_atomic(out / "reproduce.json", json.dumps({"meta": meta, "entries": rows}, indent=1))
    write_text_atomic(out / "reproduce.md", markdown(meta, rows))
    print((out / "reproduce.md").read_text())
    return 0 if all(r["status"] in ("agrees", "skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
