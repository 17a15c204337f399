"""Host reads per training step: where ``BalancedLM`` and its weighting wait for the device.

Issue 16 asks for one host synchronisation per step. A value read from a tensor into Python
(``.tolist()``, ``.item()``, ``float(t)``, ``int(t)``, ``bool(t)``) makes the host wait for the
device on a GPU. This script trains a few steps of the main job's model (``experiment=balance_bench``,
as ``step_cost.py``) under each weighting and counts, per step:

- on a CPU: every such read, with the file and line that made it (a ``TorchFunctionMode`` sees
  them). On a CPU nothing waits, and the count includes reads of tensors that live on the host
  anyway (a weighting's ``torch.tensor(...)`` of floats): it is an upper bound of what a GPU would
  wait for, and the table says which line reads what;
- on a GPU (``--device cuda``): the same, those of them that read a tensor on the device (a
  weighting's state stays on the host: ``balance/weighting.py``), and the synchronisations CUDA
  itself reports
  (``torch.cuda.set_sync_debug_mode("warn")``), which also catch the implicit ones (boolean-mask
  indexing, ``nonzero``).

    .venv/bin/python benchmarks/host_syncs.py [--weightings grad_share,token_mean,...]
        [--steps 4] [--device cpu|cuda] [--override KEY=VALUE ...] [--out-dir DIR]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import shlex
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.overrides import TorchFunctionMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch import scratch
from step_cost import WEIGHTINGS, compose, draw_batches, train_steps
from vq_assign import cpu_name

READS = {"tolist", "item", "__float__", "__int__", "__bool__", "__index__"}
ROOT = str(Path(__file__).resolve().parents[1])


class ReadCounter(TorchFunctionMode):
    """Counts tensor-to-Python reads, keyed by the first project frame that made them, and apart
    those of a tensor that is not on the CPU (on a GPU, the reads that wait for it)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter[str] = collections.Counter()
        self.device_sites: collections.Counter[str] = collections.Counter()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in READS:
            site = _site(func.__name__)
            self.sites[site] += 1
            if args and isinstance(args[0], torch.Tensor) and args[0].device.type != "cpu":
                self.device_sites[site] += 1
        return func(*args, **(kwargs or {}))


def _site(name: str) -> str:
    """``path:line read`` of the innermost tokenize_mm frame on the stack, else of the innermost
    frame of the library that made the read (Lightning, torch.optim, ...)."""
    frames = traceback.extract_stack()[:-2]  # not _site, not __torch_function__
    for frame in reversed(frames):
        if frame.filename.startswith(ROOT + "/tokenize_mm/"):
            return f"{frame.filename[len(ROOT) + 1 :]}:{frame.lineno} {name}"
    inner = frames[-1]
    path = inner.filename.split("site-packages/")[-1]
    return f"{path}:{inner.lineno} {name}"


class StepReads(L.Callback):
    """Host reads (and, on a GPU, CUDA's reported synchronisations) of each training step."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.steps: list[dict[str, Any]] = []
        self._mode: ReadCounter | None = None
        self._warnings: Any = None
        self._caught: list[warnings.WarningMessage] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self._mode = ReadCounter()
        self._mode.__enter__()
        if self.cuda:
            self._warnings = warnings.catch_warnings(record=True)
            self._caught = self._warnings.__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        syncs = None
        if self.cuda:
            torch.cuda.set_sync_debug_mode("default")
            self._warnings.__exit__(None, None, None)
            syncs = sum("synchroniz" in str(w.message) for w in self._caught)
        self._mode.__exit__(None, None, None)
        self.steps.append({"reads": dict(self._mode.sites), "cuda_syncs": syncs,
                           "device_reads": dict(self._mode.device_sites) if self.cuda else None})  # fmt: skip


def count(cfg, prepared, batches: list[Any], device: str) -> list[dict[str, Any]]:
    """Each step's reads of ``BalancedLM`` under ``cfg``'s weighting, trained on ``batches``."""
    reads = StepReads(cuda=device == "cuda")
    train_steps(cfg, prepared, batches, int(cfg.seed), reads, accelerator=device)
    return reads.steps


def report(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# Host reads per training step", "", f"Command: `{meta['command']}`", "",
             f"{meta['device']}, torch {meta['torch']}, {meta['date']}; the last of "
             f"{meta['steps']} steps of `experiment={meta['experiment']}` (the first ones "
             "include first-use reads). A read: `.tolist()`, `.item()`, `float`, `int`, `bool` "
             "of a tensor, at the first line of tokenize_mm that made it. *Of a device tensor*: "
             "the reads of a tensor not on the CPU (a GPU run only; on a CPU every tensor is).",
             "", "| weighting | reads in the step | of a device tensor | CUDA syncs reported | "
             "where (count) |", "|---|---:|---:|---:|---|"]  # fmt: skip
    for name, steps in results.items():
        last = steps[-1]
        where = "; ".join(f"`{k}` ({v})" for k, v in sorted(last["reads"].items()))
        syncs = "—" if last["cuda_syncs"] is None else str(last["cuda_syncs"])
        on_device = last.get("device_reads")
        device = "—" if on_device is None else str(sum(on_device.values()))
        lines.append(f"| {name} | {sum(last['reads'].values())} | {device} | {syncs} | {where} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weightings", default="grad_share,token_mean,gradnorm_weights,uncertainty")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--experiment", default="balance_bench")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--cache-dir", default=".cache/tokenize_mm")
    p.add_argument("--out-dir", default=scratch("host_syncs"))
    args = p.parse_args(argv)
    names = [w for w in args.weightings.split(",") if w]
    unknown = sorted(set(names) - set(WEIGHTINGS))
    if unknown or args.steps < 2:
        p.error(f"--weightings from {WEIGHTINGS} (unknown: {unknown}); --steps at least 2")

    from hydra import initialize_config_dir

    from tokenize_mm.cli.common import config_dir
    from tokenize_mm.cli.train import prepare

    warnings.filterwarnings("ignore", message=".*dataloader_iter.*")
    warnings.filterwarnings("ignore", category=UserWarning, module="lightning")
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfgs = {w: compose(args, w) for w in names}
    base = cfgs[names[0]]
    prepared = prepare(base)
    batches = draw_batches(base, prepared, args.steps)
    results = {w: count(cfgs[w], prepared, batches, args.device) for w in names}
    meta = {
        "command": shlex.join(sys.orig_argv),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "steps": args.steps,
        "experiment": args.experiment,
    }
    markdown = report(results, meta)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "host_syncs.json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    (out / "host_syncs.md").write_text(markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
