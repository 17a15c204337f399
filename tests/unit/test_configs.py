"""Every config composes, and every object it names instantiates (style.md: a test composes and
instantiates every config)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tokenize_mm.cli.common import config_dir

CONF = Path(config_dir())
TOKENIZERS = sorted(p.stem for p in (CONF / "tokenizer").glob("*.yaml"))
SOURCES = {
    "builtin": [],
    "manifest": ["source.path={manifest}"],
    "folder": ["source.root={folder}"],
}


@pytest.fixture
def paths(tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"id": "a", "text": "hello"}\n')
    return {"manifest": manifest, "folder": tmp_path}


@pytest.mark.parametrize("tokenizer", TOKENIZERS)
@pytest.mark.parametrize("source", list(SOURCES))
def test_fit_tokenizer_config_instantiates(tokenizer, source, paths):
    overrides = [f"tokenizer={tokenizer}", f"source={source}"]
    overrides += [o.format(**paths) for o in SOURCES[source]]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("fit_tokenizer", overrides=overrides)
    fit = instantiate(cfg.tokenizer.fit)
    assert isinstance(fit, functools.partial) and fit.func.__name__ == "fit"
    assert cfg.tokenizer.modality in ("text", "image", "audio")
    src = instantiate(cfg.source)
    assert iter(src) is not None


@pytest.mark.parametrize("name", ["train", "encode", "decode"])
def test_entry_point_configs_compose(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=["tokenizer_dir=x", "inputs=[a]"] if name != "train" else [])
    if name == "train":
        instantiate(cfg.text_tokenizer.fit)
        instantiate(cfg.image_tokenizer.fit)
        instantiate(cfg.source)


@pytest.mark.parametrize("order", ["fixed", "random", "caption_after_image"])
@pytest.mark.parametrize("source", list(SOURCES))
def test_pretokenize_config_composes(order, source, paths):
    from tokenize_mm.sequence.interleave import SpanOrder

    overrides = ["tokenizers.text=t", "out_dir=o", f"span_order={order}", f"source={source}"]
    overrides += [o.format(**paths) for o in SOURCES[source]]
    if source == "folder":
        overrides.append("source.modality=text")  # folder.yaml reads it from a tokenizer
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("pretokenize", overrides=overrides)
    assert SpanOrder(cfg.span_order, seed=cfg.seed).mode == order
    assert cfg.audio_pattern in ("flatten", "delay") and cfg.num_shards >= 1
    assert len(instantiate(cfg.source)) >= 0
