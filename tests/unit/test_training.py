"""BalancedLM + StoreDataModule: per-modality metrics, skipped non-finite steps, absent
modalities, data state in checkpoints (and old checkpoints' migration), fingerprint refusal, the
run report from the logger's metrics."""

from __future__ import annotations

import math
import warnings
from functools import partial

import lightning as L
import pytest
import torch
from conftest import StepRecorder, make_examples

from tokenize_mm.balance.sampling import SAMPLERS
from tokenize_mm.balance.weighting import GradShareWeighting, LossWeighting
from tokenize_mm.cli.checkpoint import resolve_checkpoint
from tokenize_mm.cli.report import (
    MemoryLogger,
    RunMetrics,
    _equal_groups,
    _series,
    run_metrics,
    write_run_report,
)
from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.data import StoreMismatchError, merge_store, pretokenize
from tokenize_mm.data.datamodule import SamplerFeedback, StoreDataModule
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.system import BalancedLM
from tokenize_mm.sequence import VocabLayout


def fit(
    store_dir,
    layout,
    weighting,
    steps=4,
    sampler="proportional",
    ckpt_dir=None,
    ckpt_path=None,
    schedule_steps=None,
    logger=False,
    **kw,
):
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    module = BalancedLM(model, weighting,
                        scheduler=partial(warmup_cosine, max_steps=schedule_steps or steps),
                        layout_fingerprint=layout.fingerprint)  # fmt: skip
    dm = StoreDataModule(str(store_dir), sampler=SAMPLERS[sampler], context=128, batch_size=2,
                         expected_fingerprint=layout.fingerprint, **kw)  # fmt: skip
    recorder = StepRecorder()
    callbacks = [SamplerFeedback(), recorder]
    if ckpt_dir is not None:
        callbacks.append(L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True))
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
        enable_model_summary=False, callbacks=callbacks, limit_val_batches=2,
        val_check_interval=steps, enable_checkpointing=ckpt_dir is not None, log_every_n_steps=1,
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # As tmm-train resumes: a local file checked to load weights-only, then loaded so.
        trainer.fit(module, datamodule=dm, ckpt_path=resolve_checkpoint(ckpt_path),
                    weights_only=True)  # fmt: skip
    return module, recorder.steps, trainer


def test_balance_metrics_are_logged_every_step(store, tmp_path):
    store_dir, layout = store
    csv = L.pytorch.loggers.CSVLogger(tmp_path, name="logs")
    module, steps, trainer = fit(store_dir, layout, GradShareWeighting(), sampler="adaptive",
                                 logger=csv)  # fmt: skip
    assert len(steps) == 4
    last = steps[-1]
    for m in ("text", "image", "audio"):
        assert math.isfinite(last[f"train/loss/{m}"]) and last[f"train/tokens/{m}"] > 0
        assert 0 <= last[f"train/acc/{m}"] <= 1
    assert sum(last[f"train/grad_share/{m}"] for m in ("text", "image", "audio")) == pytest.approx(
        1
    )
    assert sum(last[f"train/token_share/{m}"] for m in ("text", "image", "audio")) == pytest.approx(
        1
    )
    assert last["train/dominance"] >= 1
    probs = [v for k, v in last.items() if k.startswith("sampling/prob/")]
    assert probs and sum(probs) == pytest.approx(1)
    assert any(k.startswith("val/loss/") for k in trainer.callback_metrics)
    assert trainer.datamodule.state_dict()["stream"]["batches"] == 4
    assert int(module.skipped_steps) == 0
    # The report's record is the logger's file: one row per step, numbered as global_step, with
    # the sampler's probabilities (logged by SamplerFeedback) in the step's own row.
    metrics = run_metrics(trainer.loggers)
    assert metrics.source.endswith("metrics.csv")
    assert [r["step"] for r in metrics.train] == [1, 2, 3, 4]
    assert all("train/loss/text" in r and any(k.startswith("sampling/prob/") for k in r)
               for r in metrics.train)  # fmt: skip
    assert metrics.train[-1]["train/grad_share/audio"] == last["train/grad_share/audio"]
    assert [r["step"] for r in metrics.val] == [4] and "val/loss/text" in metrics.val[0]


