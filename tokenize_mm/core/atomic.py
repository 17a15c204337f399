"""Atomic file writes: a temporary file in the target's folder, flushed to disk, then renamed.

A reader sees either the old file or the complete new one, never a partial write, and a crash
mid-write leaves at most a hidden ``.<name>.*.tmp`` file behind. After the rename the folder itself
is flushed (``fsync_dir``), so the new name survives a power loss too. Files get the permissions
that the user's umask gives a new file (``mkstemp`` alone would make them 0600: unreadable to the
colleagues a shared artifact or store is for). Used by every layer (token files, layouts, store
shards and indexes, artifacts), so it lives in ``core/`` and imports nothing from the package but
``core.errors``.

A folder written whole (an artifact, a model, an embedding index) replaces what is at its path
only when that is nothing, an empty folder, or a folder of the same kind that this library wrote
(``is_ours``): a user's folder of photos given as the output by mistake is refused
(``ForeignFolderError``), never deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from tokenize_mm.core.errors import ForeignFolderError

MAX_MARKER_BYTES = 1 << 20  # a format-marker JSON file larger than this is not one of ours


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where there is one, so nothing changes it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """What ``open(path, "w")`` would give a new file: 0666 less the umask."""
    return 0o666 & ~current_umask()


def new_dir_mode() -> int:
    """What ``mkdir`` would give a new folder: 0777 less the umask."""
    return 0o777 & ~current_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be
    opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems refuse fsync on a folder; the rename itself is still atomic
    finally:
        os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, fsync it, give it the umask's mode,
    rename it to ``path`` and fsync the folder (parent folders are created). On any error the
    temporary file is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_bytes(data))


def has_json_format(folder: Path, name: str, fmt: str) -> bool:
    """Whether ``folder / name`` is a small JSON object whose ``"format"`` is ``fmt``: how a
    folder's kind is recognised (an artifact's ``manifest.json``, a model's ``model.json``)."""
    path = Path(folder) / name
    try:
        if not path.is_file() or path.stat().st_size > MAX_MARKER_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == fmt


def check_replaceable(
    target: str | os.PathLike, is_ours: Callable[[Path], bool], what: str
) -> None:
    """Raise ``ForeignFolderError`` unless a folder of ``what`` may take ``target``'s place:
    nothing is there, an empty folder, or a folder ``is_ours`` recognises (an earlier one).

    Args:
        target: the folder's path.
        is_ours: recognises a folder of this kind written by this library.
        what: the kind, for the message (e.g. ``"a tokenizer artifact"``).
    """
    target = Path(target)
    if not os.path.lexists(target):
        return
    if target.is_dir() and not target.is_symlink():
        if is_ours(target) or not any(target.iterdir()):
            return
        raise ForeignFolderError(
            f"{target} is a folder that is not {what} and not empty; writing {what} there would "
            "delete what it holds. Choose another (new or empty) folder, or remove this one first"
        )
    raise ForeignFolderError(
        f"{target} exists and is not a folder; choose another path for {what}, or remove it first"
    )


def replace_dir(src: Path, target: Path, is_ours: Callable[[Path], bool], what: str) -> None:
    """Move folder ``src`` to ``target``. An existing target (which ``check_replaceable`` must
    accept, else ``ForeignFolderError`` and nothing moves) is first renamed aside, then deleted,
    so that at every moment one complete folder exists under ``target`` or the aside name."""
    check_replaceable(target, is_ours, what)
    if os.path.lexists(target):
        aside = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(target, aside)
        os.replace(src, target)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(src, target)


def write_dir_atomic(
    path: str | os.PathLike,
    write: Callable[[Path], None],
    *,
    is_ours: Callable[[Path], bool],
    what: str,
) -> Path:
    """Call ``write(tmp_dir)`` to fill a fresh temporary folder beside ``path``, fsync its files,
    give them the umask's modes and put the folder in ``path``'s place (``replace_dir``). On any
    error the temporary folder is removed and ``path`` is as it was.

    Raises:
        ForeignFolderError: ``path`` holds something else than an earlier folder of ``what``
            (checked before ``write`` runs, and again before the swap).
    """
    target = Path(path).absolute()
    check_replaceable(target, is_ours, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write(tmp)
        for file in sorted(p for p in tmp.rglob("*") if p.is_file()):
            os.chmod(file, new_file_mode())
            with open(file, "rb") as fh:
                os.fsync(fh.fileno())
        for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
            os.chmod(folder, new_dir_mode())
            fsync_dir(folder)
        os.chmod(tmp, new_dir_mode())
        fsync_dir(tmp)
        replace_dir(tmp, target, is_ours, what)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(target.parent)
    return target
