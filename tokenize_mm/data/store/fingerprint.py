"""Source fingerprints: what a part's plan records of its source (content and order).

``source_fingerprint(source)`` is a sha256 (hex) of the records a source gives, in their order:
the source's own ``fingerprint()`` where it has one (``ManifestSource``, ``FolderSource``,
``BuiltinSource``: cheap, nothing rendered or decoded), else ``records_fingerprint``, a hash of
every record. A rerun resumes a part only when the fingerprint is the same (``plan.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from tokenize_mm.core.files import file_identity
from tokenize_mm.data.example import AudioRef, Example


def source_fingerprint(source: Sequence[Example]) -> str:
    """sha256 (hex) of the records of ``source``: their content and their order.

    The source's own ``fingerprint()`` where it has one (``ManifestSource``, ``FolderSource``:
    the files' size and mtime, cheap; ``BuiltinSource``: its arguments and the generator's
    code); for any other indexable source a hash of every record (``records_fingerprint``).
    """
    own = getattr(source, "fingerprint", None)
    if callable(own):
        return str(own())
    return records_fingerprint(source)


def records_fingerprint(source: Sequence[Example]) -> str:
    """sha256 (hex) over every record of ``source`` in order: id, split, sub-source, concept,
    text, and media (a file: path, size and mtime_ns; a PIL image: its pixels; a clip: its
    samples and rate). A record the source fails to give counts as its error message."""
    digest = hashlib.sha256(b"records")
    for i in range(len(source)):
        try:
            example = source[i]
        except Exception as err:  # the store reports it as an error of this record
            _frame(digest, json.dumps(["error", i, type(err).__name__, str(err)]).encode())
            continue
        fields = [example.id, example.split, example.source, example.concept, example.text]
        _frame(digest, json.dumps(fields).encode())
        for item in (example.image, *example.audio):
            _hash_item(digest, item)
    return digest.hexdigest()


def _frame(digest: Any, data: bytes) -> None:
    """Add ``data`` to ``digest`` behind its length, so that no two sequences of frames collide."""
    digest.update(len(data).to_bytes(8, "little") + data)


def _hash_item(digest: Any, item: Any) -> None:
    """Add one media item of an example to ``digest`` (see ``records_fingerprint``)."""
    from PIL import Image

    if item is None:
        _frame(digest, b"none")
    elif isinstance(item, AudioRef):
        ref = ["ref", file_identity(item.path), item.meta]
        _frame(digest, json.dumps(ref, default=str).encode())
    elif isinstance(item, (str, os.PathLike)):
        _frame(digest, json.dumps(["file", file_identity(item)]).encode())
    elif isinstance(item, Image.Image):
        _frame(digest, json.dumps(["pil", item.mode, list(item.size)]).encode())
        _frame(digest, item.tobytes())
    elif isinstance(item, tuple) and len(item) == 2:  # an in-memory clip: (wav, sample rate)
        _frame(digest, json.dumps(["clip", str(item[1])]).encode())
        _hash_item(digest, item[0])
    elif isinstance(item, (torch.Tensor, np.ndarray)):
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        array = np.ascontiguousarray(array)
        _frame(digest, json.dumps(["array", array.dtype.str, list(array.shape)]).encode())
        _frame(digest, array.tobytes())
    else:
        _frame(digest, json.dumps(["other", type(item).__name__, repr(item)]).encode())
