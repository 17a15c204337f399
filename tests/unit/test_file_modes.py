"""Files others can read: artifacts, token files and store files get the user's umask modes, and
the folder is flushed after each atomic rename."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import tokenize_mm.core.atomic as atomic
from tokenize_mm.core.atomic import write_text_atomic


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_get_the_umask_mode(umask, tmp_path):
    path = write_text_atomic(tmp_path / "a" / "x.json", "{}")
    assert atomic.current_umask() == umask
    assert _mode(path) == 0o666 & ~umask


def test_artifacts_get_the_umask_modes(umask, tiny_text, tiny_image, tmp_path):
    for tok in (tiny_text, tiny_image):
        d = tok.save(tmp_path / tok.kind)
        assert _mode(d) == 0o777 & ~umask
        for f in d.iterdir():
            assert _mode(f) == 0o666 & ~umask, f


def test_the_folder_is_flushed_after_each_rename(tmp_path, tiny_text, monkeypatch):
    flushed: list[Path] = []
    monkeypatch.setattr(atomic, "fsync_dir", lambda p: flushed.append(Path(p)))
    write_text_atomic(tmp_path / "x.txt", "x")
    assert flushed == [tmp_path]
    import tokenize_mm.tokenizers.artifact as artifact

    monkeypatch.setattr(artifact, "fsync_dir", lambda p: flushed.append(Path(p)))
    tiny_text.save(tmp_path / "art")
    assert flushed[-1] == tmp_path
