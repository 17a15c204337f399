"""The contrastive objective inside ``BalancedLM``: weighted by the balancing framework like a
modality, its loss, weight, loss share and gradient share logged, its state checkpointed."""

from __future__ import annotations

import math
import warnings
from functools import partial

import lightning as L
import pytest
import torch
from conftest import StepRecorder

from tokenize_mm.balance.sampling import SAMPLERS
from tokenize_mm.balance.weighting import GradShareWeighting, LossWeighting, ModalityMean
from tokenize_mm.core.errors import ConfigError
from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.data.datamodule import SamplerFeedback, StoreDataModule
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.contrastive import ContrastiveHead
from tokenize_mm.models.system import OBJECTIVES, BalancedLM


def train(store, weighting, steps=4, head_kw=None, ckpt_dir=None, ckpt_path=None,
          schedule_steps=None, sampler=SAMPLERS["proportional"]):  # fmt: skip
    store_dir, layout = store
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    head = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=16, **(head_kw or {}))
    module = BalancedLM(model, weighting,
                        scheduler=partial(warmup_cosine, max_steps=schedule_steps or steps),
                        layout_fingerprint=layout.fingerprint, contrastive=head)  # fmt: skip
    dm = StoreDataModule(str(store_dir), sampler=sampler, context=128,
                         batch_size=4, expected_fingerprint=layout.fingerprint)  # fmt: skip
    recorder = StepRecorder()
    callbacks = [SamplerFeedback(), recorder]
    if ckpt_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks,
        limit_val_batches=2, val_check_interval=steps, enable_checkpointing=ckpt_dir is not None,
        log_every_n_steps=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    return module, recorder.steps, trainer


@pytest.mark.parametrize("weighting", [LossWeighting, ModalityMean, GradShareWeighting])
def test_contrastive_is_an_objective_the_weighting_sees(store, weighting):
    scale_before = math.log(1 / 0.07)
    module, steps, trainer = train(store, weighting(modalities=OBJECTIVES))
    last = steps[-1]
    assert last["train/pairs/contrastive"] >= 2
    assert 0 < last["train/loss/contrastive"] < 10
    assert last["train/weight/contrastive"] > 0
    assert 0 < last["train/loss_share/contrastive"] < 1
    assert 0 < last["train/grad_share/contrastive"] < 1
    assert module.weighting.weights()["contrastive"] > 0
    assert "val/loss/contrastive" in trainer.callback_metrics
    assert float(module.contrastive.logit_scale.detach()) != pytest.approx(scale_before)  # learnt
    assert "contrastive.logit_scale" in module.state_dict()  # checkpointed with the model
    # the sampler hears the objective too (online data mixing credits it to paired sources)
    assert module.step_losses["contrastive"] == pytest.approx(last["train/loss/contrastive"])


def test_online_mixing_is_rewarded_by_the_contrastive_fall_and_resumes_exactly(store, tmp_path):
    """In training, the ODM sampler receives the contrastive loss with the modalities' and keeps
    its log-loss EMA beside theirs; a run resumed from a checkpoint draws the same batches and
    reaches the same losses and probabilities as the uninterrupted one."""
    odm = SAMPLERS["odm"]
    _, full, trainer = train(store, ModalityMean(OBJECTIVES), steps=6, sampler=odm)
    sampler = trainer.datamodule.sampler
    assert sampler.objectives[-1] == "contrastive"
    assert math.isfinite(sampler.state_dict()["log_loss"][-1])
    train(store, ModalityMean(OBJECTIVES), steps=3, sampler=odm, ckpt_dir=tmp_path / "ck",
          schedule_steps=6)  # fmt: skip
    _, resumed, again = train(store, ModalityMean(OBJECTIVES), steps=6, sampler=odm,
                              ckpt_path=str(tmp_path / "ck" / "last.ckpt"))  # fmt: skip
    assert len(resumed) == 3
    for a, b in zip(full[3:], resumed, strict=True):
        assert b["train/loss/contrastive"] == a["train/loss/contrastive"]
        assert b["train/loss/image"] == a["train/loss/image"]
    assert again.datamodule.sampler.state_dict() == sampler.state_dict()


