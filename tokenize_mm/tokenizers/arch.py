"""Architecture configs of the trained tokenizers' models (``VQImageConfig``, ``CodecConfig``):
the field checks their ``__post_init__`` share, and how an artifact's ``hparams`` give one back.

An artifact saves its model's architecture as ``hparams["arch"]`` (``dataclasses.asdict`` of the
config) and the fit's own settings as ``hparams["fit"]``. Artifacts saved before the configs
existed (same ``format_version``) hold one flat ``hparams`` dict; ``config_from_hparams`` reads
both layouts. Fields added to a config after artifacts were written take, in those artifacts,
the value the artifacts meant (``LEGACY_FIELDS``), not the new default.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any, TypeVar

from tokenize_mm.tokenizers.errors import InvalidInputError

C = TypeVar("C")

#: Fields added after artifacts of this ``format_version`` were written, with the value an
#: artifact that lacks them means: every model before the choice of quantizer used VQ, and
#: every codec before the FSQ radius and μ-law companding used neither, every FSQ grid before
#: whitening normalised each dimension on its own, and every image model before ``block_norm``
#: used GroupNorm.
LEGACY_FIELDS: dict[str, Any] = {
    "quantizer": "vq", "fsq_radius": 0.0, "companding": 0.0, "fsq_whiten": False,
    "block_norm": "group",
}  # fmt: skip

#: ``quantizer`` values of the image and audio configs: a learnt codebook (k-means initialised,
#: EMA-updated, dead codes restarted: ``quant/vector.py``) or a fixed grid (``quant/fsq.py``).
QUANTIZERS = ("vq", "fsq")


def check_quantizer(quantizer: Any, codebook_size: int, fsq_levels: Any) -> tuple[int, ...] | None:
    """Check a config's ``quantizer`` and FSQ levels; the levels to use (``None`` for VQ).

    For ``fsq`` without levels, ``quant.fsq.default_levels(codebook_size)``; given levels must
    multiply to ``codebook_size``.

    Raises:
        InvalidInputError: naming the field and the fix.
    """
    if quantizer not in QUANTIZERS:
        raise InvalidInputError(
            f"must be one of {list(QUANTIZERS)}", item=f"quantizer={quantizer!r}"
        )
    if quantizer == "vq":
        if fsq_levels is not None:
            raise InvalidInputError("is for quantizer=fsq only", item=f"fsq_levels={fsq_levels!r}")
        return None
    from tokenize_mm.tokenizers.quant.fsq import check_levels, default_levels

    try:
        levels = default_levels(codebook_size) if fsq_levels is None else check_levels(
            int_tuple("fsq_levels", fsq_levels))  # fmt: skip
    except ValueError as err:
        raise InvalidInputError(str(err), item=f"fsq_levels={fsq_levels!r}") from None
    if math.prod(levels) != codebook_size:
        raise InvalidInputError(
            f"multiply to {math.prod(levels)}, not codebook_size={codebook_size}: make them agree",
            item=f"fsq_levels={list(levels)}",
        )
    return levels


def check_positive_int(name: str, value: Any) -> None:
    """Refuse a field that is not a positive int (a bool included), naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError("must be a positive int", item=f"{name}={value!r}")


def check_non_negative(name: str, value: Any) -> None:
    """Refuse a field that is not a number >= 0, naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise InvalidInputError("must be a number >= 0", item=f"{name}={value!r}")


def int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """A non-empty sequence of positive ints (a list from JSON or Hydra) as a tuple."""
    items: tuple[Any, ...] | None = None
    if not isinstance(value, (str, bytes)):
        try:
            items = tuple(value)
        except TypeError:
            items = None
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in items):
        shown = list(items) if items is not None else value
        raise InvalidInputError("must be a list of positive ints", item=f"{name}={shown!r}")
    return items


def check_quantizer_fields(config: Any) -> None:
    """The ``__post_init__`` step ``VQImageConfig`` and ``CodecConfig`` share: check
    ``quantizer`` and ``fsq_levels`` against ``codebook_size`` (``check_quantizer``) and store
    given levels as a tuple (JSON and Hydra give lists)."""
    check_quantizer(config.quantizer, config.codebook_size, config.fsq_levels)
    if config.fsq_levels is not None:
        object.__setattr__(config, "fsq_levels", int_tuple("fsq_levels", config.fsq_levels))


def with_fsq_grid(config: C) -> C:
    """``config`` with its FSQ levels written out (``fsq_levels=None`` resolved to the default
    for its codebook size), as a fit saves it; a VQ config unchanged."""
    if getattr(config, "quantizer", None) == "fsq" and config.fsq_levels is None:  # type: ignore[attr-defined]
        return dataclasses.replace(config, fsq_levels=config.fsq_grid)  # type: ignore[attr-defined]
    return config


def config_from_hparams(config_class: type[C], hparams: Mapping[str, Any]) -> C:
    """The architecture config an artifact's ``hparams`` describe: ``hparams["arch"]`` (the
    current layout), or, in an artifact of the earlier flat layout, the config's fields found
    among ``hparams`` (the fit's settings beside them are ignored; absent fields take their
    defaults, as the earlier model constructors did).

    Raises:
        TypeError: ``arch`` holds a key that is no field of ``config_class``.
        InvalidInputError: a field is out of range (the config's ``__post_init__``).
    """
    names = {f.name for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    legacy = {k: v for k, v in LEGACY_FIELDS.items() if k in names}
    arch = hparams.get("arch")
    if isinstance(arch, Mapping):
        return config_class(**{**legacy, **arch})
    return config_class(**{**legacy, **{k: v for k, v in hparams.items() if k in names}})


def arch_dict(config: Any) -> dict[str, Any]:
    """``dataclasses.asdict(config)`` as JSON holds it (tuples as lists): ``hparams["arch"]``."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def flat_hparams(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """One flat dict of an artifact's ``hparams`` in either layout (architecture fields and fit
    settings side by side), for reports that print them."""
    if not isinstance(hparams.get("arch"), Mapping):
        return dict(hparams)
    rest = {k: v for k, v in hparams.items() if k not in ("arch", "fit")}
    return {**hparams["arch"], **hparams.get("fit", {}), **rest}
