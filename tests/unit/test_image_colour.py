"""The image tokenizer keeps colour: GroupNorm-free blocks (``VQImageConfig.block_norm``) and the
chroma term of the fit's loss (``chroma_weight``)."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from conftest import TINY_IMAGE, make_images

from tokenize_mm import ImageTokenizer
from tokenize_mm.tokenizers.arch import config_from_hparams
from tokenize_mm.tokenizers.errors import InvalidInputError
from tokenize_mm.tokenizers.image.fit import chroma
from tokenize_mm.tokenizers.image.model import VQImageConfig

SMALL = dict(image_size=32, downsample=8, base_channels=8, latent_dim=16, codebook_size=32)


def flat(rgb: tuple[float, float, float], size: int = 32) -> torch.Tensor:
    """One flat image (1, 3, S, S) in [0, 1]."""
    return torch.tensor(rgb).view(1, 3, 1, 1).expand(1, 3, size, size).clone()


def test_without_groupnorm_a_short_fit_decodes_each_image_its_own_colours(images):
    """The main job's finding at the tests' size: with GroupNorm a 30-step fit decodes every
    held-out image with the same mean colour; without it the colours follow the input."""
    torch.set_num_threads(2)
    held = make_images(16, seed=1)
    target = torch.stack([torch.tensor(list(i.getdata()), dtype=torch.float32) for i in held])
    target_mean = target.mean(1) / 255.0  # (16, 3)
    psnr, colour_error = {}, {}
    for norm in ("group", "none"):
        config = dataclasses.replace(TINY_IMAGE["config"], block_norm=norm)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tok = ImageTokenizer.fit(images, max_steps=30, seed=1, held_out=held,
                                     **{**TINY_IMAGE, "config": config})  # fmt: skip
        decoded = torch.stack(tok.decode_batch(tok.encode_batch(held)))  # (16, 3, S, S)
        colour_error[norm] = (decoded.mean((2, 3)) - target_mean).abs().mean().item()
        psnr[norm] = tok.info.metrics["psnr_db"]
    assert psnr["none"] > psnr["group"] + 0.5, psnr
    assert colour_error["none"] < 0.85 * colour_error["group"], colour_error


def test_block_norm_defaults_by_quantizer_and_is_checked():
    assert VQImageConfig(**SMALL).norm_in_use == "none"  # fsq
    assert VQImageConfig(**SMALL, quantizer="vq").norm_in_use == "group"
    assert VQImageConfig(**SMALL, quantizer="vq", block_norm="none").norm_in_use == "none"
    with pytest.raises(InvalidInputError, match="block_norm='batch'"):
        VQImageConfig(**SMALL, block_norm="batch")


def test_an_artifact_without_block_norm_means_groupnorm():
    """Every image model before the field used GroupNorm, FSQ ones included."""
    arch = {k: v for k, v in dataclasses.asdict(VQImageConfig(**SMALL)).items()
            if k != "block_norm"}  # fmt: skip
    assert config_from_hparams(VQImageConfig, {"arch": arch}).norm_in_use == "group"


def test_chroma_is_zero_on_grey_and_signs_the_hue():
    grey, red, blue = flat((0.5, 0.5, 0.5)), flat((0.9, 0.1, 0.1)), flat((0.1, 0.1, 0.9))
    assert chroma(grey).abs().max() < 1e-6
    assert chroma(red).shape == (1, 2, 32, 32)
    assert chroma(red)[0, 1].mean() > 0 > chroma(red)[0, 0].mean()  # R - Y > 0 > B - Y
    assert chroma(blue)[0, 0].mean() > 0 > chroma(blue)[0, 1].mean()


def test_a_fit_saves_the_resolved_norm_and_its_chroma_weight(images):
    torch.set_num_threads(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two steps: the codes may look collapsed
        tok = ImageTokenizer.fit(images[:8], max_steps=2, seed=0, chroma_weight=3.0,
                                 **TINY_IMAGE)  # fmt: skip
    assert tok.hparams["arch"]["block_norm"] == "none"
    assert tok.hparams["fit"]["chroma_weight"] == 3.0


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf"), True, "3"])
def test_a_bad_chroma_weight_is_named(images, weight):
    with pytest.raises(InvalidInputError, match="chroma_weight"):
        ImageTokenizer.fit(images[:4], max_steps=1, chroma_weight=weight, **TINY_IMAGE)
