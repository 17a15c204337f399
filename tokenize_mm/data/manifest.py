"""User data as a JSONL manifest: one example per line, paths relative to the manifest.

The format (docs/architecture.md §5)::

    {"id": "cat/001", "text": "a cat", "image": "images/cat_001.png",
     "audio": [{"path": "audio/cat_001.wav", "sr": 16000}], "split": "train"}

``id`` is required and unique; ``text``, ``image`` and ``audio`` are optional, and ``null`` (or an
empty audio list) means the modality is absent. ``audio`` is a path or a list of paths /
``{"path": ...}`` objects whose other keys are kept as ``AudioRef.meta``. ``split`` is optional
(records without one are assigned by a hash of their id). ``subset`` names the sub-source,
``concept`` an evaluation label, and ``modalities``, if present, must list the modalities the
record has. Every other key is kept in ``Example.meta``.

Bad records are never dropped silently: each becomes a ``SkippedRecord`` (line, id, reason) in
``source.skipped``, or, with ``strict=True``, a ``BadRecordError``. Only that each referenced file
exists and is a regular file is checked here (with ``os.stat``: nothing is opened, so a FIFO
cannot block the reader); whether it decodes is the tokenizers' business.

``ManifestSource.fingerprint()`` identifies what the examples are made of (the manifest's bytes,
the arguments, and each referenced file's path, size and modification time), so that a store
being written from it can tell whether a rerun reads the same data.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenize_mm.core.files import file_identity, file_kind
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.data.errors import BadRecordError, DataError, DataNotFoundError
from tokenize_mm.data.example import (
    SPLITS,
    AudioRef,
    Example,
    check_fractions,
    check_split,
    iter_items,
    split_for_id,
)

MANIFEST_NAME = "manifest.jsonl"

# Why a record can be skipped (the ``reason`` of a SkippedRecord).
REASONS: dict[str, str] = {
    "invalid_json": "the line is not valid UTF-8 JSON",
    "missing_id": "the record has no id (or a null / empty one)",
    "duplicate_id": "another record earlier in the file has the same id",
    "wrong_type": "the record, or one of its fields, has the wrong JSON type",
    "bad_split": "split is not one of train, val, test",
    "no_modality": "the record has none of text, image, audio",
    "modalities_mismatch": "the record's 'modalities' list disagrees with what it holds",
    "missing_file": "a referenced image or audio file does not exist",
    "not_a_file": "a referenced path is a folder, FIFO or device, or cannot be checked",
}

_CONSUMED = {"id", "text", "image", "audio", "split", "subset", "concept", "modalities"}


@dataclass(frozen=True)
class SkippedRecord:
    """A manifest record that was not turned into an example.

    Attributes:
        line: 1-based line number in the manifest.
        id: the record's id if it could be read, else ``None``.
        reason: a key of ``REASONS`` (stable, for counting).
        detail: what exactly is wrong, naming the field or file.
    """

    line: int
    id: str | None
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        name = f" (id {self.id!r})" if self.id is not None else ""
        return f"line {self.line}{name}: {self.reason}: {self.detail}"


class _Skip(Exception):
    """Internal: raised while parsing a record, turned into a SkippedRecord."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


