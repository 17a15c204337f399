"""Training the VQ image autoencoder with Lightning (imported only by ``ImageTokenizer.fit``).

Loss: L1 + MSE reconstruction in [-1, 1] pixel space plus the quantizer's commitment loss (the
codebook itself follows the encoder by EMA, van den Oord et al. 2017; Razavi et al. 2019), plus,
with ``chroma_weight > 0``, the same L1 + MSE on the two colour differences B − Y and R − Y
(Y the BT.601 luma, the Cb and Cr of JPEG before scaling) times ``chroma_weight``. An RGB loss
weighs an error by its energy, and most of an image's energy is luminance: at a few bits per
patch a short fit spends them on the background's brightness and texture before the hue of a
small shape. The chroma term buys the hue back (docs/results/concept_probe.md). AdamW
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


def l1_mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """L1 + MSE between two tensors of one shape."""
    return F.l1_loss(x, y) + F.mse_loss(x, y)


def chroma(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) RGB → (B, 2, S, S) colour differences B − Y and R − Y (BT.601 luma Y)."""
    luma = 0.299 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    return torch.stack([rgb[:, 2] - luma, rgb[:, 0] - luma], dim=1)


class VQImageFitModule(L.LightningModule):
    """Wraps a ``VQImageModel`` for training; records the loss of every step in ``history`` and
    counts the codes in ``usage`` (``fit_loop.CollapseGuard`` reads it)."""

    def __init__(
        self,
        model: VQImageModel,
        learning_rate: float,
        max_steps: int,
        warmup_steps: int = 0,
        chroma_weight: float = 0.0,
    ):
        super().__init__()
        self.model = model
        self.learning_rate = learning_rate
        self.chroma_weight = chroma_weight
        self.max_steps, self.warmup_steps = max_steps, warmup_steps
        self.history: list[float] = []
        self.usage = UsageTracker(model.quantizer.codebook_size)
        self.usage_history: list[dict] = []

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        (pixels_u8,) = batch  # (B, 3, S, S) uint8: kept compact in memory, converted per batch
        # channels-last, as the model computes (VQImageModel._latents): the loss's target too
        pixels = (pixels_u8.float() / 255.0).contiguous(memory_format=torch.channels_last)
        recon, codes, commit = self.model(pixels, quantize=len(self.history) >= self.warmup_steps)
        if codes is not None:
            self.usage.update(codes)
        target = pixels * 2.0 - 1.0
        rec = l1_mse(recon.float(), target)
        if self.chroma_weight > 0:
            rec = rec + self.chroma_weight * l1_mse(chroma(recon.float()), chroma(target))
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
    chroma_weight: float = 0.0,
) -> FitRecord:
    """Train ``model`` in place on ``pixels_u8`` (N, 3, S, S) uint8; returns the per-step losses
    and the codebook usage per window. The first ``warmup_steps`` train the autoencoder without
    quantization; the quantizer then starts on warmed-up latents (VQ: its k-means
    initialisation runs on the first quantized batch). ``chroma_weight`` weighs the loss on the
    colour differences (module docstring)."""
    module = VQImageFitModule(model, learning_rate, max_steps, warmup_steps, chroma_weight)
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
