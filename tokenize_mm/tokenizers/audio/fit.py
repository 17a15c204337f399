"""Training the 50 Hz codec with Lightning (imported only by ``AudioTokenizer.fit``).

Losses (EnCodec: Défossez et al. 2022, "High Fidelity Neural Audio Compression"): L1 on the
waveform, L1 on log-mel spectrograms at several resolutions (``spectrum.MelPower``), and the
residual quantizer's commitment loss. Training reads random fixed-length segments of the clips.
AdamW with linear warm-up and cosine decay (``core/schedules.py``), as for the image tokenizer.

The adversarial terms of EnCodec (section 3.4) are optional (``adversarial_weight > 0``; off by
default): a multi-scale STFT discriminator (``encodec.msstftd.MultiScaleSTFTDiscriminator``, K
scales) is trained with the hinge loss, and the codec gets the hinge generator loss
``mean_k relu(1 − D_k(x̂))`` plus the relative feature-matching loss
``mean_{k,l} ‖D_k^l(x) − D_k^l(x̂)‖₁ / mean(|D_k^l(x)|)``, weighted 3 and 3 in the paper. The
discriminator and the codec alternate updates on each batch (manual optimization, two AdamW
optimizers). The discriminator lives on the training module only: the codec's ``state_dict``, and so
the saved artifact, is the same with or without it.
"""

from __future__ import annotations

import warnings

import lightning as L
import torch
import torch.nn.functional as F
from encodec.msstftd import MultiScaleSTFTDiscriminator

from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.tokenizers.audio.model import CodecModel
from tokenize_mm.tokenizers.audio.spectrum import MelPower
from tokenize_mm.tokenizers.fit_loop import FitRecord, run_fit
from tokenize_mm.tokenizers.quant.usage import UsageTracker

DISC_MAX_N_FFT = 2048  # the largest STFT of MultiScaleSTFTDiscriminator's default scales


