"""Every config composes, and every object it names instantiates (a test composes and
instantiates every config)."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from tokenize_mm.cli.common import config_dir
from tokenize_mm.models import DecoderConfig, DecoderLM, preset

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


@pytest.mark.parametrize("name", ["encode", "decode"])
def test_entry_point_configs_compose(name):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(name, overrides=["tokenizer_dir=x", "inputs=[a]"])
    assert cfg.tokenizer_dir == "x"


def train_cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=["out_dir=o", *overrides])


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("weighting", group_options("balance/weighting"))
def test_every_weighting_instantiates(weighting):
    from tokenize_mm.balance.weighting import LossWeighting
    from tokenize_mm.models.system import OBJECTIVES

    cfg = train_cfg(f"balance/weighting={weighting}")
    if weighting == "contrastive_only":  # fixed weights over the objectives (contrastive=clip)
        w = instantiate(cfg.balance.weighting, modalities=list(OBJECTIVES))
        assert w.name == "fixed" and w.given == {
            "text": 0,
            "image": 0,
            "audio": 0,
            "contrastive": 1,
        }
        return
    w = instantiate(cfg.balance.weighting)
    assert isinstance(w, LossWeighting) and w.name == weighting


@pytest.mark.parametrize("sampling", group_options("balance/sampling"))
def test_every_sampler_builds_over_the_builtin_sources(sampling):
    from tokenize_mm.balance.sampling import MixtureSampler

    cfg = train_cfg(f"balance/sampling={sampling}")
    sources = ["trimodal", "image_text", "audio_text", "text_only"]
    mods = {s: {"text": 0.2, "image": 0.3, "audio": 0.5} for s in sources}
    factory = instantiate(cfg.balance.sampling, _convert_="all")  # as tmm-train builds it
    sampler = factory(dict.fromkeys(sources, 1000), source_modalities=mods)
    assert isinstance(sampler, MixtureSampler) and sampler.name == sampling
    assert sum(sampler.probabilities().values()) == pytest.approx(1.0)


def test_optimizer_and_schedule_come_from_config():
    from tokenize_mm.models.system import BalancedLM

    cfg = train_cfg("model=tiny", "optimizer.lr=0.005", "trainer.max_steps=40")
    net = DecoderLM(instantiate(cfg.model), vocab_size=300)
    module = BalancedLM(net, instantiate(cfg.balance.weighting),
                        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler))  # fmt: skip
    config = module.configure_optimizers()
    opt, sched = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(opt, torch.optim.AdamW)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]  # matrices only
    assert tuple(opt.param_groups[0]["betas"]) == (0.9, 0.95)
    assert opt.param_groups[0]["initial_lr"] == 0.005
    assert sched.lr_lambdas[0](1) == pytest.approx(2 / 2)  # warm-up of max(1, 40 // 20) = 2 steps
    assert sched.lr_lambdas[0](40) == pytest.approx(0.1)


@pytest.mark.parametrize("model", group_options("model"))
def test_every_model_instantiates(model):
    cfg = train_cfg(f"model={model}")
    config = instantiate(cfg.model)
    assert isinstance(config, DecoderConfig) and config == preset(model)
    if model != "base100m":  # 100 M parameters: composed, not built, in the unit tier
        net = DecoderLM(config, vocab_size=300)
        assert net.num_parameters() > 0


@pytest.mark.parametrize("trainer", group_options("trainer"))
@pytest.mark.parametrize("logger", group_options("logger"))
@pytest.mark.parametrize("callbacks", group_options("callbacks"))
def test_trainer_logger_callbacks_compose(trainer, logger, callbacks, tmp_path):
    cfg = train_cfg(f"trainer={trainer}", f"logger={logger}", f"callbacks={callbacks}",
                    f"out_dir={tmp_path}")  # fmt: skip
    assert cfg.trainer.max_steps > 0
    log = instantiate(cfg.logger) if cfg.logger else False
    cbs = [instantiate(c) for c in cfg.callbacks.values()]
    if trainer == "cpu":  # the others need a GPU or spawn processes
        t = instantiate(cfg.trainer, logger=log, callbacks=cbs, enable_checkpointing=bool(cbs))
        assert t.max_steps == cfg.trainer.max_steps


@pytest.mark.parametrize("extra", [["+debug=tiny"], ["experiment=balance_sweep"],
                                   ["experiment=balance_bench"], ["experiment=balance_bench_quick"],
                                   ["experiment=balance_bench_tiny"],
                                   ["experiment=balance_bench_grounding"],
                                   ["experiment=balance_bench_quick", "data=manifest",
                                    "data.source.path=m.jsonl"],
                                   ["data=tiny"], ["data=manifest", "data.source.path=m.jsonl"]])  # fmt: skip
def test_debug_experiment_and_data_options_compose(extra, paths):
    extra = [e.replace("m.jsonl", str(paths["manifest"])) for e in extra]
    cfg = train_cfg(*extra)
    assert len(instantiate(cfg.data.source)) > 0
    assert cfg.data.context > 0 and set(cfg.tokenizers) == {"text", "image", "audio"}
    if "+debug=tiny" in extra:
        assert cfg.model.d_model == 32 and cfg.tokenizers.audio.name == "audio_tiny"
    if extra[0].startswith("experiment=balance_bench"):  # benchmarks/balance.py's sizes
        grounding = extra[0] == "experiment=balance_bench_grounding"
        assert cfg.data.span_order == ("caption_last" if grounding else "random")
        # no logger files, no checkpoints: the throughput windows only (s a step and MFU)
        assert not cfg.logger and list(cfg.callbacks) == ["throughput"]
        assert cfg.trainer.val_check_interval == cfg.trainer.max_steps
        assert cfg.model.max_positions == cfg.data.context
        if grounding:  # the contrastive objective with the levers that let text read its media
            assert cfg.contrastive.pooling == "attention" and cfg.model.image_grid == 16
            assert cfg.contrastive.span_attention == "bidirectional"


def test_default_weighting_gives_the_alignment_objective_a_tenth():
    """The default (grad_share) targets each modality a third of the language-model gradient and,
    with contrastive=clip, the alignment objective a tenth of the whole (the grounding benchmark's
    choice); without the objective its target is ignored."""
    from tokenize_mm.models.system import OBJECTIVES

    cfg = train_cfg("contrastive=clip")
    weighting = instantiate(cfg.balance.weighting, modalities=list(OBJECTIVES))
    shares = dict(zip(weighting.modalities, weighting.targets.tolist(), strict=True))
    assert shares["contrastive"] == pytest.approx(0.1, abs=0.002)
    assert shares["text"] == shares["image"] == shares["audio"] == pytest.approx(0.3, abs=0.001)
    plain = instantiate(train_cfg().balance.weighting)
    assert plain.targets.tolist() == pytest.approx([1 / 3] * 3)


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


def test_cached_artifacts_are_keyed_by_the_code_that_made_them(tmp_path, monkeypatch):
    """The main job's cache keys include a hash of the tokenizer (or data) code: the same config
    after a code change gets a new key instead of a stale artifact."""
    import tokenize_mm.cli.train as train_cli

    tokenizers, data = train_cli.code_identity("tokenizers"), train_cli.code_identity("data")
    assert tokenizers == train_cli.code_identity("tokenizers") and tokenizers != data
    fake = tmp_path / "tokenize_mm" / "cli" / "train.py"  # a copy of the package, one file edited
    root = Path(train_cli.__file__).resolve().parents[1]
    for package in ("tokenizers", "cli"):
        for path in (root / package).rglob("*.py"):  # subpackages too (tokenizers/audio/, ...)
            copy = tmp_path / "tokenize_mm" / path.relative_to(root)
            copy.parent.mkdir(parents=True, exist_ok=True)
            copy.write_bytes(path.read_bytes())
    monkeypatch.setattr(train_cli, "__file__", str(fake))
    assert train_cli.code_identity("tokenizers") == tokenizers
    (tmp_path / "tokenize_mm" / "tokenizers" / "audio" / "model.py").write_text("# changed\n")
    assert train_cli.code_identity("tokenizers") != tokenizers


@pytest.mark.parametrize(
    ("tokenizer", "cls_name"), [("image", "VQImageConfig"), ("audio", "CodecConfig")]
)
def test_architecture_configs_come_from_the_dataclass(tokenizer, cls_name):
    """conf/tokenizer/{image,audio}.yaml write no architecture field: fit.config is the dataclass's
    defaults (cli/schemas.py), and any field overrides without ``+``."""
    import yaml

    own = yaml.safe_load((CONF / "tokenizer" / f"{tokenizer}.yaml").read_text())
    assert "config" not in own["fit"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("fit_tokenizer", overrides=[f"tokenizer={tokenizer}",
                                                  "tokenizer.fit.config.codebook_size=512"])  # fmt: skip
    config = instantiate(cfg.tokenizer.fit.config)
    assert type(config).__name__ == cls_name
    assert config == type(config)(codebook_size=512)
