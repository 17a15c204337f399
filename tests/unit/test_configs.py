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
