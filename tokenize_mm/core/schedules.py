"""The learning-rate schedule shared by training and the tokenizer fits.

``warmup_cosine``: a linear warm-up over the first 5 % of the steps (at least one), then cosine
decay to 10 % of the peak, stepped every optimizer step. ``BalancedLM`` (``models/system.py``)
and the image and audio tokenizer fits (``tokenizers/image/fit.py``, ``audio/fit.py``) all use
it. Imports torch only (no Lightning: it returns the optimizer config Lightning's
``configure_optimizers`` expects, as a plain dict).
"""

from __future__ import annotations

import math

import torch


def warmup_cosine(optimizer: torch.optim.Optimizer, max_steps: int) -> dict:
    """Lightning's optimizer config: ``optimizer`` with warm-up over the first 5 % of
    ``max_steps`` (at least one step), then cosine decay to 10 % of the peak, stepped per step."""
    warmup = max(1, max_steps // 20)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
