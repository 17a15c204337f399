"""Resuming never unpickles code: checkpoints are local files loaded weights-only.

A Lightning checkpoint is a ``torch.save`` archive, that is a pickle. Lightning loads a URL with
``weights_only=False`` unless told otherwise, and ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns a
local load into a full unpickling, so a crafted checkpoint could run code. ``tmm-train`` therefore

1. refuses any ``ckpt_path`` with a URL scheme (``http://``, ``s3://``, ``file://``...): download
   it yourself, from a source you trust, and pass the local file;
2. opens the local file once with ``torch.load(weights_only=True)`` (PyTorch's restricted
   unpickler: tensors, containers and primitive types only; the environment variable cannot
   override an explicit ``weights_only=True``) and refuses it with ``CheckpointError`` if it holds
   anything else;
3. passes ``weights_only=True`` to ``Trainer.fit``, so Lightning's own load is restricted too.

What a checkpoint of ``BalancedLM`` holds: the model's and the loss weighting's tensors
(``state_dict``), the optimiser and learning-rate scheduler states, Lightning's loop counters and
callback states (plain numbers and strings), ``balance``: the layout fingerprint (a string), and
``StoreDataModule``: the data stream's position and the sampler's state, for every rank (numbers
and lists). Nothing in it is code.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch

from tokenize_mm.core.errors import CheckpointError

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: ``ckpt_path`` values that Lightning resolves itself to a file it wrote in this run's folders.
LIGHTNING_ALIASES = ("last", "best", "hpc", "registry")


def resolve_checkpoint(ckpt_path: str | Path | None) -> str | None:
    """The checkpoint to resume from, checked to be a local file that loads weights-only.

    Args:
        ckpt_path: ``None`` (start afresh), one of Lightning's aliases (``"last"``...), or a path.

    Returns:
        ``ckpt_path`` as a string (or ``None``), safe to pass to ``Trainer.fit`` together with
        ``weights_only=True``.

    Raises:
        CheckpointError: a URL, a missing or non-regular file, or a file that holds anything
            beyond tensors and plain data.
    """
    if ckpt_path is None:
        return None
    text = str(ckpt_path)
    if text in LIGHTNING_ALIASES:
        return text
    if _SCHEME.match(text):
        raise CheckpointError(
            f"ckpt_path={text}: remote checkpoints are not loaded (a checkpoint is a pickle, and "
            "Lightning would unpickle a URL's content in full); download it from a source you "
            "trust and pass the local file"
        )
    path = Path(text)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"ckpt_path={text} {what}; pass a .ckpt file written by tmm-train")
    try:
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"ckpt_path={text} cannot be loaded weights-only ({first}); it holds more than "
            "tensors and plain data (or is not a checkpoint), so it is refused: resume only from "
            "checkpoints written by tmm-train"
        ) from err
    return text
