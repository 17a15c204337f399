"""Files as data sources see them: what kind a path is, and its identity, without opening it.

``file_kind(st_mode)`` names a file's kind in words (``"regular file"``, ``"FIFO"``, ...) for a
message; ``file_identity(path)`` is ``[path, size, mtime_ns]`` (from ``os.stat``), what a
fingerprint records of a file it does not read. Neither opens the file, so neither can block on a
FIFO or read a device.
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
