"""Training the 50 Hz codec with Lightning (imported only by ``AudioTokenizer.fit``).

Losses (EnCodec, Défossez et al. 2022, without the adversarial terms): L1 on the waveform, L1 on
log-mel spectrograms at several resolutions (torchaudio), and the residual quantizer's commitment
loss. Training reads random fixed-length segments of the clips. AdamW with linear warm-up and
cosine decay (``fit_loop.py``), as for the image tokenizer.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
import torchaudio

from tokenize_mm.tokenizers.audio_model import CodecModel
from tokenize_mm.tokenizers.fit_loop import run_fit, warmup_cosine


class MultiScaleMelLoss(torch.nn.Module):
    """Mean L1 distance of log-mel spectrograms at FFT sizes ``n_ffts`` (hop = n_fft / 4)."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)):
        super().__init__()
        self.mels = torch.nn.ModuleList(
            torchaudio.transforms.MelSpectrogram(
                sample_rate=sample_rate, n_fft=n, hop_length=n // 4, n_mels=min(64, n // 8)
            )
            for n in n_ffts
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, C, S) → scalar."""
        total = x.new_zeros(())
        for mel in self.mels:
            total = total + F.l1_loss(torch.log(mel(x) + 1e-5), torch.log(mel(y) + 1e-5))
        return total / len(self.mels)


class CodecFitModule(L.LightningModule):
    def __init__(self, model: CodecModel, learning_rate: float, max_steps: int, mel_weight: float):
        super().__init__()
        self.model, self.learning_rate, self.max_steps = model, learning_rate, max_steps
        self.mel_loss = MultiScaleMelLoss(model.sample_rate)
        self.mel_weight = mel_weight
        self.history: list[float] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        wav = batch  # (B, C, segment)
        recon, _, commit = self.model(wav)
        recon = recon[..., : wav.shape[-1]].float()
        time_l1 = F.l1_loss(recon, wav)
        mel = self.mel_loss(recon, wav)
        loss = time_l1 + self.mel_weight * mel + commit
        self.history.append(float(loss.detach()))
        self.log_dict({"train/loss": loss, "train/mel": mel}, prog_bar=True, on_step=True)
        return loss

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, betas=(0.5, 0.9))
        return warmup_cosine(opt, self.max_steps)


class SegmentDataset(torch.utils.data.IterableDataset):
    """Endless random ``segment``-sample crops of clips (C, S_i); short clips are zero-padded."""

    def __init__(self, clips: list[torch.Tensor], segment: int, seed: int):
        self.clips, self.segment, self.seed = clips, segment, seed

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            clip = self.clips[int(torch.randint(len(self.clips), (1,), generator=g))]
            excess = clip.shape[-1] - self.segment
            if excess > 0:
                start = int(torch.randint(excess + 1, (1,), generator=g))
                yield clip[:, start : start + self.segment]
            else:
                yield F.pad(clip, (0, -excess))


def train_codec(
    model: CodecModel,
    clips: list[torch.Tensor],
    *,
    segment: int,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    mel_weight: float,
    seed: int,
    accelerator: str,
    precision: str | None,
    progress: bool,
) -> list[float]:
    """Train ``model`` in place on random segments of ``clips``; returns the per-step losses."""
    module = CodecFitModule(model, learning_rate, max_steps, mel_weight)
    loader = torch.utils.data.DataLoader(
        SegmentDataset(clips, segment, seed), batch_size=batch_size
    )
    run_fit(
        module, loader, max_steps=max_steps, seed=seed, accelerator=accelerator,
        precision=precision, progress=progress,
    )  # fmt: skip
    return module.history
