"""A trained model as one folder that other programs load: weights, architecture, tokenizers.

``tmm-train`` writes ``<out_dir>/model/`` at the end of a run (``save_trained_model``); ``tmm-search``
and a notebook load it (``load_trained_model``) without the training stack, the run's config or
its cache:

    model/
      model.json           format and version, the DecoderConfig fields, the vocabulary size, the
                           contrastive head's sizes, pooling and span reading (null without one), the
                           layout's fingerprint and audio pattern, the training step, and the
                           sha256 of weights.safetensors: the model's fingerprint
      weights.safetensors  the DecoderLM's tensors (``model.*``) and the head's (``contrastive.*``)
      tokenizers/<m>/      a copy of the artifact of each tokenizer the tokens were made with

Loading never unpickles (JSON, safetensors, and the tokenizer artifacts' own checked loading) and
checks what it reads: the weights' sha256, and that the copied tokenizers lay out the vocabulary
the model was trained on. The folder is written atomically (``write_dir_atomic``). An embedding
index records the fingerprint, so that an index is never searched with another model's queries.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model

from tokenize_mm.core.atomic import has_json_format, write_dir_atomic
from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.models.contrastive import ContrastiveHead
from tokenize_mm.models.transformer import DecoderConfig, DecoderLM
from tokenize_mm.sequence.vocab import VocabLayout

FORMAT, VERSION = "tokenize_mm.model", 1
MODEL_JSON, WEIGHTS, TOKENIZERS = "model.json", "weights.safetensors", "tokenizers"
MODEL_WHAT = "a trained-model folder"


class ModelFolderError(TokenizeMMError, ValueError):
    """A trained-model folder that is missing, damaged, or of another format; names the folder."""


@dataclass
class TrainedModel:
    """A loaded model folder.

    Attributes:
        model: the ``DecoderLM`` (eval mode, on the CPU).
        head: its ``ContrastiveHead``, or ``None`` for a model trained without one.
        layout: the vocabulary layout of its tokens.
        tokenizers: modality → the tokenizer (``load_tokenizer`` of the copied artifact).
        fingerprint: sha256 of its weights file.
        step: the training step it was saved at.
        path: the folder.
    """

    model: DecoderLM
    head: ContrastiveHead | None
    layout: VocabLayout
    tokenizers: dict[str, Any]
    fingerprint: str
    step: int
    path: Path


def save_trained_model(
    folder: str | Path,
    model: DecoderLM,
    head: ContrastiveHead | None,
    artifacts: dict[str, str | Path],
    layout: VocabLayout,
    step: int = 0,
) -> Path:
    """Write ``model`` (and ``head``) with copies of the tokenizer ``artifacts`` into ``folder``
    (replaced atomically if it is an earlier model folder or empty; ``ForeignFolderError`` if it
    holds anything else). Returns the folder."""
    from tokenize_mm.tokenizers.artifact import sha256_file

    contrastive = None
    if head is not None:
        contrastive = {"num_modalities": head.num_modalities, "pooling": head.pooling,
                       "embed_dim": int(head.proj[0].out_features),
                       "span_attention": head.span_attention}  # fmt: skip
        if head.pooler is not None:
            contrastive["pool_heads"] = head.pooler.heads

    def write(tmp: Path) -> None:
        save_model(_modules(model, head), str(tmp / WEIGHTS))  # tied weights stored once
        for modality, source in artifacts.items():
            shutil.copytree(source, tmp / TOKENIZERS / modality)
        meta = {
            "format": FORMAT, "version": VERSION, "config": dataclasses.asdict(model.config),
            "vocab_size": model.vocab_size, "contrastive": contrastive,
            "layout_fingerprint": layout.fingerprint, "audio_pattern": layout.audio_pattern,
            "step": int(step), "weights_sha256": sha256_file(tmp / WEIGHTS),
        }  # fmt: skip
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")

    return write_dir_atomic(folder, write, is_ours=is_model_dir, what=MODEL_WHAT)


def is_model_dir(path: Path) -> bool:
    """Whether ``path`` is a trained-model folder (its ``model.json`` says so)."""
    return has_json_format(path, MODEL_JSON, FORMAT)


def read_model_json(folder: str | Path) -> dict[str, Any]:
    """The folder's ``model.json``, checked for format and version."""
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise ModelFolderError(
            f"{folder} is not a trained-model folder (no {MODEL_JSON}); pass the model/ folder "
            "that tmm-train writes into its out_dir"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{path} cannot be read ({err})") from err
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFolderError(f"{path} is not a {FORMAT} description")
    if meta.get("version") != VERSION:
        raise ModelFolderError(
            f"{path} is of version {meta.get('version')}, this code reads {VERSION}"
        )
    return meta


def load_trained_model(folder: str | Path) -> TrainedModel:
    """Load a folder written by ``save_trained_model`` (never unpickles).

    Raises:
        ModelFolderError: no such folder, a damaged or altered weights file, missing tokenizers,
            or tokenizers that do not lay out the model's vocabulary.
    """
    from tokenize_mm.tokenizers.artifact import load_tokenizer, sha256_file
    from tokenize_mm.tokenizers.errors import ArtifactError

    folder = Path(folder)
    meta = read_model_json(folder)
    weights = folder / WEIGHTS
    if not weights.is_file() or sha256_file(weights) != meta.get("weights_sha256"):
        raise ModelFolderError(
            f"{weights} is missing or not the file {MODEL_JSON} describes (sha256 differs); "
            "write the folder again with tmm-train"
        )
    dirs = {m: folder / TOKENIZERS / m for m in MODALITIES if (folder / TOKENIZERS / m).is_dir()}
    try:
        layout = VocabLayout.from_artifacts(dirs, audio_pattern=meta["audio_pattern"])
        tokenizers = {m: load_tokenizer(d) for m, d in dirs.items()}
    except (ArtifactError, TokenizeMMError, KeyError) as err:
        raise ModelFolderError(
            f"the tokenizers in {folder / TOKENIZERS} cannot be loaded ({err})"
        ) from err
    if layout.fingerprint != meta.get("layout_fingerprint"):
        raise ModelFolderError(
            f"the tokenizers in {folder / TOKENIZERS} lay out another vocabulary than the model "
            "was trained on; write the folder again with tmm-train"
        )
    model = DecoderLM(DecoderConfig(**meta["config"]), vocab_size=int(meta["vocab_size"]))
    head = None
    if meta.get("contrastive"):
        head = ContrastiveHead(model.d_model, **meta["contrastive"]).eval()
    try:
        load_model(_modules(model, head), str(weights), device="cpu")
    except (RuntimeError, SafetensorError) as err:
        raise ModelFolderError(
            f"{weights} does not fit the model {MODEL_JSON} describes ({err})"
        ) from err
    model.eval()
    return TrainedModel(model, head, layout, tokenizers, meta["weights_sha256"],
                        int(meta.get("step", 0)), folder)  # fmt: skip


def _modules(model: DecoderLM, head: ContrastiveHead | None) -> torch.nn.ModuleDict:
    """What the weights file holds: the model under ``model.``, the head under ``contrastive.``."""
    parts = {"model": model} if head is None else {"model": model, "contrastive": head}
    return torch.nn.ModuleDict(parts)