def test_dominance_mean_is_kept_on_the_host_and_reread_after_a_load(store):
    """train/dominance_mean is the running mean of every step's dominance, as the checkpointed
    buffers hold it, without reading them each step; a state dict load makes it read them again."""
    store_dir, layout = store
    module, steps, _ = fit(store_dir, layout, GradShareWeighting(), steps=3)
    values = [s["train/dominance"] for s in steps]
    assert steps[-1]["train/dominance_mean"] == pytest.approx(sum(values) / 3)
    assert float(module.dominance_sum) == pytest.approx(sum(values))
    assert int(module.dominance_count) == 3
    state = module.state_dict()
    state["dominance_sum"], state["dominance_count"] = torch.tensor(30.0).double(), torch.tensor(10)
    module.load_state_dict(state)
    assert module._dominance_host is None  # the next step starts from the loaded 30 / 10


def test_the_single_document_check_reads_the_host_batch(store, monkeypatch):
    """The training step decides the causal fast path on the batch before it moves to the device
    (one read of a host tensor) and hands the answer to the model, whose own check never runs."""
    from tokenize_mm.models import system, transformer
    from tokenize_mm.models.sparse_attention import causal_rows

    devices = []
    monkeypatch.setattr(system, "causal_rows",
                        lambda ids: devices.append(ids.device.type) or causal_rows(ids))  # fmt: skip

    in_training = []  # the model's own checks: validation's only (no gradient there)
    monkeypatch.setattr(transformer, "causal_rows",
                        lambda ids: in_training.append(torch.is_grad_enabled()) or causal_rows(ids))  # fmt: skip
    store_dir, layout = store
    fit(store_dir, layout, LossWeighting(), steps=2)
    assert devices == ["cpu", "cpu"] and not any(in_training)


class NaNOnce(LossWeighting):
    """Token mean, except that the second combine returns NaN; counts observe() calls."""

    def __init__(self):
        super().__init__()
        self.calls, self.observed = 0, 0

    def combine(self, losses, counts, shared=()):
        self.calls += 1
        total = super().combine(losses, counts, shared)
        return total * float("nan") if self.calls == 2 else total

    def observe(self, losses, grad_sq_norms):
        self.observed += 1


def test_non_finite_loss_skips_the_step_and_is_counted(store):
    store_dir, layout = store
    weighting = NaNOnce()
    module, _, trainer = fit(store_dir, layout, weighting, steps=3)
    assert int(module.skipped_steps) == 1
    assert weighting.calls == 3 and weighting.observed == 2  # the NaN never reached the balancer
    # the skipped batch advances the schedule (global_step) but updates no weight and no state
    optimizer = trainer.optimizers[0]
    assert all(int(optimizer.state[p]["step"]) == 2 for p in module.model.parameters())
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_absent_modalities_never_divide_by_zero(tmp_path, tiny_text):
    text_only = [e for e in make_examples(24) if e.image is None and not e.audio]
    dirs = {"text": str(tiny_text.save(tmp_path / "t"))}
    pretokenize(text_only, dirs, tmp_path / "s")
    merge_store(tmp_path / "s")
    layout = VocabLayout.from_artifacts(dirs)
    _, steps, _ = fit(tmp_path / "s", layout, GradShareWeighting(), steps=2)
    assert math.isfinite(steps[-1]["train/loss/text"]) and "train/loss/audio" not in steps[-1]
    assert steps[-1]["train/weight/image"] == 0.0


def test_checkpoint_holds_balance_state_and_refuses_other_layouts(store, tmp_path, tiny_text):
    store_dir, layout = store
    fit(store_dir, layout, GradShareWeighting(), steps=3, sampler="adaptive",
                       ckpt_dir=tmp_path / "ckpt")  # fmt: skip
    ckpt = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    data = ckpt["StoreDataModule"]  # the data module's own state: stream and sampler
    assert data["version"] == 1 and data["stream"]["batches"] == 3
    assert data["stream"]["sampler"] is not None
    assert ckpt["balance"] == {"layout_fingerprint": layout.fingerprint}
    assert any(k.startswith("weighting.") for k in ckpt["state_dict"])
    other = VocabLayout({"text": tiny_text.info}, {"text": "another"})
    with pytest.raises(StoreMismatchError):
        fit(store_dir, other, LossWeighting(), steps=1)


