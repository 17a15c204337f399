"""The Lightning loop shared by the trained tokenizers' ``fit`` (imported only by fit).

Both the image VQ and the audio codec train for a fixed number of steps with a linear warm-up
then cosine decay of the learning rate (to 10 % of its peak), on one device, without loggers or
checkpoints: a tokenizer fit is a function call, and its artifact is written by ``save``.
"""

from __future__ import annotations

import logging
import math
import warnings

import lightning as L
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


def run_fit(
    module: L.LightningModule,
    loader: torch.utils.data.DataLoader,
    *,
    max_steps: int,
    seed: int,
    accelerator: str,
    precision: str | None,
    progress: bool,
) -> None:
    """Seed everything, then train ``module`` on ``loader`` for ``max_steps`` steps."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner on every fit
    L.seed_everything(seed, workers=True, verbose=False)
    trainer = L.Trainer(
        max_steps=max_steps, accelerator=accelerator, devices=1, precision=precision,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, num_sanity_val_steps=0,
    )  # fmt: skip
    with warnings.catch_warnings():
        # Lightning 2.6 calls a deprecated torch pytree API; nothing for our users to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=Warning)
        trainer.fit(module, loader)
