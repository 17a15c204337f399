"""Versioned tokenizer artifacts: a directory with a JSON manifest and native payload files.

Layout of an artifact directory::

    manifest.json        format, format_version, library_version, kind, info, hparams,
                         fit_data, files: {name: {sha256, size}}
    tokenizer.model      (text) the SentencePiece model, loadable by plain sentencepiece
    weights.safetensors  (image, audio) model weights

Guarantees:
- Writes are atomic: the directory is assembled under a temporary name beside the target and
  renamed into place, so a reader sees either the old artifact or the complete new one; files and
  the folder get the modes the user's umask gives, and the parent folder is flushed after the
  rename.
- Loading checks ``format`` and ``format_version`` (a newer version is refused), verifies the size
  and sha256 of every payload file before parsing it, ignores unknown manifest keys, refuses any
  pickle or ``torch.save`` archive, and never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenize_mm.core.atomic import (
    check_replaceable,
    fsync_dir,
    has_json_format,
    new_dir_mode,
    new_file_mode,
    replace_dir,
)
from tokenize_mm.tokenizers.base import TokenizerInfo
from tokenize_mm.tokenizers.errors import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    UnsafeArtifactError,
)
from tokenize_mm.tokenizers.registry import tokenizer_class

FORMAT = "tokenize_mm.tokenizer"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ARTIFACT_WHAT = "a tokenizer artifact"
#: Payload suffixes we know how to read without executing code.
SAFE_SUFFIXES = (".model", ".safetensors", ".json", ".txt")
_PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".ckpt", ".th")


def library_version() -> str:
    from tokenize_mm import __version__

    return __version__


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified manifest. ``path(name)`` gives a payload file that passed its checks."""

    directory: Path
    kind: str
    info: TokenizerInfo
    hparams: dict[str, Any]
    fit_data: dict[str, Any]
    library_version: str
    files: dict[str, dict[str, Any]]

    def require_kind(self, kind: str) -> None:
        """Raise ``ArtifactError`` unless this artifact holds a tokenizer of ``kind``."""
        if self.kind != kind:
            raise ArtifactError(
                f"{self.directory}: artifact kind is {self.kind!r}, not {kind!r}; "
                "load it with tokenize_mm.load_tokenizer"
            )

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise ArtifactIntegrityError(
                f"{self.directory}: manifest lists no payload file {name!r}; the artifact is "
                "incomplete: save the tokenizer again"
            )
        return self.directory / name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def is_artifact_dir(path: Path) -> bool:
    """Whether ``path`` is a tokenizer artifact folder (its ``manifest.json`` says so)."""
    return has_json_format(path, MANIFEST, FORMAT)


