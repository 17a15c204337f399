"""Throughput of a training run: positions per second, model TFLOP/s and MFU, while it trains.

``Throughput`` counts the positions of every step's batch (``BalancedLM.last_batch_shape``) and,
every ``every_n_steps`` steps, logs over that window:

- ``perf/positions_per_s``: packed positions trained per second (padding included: what the
  hardware processed), and ``perf/step_s``;
- ``perf/model_tflops``: model FLOPs per second by PaLM's count (``models/flops.py``: the LM pass,
  the contrastive pass and the momentum encoder's forward when they run);
- ``perf/window``: the window's number (a logger may repeat a window's values on later rows);
- ``perf/mfu``: that over the peak, ``perf/peak_tflops``, the device's measured square-matmul
  rate in the training dtype (``matmul_tflops``, at the start of training, with the trainer's
  threads) unless ``peak_tflops`` gives a vendor figure.

The window's time is wall time between step ends (data, optimizer and logging included), taken
after a device synchronisation only at the window's two ends, so the callback adds no host sync
to the other steps. The first window includes warm-up.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from tokenize_mm.models.flops import flops_per_position, matmul_tflops


class Throughput(L.Callback):
    """Log ``perf/*`` every ``every_n_steps`` training steps (see the module docstring).

    Args:
        every_n_steps: window length in steps.
        peak_tflops: the hardware's peak in the training dtype; ``None``: measured.
    """

    def __init__(self, every_n_steps: int = 10, peak_tflops: float | None = None) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be at least 1, got {every_n_steps}")
        if peak_tflops is not None and peak_tflops <= 0:
            raise ValueError(f"peak_tflops must be positive, got {peak_tflops}")
        self.every_n_steps, self.peak_tflops = every_n_steps, peak_tflops
        self._windows = 0  # windows logged so far (perf/window numbers them from 0)
        self._window: tuple[float, int, float, int] = (
            0.0,
            0,
            0.0,
            0,
        )  # start, steps, FLOPs, positions

    def on_train_start(self, trainer, pl_module) -> None:
        if self.peak_tflops is None:
            self.peak_tflops = matmul_tflops(pl_module.device.type, _dtype(trainer))
        self._window = (self._now(pl_module), 0, 0.0, 0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        start, steps, flops, positions = self._window
        shape = getattr(pl_module, "last_batch_shape", None)
        if shape is not None:
            rows, length = shape
            per = flops_per_position(
                pl_module.model.config, pl_module.model.vocab_size, length,
                contrastive=pl_module.contrastive is not None,
                momentum=getattr(pl_module, "key_encoder", None) is not None,
            )  # fmt: skip
            flops, positions = flops + per * rows * length, positions + rows * length
        steps += 1
        if steps < self.every_n_steps:
            self._window = (start, steps, flops, positions)
            return
        now = self._now(pl_module)
        elapsed = max(now - start, 1e-9)
        achieved = flops / elapsed / 1e12
        pl_module.log_dict(
            {
                "perf/positions_per_s": positions / elapsed,
                "perf/step_s": elapsed / steps,
                "perf/model_tflops": achieved,
                "perf/mfu": achieved / self.peak_tflops,
                "perf/peak_tflops": float(self.peak_tflops),
                "perf/window": float(self._windows),
            },
            on_step=True,
            batch_size=1,
        )
        self._window = (now, 0, 0.0, 0)
        self._windows += 1

    @staticmethod
    def _now(pl_module) -> float:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        return time.perf_counter()


def _dtype(trainer) -> torch.dtype:
    """The dtype the trainer's precision multiplies in."""
    precision = str(trainer.precision)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return torch.float32
