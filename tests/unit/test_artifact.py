"""Artifact refusals (issue 2, point 4) and atomic writes, over every tokenizer."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch

from tokenize_mm import (
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactVersionError,
    UnknownKindError,
    UnsafeArtifactError,
    load_tokenizer,
)
from tokenize_mm.tokenizers.artifact import FORMAT_VERSION, MANIFEST, sha256_file


@pytest.fixture(params=["text", "image", "audio"])
def saved(request, tiny_text, tiny_image, tiny_audio, tmp_path) -> Path:
    tok = {"text": tiny_text, "image": tiny_image, "audio": tiny_audio}[request.param]
    return tok.save(tmp_path / request.param)


def _manifest(d: Path) -> dict:
    return json.loads((d / MANIFEST).read_text())


def _write_manifest(d: Path, manifest: dict) -> None:
    (d / MANIFEST).write_text(json.dumps(manifest))


def _payload(d: Path) -> Path:
    return d / next(iter(_manifest(d)["files"]))


def test_manifest_fields(saved):
    m = _manifest(saved)
    assert m["format"] == "tokenize_mm.tokenizer" and m["format_version"] == FORMAT_VERSION
    for key in ("library_version", "kind", "info", "hparams", "fit_data", "files"):
        assert key in m
    for name, meta in m["files"].items():
        assert meta["sha256"] == sha256_file(saved / name)
        assert meta["size"] == (saved / name).stat().st_size
        assert name.endswith((".model", ".safetensors"))


def test_newer_format_version_refused(saved):
    m = _manifest(saved)
    m["format_version"] = FORMAT_VERSION + 1
    _write_manifest(saved, m)
    with pytest.raises(ArtifactVersionError, match="upgrade tokenize_mm"):
        load_tokenizer(saved)


def test_missing_payload_refused(saved):
    _payload(saved).unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        load_tokenizer(saved)


def test_tampered_payload_refused(saved):
    path = _payload(saved)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        load_tokenizer(saved)


def test_truncated_payload_refused(saved):
    path = _payload(saved)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactIntegrityError, match="size"):
        load_tokenizer(saved)


def test_unknown_kind_refused(saved):
    m = _manifest(saved)
    m["kind"] = "video.magic"
    _write_manifest(saved, m)
    with pytest.raises(UnknownKindError, match=r"video\.magic.*known kinds"):
        load_tokenizer(saved)


def test_not_an_artifact(tmp_path):
    with pytest.raises(ArtifactError, match=r"manifest\.json"):
        load_tokenizer(tmp_path)


def test_pickle_payload_refused(saved):
    (saved / "weights.pt").write_bytes(pickle.dumps({"w": [1, 2, 3]}))
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        load_tokenizer(saved)


def test_pickle_disguised_as_safe_file_refused(saved, monkeypatch):
    """A payload whose hash matches but whose bytes are a pickle (or torch.save zip) is refused
    without ever being unpickled."""
    path = _payload(saved)
    torch.save({"w": torch.zeros(2)}, path)
    m = _manifest(saved)
    m["files"][path.name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    _write_manifest(saved, m)

    def boom(*args, **kwargs):
        raise AssertionError("loading must never unpickle")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    with pytest.raises(UnsafeArtifactError, match="never unpickles"):
        load_tokenizer(saved)


def test_loading_never_unpickles(saved, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("loading must never unpickle")

    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "Unpickler", boom)
    monkeypatch.setattr(torch, "load", boom)
    load_tokenizer(saved)


def test_unknown_manifest_keys_ignored(saved):
    m = _manifest(saved)
    m["added_in_a_later_minor_version"] = {"x": 1}
    m["info"]["future_rate"] = 3.0
    _write_manifest(saved, m)
    load_tokenizer(saved)


def test_save_is_atomic(tiny_text, tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous artifact untouched and no temp folders."""
    target = tiny_text.save(tmp_path / "text")
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    import tokenize_mm.tokenizers.artifact as artifact

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(artifact, "replace_dir", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        tiny_text.save(target)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text"]
    load_tokenizer(target)


def test_save_overwrites(tiny_text, tmp_path):
    target = tiny_text.save(tmp_path / "text")
    tiny_text.save(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["text"]
    load_tokenizer(target)


def test_load_with_the_wrong_class_refused(tiny_text, tiny_image, tmp_path):
    text_dir = tiny_text.save(tmp_path / "t")
    image_dir = tiny_image.save(tmp_path / "i")
    with pytest.raises(ArtifactError, match=r"not 'image\.vq'.*load_tokenizer"):
        type(tiny_image).load(text_dir)
    with pytest.raises(ArtifactError, match=r"not 'text\.sentencepiece'"):
        type(tiny_text).load(image_dir)
