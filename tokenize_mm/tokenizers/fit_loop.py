"""The Lightning loop shared by the trained tokenizers' ``fit`` (imported only by fit).

Both the image VQ and the audio codec train for a fixed number of steps with a linear warm-up
then cosine decay of the learning rate (to 10 % of its peak; ``core.schedules.warmup_cosine``, the
schedule training uses too), on one device, without loggers or checkpoints: a tokenizer fit is a
function call, and its artifact is written by ``save``.

``CollapseGuard`` watches the codes while the fit runs: every tenth of the steps it measures the
codebook usage of the window's training batches (the module's ``usage``, a
``quant.usage.UsageTracker``), logs ``train/perplexity``, keeps the series in the module's
``usage_history`` and, from the second half of the fit on, warns once with
``CodebookCollapseWarning`` if a codebook is below the collapse floors.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, NamedTuple

import lightning as L
import torch

from tokenize_mm.tokenizers.quant.usage import CodebookCollapseWarning, collapse_message


class FitRecord(NamedTuple):
    """What a fit leaves besides the weights: the loss of every step and the codebook usage of
    every window (``{"step", "codebook", "perplexity", "used_fraction"}``)."""

    history: list[float]
    usage: list[dict[str, Any]]

    def fit_data(self) -> dict[str, Any]:
        """The loss summary and the last window's usage (codebook 0), for ``fit_data``."""
        from tokenize_mm.tokenizers.module_artifact import loss_summary

        out: dict[str, Any] = dict(loss_summary(self.history))
        last = [u for u in self.usage if u["codebook"] == 0][-1:]
        if last:
            out["train_perplexity"] = last[0]["perplexity"]
            out["train_used_fraction"] = last[0]["used_fraction"]
        return out


class CollapseGuard(L.Callback):
    """Codebook usage per window of ``max_steps // 10`` steps; one warning if it collapses."""

    def __init__(self, max_steps: int):
        self.every = max(1, max_steps // 10)
        self.max_steps = max_steps
        self.warned = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = len(pl_module.history)  # codec/VQ updates so far (a GAN step counts once)
        if step == 0 or (step % self.every and step != self.max_steps):
            return
        tracker = pl_module.usage
        for k, usage in enumerate(tracker.usage()):
            pl_module.usage_history.append({"step": step, "codebook": k, **usage})
            if self.warned or 2 * step < self.max_steps:
                continue
            message = collapse_message(usage, tracker.codebook_size,
                                       f"at fit step {step} (codebook {k}, training batches)")  # fmt: skip
            if message:
                warnings.warn(message, CodebookCollapseWarning, stacklevel=2)
                self.warned = True
        tracker.reset()


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
    """Seed everything, then train ``module`` on ``loader`` for ``max_steps`` steps (with a
    ``CollapseGuard`` when the module tracks its codes' ``usage``)."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner on every fit
    L.seed_everything(seed, workers=True, verbose=False)
    trainer = L.Trainer(
        max_steps=max_steps, accelerator=accelerator, devices=1, precision=precision,
        logger=False, enable_checkpointing=False, enable_model_summary=False,
        enable_progress_bar=progress, num_sanity_val_steps=0,
        callbacks=[CollapseGuard(module.max_steps)] if hasattr(module, "usage") else [],
    )  # fmt: skip
    with warnings.catch_warnings():
        # Lightning 2.6 calls a deprecated torch pytree API; nothing for our users to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=Warning)
        trainer.fit(module, loader)
