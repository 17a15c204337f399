"""Check a run's numbers before any work: a bad value fails at once, naming its key.

``trainer.max_steps=-1`` used to run forever and ``trainer.max_steps=abc`` ended in a bare
``TypeError`` after the tokenizers were fitted. ``check_train_config`` reads every number the main
job uses and raises ``ConfigError`` naming the key, the value and what is allowed.
``check_fit_device`` refuses a tokenizer config sized for a GPU on a machine without one, naming
the CPU-sized configs of its modality. ``check_image_grid`` holds ``model.image_grid`` to the image
tokenizer's grid: from the fit's architecture before any work, from the artifact once it exists.
"""

from __future__ import annotations

import math
import operator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from tokenize_mm.core.errors import ConfigError

# key → (kind, smallest allowed, largest allowed or None); "int" refuses bools and floats.
TRAIN_NUMBERS: dict[str, tuple[str, float, float | None]] = {
    "seed": ("int", 0, 2**32 - 1),
    "trainer.max_steps": ("int", 1, None),
    "trainer.log_every_n_steps": ("int", 1, None),
    "trainer.limit_val_batches": ("number", 0, None),
    "trainer.val_check_interval": ("number", 0, None),
    "data.context": ("int", 2, None),
    "data.batch_size": ("int", 1, None),
    "data.buffer_size": ("int", 1, None),
    "data.seed": ("int", 0, 2**32 - 1),
    "data.workers": ("int", 1, None),
    "data.hard_negatives": ("int", 1, 8),  # group size; 8 shapes, one per member
    "optimizer.lr": ("number", 0, None),
    "optimizer.weight_decay": ("number", 0, None),
    "model.d_model": ("int", 1, None),
    "model.n_layers": ("int", 0, None),  # 0: towers only (late fusion; DecoderConfig checks)
    "model.n_heads": ("int", 1, None),
    "model.d_ff": ("int", 1, None),
    "model.max_positions": ("int", 1, None),
}


def check_number(key: str, value: Any, kind: str, low: float, high: float | None) -> None:
    """Raise ``ConfigError`` unless ``value`` is an ``kind`` ("int" or "number") in [low, high]."""
    if kind == "int":
        try:
            if isinstance(value, bool):
                raise TypeError
            operator.index(value)
        except TypeError:
            raise ConfigError(
                f"{key}={value!r}: must be a whole number (got {type(value).__name__})"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{key}={value!r}: must be a finite number (got {type(value).__name__})")
    if value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"at least {low:g}"
        raise ConfigError(f"{key}={value!r}: must be {bound}")


def check_train_config(cfg: DictConfig) -> None:
    """Check the numbers of a ``tmm-train`` config (``TRAIN_NUMBERS``) and ``betas``.

    Keys absent from ``cfg`` are skipped (a config may leave them to a default).

    Raises:
        ConfigError: naming the first key whose value cannot work.
    """
    for key, (kind, low, high) in TRAIN_NUMBERS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None:
            check_number(key, value, kind, low, high)
    if (rate := OmegaConf.select(cfg, "optimizer.lr")) is not None and rate == 0:
        raise ConfigError("optimizer.lr=0: must be positive")
    betas = OmegaConf.select(cfg, "optimizer.betas", default=None)
    if betas is not None:
        if len(betas) != 2:
            raise ConfigError(f"optimizer.betas={list(betas)}: must be two numbers in [0, 1)")
        for i, beta in enumerate(betas):
            check_number(f"optimizer.betas[{i}]", beta, "number", 0, 1)
            if beta >= 1:
                raise ConfigError(f"optimizer.betas[{i}]={beta}: must be below 1")
    _check_model_and_objectives(cfg)
    image_grid = OmegaConf.select(cfg, "model.image_grid", default=0)
    if image_grid:
        check_image_grid(image_grid, _planned_image_grid(cfg))
    check_compile(OmegaConf.select(cfg, "compile", default=False))
    if OmegaConf.select(cfg, "data.fresh", default=False):
        target = OmegaConf.select(cfg, "data.source._target_", default="")
        if not str(target).endswith("BuiltinSource"):
            raise ConfigError(
                f"data.fresh=true streams fresh built-in examples, but data.source is {target}: "
                "set data.fresh=false to train on the store of this source"
            )
    elif OmegaConf.select(cfg, "data.hard_negatives", default=1) != 1:
        raise ConfigError(
            "data.hard_negatives groups the fresh built-in examples, but data.fresh=false: set "
            "data.fresh=true, or data.hard_negatives=1"
        )


def check_image_grid(image_grid: int, grid: tuple[int, int] | None) -> None:
    """``model.image_grid`` must be the side of the image tokenizer's square grid of codes
    (``grid``: (rows, columns), ``None`` when there is no image tokenizer or its grid is not
    known).

    Raises:
        ConfigError: it is not, naming the value to set.
    """
    if not image_grid or grid is None:
        return
    rows, cols = grid
    if (rows, cols) != (image_grid, image_grid):
        raise ConfigError(
            f"model.image_grid={image_grid}, but the image tokenizer writes a grid of "
            f"{(rows, cols)} (rows, columns) codes: set model.image_grid="
            f"{cols if rows == cols else 0} (row and column embeddings need a square grid)"
        )


def _planned_image_grid(cfg: DictConfig) -> tuple[int, int] | None:
    """The grid the image tokenizer's fit will write (``VQImageConfig.grid`` of
    ``tokenizers.image.fit.config``, built as the fit builds it), or ``None`` when the config
    gives no architecture or one the fit itself will refuse, naming the field."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    arch = OmegaConf.select(cfg, "tokenizers.image.fit.config", default=None)
    if arch is None or "_target_" not in arch:
        return None
    try:
        return tuple(instantiate(arch).grid)
    except (InstantiationException, ValueError, TypeError, AttributeError):
        return None


def check_compile(setting: Any) -> str | None:
    """``compile``: ``False`` (or null) → ``None``; ``True`` → ``"inductor"``; a backend name that
    ``torch.compiler.list_backends`` knows → that name.

    Raises:
        ConfigError: another value, or a backend torch does not have.
    """
    if setting is None or setting is False:
        return None
    if setting is True:
        return "inductor"
    import torch

    known = torch.compiler.list_backends(exclude_tags=())
    if not isinstance(setting, str) or setting not in known:
        raise ConfigError(
            f"compile={setting!r}: must be false, true (inductor) or a torch.compile backend, one "
            f"of {sorted(known)}"
        )
    return setting


def _check_model_and_objectives(cfg: DictConfig) -> None:
    """Build the cheap parts now (the model's config; the weighting over the objectives when
    ``contrastive`` is set), so that their errors come before the tokenizer fits."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from tokenize_mm.models.transformer import ModelConfigError

    model = OmegaConf.select(cfg, "model", default=None)
    if model is not None and "_target_" in model:
        try:
            instantiate(model)
        except (ModelConfigError, InstantiationException) as e:
            raise ConfigError(f"model: {_cause(e)}") from None
    weighting = OmegaConf.select(cfg, "balance.weighting", default=None)
    if OmegaConf.select(cfg, "contrastive", default=None) and weighting is not None:
        from tokenize_mm.models.system import OBJECTIVES

        try:
            instantiate(weighting, modalities=list(OBJECTIVES))
        except (ValueError, TypeError, InstantiationException) as e:
            raise ConfigError(
                f"balance.weighting with contrastive: {_cause(e)} (the contrastive objective is weighted "
                f"beside the modalities: give it a weight too, e.g. "
                f"+balance.weighting.weights.contrastive=1.0)"
            ) from None


def _cause(error: BaseException) -> str:
    """The message of the error Hydra's instantiation wrapped (or of ``error`` itself)."""
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error)