class ManifestSource:
    """Examples read from a JSONL manifest (see the module docstring for the format).

    The manifest is read and checked once, when the source is built; iterating is then cheap and
    repeatable. Paths are resolved against the manifest's folder and made absolute, so that a
    later change of working directory (Hydra) does not break them.

    Args:
        path: the manifest file, or a folder holding ``manifest.jsonl``.
        split: keep only ``"train"``, ``"val"`` or ``"test"`` records; ``None`` keeps all.
        modalities: keep only these modalities of each record (the others are dropped, and their
            files are not checked); records left with none are left out. ``None`` keeps all.
            Files are checked only for the records and modalities kept: a val source does not
            report a train record's missing file.
        strict: raise ``BadRecordError`` at the first bad record instead of skipping it.
        val_fraction: share of records *without* a ``split`` key that go to ``"val"`` (by a hash
            of the id); 0 puts them all in ``"train"``.
        test_fraction: likewise for ``"test"``.
        name: sub-source name for records without a ``subset`` key; defaults to the name of the
            manifest's folder.

    Attributes:
        skipped: the bad records, in file order.
        num_records: non-blank lines in the manifest.
        num_filtered: good records left out by ``split`` or ``modalities``. Every record is
            accounted for: ``len(source) + len(skipped) + num_filtered == num_records``.

    Raises:
        DataNotFoundError: the manifest does not exist.
        BadRecordError: a record is bad and ``strict`` is set.
        DataError: an argument is invalid.
    """

    def __init__(
        self,
        path: str | Path,
        split: str | None = None,
        modalities: tuple[str, ...] | None = None,
        strict: bool = False,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        name: str | None = None,
    ):
        self.path = _find_manifest(Path(path))
        self.root = self.path.parent
        self.split = check_split(split)
        if modalities is not None:
            modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
            unknown = [m for m in modalities if m not in MODALITIES]
            if not modalities or unknown:
                raise DataError(
                    f"modalities must be a non-empty subset of {MODALITIES}, got {modalities!r}."
                )
        self.modalities = modalities
        check_fractions(val_fraction, test_fraction)
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.strict = strict
        self.name = name or self.root.name
        self.skipped: list[SkippedRecord] = []
        self.num_records = 0
        self.num_filtered = 0
        self._examples: list[Example] = []
        self._read()

    # ------------------------------------------------------------------------------- reading

    def _read(self) -> None:
        seen: dict[str, int] = {}  # id -> line of its first record
        digest = hashlib.sha256()  # of the bytes the examples were read from
        with self.path.open("rb") as f:
            for line_no, raw in enumerate(f, start=1):
                digest.update(raw)
                if not raw.strip():
                    continue  # blank lines (a trailing newline, spacing) are not records
                self.num_records += 1
                record_id = None
                try:
                    record = _load_json(raw)
                    record_id = _read_id(record)
                    if record_id in seen:
                        raise _Skip(
                            "duplicate_id",
                            f"id {record_id!r} was first used on line {seen[record_id]}",
                        )
                    seen[record_id] = line_no
                    example = self._to_example(record, record_id)
                except _Skip as skip:
                    self._skip(SkippedRecord(line_no, record_id, skip.reason, skip.detail))
                    continue
                if example is None:
                    self.num_filtered += 1
                else:
                    self._examples.append(example)
        self._manifest_sha256 = digest.hexdigest()

    def _skip(self, record: SkippedRecord) -> None:
        if self.strict:
            raise BadRecordError(f"{self.path}: {record}", record)
        self.skipped.append(record)

    def _to_example(self, record: dict[str, Any], record_id: str) -> Example | None:
        """The record as an example, ``None`` if filtered out; raises ``_Skip`` if bad."""
        text = _optional(record, "text", str)
        image = _optional(record, "image", str)
        audio = _read_audio(record.get("audio"))
        split = _optional(record, "split", str)
        source = _optional(record, "subset", str) or self.name
        concept = _optional(record, "concept", str)
        if split is not None and split not in SPLITS:
            raise _Skip("bad_split", f"split is {split!r}; use one of {SPLITS} or leave it out")
        present = {"text": text is not None, "image": image is not None, "audio": bool(audio)}
        held = tuple(m for m in MODALITIES if present[m])
        if not held:
            raise _Skip(
                "no_modality", "the record has no text, image or audio (null counts as absent)"
            )
        declared = record.get("modalities")
        if declared is not None:
            if not isinstance(declared, list) or not all(isinstance(m, str) for m in declared):
                raise _Skip("wrong_type", "'modalities' must be a list of strings")
            if set(declared) != set(held):
                raise _Skip(
                    "modalities_mismatch",
                    f"'modalities' says {declared} but the record holds {list(held)}",
                )

        if split is None:
            split = split_for_id(record_id, self.val_fraction, self.test_fraction)
        keep = self.modalities or MODALITIES
        if (self.split is not None and split != self.split) or not any(m in keep for m in held):
            return None
        # Existence is checked only for what is kept: a text-only view needs no image files.
        image_path = (
            self._existing(image, "image") if "image" in keep and image is not None else None
        )
        refs = (
            tuple(AudioRef(self._existing(p, "audio"), meta) for p, meta in audio)
            if "audio" in keep
            else ()
        )
        return Example(
            id=record_id,
            text=text if "text" in keep else None,
            image=image_path,
            audio=refs,
            split=split,
            source=source,
            concept=concept,
            meta={k: v for k, v in record.items() if k not in _CONSUMED},
        )

    def _existing(self, relative: str, field: str) -> Path:
        """``relative`` resolved against the manifest's folder; raises ``_Skip`` unless it is an
        existing regular file (checked by ``os.stat``, which never opens it)."""
        path = self.root / relative  # an absolute path stays as it is
        try:
            mode = os.stat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):
            raise _Skip(
                "missing_file", f"{field} file {relative!r} not found (looked for {path})"
            ) from None
        except OSError as error:
            raise _Skip(
                "not_a_file",
                f"{field} file {relative!r} cannot be checked ({error.strerror}; at {path}): "
                "make it readable",
            ) from None
        if not stat.S_ISREG(mode):
            raise _Skip(
                "not_a_file",
                f"{field} file {relative!r} is a {file_kind(mode)}, not a regular file (at "
                f"{path}): point the record at the file itself",
            )
        return path

    # --------------------------------------------------------------------------- identity

    def fingerprint(self) -> str:
        """sha256 (hex) of what the examples are made of, in their order.

        Covers the manifest's bytes as they were read, the arguments that select and label the
        records, and each referenced file's path, size and ``mtime_ns`` as they are now (stat
        only: cheap, and exact up to an edit that keeps both). Two sources with the same
        fingerprint give the same examples in the same order.
        """
        args = {"split": self.split, "modalities": self.modalities, "strict": self.strict,
                "val_fraction": self.val_fraction, "test_fraction": self.test_fraction,
                "name": self.name, "path": str(self.path)}  # fmt: skip
        digest = hashlib.sha256(json.dumps(["manifest", args, self._manifest_sha256]).encode())
        for example in self._examples:
            files = [example.image] if example.image is not None else []
            files += [ref.path for ref in example.audio]  # type: ignore[union-attr]
            digest.update(json.dumps([example.id, *map(file_identity, files)]).encode() + b"\n")
        return digest.hexdigest()

    # ------------------------------------------------------------------------------ access

    def __len__(self) -> int:
        return len(self._examples)

    def __getitem__(self, i: int) -> Example:
        return self._examples[i]

    def __iter__(self) -> Iterator[Example]:
        return iter(self._examples)

    def texts(self) -> Iterator[str]:
        """The texts of the examples that have one, in order."""
        return iter_items(self, "text")

    def images(self) -> Iterator[Path]:
        """The image paths of the examples that have one, in order."""
        return iter_items(self, "image")

    def skip_counts(self) -> Counter[str]:
        """How many records were skipped, by reason (keys of ``REASONS``)."""
        return Counter(record.reason for record in self.skipped)

    def __repr__(self) -> str:
        return (
            f"ManifestSource({str(self.path)!r}, split={self.split!r}, modalities={self.modalities!r}: "
            f"{len(self)} examples, {len(self.skipped)} skipped, {self.num_filtered} filtered)"
        )


