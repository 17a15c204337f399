"""Files as readers see them: what kind a path is, whether it can be read, its identity, all
without opening it.

``file_kind(st_mode)`` names a file's kind in words (``"regular file"``, ``"FIFO"``, ...) for a
message; ``input_file_problem(path)`` says why a path cannot be read as an input (missing, a
folder, a FIFO or a device, empty), or ``None``; ``file_identity(path)`` is ``[path, size,
mtime_ns]`` (from ``os.stat``), what a fingerprint records of a file it does not read. None of them
opens the file, so none can block on a FIFO or read a device forever. In the bottom layer
(``core/``): it imports nothing from the package, so tokenizers and data sources share it.
"""

from __future__ import annotations

import os
import stat
from typing import Any


def file_kind(mode: int) -> str:
    """What an ``st_mode`` is, in words: ``"regular file"``, ``"directory"``, ``"FIFO"``, ..."""
    kinds = ((stat.S_ISREG, "regular file"), (stat.S_ISDIR, "directory"),
             (stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"),
             (stat.S_ISBLK, "block device"), (stat.S_ISSOCK, "socket"),
             (stat.S_ISLNK, "symbolic link"))  # fmt: skip
    return next((name for test, name in kinds if test(mode)), "special file")


def file_identity(path: str | os.PathLike) -> list[Any]:
    """``[path, size, mtime_ns]`` of a file (``[path, None, None]`` if it cannot be stat'ed):
    what a fingerprint records of a file it does not read."""
    try:
        info = os.stat(path)
    except OSError:
        return [os.fspath(path), None, None]
    return [os.fspath(path), info.st_size, info.st_mtime_ns]


def input_file_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` cannot be read as an input file, in words, or ``None`` if it can: it does not
    exist, is a directory, is not a regular file (a FIFO would block, ``/dev/zero`` never ends),
    or is empty."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return "file does not exist"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if stat.S_ISDIR(info.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(info.st_mode):
        return f"is a {file_kind(info.st_mode)}, not a regular file"
    if info.st_size == 0:
        return "file is empty (0 bytes)"
    return None