def test_resume_reproduces_the_uninterrupted_run(store, tmp_path):
    """Stop after step k, resume from the checkpoint: steps k+1..n have the uninterrupted run's
    losses exactly (weighting, sampler and data position included)."""
    store_dir, layout = store
    _, full, _ = fit(store_dir, layout, GradShareWeighting(), steps=6, sampler="adaptive")
    fit(store_dir, layout, GradShareWeighting(), steps=3, sampler="adaptive",
        ckpt_dir=tmp_path / "ck", schedule_steps=6)  # stopped at 3 of a 6-step run  # fmt: skip
    _, resumed, _ = fit(store_dir, layout, GradShareWeighting(), steps=6, sampler="adaptive",
                        ckpt_path=str(tmp_path / "ck" / "last.ckpt"))  # fmt: skip
    assert len(resumed) == 3
    _assert_same_steps(full[3:], resumed)
    # A checkpoint of the earlier layout (stream and sampler in BalancedLM's "balance" entry, the
    # stream taken when the batch was drawn, the sampler one update newer) resumes as exactly.
    ckpt = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)
    stream = ckpt.pop("StoreDataModule")["stream"]
    fresh = StoreDataModule(str(store_dir), sampler=SAMPLERS["adaptive"], context=128, batch_size=2)
    fresh.setup()  # an older sampler state than the saved one: it must be overridden
    old_stream = dict(stream, sampler=fresh.sampler.state_dict())
    assert old_stream["sampler"] != stream["sampler"]
    ckpt["balance"].update(stream=old_stream, sampler=stream["sampler"])
    torch.save(ckpt, tmp_path / "old.ckpt")
    _, legacy, _ = fit(store_dir, layout, GradShareWeighting(), steps=6, sampler="adaptive",
                       ckpt_path=str(tmp_path / "old.ckpt"))  # fmt: skip
    _assert_same_steps(full[3:], legacy)


class SigtermAfterValidation(L.Callback):
    """Raises Lightning's SIGTERM flag (what its handler does) as a validation ends, once."""

    def __init__(self, after_step: int):
        self.after_step, self.done = after_step, False

    def on_validation_end(self, trainer, pl_module):
        if trainer.global_step >= self.after_step and not self.done:
            self.done = True
            trainer._signal_connector.received_sigterm = True


def test_resume_after_sigterm_at_a_validation_end_logs_each_step_once(store, tmp_path):
    """SIGTERM as a step's validation ends: the interrupted checkpoint's run resumes at the next
    step and logs every step once, under its own number (Lightning finished that validation
    again and counted the step twice, so every row was one step ahead and the report split each
    step in two)."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from tokenize_mm.cli.callbacks import InterruptCheckpoint

    store_dir, layout = store

    def trainer_fit(max_steps, callbacks, ckpt_path=None):
        torch.manual_seed(0)
        model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
        module = BalancedLM(model, LossWeighting(),
                            scheduler=partial(warmup_cosine, max_steps=100))  # fmt: skip
        dm = StoreDataModule(str(store_dir), sampler=SAMPLERS["proportional"], context=128,
                             batch_size=2)  # fmt: skip
        logger = MemoryLogger()
        trainer = L.Trainer(
            max_steps=max_steps, accelerator="cpu", devices=1, logger=logger,
            enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
            callbacks=[SamplerFeedback(), *callbacks], limit_val_batches=2,
            val_check_interval=2, enable_checkpointing=True, num_sanity_val_steps=0,
            default_root_dir=tmp_path,  # Lightning's own checkpoints, not the working directory
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        return trainer, logger

    saver = InterruptCheckpoint(tmp_path / "ckpt")
    with pytest.raises(SIGTERMException):
        trainer_fit(100, [saver, SigtermAfterValidation(after_step=2)])
    step = torch.load(saver.ckpt_path, weights_only=False, map_location="cpu")["global_step"]
    assert step == 2
    trainer, logger = trainer_fit(step + 2, [], ckpt_path=saver.ckpt_path)
    assert trainer.global_step == step + 2
    assert [int(r["step"]) for r in RunMetrics.from_rows(logger.rows).train] == [3, 4]


def _assert_same_steps(expected, got):
    assert len(expected) == len(got)
    for a, b in zip(expected, got, strict=True):
        losses = sorted(k for k in a if k.startswith(("train/loss", "sampling/prob/")))
        assert losses == sorted(k for k in b if k.startswith(("train/loss", "sampling/prob/")))
        assert [a[k] for k in losses] == [b[k] for k in losses]


DDP_SCRIPT = """
import json, sys, warnings
from functools import partial
import lightning as L, torch
from tokenize_mm.balance import AdaptiveSampler, {name}
from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.data.datamodule import SamplerFeedback, StoreDataModule
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.system import BalancedLM
from tokenize_mm.sequence import VocabLayout