class MultiScaleMelLoss(torch.nn.Module):
    """Mean L1 distance of log-mel spectrograms at FFT sizes ``n_ffts`` (hop = n_fft / 4):
    torchaudio's ``MelSpectrogram`` computed by ``spectrum.MelPower``, whose backward through
    the FFT is a half-length inverse real FFT (``benchmarks/codec_fit_speed.py``)."""

    def __init__(self, sample_rate: int, n_ffts: tuple[int, ...] = (256, 512, 1024, 2048)):
        super().__init__()
        self.mels = torch.nn.ModuleList(
            MelPower(sample_rate, n_fft=n, hop_length=n // 4, n_mels=min(64, n // 8))
            for n in n_ffts
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y (B, C, S) → scalar, computed in float32 (mel powers overflow float16)."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._forward(x.float(), y.float())

    def _forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(())
        for mel in self.mels:
            total = total + F.l1_loss(torch.log(mel(x) + 1e-5), torch.log(mel(y) + 1e-5))
        return total / len(self.mels)


def disc_hinge_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """Discriminator hinge loss, mean over the K scales of
    ``mean(relu(1 − D_k(x))) + mean(relu(1 + D_k(x̂)))``; logits (B, 1, frames_k, freq_k)."""
    terms = [F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake, strict=True)]
    return torch.stack(terms).mean()


def gen_hinge_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """Generator hinge loss, mean over the K scales of ``mean(relu(1 − D_k(x̂)))``."""
    return torch.stack([F.relu(1 - f).mean() for f in fake]).mean()


def feature_matching_loss(
    real: list[list[torch.Tensor]], fake: list[list[torch.Tensor]]
) -> torch.Tensor:
    """Relative feature matching (EnCodec eq. 2): mean over scales k and layers l of
    ``mean|D_k^l(x) − D_k^l(x̂)| / mean|D_k^l(x)|``; feature maps (B, filters, frames, freq)."""
    terms = [
        F.l1_loss(f, r) / (r.abs().mean() + 1e-8)
        for real_k, fake_k in zip(real, fake, strict=True)
        for r, f in zip(real_k, fake_k, strict=True)
    ]
    return torch.stack(terms).mean()


class CodecFitModule(L.LightningModule):
    """The codec's training step. With ``adversarial_weight > 0`` it also holds the discriminator
    and optimizes manually: per batch one discriminator step (from step ``disc_start_step`` on),
    then one codec step; ``history`` holds one codec loss per codec step either way."""

    def __init__(
        self,
        model: CodecModel,
        learning_rate: float,
        max_steps: int,
        mel_weight: float,
        *,
        adversarial_weight: float = 0.0,
        feature_weight: float = 3.0,
        disc_filters: int = 32,
        disc_learning_rate: float | None = None,
        disc_start_step: int = 0,
        seed: int = 0,
        warmup_steps: int = 0,
    ):
        super().__init__()
        self.model, self.learning_rate, self.max_steps = model, learning_rate, max_steps
        self.warmup_steps = warmup_steps
        self.mel_loss = MultiScaleMelLoss(model.sample_rate)
        self.mel_weight = mel_weight
        self.history: list[float] = []
        q = model.quantizer
        self.usage = UsageTracker(q.codebook_size, q.num_codebooks)
        self.usage_history: list[dict] = []
        self.adversarial_weight, self.feature_weight = adversarial_weight, feature_weight
        self.disc_learning_rate = (
            learning_rate if disc_learning_rate is None else disc_learning_rate
        )
        self.disc_start_step = disc_start_step
        self.discriminator: MultiScaleSTFTDiscriminator | None = None
        if adversarial_weight > 0:
            self.automatic_optimization = False
            # Its own seeded RNG: the global stream (data, codec) stays as without the option.
            with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # encodec's deprecated weight_norm
                torch.manual_seed(seed)
                disc = MultiScaleSTFTDiscriminator(disc_filters, in_channels=model.channels)
            self.discriminator = disc

    def _reconstruction(self, wav: torch.Tensor):
        """wav (B, C, S) → (recon (B, C, S) float, time L1, mel loss, commitment loss); counts
        the codes in ``usage``."""
        recon, codes, commit = self.model(wav, quantize=len(self.history) >= self.warmup_steps)
        if codes is not None:
            self.usage.update(codes)
        recon = recon[..., : wav.shape[-1]].float()
        return recon, F.l1_loss(recon, wav), self.mel_loss(recon, wav), commit

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        if self.discriminator is not None:
            self._adversarial_step(batch)
            return None
        wav = batch  # (B, C, segment)
        _, time_l1, mel, commit = self._reconstruction(wav)
        loss = time_l1 + self.mel_weight * mel + commit
        self.history.append(float(loss.detach()))
        self.log_dict({"train/loss": loss, "train/mel": mel}, prog_bar=True, on_step=True)
        return loss

    def _adversarial_step(self, wav: torch.Tensor) -> None:
        """One discriminator update (once the warm-up is over), then one codec update."""
        disc = self.discriminator
        opt_g, opt_d = self.optimizers()
        sched_g, sched_d = self.lr_schedulers()
        adversarial = len(self.history) >= self.disc_start_step  # codec steps taken so far
        recon, time_l1, mel, commit = self._reconstruction(wav)
        logs = {"train/mel": mel}
        if adversarial:
            real_logits, _ = disc(wav)
            fake_logits, _ = disc(recon.detach())
            disc_loss = disc_hinge_loss(real_logits, fake_logits)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(disc_loss)
            opt_d.step()
            sched_d.step()
            logs["train/disc"] = disc_loss.detach()
        with self.toggled_optimizer(opt_g):  # no gradients into the discriminator here
            loss = time_l1 + self.mel_weight * mel + commit
            if adversarial:
                with torch.no_grad():
                    _, real_fmaps = disc(wav)
                fake_logits, fake_fmaps = disc(recon)
                adv = gen_hinge_loss(fake_logits)
                feat = feature_matching_loss(real_fmaps, fake_fmaps)
                loss = loss + self.adversarial_weight * adv + self.feature_weight * feat
                logs.update({"train/adv": adv.detach(), "train/feat": feat.detach()})
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            opt_g.step()
        sched_g.step()
        self.history.append(float(loss.detach()))
        self.log_dict({"train/loss": loss.detach(), **logs}, prog_bar=True, on_step=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.model.parameters(), lr=self.learning_rate, betas=(0.5, 0.9))
        if self.discriminator is None:
            return warmup_cosine(opt, self.max_steps)
        opt_d = torch.optim.AdamW(
            self.discriminator.parameters(), lr=self.disc_learning_rate, betas=(0.5, 0.9)
        )
        disc_steps = max(1, self.max_steps - self.disc_start_step)  # its own warm-up from start
        return [warmup_cosine(opt, self.max_steps), warmup_cosine(opt_d, disc_steps)]


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
    adversarial_weight: float = 0.0,
    feature_weight: float = 3.0,
    disc_filters: int = 32,
    disc_learning_rate: float | None = None,
    disc_start_step: int = 0,
    warmup_steps: int = 0,
) -> FitRecord:
    """Train ``model`` in place on random segments of ``clips`` (C, S_i); returns the per-step
    losses (one float per codec update, ``max_steps`` of them) and the codebook usage per window.

    Args:
        adversarial_weight: weight of the generator's hinge loss against the MS-STFT
            discriminator (EnCodec λ_g: 3). ``0`` (default): no discriminator, reconstruction
            losses only, Lightning's automatic optimization.
        feature_weight: weight of the relative feature-matching loss (EnCodec λ_feat: 3); used
            only when ``adversarial_weight > 0``.
        disc_filters: the discriminator's base width (``filters``; EnCodec: 32).
        disc_learning_rate: the discriminator's AdamW peak rate (``None``: ``learning_rate``).
        disc_start_step: codec steps on reconstruction only before the discriminator updates and
            the adversarial and feature terms start.
        warmup_steps: codec steps as a plain autoencoder (no quantization) before the quantizer
            starts on warmed-up latents (VQ: k-means on the first quantized batch).

    Raises:
        ValueError: a negative weight or ``disc_start_step``, ``disc_filters < 1``, or, with the
            discriminator, ``segment`` shorter than its largest STFT (2048 samples).
    """
    if adversarial_weight < 0 or feature_weight < 0:
        raise ValueError(
            f"adversarial_weight and feature_weight must be >= 0, got {adversarial_weight}, "
            f"{feature_weight}"
        )
    if disc_start_step < 0 or disc_filters < 1:
        raise ValueError(
            f"need disc_start_step >= 0 and disc_filters >= 1, got {disc_start_step}, "
            f"{disc_filters}"
        )
    adversarial = adversarial_weight > 0
    if adversarial and segment < DISC_MAX_N_FFT:
        raise ValueError(
            f"the discriminator needs segments of at least {DISC_MAX_N_FFT} samples, got {segment}"
        )
    module = CodecFitModule(
        model, learning_rate, max_steps, mel_weight, adversarial_weight=adversarial_weight,
        feature_weight=feature_weight, disc_filters=disc_filters,
        disc_learning_rate=disc_learning_rate, disc_start_step=disc_start_step, seed=seed,
        warmup_steps=warmup_steps,
    )  # fmt: skip
    loader = torch.utils.data.DataLoader(
        SegmentDataset(clips, segment, seed), batch_size=batch_size
    )
    # Under manual optimization Lightning's global_step counts every optimizer ``.step()``: the
    # codec's ``max_steps`` plus one discriminator step per batch from ``disc_start_step`` on.
    trainer_steps = max_steps + (max(0, max_steps - disc_start_step) if adversarial else 0)
    run_fit(
        module, loader, max_steps=trainer_steps, seed=seed, accelerator=accelerator,
        precision=precision, progress=progress,
    )  # fmt: skip
    return FitRecord(module.history, module.usage_history)
