"""The default cache folder does not depend on the working directory (cli/paths.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from tokenize_mm.cli import paths
from tokenize_mm.cli.common import config_dir

ROOT = Path(__file__).resolve().parents[2]


def _cache_dir(*overrides: str) -> str:
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose("train", overrides=["out_dir=o", *overrides]).cache_dir


def test_the_checkout_cache_whatever_the_working_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(paths.ENV, raising=False)
    here = _cache_dir()
    monkeypatch.chdir(tmp_path)
    assert _cache_dir() == here == str(ROOT / ".cache" / "tokenize_mm")


def test_the_environment_variable_moves_it(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.ENV, str(tmp_path / "c"))
    assert _cache_dir() == str(tmp_path / "c")


def test_a_given_cache_dir_is_taken_as_given(monkeypatch):
    monkeypatch.delenv(paths.ENV, raising=False)
    assert _cache_dir("cache_dir=rel/c") == "rel/c"


@pytest.mark.parametrize("xdg", [True, False])
def test_an_installed_package_uses_the_user_cache(tmp_path, monkeypatch, xdg):
    """Outside a checkout (no conf/ beside the package) the user cache folder."""
    monkeypatch.delenv(paths.ENV, raising=False)
    fake = tmp_path / "site-packages" / "tokenize_mm" / "cli" / "paths.py"
    monkeypatch.setattr(paths, "__file__", str(fake))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if xdg:
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        assert paths.default_cache_dir() == str(tmp_path / "xdg" / "tokenize_mm")
    else:
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        assert paths.default_cache_dir() == str(tmp_path / "home" / ".cache" / "tokenize_mm")
