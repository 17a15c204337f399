"""Image tokenizer specifics: the input policy, bad inputs, fit sources, metrics, default rate."""

from __future__ import annotations

import dataclasses
import functools
import io
import json

import numpy as np
import pytest
import torch
from conftest import TINY_IMAGE, make_images
from PIL import Image

from tokenize_mm import ImageTokenizer, InvalidInputError, NotFittedError
from tokenize_mm.cli.common import fit_from_source
from tokenize_mm.data import ManifestSource
from tokenize_mm.tokenizers.image import io as image_io
from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel


def _mode_images() -> dict[str, Image.Image]:
    rgb = make_images(1, size=48)[0]
    i16 = Image.fromarray(np.arange(48 * 40, dtype=np.uint16).reshape(40, 48) * 30)
    p_transparent = rgb.convert("P")
    p_transparent.info["transparency"] = 0
    return {
        "RGB": rgb,
        "RGBA": rgb.convert("RGBA"),
        "L": rgb.convert("L"),
        "LA": rgb.convert("LA"),
        "1": rgb.convert("1"),
        "P": rgb.convert("P"),
        "P+transparency": p_transparent,
        "I;16": i16,
        "I": i16.convert("I"),
        "F": rgb.convert("F"),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
    }


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_every_mode_is_converted(mode, tiny_image):
    img = _mode_images()[mode]
    x = image_io.to_model_input(img, 32)
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert tiny_image.encode(img).codes.shape == (1, tiny_image.info.tokens_per_image)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
    assert torch.allclose(image_io.to_model_input(img, 8), torch.ones(3, 8, 8))


def test_sixteen_bit_scaled_from_full_range():
    img = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert img.mode == "I;16"
    assert torch.allclose(image_io.to_model_input(img, 4), torch.ones(3, 4, 4))


@pytest.mark.parametrize("size", [(1, 1), (10, 300), (300, 10), (32, 32), (513, 257)])
def test_any_size_resized_and_centre_cropped(size):
    img = Image.new("RGB", size, (200, 10, 10))
    x = image_io.to_model_input(img, 16)
    assert x.shape == (3, 16, 16)
    assert torch.allclose(x, x[:, :1, :1].expand_as(x), atol=2 / 255)


def test_centre_crop_keeps_the_centre():
    img = Image.new("RGB", (30, 10), (0, 0, 0))
    img.paste((255, 255, 255), (10, 0, 20, 10))  # white middle third
    x = image_io.to_model_input(img, 10)
    assert float(x.mean()) > 0.95


def test_tensor_and_pil_agree_on_policy():
    img = make_images(1, size=64)[0]
    from_pil = image_io.to_model_input(img, 64)
    t = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(image_io.to_model_input(t, 64), from_pil)
    gray = image_io.to_model_input(t[:1], 64)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


BAD_TENSORS = {
    "nan": (torch.full((3, 8, 8), float("nan")), "NaN"),
    "inf": (torch.full((3, 8, 8), float("inf")), "NaN or Inf"),
    "above one": (torch.full((3, 8, 8), 2.0), r"\[0, 1\]"),
    "negative": (torch.full((3, 8, 8), -0.5), r"\[0, 1\]"),
    "uint8": (torch.zeros(3, 8, 8, dtype=torch.uint8), "floating point"),
    "batch": (torch.zeros(2, 3, 8, 8), "a batch"),
    "two channels": (torch.zeros(2, 8, 8), "C in 1, 3, 4"),
    "empty": (torch.zeros(3, 0, 8), "zero height"),
}


@pytest.mark.parametrize("name", list(BAD_TENSORS))
def test_bad_tensors_refused(name, tiny_image):
    x, match = BAD_TENSORS[name]
    with pytest.raises(InvalidInputError, match=match):
        tiny_image.encode(x)


