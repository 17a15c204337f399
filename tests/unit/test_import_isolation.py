"""Tokenizers (and the sequence layer) are usable without Lightning or Hydra: importing them must
not import either."""

import subprocess
import sys


def test_tokenizers_and_sequence_import_neither_lightning_nor_hydra():
    code = (
        "import sys, tokenize_mm, tokenize_mm.tokenizers, tokenize_mm.sequence\n"
        "from tokenize_mm import AudioTokenizer, ImageTokenizer, TextTokenizer, load_tokenizer\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('lightning', 'pytorch_lightning', 'hydra', 'omegaconf'))\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, f"imported: {result.stdout} {result.stderr}"
