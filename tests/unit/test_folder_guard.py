"""A folder written whole (an artifact, a model, an index) never replaces a user's folder or file.

Given a folder of photos as the output by mistake, writing there used to move it aside and delete
it. Now only nothing, an empty folder or an earlier folder of the same kind is replaced; anything
else raises ``ForeignFolderError`` before any work, and what was there is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tokenize_mm.core.atomic import check_replaceable, has_json_format, write_dir_atomic
from tokenize_mm.core.errors import ForeignFolderError, TokenizeMMError
from tokenize_mm.tokenizers.artifact import is_artifact_dir


def _photos(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"a.png": b"\x89PNG one", "b.jpg": b"\xff\xd8 two"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def _unchanged(folder: Path, files: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in folder.iterdir()} == files


def _is_ours(path: Path) -> bool:
    return has_json_format(path, "marker.json", "test.kind")


def _write(tmp: Path) -> None:
    (tmp / "marker.json").write_text('{"format": "test.kind"}')
    (tmp / "data.bin").write_bytes(b"new")


def test_nothing_an_empty_folder_and_an_earlier_folder_are_replaced(tmp_path):
    for target in (tmp_path / "new", tmp_path / "empty"):
        if target.name == "empty":
            target.mkdir()
        write_dir_atomic(target, _write, is_ours=_is_ours, what="a test folder")
        assert (target / "data.bin").read_bytes() == b"new"
    (tmp_path / "new" / "data.bin").write_bytes(b"old")  # an earlier one: replaced whole
    write_dir_atomic(tmp_path / "new", _write, is_ours=_is_ours, what="a test folder")
    assert (tmp_path / "new" / "data.bin").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "new"]  # nothing left aside


def test_a_users_folder_is_refused_before_writing_and_left_as_it_was(tmp_path):
    files = _photos(tmp_path / "photos")
    called = []
    with pytest.raises(ForeignFolderError, match=r"photos is a folder that is not a test folder"):
        write_dir_atomic(tmp_path / "photos", called.append, is_ours=_is_ours, what="a test folder")
    assert called == [] and _unchanged(tmp_path / "photos", files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no temporary left


def test_a_file_and_a_link_in_the_way_are_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ForeignFolderError, match="exists and is not a folder"):
        check_replaceable(tmp_path / "notes.txt", _is_ours, "a test folder")
    assert (tmp_path / "notes.txt").read_text() == "mine"
    os.symlink(tmp_path / "notes.txt", tmp_path / "link")
    with pytest.raises(ForeignFolderError):
        check_replaceable(tmp_path / "link", _is_ours, "a test folder")


def test_the_error_is_of_the_family_and_a_file_exists_error():
    assert issubclass(ForeignFolderError, TokenizeMMError)
    assert issubclass(ForeignFolderError, FileExistsError)


def test_a_marker_must_be_small_json_of_the_kind(tmp_path):
    (tmp_path / "marker.json").write_text('{"format": "other.kind"}')
    assert not _is_ours(tmp_path)
    (tmp_path / "marker.json").write_text("not json")
    assert not _is_ours(tmp_path)
    (tmp_path / "marker.json").write_text('["format", "test.kind"]')
    assert not _is_ours(tmp_path)


def test_saving_a_tokenizer_over_a_users_folder_is_refused(tiny_text, tmp_path):
    files = _photos(tmp_path / "photos")
    with pytest.raises(ForeignFolderError, match="not a tokenizer artifact"):
        tiny_text.save(tmp_path / "photos")
    assert _unchanged(tmp_path / "photos", files)
    first = tiny_text.save(tmp_path / "art")
    assert is_artifact_dir(first)
    assert tiny_text.save(first) == first  # an earlier artifact is replaced


def test_saving_an_index_over_a_users_folder_is_refused(tmp_path):
    import torch

    from tokenize_mm.search import EmbeddingIndex

    index = EmbeddingIndex(torch.eye(2), [{"id": "a"}, {"id": "b"}], "f" * 64, [])
    files = _photos(tmp_path / "photos")
    with pytest.raises(ForeignFolderError, match="not an embedding index"):
        index.save(tmp_path / "photos")
    assert _unchanged(tmp_path / "photos", files)
    assert index.save(index.save(tmp_path / "idx")) == (tmp_path / "idx").absolute()


@pytest.mark.parametrize("damage", ["manifest", "stray"])
def test_a_damaged_cache_entry_is_fitted_again(tmp_path, damage):
    """The cache's own entry, unreadable (a corrupt manifest.json, or a folder without one), is
    cleared and fitted again: the guard refuses only folders outside the cache's say."""
    from hydra import compose, initialize_config_dir

    from tokenize_mm.cli.common import config_dir
    from tokenize_mm.cli.train import fit_or_reuse
    from tokenize_mm.data import BuiltinSource
    from tokenize_mm.tokenizers import load_tokenizer

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        tcfg = compose("fit_tokenizer", overrides=["tokenizer=text_tiny"]).tokenizer
    source = BuiltinSource(num_examples=24, image_size=32)
    path = fit_or_reuse(tcfg, source, "builtin-24", tmp_path, "train")
    first = load_tokenizer(path).model_proto
    if damage == "manifest":
        (path / "manifest.json").write_text("{not json")
    else:
        (path / "manifest.json").unlink()
        (path / "stray.txt").write_text("left by a crash")
    again = fit_or_reuse(tcfg, source, "builtin-24", tmp_path, "train")
    assert again == path and load_tokenizer(again).model_proto == first
