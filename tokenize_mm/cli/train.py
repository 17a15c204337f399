"""``tmm-train`` / ``make train``: the main job, the whole pipeline in one read.

data source → tokenizers (fitted once per config, source and tokenizer code, then reused from
``cache_dir``) → pretokenized store (reused likewise; its token accounting beside it) →
``BalancedLM`` trained by Lightning with the configured loss weighting and sampler → run report
(``report.md``, ``report.png``, built from the logger's ``metrics.csv``) and checkpoints in
``out_dir``.

Status lines go through ``logging`` (logger ``tokenize_mm.cli.train``), so Hydra's job log
(``train.log``) holds them as well as the console; the final report is printed to stdout.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shlex
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from tokenize_mm.cli.checkpoint import resolve_checkpoint
from tokenize_mm.cli.common import config_dir, fit_from_source, rates_table, tokenizer_health
from tokenize_mm.cli.errors import exits_cleanly
from tokenize_mm.cli.help import run_or_help
from tokenize_mm.cli.validate import (
    check_compile,
    check_fit_device,
    check_image_grid,
    check_train_config,
)
from tokenize_mm.core.atomic import check_replaceable
from tokenize_mm.core.modalities import MODALITIES

log = logging.getLogger("tokenize_mm.cli.train")  # __name__, also when run with python -m


def _key(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def code_identity(*packages: str) -> str:
    """A hash of the source files of ``tokenize_mm.<package>`` for each package: cached
    tokenizers and stores are keyed by it too, so a change to the code that made them (a fix to
    an encoder's init, say) fits and writes them again instead of reusing stale ones."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            digest.update(str(path.relative_to(root)).encode() + path.read_bytes())
    return digest.hexdigest()


def source_identity(source_cfg: DictConfig) -> str:
    """What a cached tokenizer or store depends on: the source config, and a manifest's bytes."""
    from tokenize_mm.tokenizers.artifact import sha256_file

    text = OmegaConf.to_yaml(source_cfg)
    path = source_cfg.get("path")
    if path and Path(path).is_file():
        text += sha256_file(Path(path))
    return text


def fit_or_reuse(tcfg: DictConfig, source: Any, source_id: str, cache: Path, split: str,
                 seconds: dict[str, float] | None = None) -> Path:  # fmt: skip
    """A tokenizer artifact for ``tcfg`` on ``source``: the cached one, else fitted and cached
    (the fit's wall seconds then in ``seconds["fitting <name>"]``)."""
    from tokenize_mm.tokenizers.artifact import load_tokenizer
    from tokenize_mm.tokenizers.errors import ArtifactError

    code = code_identity("tokenizers", "core")  # core: their errors, files, schedule
    path = (
        cache
        / "tokenizers"
        / f"{tcfg.name}-{_key(OmegaConf.to_yaml(tcfg), source_id, split, code)}"
    )
    if (path / "manifest.json").is_file():
        try:
            load_tokenizer(path)
            log.info("reusing %s from %s", tcfg.name, path)
            return path
        except ArtifactError as err:  # damaged cache: fit again
            log.warning("cached %s unusable (%s); fitting again", path, err)
    if path.is_dir():  # the cache's own entry, damaged or partial: cleared, as save would not
        shutil.rmtree(path)  # replace a folder it cannot recognise as an artifact
    check_fit_device(tcfg, config_dir())  # a GPU-sized config on a CPU: refused, naming the CPU one
    log.info("fitting %s on %s ...", tcfg.name, type(source).__name__)
    start = time.perf_counter()
    fit_from_source(instantiate(tcfg.fit), tcfg.modality, source, split).save(path)
    if seconds is not None:
        seconds[f"fitting {tcfg.name}"] = time.perf_counter() - start
    return path


def store_or_reuse(source: Any, artifacts: dict[str, Path], layout: Any, data: DictConfig,
                   source_id: str, cache: Path, seconds: dict[str, float] | None = None
                   ) -> Path:  # fmt: skip
    """The pretokenized store of ``source`` under these tokenizers: cached, else written (its
    wall seconds then in ``seconds["pretokenizing"]``)."""
    from tokenize_mm.data.accounting import write_report
    from tokenize_mm.data.store import StoreResumeError, TokenStore, merge_store, pretokenize
    from tokenize_mm.sequence import SpanOrder

    # A random span order depends on its seed (data.seed); the other orders do not.
    order_key = f"{data.span_order}/{data.seed}" if data.span_order == "random" else data.span_order
    code = code_identity("data", "sequence", "core")
    path = cache / "stores" / _key(layout.fingerprint, source_id, order_key, code)
    if (path / "store.json").is_file():
        log.info("reusing the store %s", path)
        return path
    log.info("pretokenizing into %s ...", path)
    start = time.perf_counter()
    order = SpanOrder(data.span_order, seed=data.seed)
    try:
        pretokenize(source, artifacts, path, audio_pattern=data.audio_pattern, order=order,
                    workers=data.workers)  # fmt: skip
    except StoreResumeError as err:
        # A partial store of this cache key whose source changed since (a manifest's files were
        # replaced, say): the cache is ours, so it is written again rather than mixed.
        log.warning("the partial store in %s is of other data (%s); writing it again", path, err)
        shutil.rmtree(path)
        pretokenize(source, artifacts, path, audio_pattern=data.audio_pattern, order=order,
                    workers=data.workers)  # fmt: skip
    merge_store(path)
    write_report(TokenStore(path), path / "accounting", "tmm-train (store of the main job)")
    if seconds is not None:
        seconds["pretokenizing"] = time.perf_counter() - start
    return path


@dataclass(frozen=True)
class Prepared:
    """What a training run reads, built (or reused) by ``prepare``.

    Attributes:
        source: the data source (``cfg.data.source`` instantiated).
        source_id: the source's identity, as the caches key it.
        artifacts: modality → the fitted tokenizer's artifact folder.
        layout: the global vocabulary over those tokenizers.
        store: the merged pretokenized store of ``source``.
        seconds: wall seconds of each stage that ran (``fitting <name>``, ``pretokenizing``);
            stages served from the cache are left out.
    """

    source: Any
    source_id: str
    artifacts: dict[str, Path]
    layout: Any
    store: Path
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


def prepare(cfg: DictConfig) -> Prepared:
    """Tokenizers (fitted or reused from ``cfg.cache_dir``), their layout and the store.

    The config's numbers are checked first (``check_train_config``), before any fit.
    """
    from tokenize_mm.sequence import VocabLayout

    check_train_config(cfg)
    cache = Path(cfg.cache_dir)
    source, source_id = instantiate(cfg.data.source), source_identity(cfg.data.source)
    seconds: dict[str, float] = {}
    artifacts = {m: fit_or_reuse(cfg.tokenizers[m], source, source_id, cache, cfg.fit_split,
                                 seconds=seconds)
                 for m in MODALITIES}  # fmt: skip
    layout = VocabLayout.from_artifacts(artifacts, audio_pattern=cfg.data.audio_pattern)
    infos = {cfg.tokenizers[m].name: info for m, info in layout.infos.items()}
    log.info("tokenizers:\n%s", rates_table(infos))
    for message in tokenizer_health(infos):  # also for tokenizers reused from the cache
        log.warning("%s", message)
    store = store_or_reuse(source, artifacts, layout, cfg.data, source_id, cache, seconds=seconds)
    return Prepared(source, source_id, artifacts, layout, store, seconds)


def build_module(cfg: DictConfig, layout: Any) -> Any:
    """The ``BalancedLM`` of ``cfg``: model, loss weighting and optimiser settings; with
    ``compile``, the model's forward compiled in place (``torch.compile``)."""
    from tokenize_mm.models import DecoderLM, allowed_ids_mask
    from tokenize_mm.models.system import OBJECTIVES, BalancedLM

    config = instantiate(cfg.model)
    info = layout.infos.get("image")
    check_image_grid(config.image_grid, info.grid if info is not None else None)
    model = DecoderLM(config, vocab_size=layout.vocab_size)
    if cfg.model.restricted_softmax:
        model.set_allowed_ids(allowed_ids_mask(layout))
    head, weighting_args = None, {}
    if cfg.get("contrastive"):  # conf/contrastive/: one more objective, weighted like the others
        head = instantiate(cfg.contrastive)(d_model=model.d_model, num_modalities=len(MODALITIES))
        weighting_args = {"modalities": list(OBJECTIVES)}
    module = BalancedLM(
        model, instantiate(cfg.balance.weighting, **weighting_args),
        optimizer=instantiate(cfg.optimizer), scheduler=instantiate(cfg.scheduler),
        layout_fingerprint=layout.fingerprint, contrastive=head,
    )  # fmt: skip
    # after BalancedLM: a momentum encoder copies the eager model
    if backend := check_compile(cfg.get("compile", False)):
        model.compile(backend=backend)
    return module


def fresh_spec(cfg: DictConfig, prepared: Prepared) -> Any:
    """``data.fresh``: the spec of the fresh built-in examples to train on (else ``None``)."""
    from tokenize_mm.data.fresh import FreshSpec
    from tokenize_mm.sequence import SpanOrder

    if not cfg.data.get("fresh", False):
        return None
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    source.pop("_target_", None)
    spec = FreshSpec(
        source=source, tokenizer_dirs={m: str(p) for m, p in prepared.artifacts.items()},
        audio_pattern=cfg.data.audio_pattern, order=SpanOrder(cfg.data.span_order, seed=cfg.data.seed),
        group_size=cfg.data.get("hard_negatives", 1),
    )  # fmt: skip
    if not cfg.data.get("fresh_cache", True):
        return spec
    # runs of the same spec (a sweep's strategies at one seed) render each example once; the
    # key holds the renderer's and the tokenizers' code, as the store's does
    identity = json.dumps(spec.identity(), sort_keys=True)
    code = code_identity("data", "sequence", "tokenizers", "core")
    folder = Path(cfg.cache_dir) / "fresh" / _key(identity, code)
    return dataclasses.replace(spec, cache_dir=str(folder))


def build_datamodule(cfg: DictConfig, prepared: Prepared) -> Any:
    """The train stream (with ``cfg``'s sampler) and the store's validation batches; the train
    stream reads the store's train split, or fresh built-in examples with ``data.fresh``."""
    from tokenize_mm.data.datamodule import StoreDataModule

    return StoreDataModule(
        str(prepared.store), sampler=instantiate(cfg.balance.sampling, _convert_="all"),
        context=cfg.data.context, batch_size=cfg.data.batch_size,
        buffer_size=cfg.data.buffer_size, split_spans=cfg.data.split_spans, seed=cfg.data.seed,
        expected_fingerprint=prepared.layout.fingerprint, fresh=fresh_spec(cfg, prepared),
        fresh_ahead=cfg.data.workers if cfg.data.get("fresh_ahead", True) else 0,
    )  # fmt: skip


@dataclass
class Run:
    """A finished ``train`` call: the trained module, its data, trainer and logged metrics."""

    module: Any
    data: Any
    trainer: Any
    metrics: Any  # cli.report.RunMetrics: the rows the run's logger holds
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # stage: wall seconds


def _refuse_mixed_checkpoints(callbacks: list[Any]) -> None:
    """A fresh run into a folder that holds checkpoints would write its own among an earlier
    run's (and ``last.ckpt`` over theirs): refuse, and say how to resume or start afresh."""
    for callback in callbacks:
        folder = getattr(callback, "dirpath", None)
        if folder and any(Path(folder).glob("*.ckpt")):
            raise FileExistsError(
                f"{folder} holds checkpoints of an earlier run. Resume from one with "
                f"ckpt_path={folder}/last.ckpt, or start afresh in a new out_dir"
            )


def checkpoint_step(ckpt_path: str | None) -> int | None:
    """The ``global_step`` a checkpoint file was saved at (``None``: no file, or an alias)."""
    import torch

    if ckpt_path is None or not Path(ckpt_path).is_file():
        return None
    return int(torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
               .get("global_step", 0))  # fmt: skip


def run_callbacks(cfg: DictConfig) -> list[Any]:
    """The configured callbacks, plus what every run needs when they lack it: ``SamplerFeedback``
    (the sampler learns from the losses) and ``LogProgress`` (progress in the log when no bar)."""
    from tokenize_mm.cli.callbacks import LogProgress
    from tokenize_mm.data.datamodule import SamplerFeedback

    callbacks = [instantiate(c) for c in (cfg.callbacks or {}).values()]
    for needed in (SamplerFeedback, LogProgress):
        if not any(isinstance(c, needed) for c in callbacks):
            callbacks.append(needed())
    return callbacks


def train(cfg: DictConfig, prepared: Prepared) -> Run:
    """Seed, build the module and data of ``cfg`` and fit them (resuming from ``cfg.ckpt_path``).

    The trainer's logger is ``cfg.logger`` (or, without one, a ``MemoryLogger`` that keeps the
    rows for the report). Lightning's progress bar is turned off when stdout is not a terminal;
    ``LogProgress`` logs a line every few steps instead.
    """
    import lightning as L
    from lightning.pytorch.callbacks import Checkpoint
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from tokenize_mm.cli.report import MemoryLogger, csv_logger, run_metrics

    # BalancedLM pulls its batches (training_step(dataloader_iter)) so that none is drawn ahead
    # of a sampler update; Lightning flags that signature as experimental on every run.
    warnings.filterwarnings("ignore", message=".*dataloader_iter.*")
    ckpt_path = resolve_checkpoint(cfg.ckpt_path)  # local, weights-only: never unpickles code
    interactive = sys.stdout.isatty()
    callbacks = run_callbacks(cfg)
    if ckpt_path is None:
        _refuse_mixed_checkpoints(callbacks)
    L.seed_everything(cfg.seed, verbose=False)
    module, data = build_module(cfg, prepared.layout), build_datamodule(cfg, prepared)
    logger = instantiate(cfg.logger) if cfg.logger else MemoryLogger()
    found = csv_logger([logger])
    if found is not None:
        _ = found.log_dir  # fix its version now (a spawned process would pick the next one)
    options: dict[str, Any] = {}
    if cfg.trainer.get("enable_progress_bar", True) and not interactive:
        options["enable_progress_bar"] = False  # a bar in a file: KB of carriage returns a line
    checkpoints = any(isinstance(c, Checkpoint) for c in callbacks)
    trainer = instantiate(cfg.trainer, logger=logger, callbacks=callbacks,
                          enable_checkpointing=checkpoints, **options)  # fmt: skip
    start = time.perf_counter()
    try:
        trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        # Lightning stops on SIGTERM with SystemExit(None), exit status 0 as if the run had
        # finished; InterruptCheckpoint has saved by now. Exit as a process killed by it would.
        log.warning("stopped by SIGTERM at step %d", trainer.global_step)
        raise SystemExit(128 + signal.SIGTERM) from None
    # the fresh examples rendered before the first step run inside fit (the datamodule's setup)
    ahead = data.ahead_seconds
    seconds = {"rendering fresh examples ahead": ahead} if ahead else {}
    seconds["training (validation included)"] = time.perf_counter() - start - ahead
    return Run(module, data, trainer, run_metrics(trainer.loggers), seconds)


def checkpoint_folders(trainer: Any) -> list[Path]:
    """The folders this run's checkpoint callbacks wrote checkpoints into."""
    from lightning.pytorch.callbacks import Checkpoint

    folders = {Path(c.dirpath) for c in trainer.callbacks
               if isinstance(c, Checkpoint) and getattr(c, "dirpath", None)}  # fmt: skip
    return sorted(f for f in folders if any(f.glob("*.ckpt")))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@exits_cleanly("tmm-train")
def hydra_main(cfg: DictConfig) -> None:
    from tokenize_mm.cli.alignment import alignment_lines
    from tokenize_mm.cli.report import write_run_report
    from tokenize_mm.models.bundle import MODEL_WHAT, is_model_dir, save_trained_model

    start = time.perf_counter()
    # before any work: the model folder written at the end must not replace a user's folder
    check_replaceable(Path(cfg.out_dir) / "model", is_model_dir, MODEL_WHAT)
    step = checkpoint_step(resolve_checkpoint(cfg.ckpt_path))
    if step is not None and step >= cfg.trainer.max_steps:
        log.warning(
            "%s is at step %d and trainer.max_steps=%d: that run is finished, nothing to train "
            "and no report written (raise trainer.max_steps to train on)",
            cfg.ckpt_path, step, cfg.trainer.max_steps,
        )  # fmt: skip
        return
    prepared = prepare(cfg)
    run = train(cfg, prepared)
    if run.trainer.global_rank != 0:
        return
    out = Path(cfg.out_dir)
    if not run.metrics.train:
        log.warning(
            "no training step was logged (%s): nothing trained, so no report written",
            f"resumed from {cfg.ckpt_path}, already at trainer.max_steps?" if cfg.ckpt_path
            else f"no metrics in {run.metrics.source}",
        )  # fmt: skip
        return
    saving = time.perf_counter()
    model_dir = save_trained_model(
        out / "model", run.module.model, run.module.contrastive, prepared.artifacts,
        prepared.layout, step=run.trainer.global_step,
    )  # fmt: skip
    stages = {**prepared.seconds, **run.seconds, "saving the model": time.perf_counter() - saving}
    infos = {cfg.tokenizers[m].name: info for m, info in prepared.layout.infos.items()}
    settings = {
        "command": shlex.join(sys.orig_argv), "seconds": time.perf_counter() - start,
        "stages": stages,
        "weighting": cfg.balance.weighting._target_.rsplit(".", 1)[-1],
        "sampling": run.data.sampler.name, "store": str(prepared.store),
        "tokenizers": rates_table(infos), "health": tokenizer_health(infos),
        "alignment": alignment_lines(cfg, prepared.artifacts, prepared.layout, run.module),
    }  # fmt: skip
    report = write_run_report(run.metrics, out, settings)
    print(report.read_text(encoding="utf-8"), flush=True)
    log.info("run report and plots in %s", out)
    log.info("trained model (weights, tokenizers; tmm-search reads it) in %s", model_dir)
    if run.metrics.source not in ("memory", "none"):
        log.info("metrics per step in %s", run.metrics.source)
    for folder in checkpoint_folders(run.trainer):
        log.info("checkpoints in %s", folder)


def main() -> None:
    """``tmm-train``: ``--help`` is ``cli/help.py``'s; anything else goes to Hydra."""
    run_or_help(hydra_main, "train")


if __name__ == "__main__":
    main()
