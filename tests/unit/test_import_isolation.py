"""Layering (docs/architecture.md §2): tokenizers, sequences, balance and models are usable without
Lightning or Hydra, and the lower layers do not import the data layer above them."""

import subprocess
import sys

import pytest

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
