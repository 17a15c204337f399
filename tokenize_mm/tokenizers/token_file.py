"""Token files: one ``Encoded`` on disk, as safetensors (never a pickle).

A token file holds the tensor ``codes`` (K, T) int64, one tensor ``extras.<name>`` per extra (a
name is a Python identifier), and string metadata: ``format`` (``tokenize_mm.tokens``),
``format_version`` (a positive integer), the tokenizer ``kind`` and ``tokenizer_sha256`` (the
sha256 of the tokenizer artifact's ``manifest.json``, so a token file can be matched to the exact
tokenizer that wrote it), plus free-form entries such as ``source``.

``load_encoded`` checks all of this and raises ``TokenFileError`` (an ``InvalidInputError``) naming
the file; ``check_written_by`` refuses a token file written by another tokenizer with
``TokenizerMismatchError``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tokenize_mm.core.atomic import write_atomic
from tokenize_mm.tokenizers.artifact import MANIFEST, sha256_file
from tokenize_mm.tokenizers.base import Encoded
from tokenize_mm.tokenizers.errors import InvalidInputError

TOKENS_FORMAT = "tokenize_mm.tokens"
TOKENS_FORMAT_VERSION = 1
SUFFIX = ".tokens.safetensors"
EXTRAS_PREFIX = "extras."
HASH_PREFIX = 12  # characters of a sha256 shown in messages


class TokenFileError(InvalidInputError):
    """A token file is missing, unreadable, or not a valid ``tokenize_mm.tokens`` file."""


class TokenizerMismatchError(TokenFileError):
    """A token file was written by another tokenizer than the one asked to decode it."""


def tokenizer_sha256(tokenizer_dir: str | os.PathLike) -> str:
    """The sha256 of an artifact's ``manifest.json``: what ``tokenizer_sha256`` records."""
    return sha256_file(Path(tokenizer_dir) / MANIFEST)


def save_encoded(path: str | os.PathLike, encoded: Encoded, metadata: Mapping[str, str]) -> Path:
    """Write ``encoded`` to ``path`` atomically (temp file in the same folder, then rename).

    Raises:
        InvalidInputError: an extra's name is not an identifier or its value is not a tensor.
    """
    _check_extras(encoded.extras, str(path))
    tensors = {"codes": encoded.codes.contiguous()}
    tensors.update(
        {EXTRAS_PREFIX + k: v.detach().cpu().contiguous() for k, v in encoded.extras.items()}
    )
    meta = {str(k): str(v) for k, v in metadata.items()}
    meta.update(format=TOKENS_FORMAT, format_version=str(TOKENS_FORMAT_VERSION))
    return write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def _check_extras(extras: Mapping[str, object], name: str) -> None:
    """Refuse extras that could not be read back under the same name."""
    for key, value in extras.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidInputError(
                f"extra name {key!r} is not an identifier; name extras like 'scale'", item=name
            )
        if not isinstance(value, torch.Tensor):
            raise InvalidInputError(
                f"extra {key!r} must be a torch.Tensor, got {type(value).__name__}", item=name
            )


def load_encoded(path: str | os.PathLike) -> tuple[Encoded, dict[str, str]]:
    """Read a token file written by ``save_encoded``; returns (encoded, metadata).

    Raises:
        TokenFileError: the file is missing, not a safetensors file, not a token file, of a
            missing, malformed or newer ``format_version``, holds an unexpected tensor or an extra
            whose name is not an identifier, or codes that are not a 2-D int64 tensor.
    """
    name = str(path)
    meta, tensors = _read_safetensors(path)
    if meta.get("format") != TOKENS_FORMAT:
        raise TokenFileError(
            f"not a tokenize_mm token file (format {meta.get('format')!r}); write it with tmm-encode",
            item=name,
        )
    _check_version(meta.get("format_version"), name)
    codes = tensors.pop("codes", None)
    if codes is None:
        raise TokenFileError("token file holds no 'codes' tensor", item=name)
    if codes.dtype != torch.int64 or codes.dim() != 2:
        raise TokenFileError(
            f"codes must be an int64 tensor of shape (K, T), got {codes.dtype} of shape "
            f"{tuple(codes.shape)}",
            item=name,
        )
    return Encoded(codes=codes, extras=_read_extras(tensors, name)), meta


def _read_safetensors(path: str | os.PathLike) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """The metadata and every tensor of a safetensors file; ``TokenFileError`` if unreadable."""
    name = str(path)
    if not Path(path).is_file():
        raise TokenFileError("token file does not exist", item=name)
    try:
        with safe_open(name, framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError, ValueError) as err:
        raise TokenFileError(f"not a readable safetensors token file ({err})", item=name) from err
    return meta, tensors


def _check_version(version: str | None, name: str) -> None:
    """``format_version`` must be a positive integer no newer than this library reads."""
    if version is None or not version.isascii() or not version.isdigit() or int(version) < 1:
        raise TokenFileError(
            f"token file format_version must be a positive integer, got {version!r}; the file "
            "is damaged or was not written by tmm-encode",
            item=name,
        )
    if int(version) > TOKENS_FORMAT_VERSION:
        raise TokenFileError(
            f"token file format_version {version} is newer than this tokenize_mm reads "
            f"({TOKENS_FORMAT_VERSION}); upgrade tokenize_mm",
            item=name,
        )


def _read_extras(tensors: Mapping[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    """The ``extras.<name>`` tensors by name; any other tensor is an error."""
    extras = {}
    for key, value in tensors.items():
        extra = key.removeprefix(EXTRAS_PREFIX)
        if extra == key:
            raise TokenFileError(
                f"unexpected tensor {key!r} (a token file holds 'codes' and 'extras.<name>')",
                item=name,
            )
        if not extra.isidentifier():
            raise TokenFileError(f"extra name {extra!r} is not an identifier", item=name)
        extras[extra] = value
    return extras


def check_written_by(
    meta: Mapping[str, str], *, kind: str, sha256: str, name: str, allow_unverified: bool = False
) -> bool:
    """Check that a token file's metadata names this tokenizer (its ``kind`` and the sha256 of
    its manifest). Returns True when the hash was compared, False for a file without
    ``tokenizer_sha256`` accepted because ``allow_unverified`` is set.

    Raises:
        TokenizerMismatchError: another kind or another artifact wrote the file, or it carries no
            ``tokenizer_sha256`` and ``allow_unverified`` is not set.
    """
    if meta.get("kind") != kind:
        raise TokenizerMismatchError(
            f"written by a {meta.get('kind')!r} tokenizer, not {kind!r}; "
            "decode it with the tokenizer artifact that encoded it",
            item=name,
        )
    recorded = meta.get("tokenizer_sha256")
    if recorded is None:
        if allow_unverified:
            return False
        raise TokenizerMismatchError(
            "token file records no tokenizer_sha256, so it cannot be matched to this tokenizer; "
            "decode it with the artifact that encoded it and allow_unverified=true",
            item=name,
        )
    if recorded != sha256:
        raise TokenizerMismatchError(
            f"encoded by the tokenizer with manifest sha256 {recorded[:HASH_PREFIX]}..., but this "
            f"tokenizer's is {sha256[:HASH_PREFIX]}...; decode it with the artifact that encoded it",
            item=name,
        )
    return True