class Dump(L.Callback):
    def __init__(self):
        self.step_weights = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        # this rank's own combine of the step (DDP does not broadcast the weighting's state)
        self.step_weights.append(module.weighting.weights())

    def on_train_end(self, trainer, module):
        trainer.save_checkpoint("{out}/ddp.ckpt")  # on every rank: the data state is gathered
        params = torch.cat([p.detach().flatten() for p in module.model.parameters()])
        out = {{"weights": module.weighting.weights(), "step_weights": self.step_weights,
               "state": {{k: v.tolist() for k, v in module.weighting.state_dict().items()}},
               "probabilities": trainer.datamodule.sampler.probabilities(),
               "ddp_ignores": sorted(trainer.strategy.model.parameters_to_ignore),
               "weighting_buffers": sorted("weighting." + n for n, _ in module.weighting.named_buffers()),
               "params": params.tolist()[:2000], "param_sum": float(params.double().sum())}}
        with open(f"{out}/rank{{trainer.global_rank}}.json", "w") as fh:
            json.dump(out, fh)

if __name__ == "__main__":
    warnings.simplefilter("ignore")
    layout = VocabLayout.load("{store}/layout.json")
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    module = BalancedLM(model, {weighting}, scheduler=partial(warmup_cosine, max_steps=4))
    dm = StoreDataModule("{store}", sampler=AdaptiveSampler, context=128, batch_size=2)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", devices=2, strategy="ddp_spawn",
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, limit_val_batches=2, val_check_interval=2,
                        callbacks=[SamplerFeedback(), Dump()])
    trainer.fit(module, datamodule=dm)
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "weighting", ["GradShareWeighting()", "FAMOWeighting()", "GradModulation(warmup_steps=1)"]
)
def test_ddp_ranks_hold_identical_balance_state_and_parameters(store, tmp_path, weighting):
    """Two CPU processes (gloo): every statistic a weighting or sampler uses is all-reduced, so
    after N steps both ranks hold the same weights, probabilities and parameters, although each
    rank trained on different documents, and DDP never broadcasts the weighting's state."""
    import json
    import subprocess
    import sys

    store_dir, _ = store
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT.format(store=store_dir, out=tmp_path, weighting=weighting,
                                        name=weighting.split("(")[0]))  # fmt: skip
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            timeout=600, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["weights"] == r1["weights"] and r0["state"] == r1["state"]
    # every step's combination weighs the objectives alike on both ranks (FAMO once took each
    # rank's own loss, not the global mean)
    assert len(r0["step_weights"]) == 4 and r0["step_weights"] == r1["step_weights"]
    assert r0["probabilities"] == r1["probabilities"]
    # the state stays on the host, out of DDP's broadcasts: the ranks agree by computing alike
    assert r0["ddp_ignores"] == r0["weighting_buffers"] and r0["ddp_ignores"]
    assert r0["params"] == r1["params"] and r0["param_sum"] == r1["param_sum"]
    assert len(set(r0["weights"].values())) > 1  # the balancer did act
    # The checkpoint keeps every rank's data position, not rank 0's alone.
    data = torch.load(tmp_path / "ddp.ckpt", weights_only=True)["StoreDataModule"]
    ranks = data["stream"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["batches"] == 4 for r in ranks)
    assert ranks[0]["pending"] != ranks[1]["pending"]  # each rank's own packer buffer


