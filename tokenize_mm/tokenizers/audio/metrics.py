"""Audio reconstruction metrics: scale-invariant SNR (Le Roux et al., 2019) and log-mel distance."""

from __future__ import annotations

import functools

import torch
import torchaudio


def si_snr(estimate: torch.Tensor, reference: torch.Tensor, eps: float = 1e-8) -> float:
    """SI-SNR in dB of ``estimate`` against ``reference``, both (C, S), averaged over channels.

    Both signals are made zero-mean; the target is the projection of the estimate on the
    reference. Silence as reference gives a large negative value, never NaN.
    """
    est = estimate - estimate.mean(dim=-1, keepdim=True)
    ref = reference - reference.mean(dim=-1, keepdim=True)
    scale = (est * ref).sum(-1, keepdim=True) / (ref.pow(2).sum(-1, keepdim=True) + eps)
    target = scale * ref
    noise = est - target
    ratio = (target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps)
    return float(10.0 * torch.log10(ratio).mean())


@functools.cache
def _mel(sample_rate: int) -> torchaudio.transforms.MelSpectrogram:
    """One transform per rate: its filter bank is built once, not once per clip."""
    return torchaudio.transforms.MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=64)


def log_mel_distance(estimate: torch.Tensor, reference: torch.Tensor, sample_rate: int) -> float:
    """Mean absolute difference of log-mel spectrograms (n_fft 1024, hop 256, 64 mels)."""
    mel = _mel(sample_rate)
    return float((torch.log(mel(estimate) + 1e-5) - torch.log(mel(reference) + 1e-5)).abs().mean())
