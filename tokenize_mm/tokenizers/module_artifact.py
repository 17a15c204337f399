"""What the trained tokenizers (image VQ, audio codec) share: held-out split, loss summary, and
an ``nn.Module`` kept as a safetensors artifact and rebuilt from its manifest (``ModuleTokenizer``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tokenize_mm.tokenizers.artifact import Artifact, read_artifact, write_artifact
from tokenize_mm.tokenizers.base import TokenizerInfo
from tokenize_mm.tokenizers.errors import ArtifactError

WEIGHTS = "weights.safetensors"
M = TypeVar("M", bound=nn.Module)
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


def load_module(artifact: Artifact, build: Callable[..., M], arch_keys: Sequence[str]) -> M:
    """``build(**architecture from the manifest)`` with the artifact's weights loaded.

    Raises:
        ArtifactError: the weights do not fit the architecture the manifest describes.
    """
    module = build(**{k: artifact.hparams[k] for k in arch_keys if k in artifact.hparams})
    state = load_file(str(artifact.path(WEIGHTS)))
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ArtifactError(
            f"{artifact.directory}: weights do not match the architecture in the manifest "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); save the tokenizer again"
        )
    return module


class ModuleTokenizer:
    """Mechanics shared by tokenizers that wrap a trained ``nn.Module`` (``self.model``):
    ``info``, device placement, and artifacts (``save``, ``load``, ``from_artifact``).

    Subclasses set ``kind``, ``model_class`` (built from the manifest's ``arch_keys``
    hyper-parameters) and take ``(model, info, hparams, fit_data)`` as their first arguments.
    """

    kind: ClassVar[str]
    model_class: ClassVar[type[nn.Module]]
    arch_keys: ClassVar[tuple[str, ...]]
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
        model = load_module(artifact, cls.model_class, cls.arch_keys)
        return cls(model, artifact.info, artifact.hparams, artifact.fit_data)  # type: ignore[call-arg]
