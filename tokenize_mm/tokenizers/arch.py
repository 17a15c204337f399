"""Architecture configs of the trained tokenizers' models (``VQImageConfig``, ``CodecConfig``):
the field checks their ``__post_init__`` share, and how an artifact's ``hparams`` give one back.

An artifact saves its model's architecture as ``hparams["arch"]`` (``dataclasses.asdict`` of the
config) and the fit's own settings as ``hparams["fit"]``. Artifacts saved before the configs
existed (same ``format_version``) hold one flat ``hparams`` dict; ``config_from_hparams`` reads
both layouts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from tokenize_mm.tokenizers.errors import InvalidInputError

C = TypeVar("C")


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


def config_from_hparams(config_class: type[C], hparams: Mapping[str, Any]) -> C:
    """The architecture config an artifact's ``hparams`` describe: ``hparams["arch"]`` (the
    current layout), or, in an artifact of the earlier flat layout, the config's fields found
    among ``hparams`` (the fit's settings beside them are ignored; absent fields take their
    defaults, as the earlier model constructors did).

    Raises:
        TypeError: ``arch`` holds a key that is no field of ``config_class``.
        InvalidInputError: a field is out of range (the config's ``__post_init__``).
    """
    arch = hparams.get("arch")
    if isinstance(arch, Mapping):
        return config_class(**arch)
    names = {f.name for f in dataclasses.fields(config_class)}  # type: ignore[arg-type]
    return config_class(**{k: v for k, v in hparams.items() if k in names})


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
