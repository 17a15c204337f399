"""Artifacts state what the code does: an edited manifest is refused before anything is built.

Regression tests for hostile manifests: ``info`` that lies about rates, ``hparams`` that ask for a
huge model or another codebook size, and manifest fields of the wrong JSON type. Every refusal is
an ``ArtifactError`` (so a ``TokenizeMMError``) that names the manifest.
"""

from __future__ import annotations

import json
import resource
from pathlib import Path

import pytest

from tokenize_mm import ArtifactError, ArtifactIntegrityError, TokenizeMMError, load_tokenizer
from tokenize_mm.tokenizers.artifact import MANIFEST


@pytest.fixture(params=["text", "image", "audio", "encodec"])
def saved(request, tiny_text, tiny_image, tiny_audio, encodec_24khz, tmp_path) -> Path:
    tok = {"text": tiny_text, "image": tiny_image, "audio": tiny_audio,
           "encodec": encodec_24khz}[request.param]  # fmt: skip
    return tok.save(tmp_path / request.param)


def _edit(d: Path, edit) -> None:
    manifest = json.loads((d / MANIFEST).read_text())
    edit(manifest)
    (d / MANIFEST).write_text(json.dumps(manifest))


def _modality(d: Path) -> str:
    return json.loads((d / MANIFEST).read_text())["info"]["modality"]


# Fields each modality's info states; each edit must be refused.
EDITS = {
    "text": [("codebook_size", 7)],
    "image": [("tokens_per_image", 999), ("grid", [9, 9]), ("image_size", 999),
              ("codebook_size", 3)],
    "audio": [("frame_rate", 33.0), ("tokens_per_second", 1.0), ("sample_rate", 16000),
              ("num_codebooks", 9)],
}  # fmt: skip


def test_info_that_disagrees_with_the_model_is_refused(saved):
    load_tokenizer(saved)  # as saved: fine
    for field, value in EDITS[_modality(saved)]:
        original = json.loads((saved / MANIFEST).read_text())
        _edit(saved, lambda m, f=field, v=value: m["info"].__setitem__(f, v))
        with pytest.raises(ArtifactIntegrityError, match=f"info.{field} is") as err:
            load_tokenizer(saved)
        assert MANIFEST in str(err.value)
        (saved / MANIFEST).write_text(json.dumps(original))


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_hparams_asking_for_a_huge_model_are_refused_before_it_is_built(
    modality, tiny_image, tiny_audio, tmp_path
):
    tok = {"image": tiny_image, "audio": tiny_audio}[modality]
    d = tok.save(tmp_path / modality)
    key = "base_channels" if modality == "image" else "n_filters"
    _edit(d, lambda m: m["hparams"]["arch"].__setitem__(key, 4096))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ArtifactError, match="do not match the architecture"):
        load_tokenizer(d)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 200  # nothing of the huge model was allocated


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_a_changed_codebook_size_is_a_typed_error(modality, tiny_image, tiny_audio, tmp_path):
    tok = {"image": tiny_image, "audio": tiny_audio}[modality]
    d = tok.save(tmp_path / modality)
    _edit(d, lambda m: m["hparams"]["arch"].__setitem__("codebook_size", 999))
    with pytest.raises(ArtifactError, match="codebook"):
        load_tokenizer(d)


@pytest.mark.parametrize(
    ("key", "value"),
    [("info", []), ("info", "x"), ("hparams", [1, 2]), ("fit_data", 3), ("kind", 5),
     ("info", {"modality": "smell", "kind": "x", "codebook_size": 1})],
)  # fmt: skip
def test_manifest_fields_of_the_wrong_type_are_typed_errors(saved, key, value):
    _edit(saved, lambda m: m.__setitem__(key, value))
    with pytest.raises(ArtifactError) as err:
        load_tokenizer(saved)
    assert MANIFEST in str(err.value) and isinstance(err.value, TokenizeMMError)


@pytest.mark.parametrize("value", [-4, "wide", None, [3], True])
def test_hparams_that_build_no_model_are_typed_errors(value, tiny_image, tmp_path):
    d = tiny_image.save(tmp_path / "image")
    _edit(d, lambda m: m["hparams"]["arch"].__setitem__("downsample", value))
    with pytest.raises(ArtifactError, match="hparams"):
        load_tokenizer(d)
