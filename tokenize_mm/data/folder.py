"""A folder of files of one modality as a data source (images, audio clips or text files).

The quickest way to fit a tokenizer on your own files: ``FolderSource("photos", "image")`` yields
one example per image file under ``photos/``, with the file's path relative to the folder as its
id, in sorted (hence deterministic) order. Files and folders whose name starts with a dot are
ignored. A ``.txt`` file's example text is the file's content, exactly: its bytes decoded as
UTF-8, with no newline translation (``\r\n`` and a lone ``\r`` are kept as they are).

Only regular files (or links to them) are taken: a FIFO, socket or device named like a data
file, or a broken link, is left out. It is found with ``os.stat`` and never opened (reading a
FIFO would block), and, as ``FolderSource`` keeps no report of skipped files, not reported.

``FolderSource.fingerprint()`` identifies the examples (the arguments, and each file's relative
path, size and modification time), so that a store being written from it can tell whether a
rerun reads the same files.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from tokenize_mm.core.files import file_identity
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.data.errors import DataError, DataNotFoundError
from tokenize_mm.data.example import (
    AudioRef,
    Example,
    check_fractions,
    check_split,
    iter_items,
    split_for_id,
)
from tokenize_mm.tokenizers.image.io import IMAGE_SUFFIXES

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "image": tuple(s.lstrip(".") for s in IMAGE_SUFFIXES),  # what the image tokenizer reads
    "audio": ("wav", "flac", "ogg", "mp3"),
    "text": ("txt",),
}


class FolderSource:
    """Examples made from every file of one modality under a folder.

    Only regular files (or links to them) are taken: a FIFO, socket, device or broken link whose
    name matches is skipped without being opened (found with ``os.stat``), and not reported.

    Args:
        root: the folder.
        modality: ``"image"``, ``"audio"`` or ``"text"``.
        recursive: also look in sub-folders.
        extensions: file extensions to take (case-insensitive, with or without the dot);
            ``None`` takes the usual ones of the modality (``EXTENSIONS``).
        val_fraction: share of files that go to ``"val"``, by a hash of the id (0: none).
        test_fraction: likewise for ``"test"``; the rest is ``"train"``.
        split: keep only that split's files; ``None`` keeps all.
        name: the examples' sub-source name; defaults to the folder's name.

    Raises:
        DataNotFoundError: ``root`` does not exist.
        DataError: ``root`` is not a folder, or an argument is invalid.
    """

    def __init__(
        self,
        root: str | Path,
        modality: str,
        recursive: bool = True,
        extensions: tuple[str, ...] | None = None,
        val_fraction: float = 0.0,
        test_fraction: float = 0.0,
        split: str | None = None,
        name: str | None = None,
    ):
        self.root = Path(root).expanduser().absolute()
        if not self.root.exists():
            raise DataNotFoundError(f"data folder not found: {self.root}")
        if not self.root.is_dir():
            raise DataError(
                f"{self.root} is not a folder; FolderSource reads every file under a folder"
            )
        if modality not in MODALITIES:
            raise DataError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        if isinstance(extensions, str):
            extensions = (extensions,)
        chosen = EXTENSIONS[modality] if extensions is None else tuple(extensions)
        if not chosen:
            raise DataError("extensions must name at least one file extension, or be None.")
        check_fractions(val_fraction, test_fraction)
        self.modality = modality
        self.recursive = recursive
        self.extensions = tuple(sorted({"." + e.lower().lstrip(".") for e in chosen}))
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.split = check_split(split)
        self.name = name or self.root.name
        splits = ((rel, self._split(rel)) for rel in self._list_files())
        self._files = [(rel, s) for rel, s in splits if split is None or s == split]

    def _list_files(self) -> list[str]:
        """Relative POSIX paths of the matching regular files, sorted."""
        found = []
        for folder, dirs, files in os.walk(self.root):
            dirs[:] = [d for d in dirs if not d.startswith(".")] if self.recursive else []
            for file in files:
                if (
                    not file.startswith(".")
                    and os.path.splitext(file)[1].lower() in self.extensions
                    and _is_regular_file(Path(folder, file))
                ):
                    found.append(Path(folder, file).relative_to(self.root).as_posix())
        return sorted(found)

    def _split(self, rel: str) -> str:
        return split_for_id(rel, self.val_fraction, self.test_fraction)

    def _example(self, rel: str, split: str) -> Example:
        path = self.root / rel
        items: dict[str, object] = {}
        if self.modality == "text":
            try:  # bytes, then decode: read_text would translate "\r\n" and "\r" to "\n"
                items["text"] = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataError(
                    f"{path} is not UTF-8 text ({error.reason}); re-encode it as UTF-8"
                ) from None
        elif self.modality == "image":
            items["image"] = path
        else:
            items["audio"] = (AudioRef(path),)
        return Example(id=rel, split=split, source=self.name, **items)  # type: ignore[arg-type]

    def fingerprint(self) -> str:
        """sha256 (hex) of what the examples are made of, in their order: the arguments, and each
        file's relative path, split, size and ``mtime_ns`` as they are now (stat only)."""
        args = {"root": str(self.root), "modality": self.modality, "recursive": self.recursive,
                "extensions": self.extensions, "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "split": self.split,
                "name": self.name}  # fmt: skip
        digest = hashlib.sha256(json.dumps(["folder", args]).encode())
        for rel, split in self._files:
            _, size, mtime_ns = file_identity(self.root / rel)
            digest.update(json.dumps([rel, split, size, mtime_ns]).encode() + b"\n")
        return digest.hexdigest()

    def __len__(self) -> int:
        return len(self._files)

    def __getitem__(self, i: int) -> Example:
        return self._example(*self._files[i])

    def __iter__(self) -> Iterator[Example]:
        for rel, split in self._files:
            yield self._example(rel, split)

    def texts(self) -> Iterator[str]:
        """The texts of the examples (text folders only; empty otherwise)."""
        return iter_items(self, "text")

    def images(self) -> Iterator[Path]:
        """The image paths of the examples (image folders only; empty otherwise)."""
        return iter_items(self, "image")

    def __repr__(self) -> str:
        return f"FolderSource({str(self.root)!r}, {self.modality!r}: {len(self)} files)"


def _is_regular_file(path: Path) -> bool:
    """Whether ``path`` is a regular file (or a link to one), by ``os.stat``: never opened, so a
    FIFO cannot block. A path that cannot be stat'ed (a broken link) is not one."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False