def test_run_report_from_memory_rows_keeps_equal_lines_visible(tmp_path):
    """Without a CSV logger the report reads a MemoryLogger's rows; equal weights are noted."""
    logger = MemoryLogger()
    for step in range(3):  # as Lightning logs: a train row at the steps done before it
        logger.log_metrics({"train/loss/text": 2.0 - step / 10, "train/weight/text": 1.0,
                            "train/weight/image": 1.0, "epoch": 0}, step=step)  # fmt: skip
    logger.log_metrics({"val/loss/text": 1.5, "epoch": 0}, step=2)  # after step 3
    metrics = run_metrics([logger])
    assert [r["step"] for r in metrics.train] == [1, 2, 3] and metrics.last_val()["step"] == 3
    report = write_run_report(metrics, tmp_path, {"command": "x", "seconds": 1.0}).read_text()
    assert "steps 1–3 (3 trained here)" in report and "| text | 1.800 | 1.500 |" in report
    assert (tmp_path / "report.png").stat().st_size > 0
    assert RunMetrics().steps is None
    assert _equal_groups(_series(metrics.train, "train/weight/")) == ["image = text"]


def test_run_report_says_where_the_time_went(tmp_path):
    """report.md names each stage that ran with its seconds, in order, and what lay between
    them; without stages (a cache-served run's are still there) no such line."""
    logger = MemoryLogger()
    logger.log_metrics({"train/loss/text": 2.0, "epoch": 0}, step=0)
    stages = {"fitting image_small": 22.4, "pretokenizing": 8.1,
              "training (validation included)": 146.6}  # fmt: skip
    settings = {"command": "x", "seconds": 180.0, "stages": stages}
    report = write_run_report(run_metrics([logger]), tmp_path, settings).read_text()
    assert ("Where those seconds went: fitting image_small 22 s, pretokenizing 8 s, training "
            "(validation included) 147 s; 3 s between them") in report  # fmt: skip
    plain = write_run_report(run_metrics([logger]), tmp_path, {"command": "x", "seconds": 1.0})
    assert "Where those seconds went" not in plain.read_text()


def test_run_report_carries_tokenizer_health(tmp_path):
    """report.md has the rates table and a warning line per collapsed codebook
    (cli.common.tokenizer_health over the tokenizers' held-out metrics)."""
    from tokenize_mm.cli.common import rates_table, tokenizer_health
    from tokenize_mm.tokenizers.base import TokenizerInfo

    logger = MemoryLogger()
    logger.log_metrics({"train/loss/audio": 0.06, "epoch": 0}, step=0)
    infos = {
        "audio_small": TokenizerInfo(
            modality="audio", kind="audio.codec", codebook_size=256, num_codebooks=1,
            sample_rate=24_000, frame_rate=50.0, tokens_per_second=50.0,
            metrics={"perplexity_0": 1.02, "used_fraction_0": 0.043, "si_snr_db": -53.6},
        ),
        "image_small": TokenizerInfo(
            modality="image", kind="image.vq", codebook_size=256, num_codebooks=1,
            image_size=64, grid=(8, 8), tokens_per_image=64,
            metrics={"perplexity": 90.0, "used_fraction": 0.8, "psnr_db": 14.0},
        ),
    }  # fmt: skip
    health = tokenizer_health(infos)
    assert len(health) == 1 and "audio_small" in health[0] and "1.0 of 256" in health[0]
    settings = {"command": "x", "seconds": 1.0, "tokenizers": rates_table(infos), "health": health}
    report = write_run_report(run_metrics([logger]), tmp_path, settings).read_text()
    assert "## Tokenizers" in report and "| audio_small | audio.codec | 256 |" in report
    assert "**Warning:** codebook collapse in audio_small's held-out data" in report
    healthy = {"image_small": infos["image_small"]}
    settings = {"tokenizers": rates_table(healthy), "health": tokenizer_health(healthy)}
    report = write_run_report(run_metrics([logger]), tmp_path, settings).read_text()
    assert "No codebook below the collapse floors" in report
