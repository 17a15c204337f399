"""Whitening of the FSQ grid input (tokenizers/quant/whiten.py): identity covariance in
training, running statistics at inference, gradients through the batch statistics, and what it
changes for a grid whose inputs are correlated."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tokenize_mm.tokenizers.arch import config_from_hparams
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.errors import InvalidInputError
from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel
from tokenize_mm.tokenizers.quant import FiniteScalarQuantizer
from tokenize_mm.tokenizers.quant.whiten import Whiten


def correlated(n: int, seed: int = 0) -> torch.Tensor:
    """(1, n, 3) points on a thin, tilted ellipsoid: correlation about 0.99 between dimensions."""
    g = torch.Generator().manual_seed(seed)
    line = torch.randn(n, 1, generator=g) * torch.tensor([[4.0, -3.0, 5.0]])
    return (line + 0.3 * torch.randn(n, 3, generator=g) + torch.tensor([2.0, -1.0, 7.0]))[None]


def test_training_batches_come_out_white():
    x = correlated(4000)
    y = Whiten(3).train()(x)
    assert y.shape == x.shape
    assert torch.allclose(y.reshape(-1, 3).mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(torch.cov(y.reshape(-1, 3).T), torch.eye(3), atol=1e-3)


def test_inference_uses_the_running_statistics():
    """After training batches of one distribution, a new batch of it comes out near white in
    eval mode, and eval output does not depend on what else is in the batch."""
    w = Whiten(3, momentum=0.1).train()
    for seed in range(60):
        w(correlated(500, seed))
    w.eval()
    y = w(correlated(4000, 99)).reshape(-1, 3)
    assert torch.allclose(torch.cov(y.T), torch.eye(3), atol=0.15)
    x = correlated(10, 7)
    assert torch.allclose(w(x[:, :3]), w(x)[:, :3])
    assert int(w.num_batches_tracked) == 60


def test_gradients_flow_through_the_batch_statistics():
    x = correlated(200).requires_grad_(True)
    y = Whiten(3).train()(x)
    (y[..., 0] * torch.arange(200.0)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_one_position_is_refused_in_training():
    with pytest.raises(ValueError, match="at least 2 positions"):
        Whiten(3).train()(torch.randn(1, 1, 3))


def test_whitening_spreads_correlated_inputs_over_the_grid():
    """The failure it fixes: grid inputs correlated at 0.99 use an 8 x 8 x 4 grid as a line when
    each dimension is normalised on its own, and most of the grid once whitened."""
    torch.manual_seed(0)
    x = correlated(4000)
    cells = {}
    for whiten in (False, True):
        q = FiniteScalarQuantizer(3, (8, 8, 4), whiten=whiten)
        with torch.no_grad():
            q.project_in.weight.copy_(torch.eye(3))
            q.project_in.bias.zero_()
        q.train()
        for _ in range(50):  # running statistics settle (momentum 0.1)
            q(x)
        cells[whiten] = q.eval().encode(x).unique().numel()
    assert cells[False] <= 40
    assert cells[True] >= 150


@pytest.mark.parametrize(("config_class", "model_class", "kwargs"), [
    (VQImageConfig, VQImageModel,
     dict(image_size=32, downsample=8, base_channels=8, latent_dim=16, codebook_size=64)),
    (CodecConfig, CodecModel, dict(n_filters=4, dimension=16, lstm=0, codebook_size=64)),
])  # fmt: skip
def test_configs_choose_whitening_and_older_artifacts_normalise(config_class, model_class, kwargs):
    on = config_class(**kwargs, fsq_whiten=True)
    assert isinstance(model_class(on).quantizer.norm, Whiten)
    off = config_class(**kwargs, fsq_whiten=False)
    assert isinstance(model_class(off).quantizer.norm, torch.nn.BatchNorm1d)
    arch = {k: v for k, v in dataclasses.asdict(on).items() if k != "fsq_whiten"}
    assert config_from_hparams(config_class, {"arch": arch}).fsq_whiten is False
    assert config_from_hparams(config_class, {"arch": dataclasses.asdict(on)}) == on
    with pytest.raises(InvalidInputError, match="fsq_whiten"):
        config_class(**kwargs, fsq_whiten="yes")


@pytest.mark.parametrize("whiten", [False, True])
def test_calibration_sets_the_exact_statistics_of_the_latents(whiten):
    """``calibrate`` replaces the lagging running statistics by the mean and (co)variance of the
    projected latents it is given, whatever came before."""
    torch.manual_seed(0)
    q = FiniteScalarQuantizer(6, (8, 8, 4), whiten=whiten).train()
    q(torch.randn(2, 50, 6))  # running statistics of another distribution
    batches = [torch.randn(3, 40, 6) * 2 + 1 for _ in range(4)]
    assert q.calibrate(iter(batches)) == 4 * 3 * 40
    with torch.no_grad():
        y = torch.cat([q.project_in(b).reshape(-1, 3) for b in batches])
    assert torch.allclose(q.norm.running_mean, y.mean(0), atol=1e-5)
    if whiten:
        assert torch.allclose(q.norm.running_cov, torch.cov(y.T), atol=1e-4)
        white = q.eval()._grid_input(torch.cat(batches)).reshape(-1, 3)
        assert torch.allclose(torch.cov(white.T), torch.eye(3), atol=1e-3)
    else:
        assert torch.allclose(q.norm.running_var, y.var(0), atol=1e-4)
    with pytest.raises(ValueError, match="at least 2"):
        q.calibrate([torch.randn(1, 1, 6)])


def test_models_calibrate_on_every_nth_item_of_their_training_data():
    torch.manual_seed(0)
    codec = CodecModel(CodecConfig(n_filters=4, dimension=16, lstm=0, codebook_size=64,
                                   fsq_whiten=True)).eval()  # fmt: skip
    clips = [torch.randn(1, 2400 + 480 * i) * 0.1 for i in range(10)]
    codec.calibrate(clips, max_clips=5, max_seconds=0.1)  # clips 0, 2, 4, 6, 8; 2400 samples
    with torch.no_grad():
        y = torch.cat([codec.quantizer.project_in(codec.encoder(c[None, :, :2400]).transpose(1, 2))[0]
                       for c in clips[::2]])  # fmt: skip
    assert torch.allclose(codec.quantizer.norm.running_mean, y.mean(0), atol=1e-5)
    assert torch.allclose(codec.quantizer.norm.running_cov, torch.cov(y.T), atol=1e-4)

    image = VQImageModel(VQImageConfig(image_size=32, downsample=8, base_channels=8,
                                       latent_dim=16, codebook_size=64, fsq_whiten=True)).eval()  # fmt: skip
    pixels = torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8)
    image.calibrate(pixels, max_images=6, batch_size=4)  # images 0, 2, ..., 10
    with torch.no_grad():
        y = image.quantizer.project_in(image._latents(pixels[::2].float() / 255)).reshape(-1, 2)
    assert torch.allclose(image.quantizer.norm.running_mean, y.mean(0), atol=1e-5)
    assert torch.allclose(image.quantizer.norm.running_cov, torch.cov(y.T), atol=1e-4)
