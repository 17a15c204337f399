"""Model FLOPs per position (models/flops.py) and the ``Throughput`` callback (cli/throughput.py):
positions per second, model TFLOP/s and MFU logged while training, and shown in the run report."""

from __future__ import annotations

import dataclasses
import warnings
from functools import partial

import lightning as L
import pytest
import torch
from conftest import StepRecorder

from tokenize_mm.balance.sampling import SAMPLERS
from tokenize_mm.balance.weighting import LossWeighting
from tokenize_mm.cli.report import MemoryLogger, run_metrics, write_run_report
from tokenize_mm.cli.throughput import Throughput
from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.data.datamodule import SamplerFeedback, StoreDataModule
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.flops import block_parameters, flops_per_position, matmul_tflops
from tokenize_mm.models.system import BalancedLM


def test_flops_follow_palms_count():
    config = preset("small")  # d 128, d_ff 512, 4 layers
    d, f, layers, vocab, length = 128, 512, 4, 1000, 512
    assert block_parameters(config) == 4 * d * d + 3 * d * f
    lm = 6 * (layers * block_parameters(config) + d * vocab) + 12 * layers * d * length
    assert flops_per_position(config, vocab, length) == lm
    trunk = 6 * layers * block_parameters(config) + 12 * layers * d * length
    assert flops_per_position(config, vocab, length, contrastive=True) == lm + trunk
    assert flops_per_position(config, vocab, length, contrastive=True, momentum=True) == (
        pytest.approx(lm + trunk * 4 / 3)
    )
    late = dataclasses.replace(config, fusion="late", late_layers=2)  # one tower per position
    assert flops_per_position(late, vocab, length) > flops_per_position(config, vocab, length)
    assert flops_per_position(late, vocab, length) == (
        6 * (6 * block_parameters(config) + d * vocab) + 12 * 6 * d * length
    )


def test_matmul_rate_is_measured():
    assert 0 < matmul_tflops("cpu", size=64, seconds=0.01) < 100


def test_throughput_is_logged_and_reported(store, tmp_path):
    store_dir, layout = store
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    module = BalancedLM(model, LossWeighting(), scheduler=partial(warmup_cosine, max_steps=4),
                        layout_fingerprint=layout.fingerprint)  # fmt: skip
    dm = StoreDataModule(str(store_dir), sampler=SAMPLERS["proportional"], context=128,
                         batch_size=2, expected_fingerprint=layout.fingerprint)  # fmt: skip
    recorder, memory = StepRecorder(), MemoryLogger()
    trainer = L.Trainer(
        max_steps=4, accelerator="cpu", devices=1, logger=memory, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1, val_check_interval=4,
        enable_checkpointing=False, log_every_n_steps=1,
        callbacks=[SamplerFeedback(), Throughput(every_n_steps=2, peak_tflops=0.5), recorder],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=dm)
    assert module.last_batch_shape == (2, 128)
    windows = [s for s in recorder.steps if "perf/mfu" in s]
    assert windows, "no perf/* metrics were logged"
    last = windows[-1]
    assert last["perf/positions_per_s"] > 0 and last["perf/step_s"] > 0
    assert last["perf/peak_tflops"] == 0.5
    assert last["perf/mfu"] == pytest.approx(last["perf/model_tflops"] / 0.5, rel=1e-5)
    per = flops_per_position(model.config, model.vocab_size, 128)
    assert last["perf/model_tflops"] == pytest.approx(
        per * last["perf/positions_per_s"] / 1e12, rel=1e-4
    )
    report = write_run_report(run_metrics([memory]), tmp_path, {"command": "test"})
    text = report.read_text()
    assert "mean of 1 windows after the first" in text  # 4 steps: windows 0 and 1, deduplicated
    assert "positions/s" in text and "MFU" in text and "(4 trained here)" in text


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="every_n_steps"):
        Throughput(every_n_steps=0)
    with pytest.raises(ValueError, match="peak_tflops"):
        Throughput(peak_tflops=0.0)