def test_a_weighting_that_does_not_know_the_objective_is_refused():
    model = DecoderLM(preset("tiny"), vocab_size=64)
    head = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=8)
    with pytest.raises(ConfigError, match="modalities="):
        BalancedLM(model, ModalityMean(), contrastive=head)
    with pytest.raises(ConfigError, match="d_model"):
        BalancedLM(model, ModalityMean(OBJECTIVES), contrastive=ContrastiveHead(8, 3, 8))


MOMENTUM = {"momentum": 0.9, "memory_size": 16}


def test_momentum_keys_and_memory_train_and_resume_exactly(store, tmp_path):
    """``momentum``: an EMA copy of the model gives the keys, moved after every step and never
    trained; ``memory_size``: past keys are negatives. Both are checkpointed (the EMA weights in
    the state dict, the memory as ``contrastive_memory``): a resumed run continues the
    uninterrupted one's losses exactly; a trained-model folder's head holds neither."""
    module, full, _ = train(store, ModalityMean(OBJECTIVES), steps=6, head_kw=MOMENTUM)
    assert len(full) == 6 and all(0 < s["train/loss/contrastive"] < 20 for s in full)
    encoder, online = module.key_encoder, module.model
    assert encoder is not None and not any(p.requires_grad for p in encoder.parameters())
    ema, now = next(encoder.model.parameters()), next(online.parameters())
    assert not torch.equal(ema, now)  # behind the online weights, not equal to them
    memory = module.contrastive.memory
    assert int(memory.written.min()) > 0 and memory.read(0).abs().sum() > 0
    assert not any(k.startswith("contrastive.memory") for k in module.contrastive.state_dict())
    train(store, ModalityMean(OBJECTIVES), steps=3, head_kw=MOMENTUM, ckpt_dir=tmp_path / "ck",
          schedule_steps=6)  # fmt: skip
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    assert ckpt["contrastive_memory"]["rows"].shape == (6, 16, 16)
    assert any(k.startswith("key_encoder.model.") for k in ckpt["state_dict"])
    _, resumed, _ = train(store, ModalityMean(OBJECTIVES), steps=6, head_kw=MOMENTUM,
                          ckpt_path=str(tmp_path / "ck" / "last.ckpt"))  # fmt: skip
    assert len(resumed) == 3
    for a, b in zip(full[3:], resumed, strict=True):
        assert b["train/loss/contrastive"] == a["train/loss/contrastive"]
        assert b["train/loss/text"] == a["train/loss/text"]


def test_gradnorm_at_the_weights_reads_the_step_backward_as_the_extra_backward_does(
    store, monkeypatch
):
    """GradNorm at the shared layer's weights (``measure_at="weights"``), with the contrastive
    objective: the norms split off the step's own backward (``BalancedLM._watch_shared``, no
    ``autograd.grad``) steer the weights step by step as one extra backward per objective does
    (the compiled model's path)."""
    import tokenize_mm.balance.weighting as weighting_module
    from tokenize_mm.balance.weighting import GradNormWeighting

    def gradnorm():
        return GradNormWeighting(OBJECTIVES, learning_rate=0.2, measure_at="weights")

    real_grad_norm = weighting_module._grad_norm
    with monkeypatch.context() as patch:
        patch.setattr(weighting_module, "_grad_norm",
                      lambda *a: pytest.fail("an extra backward"))  # fmt: skip
        _, hooked, _ = train(store, gradnorm(), steps=4)

    def no_watch(self):
        self._shared_split = None
        return None

    calls = []
    monkeypatch.setattr(BalancedLM, "_watch_shared", no_watch)
    monkeypatch.setattr(weighting_module, "_grad_norm",
                        lambda *a: calls.append(1) or real_grad_norm(*a))  # fmt: skip
    _, extra, _ = train(store, gradnorm(), steps=4)
    assert len(calls) == 4 * 4  # one extra backward per objective and step
    keys = [f"train/weight/{m}" for m in OBJECTIVES] + ["train/loss/contrastive"]
    for a, b in zip(hooked, extra, strict=True):
        assert [a[k] for k in keys] == pytest.approx([b[k] for k in keys], rel=1e-4)
    assert len({round(hooked[-1][k], 4) for k in keys[:4]}) > 1  # the weights did move
