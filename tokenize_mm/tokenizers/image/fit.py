"""Training the VQ image autoencoder with Lightning (imported only by ``ImageTokenizer.fit``).

Loss: L1 + MSE reconstruction in [-1, 1] pixel space plus the quantizer's commitment loss (the
codebook itself follows the encoder by EMA, van den Oord et al. 2017; Razavi et al. 2019). AdamW
with linear warm-up and cosine decay (``core/schedules.py``). Lightning brings device placement, mixed precision and the
progress bar; this module stays importable only where Lightning is installed.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.tokenizers.fit_loop import FitRecord, run_fit
from tokenize_mm.tokenizers.image.model import VQImageModel
from tokenize_mm.tokenizers.quant.usage import UsageTracker


class VQImageFitModule(L.LightningModule):
    """Wraps a ``VQImageModel`` for training; records the loss of every step in ``history`` and
    counts the codes in ``usage`` (``fit_loop.CollapseGuard`` reads it)."""

    def __init__(
        self, model: VQImageModel, learning_rate: float, max_steps: int, warmup_steps: int = 0
    ):
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.max_steps, self.warmup_steps = max_steps, warmup_steps
        self.history: list[float] = []
        self.usage = UsageTracker(model.quantizer.codebook_size)
        self.usage_history: list[dict] = []

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (pixels_u8,) = batch  # (B, 3, S, S) uint8: kept compact in memory, converted per batch
        pixels = pixels_u8.float() / 255.0
        recon, codes, commit = self.model(pixels, quantize=len(self.history) >= self.warmup_steps)
        if codes is not None:
            self.usage.update(codes)
        target = pixels * 2.0 - 1.0
        rec = F.l1_loss(recon.float(), target) + F.mse_loss(recon.float(), target)
        loss = rec + commit
        self.history.append(float(loss.detach()))
        self.log_dict({"train/loss": loss, "train/rec": rec}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, betas=(0.9, 0.99))
        return warmup_cosine(opt, self.max_steps)


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
    warmup_steps: int = 0,
) -> FitRecord:
    """Train ``model`` in place on ``pixels_u8`` (N, 3, S, S) uint8; returns the per-step losses
    and the codebook usage per window. The first ``warmup_steps`` train the autoencoder without
    quantization; the quantizer then starts on warmed-up latents (VQ: its k-means
    initialisation runs on the first quantized batch)."""
    module = VQImageFitModule(model, learning_rate, max_steps, warmup_steps)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(
        TensorDataset(pixels_u8),
        batch_size=min(batch_size, len(pixels_u8)),
        shuffle=True,
        drop_last=len(pixels_u8) >= batch_size,
        generator=generator,
    )
    run_fit(
        module, loader, max_steps=max_steps, seed=seed, accelerator=accelerator,
        precision=precision, progress=progress,
    )  # fmt: skip
    return FitRecord(module.history, module.usage_history)