def _find_manifest(path: Path) -> Path:
    path = path.expanduser().absolute()
    if path.is_dir() and (path / MANIFEST_NAME).is_file():
        return path / MANIFEST_NAME
    if path.exists() and not path.is_dir() and not path.is_file():  # never opened: may block
        raise DataError(
            f"manifest {path} is a {file_kind(path.stat().st_mode)}, not a regular file: give a "
            f"JSONL manifest file, or a folder holding {MANIFEST_NAME}"
        )
    if not path.is_file():
        raise DataNotFoundError(
            f"manifest not found: {path} (give a JSONL manifest file, or a folder holding {MANIFEST_NAME})"
        )
    return path


def _load_json(raw: bytes) -> dict[str, Any]:
    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise _Skip(
            "invalid_json", f"the line is not UTF-8 ({error.reason} at byte {error.start})"
        ) from None
    except json.JSONDecodeError as error:
        raise _Skip("invalid_json", f"{error.msg} at column {error.colno}") from None
    if not isinstance(record, dict):
        raise _Skip("wrong_type", f"a record must be a JSON object, got {type(record).__name__}")
    return record


def _read_id(record: dict[str, Any]) -> str:
    record_id = record.get("id")
    if record_id is None or record_id == "":
        raise _Skip("missing_id", "every record needs a non-empty string 'id'")
    if not isinstance(record_id, str):
        raise _Skip(
            "wrong_type", f"'id' must be a string, got {type(record_id).__name__} {record_id!r}"
        )
    return record_id


def _optional(record: dict[str, Any], key: str, kind: type) -> Any:
    """``record[key]``, ``None`` if absent or null; raises ``_Skip`` if of the wrong type."""
    value = record.get(key)
    if value is not None and not isinstance(value, kind):
        raise _Skip(
            "wrong_type", f"'{key}' must be a {kind.__name__} or null, got {type(value).__name__}"
        )
    return value


def _read_audio(value: Any) -> list[tuple[str, dict[str, Any]]]:
    """``audio`` as (relative path, meta) pairs; empty if absent, null or an empty list."""
    if value is None:
        return []
    if isinstance(value, str):
        return [(value, {})]
    if not isinstance(value, list):
        raise _Skip(
            "wrong_type", f"'audio' must be a path, a list or null, got {type(value).__name__}"
        )
    items = []
    for k, item in enumerate(value):
        if isinstance(item, str):
            items.append((item, {}))
        elif isinstance(item, dict) and isinstance(item.get("path"), str):
            items.append((item["path"], {key: v for key, v in item.items() if key != "path"}))
        else:
            raise _Skip(
                "wrong_type", f"'audio' item {k} must be a path or an object with a string 'path'"
            )
    return items
