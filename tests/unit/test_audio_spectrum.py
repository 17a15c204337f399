"""``spectrum.MelPower`` is torchaudio's ``MelSpectrogram`` with a cheaper backward through the FFT:
the same values and the same gradients (up to rounding), at the fit loss's four FFT sizes and at
an odd one; ``real_fft`` is ``torch.fft.rfft`` forward and backward."""

import pytest
import torch
import torchaudio

from tokenize_mm.tokenizers.audio.fit import MultiScaleMelLoss
from tokenize_mm.tokenizers.audio.spectrum import MelPower, real_fft


@pytest.mark.parametrize("n", [7, 8, 64, 65])
def test_real_fft_matches_rfft_values_and_gradients(n):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(3, 5, n, dtype=torch.float64, generator=g, requires_grad=True)
    ours, ref = real_fft(x), torch.fft.rfft(x)
    assert torch.equal(ours, ref)
    w = torch.randn(ref.shape, dtype=torch.complex128, generator=g)
    (ga,) = torch.autograd.grad((ours * w).real.sum() + (ours.abs() ** 2).sum(), x)
    (gb,) = torch.autograd.grad((ref * w).real.sum() + (ref.abs() ** 2).sum(), x)
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(real_fft, (x[:1, :1].detach().requires_grad_(),))


@pytest.mark.parametrize("n_fft", [256, 512, 1024, 2048, 255])
def test_mel_power_is_torchaudios_mel_spectrogram(n_fft):
    n_mels = min(64, n_fft // 8)
    ref = torchaudio.transforms.MelSpectrogram(24_000, n_fft=n_fft, hop_length=n_fft // 4,
                                               n_mels=n_mels)  # fmt: skip
    ours = MelPower(24_000, n_fft, n_fft // 4, n_mels)
    x = torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(n_fft), requires_grad=True)
    a, b = ref(x), ours(x)
    scale = float(a.detach().abs().max())
    assert a.shape == b.shape == (2, 1, n_mels, 1 + 4000 // (n_fft // 4))
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6 * scale)
    w = torch.randn(a.shape, generator=torch.Generator().manual_seed(1))
    (ga,) = torch.autograd.grad((torch.log(a + 1e-5) * w).sum(), x)
    (gb,) = torch.autograd.grad((torch.log(b + 1e-5) * w).sum(), x)
    torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-5 * float(ga.abs().max()))


def test_the_fit_loss_keeps_no_buffers_in_its_state():
    """The loss's windows and mel filters are rebuilt with it, not saved in a fit's state; equal
    waveforms cost nothing, different ones something."""
    loss = MultiScaleMelLoss(24_000)
    assert loss.state_dict() == {}
    x = torch.randn(2, 1, 3000)
    assert float(loss(x, x)) == 0.0 and float(loss(x, 0.5 * x)) > 0.0
