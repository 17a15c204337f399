"""Artifacts saved by an earlier version load with the current code and give the same codes.

``tests/fixtures/artifacts_v1/`` holds tiny text, image and audio artifacts and the codes they gave
for probe inputs when they were written (``tests/fixtures/make_artifacts_v1.py``). A change to the
tokenizers, their models or the artifact format that alters what a saved artifact means fails
here; an intended format change comes with a migration and new fixtures.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tokenize_mm import Encoded, load_tokenizer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
sys.path.insert(0, str(FIXTURES))

from make_artifacts_v1 import probes  # noqa: E402


@pytest.fixture(scope="module")
def expected() -> dict[str, list]:
    return json.loads((FIXTURES / "artifacts_v1" / "codes.json").read_text())


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fixtures were encoded
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_saved_artifacts_give_the_codes_they_gave(modality, expected, one_thread):
    tokenizer = load_tokenizer(FIXTURES / "artifacts_v1" / modality)
    assert tokenizer.info.modality == modality
    items = probes()[modality]
    got = [tokenizer.encode(item).codes.tolist() for item in items]
    assert got == expected[modality]
    decoded = tokenizer.decode(Encoded(torch.tensor(expected[modality][0])))
    if modality == "text":
        assert decoded == items[0]  # exact round trip
    else:
        assert torch.isfinite(decoded).all()
