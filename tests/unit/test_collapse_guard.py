"""The collapse guard (tokenizers/quant/usage.py, fit_loop.CollapseGuard): usage counted during a
fit, a warning when a codebook falls below the floors, and tiny fits that clear a perplexity
floor (``used_fraction > 0`` alone would let a collapsed codebook pass)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from conftest import TINY_AUDIO, TINY_IMAGE, make_images

from tokenize_mm import AudioTokenizer, ImageTokenizer
from tokenize_mm.tokenizers.quant.usage import (
    CodebookCollapseWarning,
    UsageTracker,
    collapse_message,
    collapse_messages,
    warn_if_collapsed,
)


def test_tracker_counts_each_codebook_over_a_window():
    tracker = UsageTracker(codebook_size=8, num_codebooks=2)
    tracker.update(torch.tensor([[[0, 1, 2, 3], [5, 5, 5, 5]]]))  # (B=1, K=2, N=4)
    tracker.update(torch.tensor([[[4, 5, 6, 7], [5, 5, 5, 5]]]))
    first, second = tracker.usage()
    assert first == pytest.approx({"perplexity": 8.0, "used_fraction": 1.0})
    assert second == pytest.approx({"perplexity": 1.0, "used_fraction": 1 / 8})
    tracker.reset()
    assert tracker.usage() == []


def test_collapse_message_names_the_figures_and_the_fix():
    assert collapse_message({"perplexity": 64.0, "used_fraction": 0.6}, 256, "x") is None
    message = collapse_message({"perplexity": 1.02, "used_fraction": 0.043}, 256, "on 9 clips")
    assert "on 9 clips" in message and "1.0 of 256" in message and "4.3%" in message
    assert "quantizer=fsq" in message
    # either floor alone trips it
    assert collapse_message({"perplexity": 200.0, "used_fraction": 0.2}, 256, "x")
    assert collapse_message({"perplexity": 20.0, "used_fraction": 0.9}, 256, "x")


def test_messages_per_codebook_of_a_tokenizer_metrics():
    metrics = {"perplexity_0": 100.0, "used_fraction_0": 0.8, "perplexity_1": 1.0,
               "used_fraction_1": 0.01, "si_snr_db": 3.0}  # fmt: skip
    (message,) = collapse_messages(metrics, 256, "on 4 held-out clips")
    assert "(codebook 1)" in message
    with pytest.warns(CodebookCollapseWarning, match="codebook 1"):
        warn_if_collapsed(metrics, 256, "here")


def _fit_quietly(fit, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tok = fit(*args, **kwargs)
    return tok, [w for w in caught if issubclass(w.category, CodebookCollapseWarning)]


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_a_tiny_image_fit_clears_the_perplexity_floor(images, quantizer):
    """Measured on 24 unseen images: codes that keep the absolute colour (FSQ's blocks have no
    GroupNorm) give a flat background one code, so the 4 images of the default 10 % hold-out
    would measure the backgrounds' count, not a collapse."""
    torch.set_num_threads(2)
    config = dataclasses.replace(TINY_IMAGE["config"], quantizer=quantizer, fsq_levels=None)
    tok, collapsed = _fit_quietly(ImageTokenizer.fit, images, max_steps=30, seed=0,
                                  held_out=make_images(24, seed=1),
                                  **{**TINY_IMAGE, "config": config})  # fmt: skip
    size = tok.info.codebook_size
    assert tok.info.metrics["perplexity"] >= 0.25 * size, tok.info.metrics
    assert tok.fit_data["train_perplexity"] >= 0.25 * size
    assert not collapsed


def varied_clips(n: int, seed: int) -> list[tuple[torch.Tensor, int]]:
    """Half-second clips of different kinds (tones over four octaves, chirps, gated noise): a
    held-out set whose frames should not share one code (a single stationary tone would)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(12_000) / 24_000
    out = []
    for i in range(n):
        f0 = 100 * 2 ** (i / 3)
        if i % 3 == 0:
            wav = 0.5 * torch.sin(2 * math.pi * f0 * t)
        elif i % 3 == 1:
            wav = 0.5 * torch.sin(2 * math.pi * (f0 + 2000 * t) * t)
        else:
            wav = 0.2 * torch.randn(t.shape, generator=g) * torch.sin(2 * math.pi * 3 * t).abs()
        out.append((wav[None], 24_000))
    return out


def test_a_tiny_audio_fit_clears_the_perplexity_floor():
    """30 steps of the tiny codec (FSQ with a whitened grid, the default, K = 2): on held-out
    clips of other kinds every codebook keeps a perplexity of at least 25 % of its codes, the
    codebook-health goal, well above the collapse floor (measured 16.3 and 24.6 of 32 at 1 thread,
    16.3 and 24.4 at 2; 3.6 and 13.0 before whitening and calibration)."""
    tok, collapsed = _fit_quietly(AudioTokenizer.fit, varied_clips(24, seed=0),
                                  held_out=varied_clips(12, seed=1)[::-1], max_steps=30, seed=0,
                                  **TINY_AUDIO)  # fmt: skip
    assert tok.model.config.quantizer == "fsq"
    size = tok.info.codebook_size
    for k in range(tok.info.num_codebooks):
        assert tok.info.metrics[f"perplexity_{k}"] >= 0.25 * size, tok.info.metrics
    assert not collapsed


def test_a_collapsed_fit_warns_during_and_after_the_fit(clips):
    """One step leaves the codec's latents nearly constant: the guard warns at the fit's end
    (training batches) and on the held-out clips."""
    config = dataclasses.replace(TINY_AUDIO["config"], encoder_init_gain=0.1, quantizer="vq")
    _, collapsed = _fit_quietly(AudioTokenizer.fit, clips, max_steps=2, seed=0,
                                  **{**TINY_AUDIO, "config": config})  # fmt: skip
    messages = [str(w.message) for w in collapsed]
    assert any("training batches" in m for m in messages), messages
    assert any("held-out clips" in m for m in messages), messages


def test_autoencoder_warmup_starts_quantizing_late(images):
    """``autoencoder_warmup``: the first fraction of the steps decode the latents themselves (no
    codes counted), then the quantizer starts; a VQ codebook is k-means initialised then."""
    from tokenize_mm.tokenizers.image import fit as image_fit
    from tokenize_mm.tokenizers.image.model import VQImageModel
    from tokenize_mm.tokenizers.image.tokenizer import _load_u8

    config = dataclasses.replace(TINY_IMAGE["config"], quantizer="vq")
    torch.manual_seed(0)
    model = VQImageModel(config)
    record = image_fit.train_vq(
        model, _load_u8(images[:16], config.image_size), max_steps=10, batch_size=8,
        learning_rate=1e-3, seed=0, accelerator="cpu", precision=None, progress=False,
        warmup_steps=5,
    )  # fmt: skip
    assert len(record.history) == 10
    assert [u["step"] for u in record.usage] == [6, 7, 8, 9, 10]  # windows with codes only
    assert bool(model.quantizer.codebook.inited)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, "half"])
def test_autoencoder_warmup_out_of_range_is_named(images, fraction):
    from tokenize_mm.tokenizers.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="autoencoder_warmup"):
        ImageTokenizer.fit(images[:4], max_steps=1, autoencoder_warmup=fraction, **TINY_IMAGE)
