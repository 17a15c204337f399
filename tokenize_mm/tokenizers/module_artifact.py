"""What the trained tokenizers (image VQ, audio codec) share: held-out split, loss summary, and
an ``nn.Module`` kept as a safetensors artifact and rebuilt from its manifest (``ModuleTokenizer``)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from tokenize_mm.tokenizers.artifact import (
    MANIFEST,
    Artifact,
    check_info,
    read_artifact,
    write_artifact,
)
from tokenize_mm.tokenizers.base import TokenizerInfo
from tokenize_mm.tokenizers.errors import ArtifactError

WEIGHTS = "weights.safetensors"
#: Elements a model may hold outside its saved state dict (non-persistent buffers) before its
#: hyper-parameters are taken to ask for more than its weights.
MAX_UNSTORED_ELEMENTS = 1 << 20
M = TypeVar("M", bound=nn.Module)
C = TypeVar("C")
T = TypeVar("T")


def hold_out(items: Sequence[T], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, held-out): a seeded random ``fraction`` of ``items`` (at least one if there are
    two or more) is held out."""
    perm = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    n_held = max(1, round(len(items) * fraction)) if len(items) > 1 else 0
    return [items[i] for i in perm[n_held:]], [items[i] for i in perm[:n_held]]


def loss_summary(history: Sequence[float]) -> dict[str, float]:
    """Mean loss over the first and the last tenth of the steps (``loss_start``, ``loss_end``)."""
    if not history:
        return {}
    tail = max(1, len(history) // 10)
    return {"loss_start": sum(history[:tail]) / tail, "loss_end": sum(history[-tail:]) / tail}


def save_module(
    directory: str | os.PathLike,
    module: nn.Module,
    *,
    kind: str,
    info: TokenizerInfo,
    hparams: dict[str, Any],
    fit_data: dict[str, Any],
) -> Path:
    """Write an artifact whose payload is ``module``'s state dict as safetensors."""
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return write_artifact(
        directory, kind=kind, info=info, hparams=hparams, fit_data=fit_data,
        write_payload=lambda d: save_file(state, str(d / WEIGHTS)),
    )  # fmt: skip


def load_module(
    artifact: Artifact, build: Callable[[C], M], make_config: Callable[[dict[str, Any]], C]
) -> M:
    """``build(make_config(hparams))`` with the artifact's weights loaded.

    ``make_config`` reads the architecture from the manifest's ``hparams`` (for the trained
    tokenizers ``config_from_hparams``: the current ``hparams["arch"]`` layout or the earlier flat
    one). The model is first built on the ``meta`` device (no memory) and its tensor shapes
    compared with the safetensors header, so hyper-parameters edited to ask for a huge model
    (``base_channels: 4096``) are refused before anything is allocated.

    Raises:
        ArtifactError: the hyper-parameters build no model, or the weights do not fit the
            architecture the manifest describes (names, shapes or size).
    """
    weights = artifact.path(WEIGHTS)
    where = f"{artifact.directory / MANIFEST}"
    arch: Any = artifact.hparams.get("arch", artifact.hparams)
    try:
        config = make_config(artifact.hparams)
        arch = config
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            skeleton = build(config)
    except Exception as err:  # hparams are untrusted input: any failure is the artifact's
        raise ArtifactError(
            f"{where}: hparams {arch} do not build a model ({type(err).__name__}: {err}); "
            "restore the original artifact or save the tokenizer again"
        ) from err
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    stored = _stored_shapes(weights)
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    wrong = [f"{k}: {stored[k]} for {expected[k]}" for k in sorted(set(expected) & set(stored))
             if stored[k] != expected[k]]  # fmt: skip
    if missing or unexpected or wrong:
        raise ArtifactError(
            f"{where}: the weights do not match the architecture in hparams (missing "
            f"{missing[:3]}, unexpected {unexpected[:3]}, shapes {wrong[:3]}); restore the "
            "original artifact or save the tokenizer again"
        )
    # Tensors outside the state dict (non-persistent buffers) would escape the shape check.
    extra = sum(t.numel() for t in (*skeleton.parameters(), *skeleton.buffers()))
    if extra > sum(math.prod(s) for s in stored.values()) + MAX_UNSTORED_ELEMENTS:
        raise ArtifactError(
            f"{where}: hparams {arch} describe a model of {extra} elements, far more than the "
            "weights hold; restore the original artifact"
        )
    del skeleton
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # encodec's deprecated weight_norm
        module = build(config)
    module.load_state_dict(load_file(str(weights)), strict=True)
    return module


def _stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, read from a safetensors header without loading any tensor."""
    try:
        with safe_open(str(path), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as err:
        raise ArtifactError(f"{path}: not a readable safetensors file ({err})") from err


class ModuleTokenizer:
    """Mechanics shared by tokenizers that wrap a trained ``nn.Module`` (``self.model``):
    ``info``, device placement, and artifacts (``save``, ``load``, ``from_artifact``).

    Subclasses set ``kind`` and ``model_class`` (built as ``model_class(config)`` from the
    architecture config that ``arch_config`` reads from the manifest's ``hparams``; a model of
    another constructor overrides ``build_model``) and take ``(model, info, hparams,
    fit_data)`` as their first arguments.
    """

    kind: ClassVar[str]
    model_class: ClassVar[type[nn.Module]]
    model: nn.Module
    _info: TokenizerInfo
    hparams: dict[str, Any]
    fit_data: dict[str, Any]

    @property
    def info(self) -> TokenizerInfo:
        return self._info

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device):
        """Move the model (encode/decode then run there); returns self."""
        self.model.to(device)
        return self

    def save(self, directory: str | os.PathLike) -> Path:
        """Write an artifact: ``manifest.json`` and ``weights.safetensors`` (atomic)."""
        return save_module(
            directory, self.model, kind=self.kind, info=self._info, hparams=self.hparams,
            fit_data=self.fit_data,
        )  # fmt: skip

    @classmethod
    def load(cls, directory: str | os.PathLike):
        """Load an artifact written by ``save`` (verified; see ``artifact.py``)."""
        return cls.from_artifact(read_artifact(directory))

    @classmethod
    def from_artifact(cls, artifact: Artifact):
        """Build the tokenizer from a verified artifact (``load_tokenizer`` calls this)."""
        artifact.require_kind(cls.kind)
        model = load_module(artifact, cls.build_model, cls.arch_config)
        check_info(artifact, cls.derive_info(model, artifact.hparams))
        return cls(model, artifact.info, artifact.hparams, artifact.fit_data)  # type: ignore[call-arg]

    @classmethod
    def arch_config(cls, hparams: dict[str, Any]) -> Any:
        """The model's architecture config from an artifact's ``hparams`` (either layout)."""
        raise NotImplementedError

    @classmethod
    def build_model(cls, config: Any) -> nn.Module:
        """A freshly initialised model of architecture ``config``."""
        return cls.model_class(config)

    @classmethod
    def derive_info(cls, model: nn.Module, hparams: dict[str, Any]) -> TokenizerInfo:
        """The info that ``model`` implies (rates, grid, vocabulary; no metrics): ``load``
        refuses a manifest whose ``info`` says otherwise."""
        raise NotImplementedError
