"""Resuming never unpickles code, and a run's numbers are checked before any work."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tokenize_mm.cli.checkpoint import resolve_checkpoint
from tokenize_mm.cli.common import config_dir
from tokenize_mm.cli.train import prepare, train
from tokenize_mm.cli.validate import check_train_config
from tokenize_mm.core.errors import CheckpointError, ConfigError, TokenizeMMError


class _Payload:
    """Unpickling this touches a file: the proof that code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def hostile_ckpt(tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "code-ran"
    path = tmp_path / "hostile.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "x": _Payload(marker)}, path)
    return path, marker


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:9/last.ckpt", "https://example.invalid/x.ckpt", "file:///x.ckpt",
            "s3://bucket/x.ckpt"],
)  # fmt: skip
def test_remote_checkpoints_are_refused_before_any_request(url):
    with pytest.raises(CheckpointError, match="remote checkpoints are not loaded"):
        resolve_checkpoint(url)


def test_a_checkpoint_holding_code_is_refused_even_when_torch_is_told_to_unpickle(
    hostile_ckpt, monkeypatch
):
    path, marker = hostile_ckpt
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(CheckpointError, match="weights-only") as err:
        resolve_checkpoint(path)
    assert str(path) in str(err.value)
    assert not marker.exists()


def test_train_refuses_before_fitting(hostile_ckpt, monkeypatch):
    """``train`` checks ckpt_path before it builds anything (``prepared`` is never read)."""
    path, marker = hostile_ckpt
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    for bad in (str(path), "http://127.0.0.1:9/last.ckpt"):
        with pytest.raises(CheckpointError):
            train(OmegaConf.create({"ckpt_path": bad}), prepared=None)
    assert not marker.exists()


def test_missing_and_non_regular_checkpoints_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="not a regular file"):
        resolve_checkpoint(tmp_path)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(64))
    with pytest.raises(CheckpointError, match=r"garbage\.ckpt"):
        resolve_checkpoint(garbage)


def test_plain_checkpoints_and_lightning_aliases_pass(tmp_path):
    assert resolve_checkpoint(None) is None
    assert resolve_checkpoint("last") == "last"
    path = tmp_path / "ok.ckpt"
    torch.save(
        {"state_dict": {"w": torch.ones(3)}, "epoch": 1, "balance": {"stream": [1, 2]}}, path
    )
    assert resolve_checkpoint(path) == str(path)


def _train_cfg(*overrides: str):
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=["out_dir=o", *overrides])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("trainer.max_steps=-1", "trainer.max_steps"),
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("trainer.max_steps=1.5", "trainer.max_steps"),
        ("data.batch_size=abc", "data.batch_size"),
        ("data.batch_size=0", "data.batch_size"),
        ("data.context=true", "data.context"),
        ("optimizer.lr=nan", "optimizer.lr"),
        ("optimizer.lr=0", "optimizer.lr"),
        ("optimizer.betas=[0.9,1.5]", "optimizer.betas[1]"),
        ("seed=-3", "seed"),
    ],
)
def test_bad_numbers_are_refused_naming_the_key(override, key):
    cfg = _train_cfg(override)
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    assert str(err.value).startswith(key + "=")
    assert isinstance(err.value, TokenizeMMError) and isinstance(err.value, ValueError)


def test_prepare_checks_numbers_before_fitting(tmp_path):
    """The error comes before any tokenizer fit or store write (the cache stays empty)."""
    cfg = _train_cfg("trainer.max_steps=-1", f"cache_dir={tmp_path / 'cache'}")
    with pytest.raises(ConfigError, match=r"trainer\.max_steps"):
        prepare(cfg)
    assert not (tmp_path / "cache").exists()


def test_the_shipped_configs_pass():
    check_train_config(_train_cfg())
    check_train_config(_train_cfg("+debug=tiny"))
    check_train_config(_train_cfg("contrastive=clip"))
    check_train_config(_train_cfg("model.image_grid=16"))  # image_small's grid
    check_train_config(_train_cfg("experiment=balance_bench_grounding"))
    # the two-tower CLIP baseline: towers only, the contrastive objective alone
    check_train_config(
        _train_cfg("model=towers_small", "contrastive=clip", "balance/weighting=contrastive_only")
    )


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["model.n_layers=0"], r"model: n_layers must be an integer >= 1 under early fusion"),
        (["model.d_model=130"], r"model: d_model 130 must be a multiple of n_heads"),
        # image_small writes 16 x 16 codes (64 px, f = 4): known from its architecture, unfitted
        (["model.image_grid=8"], r"model\.image_grid=8, but .* \(16, 16\).*set model\.image_grid=16"),
        (["contrastive=clip", "balance/weighting=fixed"],
         r"balance\.weighting with contrastive: .*missing \['contrastive'\].*"
         r"\+balance\.weighting\.weights\.contrastive=1\.0"),
    ],
)  # fmt: skip
def test_model_and_objectives_are_checked_before_any_work(overrides, match):
    with pytest.raises(ConfigError, match=match):
        check_train_config(_train_cfg(*overrides))


def test_compile_setting_is_checked_before_any_work():
    """``compile``: false / true / a backend torch knows; anything else is refused up front."""
    from tokenize_mm.cli.validate import check_compile

    assert check_compile(False) is None and check_compile(None) is None
    assert check_compile(True) == "inductor" and check_compile("aot_eager") == "aot_eager"
    for bad in ("compile=fast", "compile=3"):
        with pytest.raises(ConfigError, match=r"^compile="):
            check_train_config(_train_cfg(bad))


def test_a_compiled_model_computes_as_the_eager_one_and_keeps_its_keys(store):
    """``compile=aot_eager`` (no C compiler needed): the module's model is compiled in place, its
    state dict has the eager model's keys, and its hidden states and gradients match."""
    from tokenize_mm.cli.train import build_module

    layout = store[1]
    modules = []
    for extra in ((), ("compile=aot_eager",)):
        torch.manual_seed(0)
        modules.append(build_module(_train_cfg("+debug=tiny", *extra), layout))
    eager, compiled = modules
    assert compiled.model._compiled_call_impl is not None
    assert eager.model._compiled_call_impl is None
    assert list(compiled.model.state_dict()) == list(eager.model.state_dict())
    tokens = torch.randint(0, layout.vocab_size, (2, 16))
    modality = torch.zeros(2, 16, dtype=torch.long)
    positions, segments = torch.arange(16).expand(2, 16), torch.ones(2, 16, dtype=torch.long)
    outs = []
    for module in (eager, compiled):
        hidden = module.model(tokens, modality, positions, segments)
        hidden.pow(2).mean().backward()
        outs.append((hidden.detach(), module.model.tok_emb.weight.grad.clone()))
    assert torch.allclose(outs[0][0], outs[1][0], atol=1e-5)
    assert torch.allclose(outs[0][1], outs[1][1], atol=1e-6)
