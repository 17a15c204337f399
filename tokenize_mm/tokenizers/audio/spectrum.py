"""Mel spectrograms whose gradient costs a half-length inverse FFT, not a full complex one.

The codec's fit takes the gradient of log-mel spectrograms at four resolutions every step
(``fit.MultiScaleMelLoss``, EnCodec's reconstruction loss: Défossez et al. 2022, "High Fidelity
Neural Audio Compression", arXiv:2210.13438). ``torch.stft`` computes the one-sided real FFT, and
PyTorch's backward of that FFT zero-fills a full-length complex gradient, copies the half spectrum
into it and runs a full complex inverse FFT: three passes over twice the data, which on 2 CPU cores
cost more of audio_small's fit step than the forward FFTs themselves.

The backward of y = rfft(x) (x real, length N; y_k = Σ_n x_n e^{-2πikn/N}, k = 0 … ⌊N/2⌋) is

    ∂L/∂x_n = Re Σ_k g_k e^{+2πikn/N}          (g = ∂L/∂y, the conjugate-Wirtinger convention)

which is N · irfft(Y) with Y_k = g_k / 2 for the bins that have a mirror image (0 < k < N/2) and
Y_k = Re g_k at k = 0 and, for even N, at k = N/2: a half-length inverse real FFT (``_RealFFT``).
``MelPower`` is torchaudio's ``MelSpectrogram`` (centred frames, reflect padding, a periodic Hann
window, the power spectrum, HTK mel filters without norm) with its FFT computed so; its values are
torchaudio's up to rounding, and so are its gradients (tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio

from tokenize_mm.tokenizers.audio.padding import reflect_pad


class _RealFFT(torch.autograd.Function):
    """One-sided FFT of real frames (..., N) → (..., N // 2 + 1), unnormalised; the backward is
    the half-length inverse real FFT of the module docstring."""

    @staticmethod
    def forward(ctx, frames: torch.Tensor) -> torch.Tensor:
        ctx.n = frames.shape[-1]
        return torch.fft.rfft(frames)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        n = ctx.n
        half = grad / 2
        half[..., 0] = grad[..., 0].real
        if n % 2 == 0:
            half[..., -1] = grad[..., -1].real
        return torch.fft.irfft(half, n=n, norm="forward")


def real_fft(frames: torch.Tensor) -> torch.Tensor:
    """``torch.fft.rfft(frames)`` over the last dimension (real (..., N) → complex
    (..., N // 2 + 1)), with the cheap backward of the module docstring."""
    return _RealFFT.apply(frames)


class MelPower(torch.nn.Module):
    """Mel power spectrogram, as ``torchaudio.transforms.MelSpectrogram(sample_rate, n_fft,
    hop_length, n_mels)`` with its other arguments at their defaults, the FFT by ``real_fft``.

    Args:
        sample_rate: of the waveforms, in Hz.
        n_fft: frame length (and FFT size); frames are centred (reflect padding of n_fft // 2).
        hop_length: samples between frames.
        n_mels: mel bands between 0 Hz and sample_rate / 2.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int):
        super().__init__()
        self.n_fft, self.hop_length = n_fft, hop_length
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fb = torchaudio.functional.melscale_fbanks(
            n_fft // 2 + 1, f_min=0.0, f_max=sample_rate / 2, n_mels=n_mels,
            sample_rate=sample_rate, norm=None, mel_scale="htk",
        )  # fmt: skip
        self.register_buffer("fb", fb, persistent=False)  # (n_fft // 2 + 1, n_mels)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (..., S) float → (..., n_mels, 1 + S // hop_length)."""
        lead, length = wav.shape[:-1], wav.shape[-1]
        half = self.n_fft // 2
        flat = wav.reshape(-1, length)
        if length > half:  # as slices (audio/padding.py); shorter: F.pad's own error
            flat = reflect_pad(flat, half, half)
        else:
            flat = F.pad(flat[:, None], (half, half), mode="reflect")[:, 0]
        frames = flat.unfold(-1, self.n_fft, self.hop_length) * self.window  # (M, T, n_fft)
        spec = real_fft(frames)  # (M, T, n_fft // 2 + 1)
        power = spec.real.square() + spec.imag.square()
        mel = (power @ self.fb).transpose(-1, -2)  # (M, n_mels, T)
        return mel.reshape(*lead, *mel.shape[-2:])