def accelerator_present() -> bool:
    """Whether this machine has an accelerator Lightning's ``"auto"`` would pick (CUDA or MPS)."""
    import torch

    mps = getattr(torch.backends, "mps", None)
    return torch.cuda.is_available() or bool(mps is not None and mps.is_available())


def check_fit_device(tcfg: DictConfig, conf_dir: str | Path) -> None:
    """Refuse to fit a tokenizer config sized for a GPU on a machine without one.

    A config sized for a GPU says so with ``fit.accelerator: auto`` (or ``gpu``): on a CPU,
    ``tmm-fit-tokenizer tokenizer=image`` would run 20,000 steps at 256 px, about 2 minutes a
    step, with no warning. Setting ``fit.accelerator=cpu`` is the way to ask for it anyway.

    Raises:
        ConfigError: naming the config, the CPU-sized configs of its modality and the override.
    """
    accelerator = OmegaConf.select(tcfg, "fit.accelerator", default=None)
    if accelerator not in ("auto", "gpu", "cuda") or accelerator_present():
        return
    name, modality = tcfg.get("name", "?"), tcfg.get("modality", "?")
    cpu_sized = [
        p.stem
        for p in sorted(Path(conf_dir, "tokenizer").glob(f"{modality}_*.yaml"))
        if OmegaConf.select(OmegaConf.load(p), "fit.accelerator", default=None) == "cpu"
    ]
    steps = OmegaConf.select(tcfg, "fit.max_steps", default="?")
    raise ConfigError(
        f"tokenizer {name} is sized for a GPU (fit.accelerator={accelerator}, fit.max_steps="
        f"{steps}) and this machine has none: use a config sized for a CPU "
        f"({', '.join(cpu_sized) or 'none found'}), or override fit.accelerator=cpu "
        f"(tokenizer.fit.accelerator=cpu, or tokenizers.{modality}.fit.accelerator=cpu in "
        "tmm-train) to fit this one on the CPU anyway"
    )
