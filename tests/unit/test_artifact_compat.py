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
from tokenize_mm.tokenizers.arch import arch_dict
from tokenize_mm.tokenizers.artifact import FORMAT_VERSION

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


def test_v1_fixtures_hold_the_flat_layout():
    """The committed fixtures keep the earlier layout (architecture and fit settings in one flat
    dict), so the test above exercises the reading of old manifests."""
    for modality in ("image", "audio"):
        manifest = json.loads((FIXTURES / "artifacts_v1" / modality / "manifest.json").read_text())
        assert "arch" not in manifest["hparams"] and "codebook_size" in manifest["hparams"]


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_an_artifact_saved_now_round_trips(modality, tiny_image, tiny_audio, tmp_path):
    """The current layout: ``hparams["arch"]`` is the model's config as a dict, the fit's own
    settings are ``hparams["fit"]``; loading rebuilds the same config and the same codes."""
    tok = {"image": tiny_image, "audio": tiny_audio}[modality]
    folder = tok.save(tmp_path / modality)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert set(manifest["hparams"]) == {"arch", "fit"}
    assert manifest["hparams"]["arch"] == arch_dict(tok.model.config)
    assert manifest["format_version"] == FORMAT_VERSION
    loaded = load_tokenizer(folder)
    assert loaded.model.config == tok.model.config and loaded.hparams == tok.hparams
    item = probes()[modality][0]
    assert torch.equal(loaded.encode(item).codes, tok.encode(item).codes)


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_an_old_flat_layout_manifest_loads(modality, tiny_image, tiny_audio, tmp_path):
    """A manifest rewritten to the earlier flat layout (architecture fields beside the fit's
    settings, as version 1 wrote them) loads into the same model."""
    tok = {"image": tiny_image, "audio": tiny_audio}[modality]
    folder = tok.save(tmp_path / modality)
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    arch = dict(manifest["hparams"]["arch"])
    arch.pop("encoder_init_gain", None)  # version 1 did not save it (init only)
    manifest["hparams"] = {**arch, **manifest["hparams"]["fit"]}
    path.write_text(json.dumps(manifest))
    loaded = load_tokenizer(folder)
    assert loaded.model.config == tok.model.config
    item = probes()[modality][0]
    assert torch.equal(loaded.encode(item).codes, tok.encode(item).codes)
