"""Training the VQ image autoencoder with Lightning (imported only by ``ImageTokenizer.fit``).

Loss: L1 + MSE reconstruction in [-1, 1] pixel space plus the quantizer's commitment loss (the
codebook itself follows the encoder by EMA, van den Oord et al. 2017; Razavi et al. 2019). AdamW
with linear warm-up and cosine decay. Lightning brings device placement, mixed precision and the
progress bar; this module stays importable only where Lightning is installed.
"""

from __future__ import annotations

import logging
import math
import warnings

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tokenize_mm.tokenizers.image_model import VQImageModel


class VQImageFitModule(L.LightningModule):
    """Wraps a ``VQImageModel`` for training; records the loss of every step in ``history``."""

    def __init__(
        self, model: VQImageModel, learning_rate: float, max_steps: int, warmup_steps: int
    ):
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.max_steps = max_steps
        self.warmup_steps = warmup_steps
        self.history: list[float] = []

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (pixels_u8,) = batch  # (B, 3, S, S) uint8: kept compact in memory, converted per batch
        pixels = pixels_u8.float() / 255.0
        recon, _, commit = self.model(pixels)
        target = pixels * 2.0 - 1.0
        rec = F.l1_loss(recon.float(), target) + F.mse_loss(recon.float(), target)
        loss = rec + commit
        self.history.append(float(loss.detach()))
        self.log_dict({"train/loss": loss, "train/rec": rec}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, betas=(0.9, 0.99))

        def schedule(step: int) -> float:
            if step < self.warmup_steps:
                return (step + 1) / self.warmup_steps
            progress = (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps)
            return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def train_vq(
    model: VQImageModel,
    pixels_u8: torch.Tensor,
    *,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    accelerator: str,
    precision: str | None,
    progress: bool,
) -> list[float]:
    """Train ``model`` in place on ``pixels_u8`` (N, 3, S, S) uint8; returns the per-step losses."""
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no banner on every fit
    L.seed_everything(seed, workers=True, verbose=False)
    module = VQImageFitModule(model, learning_rate, max_steps, warmup_steps=max(1, max_steps // 20))
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(pixels_u8),
        batch_size=min(batch_size, len(pixels_u8)),
        shuffle=True,
        drop_last=len(pixels_u8) >= batch_size,
        generator=generator,
    )
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator=accelerator,
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=progress,
        num_sanity_val_steps=0,
        deterministic=False,
    )
    with warnings.catch_warnings():
        # Lightning 2.6 calls a deprecated torch pytree API; nothing for our users to act on.
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=Warning)
        trainer.fit(module, loader)
    return module.history
