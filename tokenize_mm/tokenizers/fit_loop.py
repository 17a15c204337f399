"""The Lightning loop shared by the trained tokenizers' ``fit`` (imported only by fit).

Both the image VQ and the audio codec train for a fixed number of steps with a linear warm-up
then cosine decay of the learning rate (to 10 % of its peak; ``core.schedules.warmup_cosine``, the
schedule training uses too), on one device, without loggers or checkpoints: a tokenizer fit is a
function call, and its artifact is written by ``save``.
"""

from __future__ import annotations

import logging
import warnings

import lightning as L
import torch


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
