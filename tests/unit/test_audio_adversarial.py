"""The codec's optional EnCodec adversarial training (MS-STFT discriminator, manual optimization)."""

from __future__ import annotations

import math

import pytest
import torch

from tokenize_mm.tokenizers.audio import fit as audio_fit
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel

RATE = 24_000
FIT = dict(
    segment=4800, batch_size=2, learning_rate=1e-3, mel_weight=1.0, seed=0, accelerator="cpu",
    precision=None, progress=False,
)  # fmt: skip


def tiny_codec() -> CodecModel:
    torch.manual_seed(0)
    return CodecModel(
        CodecConfig(n_filters=4, dimension=16, lstm=0, codebook_size=16, ratios=(8, 5, 4, 3))
    )


def make_clips() -> list[torch.Tensor]:
    """Four 0.5 s mono clips (1, 12000): two sines and two noises."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(RATE // 2) / RATE
    sines = [0.5 * torch.sin(2 * math.pi * f * t)[None] for f in (220.0, 440.0)]
    return sines + [0.3 * torch.randn(1, RATE // 2, generator=g) for _ in range(2)]


class Spy:
    """Wraps ``run_fit`` and the discriminator class to keep the module and the discriminators
    built, with each discriminator's initial parameters."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.modules, self.discs, self.initial = [], [], []
        real_run_fit, real_disc = audio_fit.run_fit, audio_fit.MultiScaleSTFTDiscriminator
        spy = self

        def run_fit(module, loader, **kwargs):
            spy.modules.append(module)
            real_run_fit(module, loader, **kwargs)

        class Disc(real_disc):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                spy.discs.append(self)
                spy.initial.append(clone_params(self))

        monkeypatch.setattr(audio_fit, "run_fit", run_fit)
        monkeypatch.setattr(audio_fit, "MultiScaleSTFTDiscriminator", Disc)


def clone_params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v.detach().cpu()) for k, v in module.named_parameters())


def adam_steps(optimizer: torch.optim.Optimizer) -> set[int]:
    """The distinct AdamW step counts of the optimizer's parameters."""
    return {int(s["step"]) for s in optimizer.state.values()}


def test_default_builds_no_discriminator_and_trains_as_before(monkeypatch):
    spy = Spy(monkeypatch)
    model = tiny_codec()
    before = clone_params(model)
    history = audio_fit.train_codec(model, make_clips(), max_steps=3, **FIT).history
    module = spy.modules[0]
    assert spy.discs == [] and module.discriminator is None
    assert module.automatic_optimization
    assert len(history) == 3 and all(math.isfinite(x) for x in history)
    assert module.trainer.global_step == 3
    (opt,) = module.trainer.optimizers
    assert adam_steps(opt) == {3}
    assert changed(before, model)


def test_adversarial_trains_codec_and_discriminator_for_max_steps(monkeypatch):
    spy = Spy(monkeypatch)
    model = tiny_codec()
    keys = set(model.state_dict())
    before = clone_params(model)
    history = audio_fit.train_codec(
        model, make_clips(), max_steps=4, adversarial_weight=3.0, disc_filters=4, **FIT
    ).history
    module, (disc,) = spy.modules[0], spy.discs
    assert module.discriminator is disc and not module.automatic_optimization
    assert len(history) == 4 and all(math.isfinite(x) for x in history)
    opt_g, opt_d = module.trainer.optimizers
    assert adam_steps(opt_g) == {4} and adam_steps(opt_d) == {4}  # one of each per batch
    assert module.trainer.global_step == 8  # Lightning counts both optimizers' steps
    assert {p for g in opt_d.param_groups for p in g["params"]} == set(disc.parameters())
    assert changed(before, model) and changed(spy.initial[0], disc)
    # Training-only: the codec's state (the artifact) has no discriminator weights.
    assert set(model.state_dict()) == keys
    assert not any(p is q for p in disc.parameters() for q in model.parameters())
    metrics = module.trainer.callback_metrics
    assert {"train/disc", "train/adv", "train/feat"} <= set(metrics)
    assert all(math.isfinite(float(metrics[k])) for k in ("train/disc", "train/adv"))


def test_disc_start_step_warms_up_on_reconstruction_only(monkeypatch):
    """Before ``disc_start_step`` the discriminator is not updated and the codec's losses are
    those of a run without it; afterwards both are updated once per batch."""
    baseline = audio_fit.train_codec(tiny_codec(), make_clips(), max_steps=4, **FIT).history
    spy = Spy(monkeypatch)
    history = audio_fit.train_codec(
        tiny_codec(), make_clips(), max_steps=4, adversarial_weight=3.0, disc_filters=4,
        disc_start_step=2, **FIT,
    ).history  # fmt: skip
    module = spy.modules[0]
    assert len(history) == 4
    assert history[:2] == pytest.approx(baseline[:2], rel=1e-5)
    assert history[2:] != pytest.approx(baseline[2:], rel=1e-5)  # adversarial terms added
    opt_g, opt_d = module.trainer.optimizers
    assert adam_steps(opt_g) == {4} and adam_steps(opt_d) == {2}
    assert module.trainer.global_step == 6
    assert changed(spy.initial[0], spy.discs[0])


def test_discriminator_unchanged_until_its_start(monkeypatch):
    spy = Spy(monkeypatch)
    history = audio_fit.train_codec(
        tiny_codec(), make_clips(), max_steps=2, adversarial_weight=3.0, disc_filters=4,
        disc_start_step=2, **FIT,
    ).history  # fmt: skip
    module, (disc,) = spy.modules[0], spy.discs
    assert len(history) == 2 and module.trainer.global_step == 2
    assert not changed(spy.initial[0], disc)
    assert module.trainer.optimizers[1].state == {}  # never stepped


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"adversarial_weight": -1.0}, "adversarial_weight"),
        ({"adversarial_weight": 1.0, "disc_start_step": -1}, "disc_start_step"),
        ({"adversarial_weight": 1.0, "segment": 1024}, "at least 2048"),
    ],
)
def test_bad_adversarial_options_refused(kwargs, match):
    fit = {**FIT, **kwargs}
    with pytest.raises(ValueError, match=match):
        audio_fit.train_codec(tiny_codec(), make_clips(), max_steps=1, **fit)


def test_tokenizer_fit_option_reaches_training(clips, tmp_path):
    """``AudioTokenizer.fit`` passes the option through; the artifact holds the codec only."""
    from conftest import TINY_AUDIO

    from tokenize_mm import AudioTokenizer

    args = {**TINY_AUDIO, "segment_seconds": 0.1}  # 2400 samples: above the largest STFT
    tok = AudioTokenizer.fit(
        clips, max_steps=3, seed=0, adversarial_weight=1.0, disc_filters=4, **args
    )
    assert tok.hparams["fit"]["adversarial_weight"] == 1.0 and tok.fit_data["loss_end"] > 0
    plain = AudioTokenizer.fit(clips, max_steps=3, seed=0, **args)
    assert set(tok.model.state_dict()) == set(plain.model.state_dict())
    tok.save(tmp_path / "art")
    assert AudioTokenizer.load(tmp_path / "art").encode(clips[0]) == tok.encode(clips[0])
