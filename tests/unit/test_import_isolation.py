"""Layering (docs/architecture.md §2): tokenizers, sequences, balance and models are usable without
Lightning or Hydra, and the lower layers do not import the data layer above them."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # each test imports the package in a fresh Python subprocess

FRAMEWORKS = ("lightning", "pytorch_lightning", "hydra", "omegaconf")


def imported_after(code: str) -> list[str]:
    probe = code + (
        "\nimport sys, json\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('tokenize_mm.data',)) "
        f"or m.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    import json

    return json.loads(result.stdout.strip().splitlines()[-1])


def test_tokenizers_and_sequence_import_neither_lightning_nor_hydra():
    bad = imported_after(
        "import tokenize_mm, tokenize_mm.tokenizers, tokenize_mm.sequence\n"
        "from tokenize_mm import AudioTokenizer, ImageTokenizer, TextTokenizer, load_tokenizer"
    )
    assert not [m for m in bad if m.split(".")[0] in FRAMEWORKS], bad


@pytest.mark.parametrize("package", ["tokenize_mm.models", "tokenize_mm.balance"])
def test_models_and_balance_import_neither_frameworks_nor_data(package):
    assert imported_after(f"import {package}") == []


def test_core_imports_no_other_subpackage_nor_frameworks():
    """core/ is the bottom layer: it imports nothing else from tokenize_mm, nor Lightning or Hydra
    (it does import torch, for the packed-document mask and the learning-rate schedule).

    ``import tokenize_mm.core`` first runs the root ``__init__``, which loads the tokenizers (the
    public API); the probe puts an empty root package in its place, so that what is left in
    ``sys.modules`` is what core itself imports."""
    probe = (
        "import importlib.util, json, sys, types\n"
        "spec = importlib.util.find_spec('tokenize_mm')\n"
        "root = types.ModuleType('tokenize_mm')\n"
        "root.__path__ = list(spec.submodule_search_locations)\n"
        "sys.modules['tokenize_mm'] = root\n"
        "import tokenize_mm.core\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('tokenize_mm.')\n"
        f"    or m.split('.')[0] in {FRAMEWORKS!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert "tokenize_mm.core.modalities" in loaded, loaded  # the probe did import core
    assert [m for m in loaded if not m.startswith("tokenize_mm.core")] == []
