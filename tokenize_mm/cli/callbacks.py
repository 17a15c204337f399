"""Lightning callbacks of ``tmm-train``: a one-line progress log, and a checkpoint on interruption.

- ``LogProgress`` logs one line every ``every_n_steps`` steps (and at the first and the last)
  through ``logging``, so the progress reaches Hydra's job log (``train.log``). It stays silent
  while Lightning's progress bar is shown: ``tmm-train`` turns the bar off when stdout is not a
  terminal (a bar written to a file is kilobytes of carriage returns per line).
- ``InterruptCheckpoint`` saves ``<dirpath>/<filename>.ckpt`` when training stops on an exception
  (Ctrl-C, SIGTERM) and removes it when a run ends normally. It does what Lightning's
  ``OnExceptionCheckpoint`` does, except that it is not one: Lightning turns ``fit(ckpt_path=None)``
  into ``ckpt_path="last"`` whenever an ``OnExceptionCheckpoint`` is among the callbacks, which
  resumes silently from whatever checkpoint the folder holds and warns on every fresh run
  (".fit(ckpt_path=None) was called without a model..."). With this one, ``ckpt_path=None``
  starts afresh and resuming is always asked for (``ckpt_path=.../interrupted.ckpt``).
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

log = logging.getLogger(__name__)


class LogProgress(L.Callback):
    """Log ``step n/N, loss, steps/s, time left`` every ``every_n_steps`` training steps."""

    def __init__(self, every_n_steps: int = 50) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        self.every_n_steps = every_n_steps
        self._start: tuple[float, int] = (0.0, 0)

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero:
            return
        step, last = trainer.global_step, trainer.max_steps
        t0, step0 = self._start
        if step % self.every_n_steps and step != last and step != step0 + 1:
            return
        elapsed = time.perf_counter() - t0
        rate = (step - step0) / elapsed if elapsed > 0 else float("nan")
        loss = trainer.callback_metrics.get("train/loss")
        parts = [f"step {step}/{last}" if last and last > 0 else f"step {step}"]
        if loss is not None:
            parts.append(f"loss {float(loss):.4f}")
        parts.append(f"{rate:.2f} steps/s")
        if last and last > 0 and rate > 0:
            parts.append(f"{(last - step) / rate:.0f} s left")
        log.info(", ".join(parts))


class InterruptCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` when training stops on an exception (see the module's
    docstring for why this is not Lightning's ``OnExceptionCheckpoint``)."""

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike, filename: str = "interrupted") -> None:
        super().__init__()
        if not filename:
            raise ValueError("The filename cannot be empty")
        self.dirpath, self.filename = str(dirpath), filename

    @property
    def ckpt_path(self) -> str:
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer, *_: Any, **__: Any) -> None:
        trainer.save_checkpoint(self.ckpt_path)
        log.warning("training stopped at step %d: saved %s", trainer.global_step, self.ckpt_path)

    def teardown(self, trainer, *_: Any, **__: Any) -> None:
        # a run that ends normally leaves no stale interrupted checkpoint behind
        trainer.strategy.remove_checkpoint(self.ckpt_path)