def test_bad_files_refused(tiny_image, tmp_path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "notes.png"
    text.write_text("this is not an image")
    buf = io.BytesIO()
    make_images(1, size=64)[0].save(buf, format="PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    cases = {empty: "empty", text: "not an image", truncated: "truncated",
             tmp_path / "missing.png": "does not exist", tmp_path: "directory"}  # fmt: skip
    for path, match in cases.items():
        with pytest.raises(InvalidInputError, match=match) as err:
            tiny_image.encode(path)
        assert str(path) in str(err.value)
    with pytest.raises(InvalidInputError, match=r"batch item 1.*truncated"):
        tiny_image.encode_batch([make_images(1)[0], truncated])


def test_unsupported_type_refused(tiny_image):
    with pytest.raises(InvalidInputError, match="unsupported image input"):
        tiny_image.encode(np.zeros((8, 8, 3)))


def test_fit_loss_falls_and_metrics_kept(tiny_image):
    fd = tiny_image.fit_data
    assert fd["loss_end"] < fd["loss_start"]
    m = tiny_image.info.metrics
    assert set(m) >= {"psnr_db", "perplexity", "used_fraction"}
    assert m["psnr_db"] > 0 and 1.0 <= m["perplexity"] <= tiny_image.info.codebook_size
    assert 0.0 < m["used_fraction"] <= 1.0


def test_fit_is_deterministic_under_a_seed(images):
    a = ImageTokenizer.fit(images[:16], max_steps=3, seed=3, **TINY_IMAGE)
    b = ImageTokenizer.fit(images[:16], max_steps=3, seed=3, **TINY_IMAGE)
    assert a.encode_batch(images[16:20]) == b.encode_batch(images[16:20])


def test_fit_from_folder_and_manifest(tmp_path):
    imgs = make_images(12, size=40)
    (tmp_path / "img").mkdir()
    records = []
    for i, img in enumerate(imgs):
        img.save(tmp_path / "img" / f"{i:02d}.png")
        split = "test" if i >= 9 else "train"
        records.append({"id": str(i), "image": f"img/{i:02d}.png", "split": split, "text": "x"})
    records.append({"id": "no-image", "text": "only text", "image": None})
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    from_folder = ImageTokenizer.fit(tmp_path / "img", max_steps=2, **TINY_IMAGE)
    assert from_folder.fit_data["num_train"] + from_folder.fit_data["num_held_out"] == 12
    # Reading a manifest is the caller's job (the tokenizers never import the data layer).
    with pytest.raises(InvalidInputError, match="fit_from_source"):
        ImageTokenizer.fit(manifest, max_steps=2, **TINY_IMAGE)
    fit = functools.partial(ImageTokenizer.fit, max_steps=2, **TINY_IMAGE)
    from_manifest = fit_from_source(fit, "image", ManifestSource(manifest))
    assert from_manifest.fit_data["num_train"] == 9
    assert from_manifest.info.metrics["num_eval_images"] == 3


def test_fit_without_images_refused():
    with pytest.raises(NotFittedError):
        ImageTokenizer.fit([], max_steps=1, **TINY_IMAGE)


def test_bad_architecture_refused():
    with pytest.raises(InvalidInputError, match="power of two") as err:
        VQImageConfig(image_size=32, downsample=6)
    assert "downsample=6" in str(err.value)
    with pytest.raises(InvalidInputError, match="multiple of downsample"):
        VQImageConfig(image_size=40, downsample=16)
    with pytest.raises(InvalidInputError, match="base_channels"):
        VQImageConfig(base_channels=0)
    with pytest.raises(InvalidInputError, match="channel_mult"):
        VQImageConfig(channel_mult=(1, 2))  # f = 16 has 4 stages
    with pytest.raises(InvalidInputError, match="codebook_size"):  # a fit keyword, folded in
        ImageTokenizer.fit([], max_steps=1, codebook_size=True)
    with pytest.raises(TypeError):  # neither a fit setting nor a config field
        ImageTokenizer.fit([], max_steps=1, n_filters=4)


def test_fit_keywords_fold_into_the_config(images):
    """``fit(config=..., image_size=...)``: keywords replace the config's fields, and the
    artifact keeps the architecture under ``hparams["arch"]``, the fit's settings under
    ``hparams["fit"]``."""
    base = TINY_IMAGE["config"]
    rest = {k: v for k, v in TINY_IMAGE.items() if k != "config"}
    tok = ImageTokenizer.fit(images[:8], config=base, max_steps=1, codebook_size=16, **rest)
    # the FSQ levels and block norm the fit used are written out: (4, 4) for 16 codes, no norm
    written = {"codebook_size": 16, "fsq_levels": (4, 4), "block_norm": "none"}
    assert tok.model.config == dataclasses.replace(base, **written)
    assert tok.hparams["arch"] == {**dataclasses.asdict(base), **written, "fsq_levels": [4, 4]}
    assert tok.hparams["fit"]["max_steps"] == 1 and "image_size" not in tok.hparams["fit"]


def test_default_is_256_tokens_for_256_pixels():
    model = VQImageModel()  # the defaults of ImageTokenizer.fit and conf/tokenizer/image.yaml
    assert model.grid == (16, 16)
    codes = model.eval().encode(torch.rand(1, 3, 256, 256))
    assert codes.shape == (1, 256)
