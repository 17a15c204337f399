"""Token files: one ``Encoded`` on disk, as safetensors (never a pickle).

A token file holds the tensor ``codes`` (K, T) int64, one tensor ``extras.<name>`` per extra, and
string metadata: ``format`` (``tokenize_mm.tokens``), ``format_version``, the tokenizer ``kind``
and ``tokenizer_sha256`` (the sha256 of the tokenizer artifact's manifest, so a token file can be
matched to the exact tokenizer that wrote it), plus free-form entries such as ``source``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tokenize_mm.atomic import write_atomic
from tokenize_mm.tokenizers.base import Encoded
from tokenize_mm.tokenizers.errors import InvalidInputError

TOKENS_FORMAT = "tokenize_mm.tokens"
TOKENS_FORMAT_VERSION = 1
SUFFIX = ".tokens.safetensors"


def save_encoded(path: str | os.PathLike, encoded: Encoded, metadata: Mapping[str, str]) -> Path:
    """Write ``encoded`` to ``path`` atomically (temp file in the same folder, then rename)."""
    tensors = {"codes": encoded.codes.contiguous()}
    tensors.update(
        {f"extras.{k}": v.detach().cpu().contiguous() for k, v in encoded.extras.items()}
    )
    meta = {str(k): str(v) for k, v in metadata.items()}
    meta.update(format=TOKENS_FORMAT, format_version=str(TOKENS_FORMAT_VERSION))
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def load_encoded(path: str | os.PathLike) -> tuple[Encoded, dict[str, str]]:
    """Read a token file written by ``save_encoded``; returns (encoded, metadata).

    Raises:
        InvalidInputError: the file is missing, not a safetensors file, or not a token file.
    """
    name = str(path)
    if not Path(path).is_file():
        raise InvalidInputError("token file does not exist", item=name)
    try:
        with safe_open(name, framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise InvalidInputError(
            f"not a readable safetensors token file ({err})", item=name
        ) from err
    if meta.get("format") != TOKENS_FORMAT or "codes" not in tensors:
        raise InvalidInputError(
            f"not a tokenize_mm token file (format {meta.get('format')!r}); write it with tmm-encode",
            item=name,
        )
    if int(meta.get("format_version", "0")) > TOKENS_FORMAT_VERSION:
        raise InvalidInputError(
            f"token file format_version {meta['format_version']} is newer than this tokenize_mm "
            f"reads ({TOKENS_FORMAT_VERSION}); upgrade tokenize_mm",
            item=name,
        )
    extras = {k.removeprefix("extras."): v for k, v in tensors.items() if k.startswith("extras.")}
    codes = tensors["codes"]
    if codes.dtype != torch.int64:
        raise InvalidInputError(f"codes must be int64, got {codes.dtype}", item=name)
    return Encoded(codes=codes, extras=extras), meta
