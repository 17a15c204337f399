"""The held-out examples of the run report's alignment section: never a trained-on example."""

from __future__ import annotations

import json

from omegaconf import OmegaConf
from PIL import Image

from tokenize_mm.cli.alignment import heldout_examples


def test_builtin_held_out_examples_are_trimodal_test_examples_of_the_seed():
    cfg = OmegaConf.create({"_target_": "tokenize_mm.data.BuiltinSource", "num_examples": 16,
                            "image_size": 32, "audio_seconds": 0.5, "seed": 3})  # fmt: skip
    examples, about = heldout_examples(cfg, limit=5)
    assert len(examples) == 5 and "test split" in about
    assert all(ex.split == "test" and ex.source == "trimodal" for ex in examples)
    assert all(set(ex.modalities) == {"text", "image", "audio"} for ex in examples)
    assert len({ex.id for ex in examples}) == 5 and all("/s3/" in ex.id for ex in examples)


def test_manifest_held_out_examples_are_its_test_pairs(tmp_path):
    Image.new("RGB", (8, 8), "red").save(tmp_path / "a.png")
    records = [
        {"id": "pair", "text": "a red square", "image": "a.png", "split": "test"},
        {"id": "alone", "text": "only text", "split": "test"},
        {"id": "trained", "text": "a red square", "image": "a.png", "split": "train"},
    ]
    (tmp_path / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    cfg = OmegaConf.create({"_target_": "tokenize_mm.data.ManifestSource",
                            "path": str(tmp_path / "manifest.jsonl")})  # fmt: skip
    examples, about = heldout_examples(cfg, limit=64)
    assert [ex.id for ex in examples] == ["pair"] and "1 text+image" in about
