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


def train(store, weighting, steps=4):
    store_dir, layout = store
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    head = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=16)
    module = BalancedLM(model, weighting, scheduler=partial(warmup_cosine, max_steps=steps),
                        layout_fingerprint=layout.fingerprint, contrastive=head)  # fmt: skip
    dm = StoreDataModule(str(store_dir), sampler=SAMPLERS["proportional"], context=128,
                         batch_size=4, expected_fingerprint=layout.fingerprint)  # fmt: skip
    recorder = StepRecorder()
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, callbacks=[SamplerFeedback(), recorder],
        limit_val_batches=2, val_check_interval=steps, enable_checkpointing=False,
        log_every_n_steps=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
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
    assert module.step_losses is not None and "contrastive" not in module.step_losses  # sampler


def test_a_weighting_that_does_not_know_the_objective_is_refused():
    model = DecoderLM(preset("tiny"), vocab_size=64)
    head = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=8)
    with pytest.raises(ConfigError, match="modalities="):
        BalancedLM(model, ModalityMean(), contrastive=head)
    with pytest.raises(ConfigError, match="d_model"):
        BalancedLM(model, ModalityMean(OBJECTIVES), contrastive=ContrastiveHead(8, 3, 8))
