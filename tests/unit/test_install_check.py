"""The post-install check (tools/check_install.py) passes on this environment and names a
version that differs from the lock."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("check_install", ROOT / "tools/check_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_pins_torch_and_torchaudio_as_an_exact_pair(check):
    pins = check.locked_versions(ROOT / "requirements.lock")
    assert pins["torch"] == pins["torchaudio"]  # the pair releases together
    assert {"sentencepiece", "soundfile", "safetensors", "lightning", "hatchling"} <= set(pins)


def test_this_environment_passes(check, capsys):
    assert check.main([str(ROOT / "requirements.lock")]) == 0
    assert "install check passed" in capsys.readouterr().out


def test_a_version_other_than_the_lock_is_named(check, tmp_path, capsys):
    lock = tmp_path / "requirements.lock"
    lock.write_text("torch==2.11.0\ntorchaudio==2.11.1\n    # via tokenize_mm\n")
    assert check.main([str(lock)]) == 1
    err = capsys.readouterr().err
    assert "torchaudio: installed 2.11.0" in err and "pins 2.11.1" in err
    assert "torch 2.11.0" in err and "rm -rf .venv && make install" in err