def write_artifact(
    directory: str | Path,
    *,
    kind: str,
    info: TokenizerInfo,
    hparams: Mapping[str, Any],
    fit_data: Mapping[str, Any],
    write_payload: Callable[[Path], None],
) -> Path:
    """Write an artifact atomically.

    Args:
        directory: target directory; replaced if it is an earlier artifact or an empty folder
            (anything else there: ``ForeignFolderError``, before the payload is written).
        kind: the registry key of the tokenizer.
        info: the tokenizer's info.
        hparams: the hyper-parameters needed to rebuild the tokenizer (JSON-serialisable).
        fit_data: a description of the data the tokenizer was fitted on (JSON-serialisable).
        write_payload: called with a fresh directory; writes the payload files into it.

    Returns:
        The artifact directory.
    """
    target = Path(directory).absolute()
    check_replaceable(target, is_artifact_dir, ARTIFACT_WHAT)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_payload(tmp)
        files = {}
        for p in sorted(tmp.iterdir()):
            if p.name == MANIFEST:
                raise ArtifactError(f"write_payload must not write {MANIFEST}")
            if not p.is_file():
                raise ArtifactError(f"payload {p.name!r} is not a plain file")
            if not p.name.endswith(SAFE_SUFFIXES):
                raise UnsafeArtifactError(
                    f"payload {p.name!r} has no safe suffix {SAFE_SUFFIXES}; weights go in safetensors"
                )
            files[p.name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "kind": kind,
            "info": info.to_dict(),
            "hparams": dict(hparams),
            "fit_data": dict(fit_data),
            "files": files,
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.write("\n")
        for p in tmp.iterdir():
            os.chmod(p, new_file_mode())  # the umask's modes, as any new file (not mkstemp's 0600)
            _fsync(p)
        os.chmod(tmp, new_dir_mode())
        _fsync(tmp)
        replace_dir(tmp, target, is_artifact_dir, ARTIFACT_WHAT)
        fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_artifact(directory: str | Path) -> Artifact:
    """Read and verify an artifact directory (see module docstring). Never unpickles."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not directory.exists():
        raise ArtifactError(
            f"{directory}: no such folder; give the folder a tokenizer was saved into "
            "(tmm-fit-tokenizer's out_dir, or tokenizer.save(directory))"
        )
    if not directory.is_dir():
        raise ArtifactError(
            f"{directory}: a file, not a folder; give the artifact's folder (the one that holds "
            f"{MANIFEST}), not a file in it"
        )
    if not manifest_path.is_file():
        raise ArtifactError(
            f"{directory}: no {MANIFEST}; this is not a tokenize_mm tokenizer artifact "
            "(create one with tokenizer.save(directory))"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArtifactError(
            f"{manifest_path}: not valid JSON ({err}); save the tokenizer again"
        ) from err
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(
            f"{manifest_path}: format is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
            f"expected {FORMAT!r}; this is not a tokenize_mm tokenizer artifact"
        )
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise ArtifactVersionError(
            f"{manifest_path}: format_version must be an integer, got {version!r}"
        )
    if version > FORMAT_VERSION:
        raise ArtifactVersionError(
            f"{directory}: artifact format_version {version} was written by tokenize_mm "
            f"{manifest.get('library_version', '?')}; this tokenize_mm "
            f"({library_version()}) reads up to version {FORMAT_VERSION}: upgrade tokenize_mm"
        )
    if version < 1:
        raise ArtifactVersionError(
            f"{manifest_path}: format_version {version} is not a valid version"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ArtifactError(f"{manifest_path}: 'files' must map payload names to sha256 and size")
    _refuse_pickles(directory, files)
    for name, meta in files.items():
        _verify_file(directory, name, meta)
    for key in ("kind", "info"):
        if key not in manifest:
            raise ArtifactError(f"{manifest_path}: missing key {key!r}; save the tokenizer again")
    for key in ("info", "hparams", "fit_data"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ArtifactError(
                f"{manifest_path}: {key!r} must be a JSON object, got "
                f"{type(manifest[key]).__name__} {str(manifest[key])[:40]}; save the tokenizer again"
            )
    if not isinstance(manifest["kind"], str):
        raise ArtifactError(f"{manifest_path}: 'kind' must be a string, got {manifest['kind']!r}")
    try:
        info = TokenizerInfo.from_dict(manifest["info"])
    except (TypeError, ValueError) as err:
        raise ArtifactError(
            f"{manifest_path}: 'info' does not describe a tokenizer ({err}); save the tokenizer "
            "again"
        ) from err
    return Artifact(
        directory=directory,
        kind=manifest["kind"],
        info=info,
        hparams=dict(manifest.get("hparams", {})),
        fit_data=dict(manifest.get("fit_data", {})),
        library_version=str(manifest.get("library_version", "?")),
        files=files,
    )


#: ``TokenizerInfo`` fields that state what the code does (rates, shapes, vocabulary), as opposed
#: to what was measured at fit time (``metrics``, ``chars_per_token``).
DERIVED_FIELDS = (
    "modality", "kind", "codebook_size", "num_codebooks", "image_size", "grid",
    "tokens_per_image", "sample_rate", "frame_rate", "tokens_per_second",
)  # fmt: skip


def check_info(artifact: Artifact, derived: TokenizerInfo) -> None:
    """Refuse a manifest whose ``info`` disagrees with the model it describes.

    ``derived`` is the info computed from the loaded model (its rates, grid, vocabulary); each of
    ``DERIVED_FIELDS`` must match the manifest's, so that ``info`` never lies to a downstream user
    (an edited ``frame_rate`` of 75 for a 50 Hz codec, say).

    Raises:
        ArtifactIntegrityError: naming the field, the manifest's value and the model's.
    """
    for name in DERIVED_FIELDS:
        stored, actual = getattr(artifact.info, name), getattr(derived, name)
        if isinstance(stored, float) or isinstance(actual, float):
            same = (
                stored is not None
                and actual is not None
                and abs(float(stored) - float(actual)) <= 1e-9 * max(1.0, abs(float(actual)))
            )
        else:
            same = stored == actual
        if not same:
            raise ArtifactIntegrityError(
                f"{artifact.directory / MANIFEST}: info.{name} is {stored!r} but the model it "
                f"describes gives {actual!r}; the manifest was edited: restore the original "
                "artifact or save the tokenizer again"
            )


def _refuse_pickles(directory: Path, files: Mapping[str, Any]) -> None:
    names = set(files) | {p.name for p in directory.iterdir() if p.is_file()}
    for name in sorted(names):
        path = directory / name
        if name.endswith(_PICKLE_SUFFIXES) or (name in files and not name.endswith(SAFE_SUFFIXES)):
            raise UnsafeArtifactError(
                f"{path}: pickle-style payload; loading it could execute code, so tokenize_mm "
                "refuses it. Convert weights to safetensors and save the tokenizer again"
            )
        if name in files and path.is_file() and _looks_like_pickle(path):
            raise UnsafeArtifactError(
                f"{path}: the file is a pickle or torch.save archive although its name says "
                f"otherwise; tokenize_mm never unpickles. Re-export it with safetensors"
            )


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    # Pickle protocol 2+ starts with 0x80 then the protocol number; torch.save writes a zip.
    return (len(head) >= 2 and head[0] == 0x80 and head[1] <= 5) or head == b"PK\x03\x04"


def _verify_file(directory: Path, name: str, meta: Any) -> None:
    path = directory / name
    if Path(name).name != name:
        raise ArtifactIntegrityError(
            f"{directory}: payload name {name!r} must be a plain file name"
        )
    if not isinstance(meta, dict) or "sha256" not in meta or "size" not in meta:
        raise ArtifactIntegrityError(f"{directory}: manifest entry for {name!r} lacks sha256/size")
    if not path.is_file():
        raise ArtifactIntegrityError(
            f"{path}: payload file is missing; copy the whole artifact directory, not just the manifest"
        )
    size = path.stat().st_size
    if size != meta["size"]:
        raise ArtifactIntegrityError(
            f"{path}: size {size} bytes differs from the manifest's {meta['size']}; the file was "
            "changed or truncated: restore it from the original artifact"
        )
    digest = sha256_file(path)
    if digest != meta["sha256"]:
        raise ArtifactIntegrityError(
            f"{path}: sha256 {digest[:12]}… differs from the manifest's {str(meta['sha256'])[:12]}…; "
            "the file was modified after saving: restore it from the original artifact"
        )


def load_tokenizer(directory: str | Path):
    """Load any tokenizer artifact, dispatching on its ``kind`` through the registry.

    Raises:
        ArtifactError (or a subclass): the directory is not a valid, verified artifact.
        UnknownKindError: no tokenizer is registered for the artifact's kind.
    """
    artifact = read_artifact(directory)
    return tokenizer_class(artifact.kind).from_artifact(artifact)
