"""Data sources: the built-in generator, JSONL manifests and folders (fixtures made in code)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tokenize_mm.data import (
    AudioRef,
    BadRecordError,
    BuiltinSource,
    DataError,
    DataNotFoundError,
    Example,
    FolderSource,
    ManifestSource,
    SkippedRecord,
    iter_items,
    split_examples,
)
from tokenize_mm.data.builtin import COLOURS, SHAPES, _sample_scene
from tokenize_mm.data.builtin.scenes import grouped_scene as _grouped_scene

# ------------------------------------------------------------------------------------ Example


def test_example_modalities_in_canonical_order():
    ref = AudioRef(Path("a.wav"), {"sr": 16000})
    assert Example("x", text="t", image=Path("i.png"), audio=(ref,)).modalities == (
        "text",
        "image",
        "audio",
    )
    assert Example("x", audio=[ref]).modalities == ("audio",)  # a list becomes a tuple
    assert Example("x", text="", audio=()).modalities == ("text",)


def test_example_rejects_unknown_split():
    with pytest.raises(DataError, match="split"):
        Example("x", text="t", split="dev")


def test_split_examples_filters_and_checks():
    examples = [Example(str(i), text="t", split=s) for i, s in enumerate(["train", "val", "val"])]
    assert [e.id for e in split_examples(examples, "val")] == ["1", "2"]
    with pytest.raises(DataError):
        split_examples(examples, "validation")


# ------------------------------------------------------------------------------------ Builtin


def _image_bytes(source: BuiltinSource) -> list[bytes]:
    return [image.tobytes() for image in source.images()]


def test_builtin_is_deterministic_per_seed():
    a, b = BuiltinSource(num_examples=24, seed=3), BuiltinSource(num_examples=24, seed=3)
    assert _image_bytes(a) == _image_bytes(b)
    assert list(a.texts()) == list(b.texts())
    assert [e.concept for e in a] == [e.concept for e in b]
    clips_a, clips_b = list(a.clips()), list(b.clips())
    assert len(clips_a) == 12 and all(
        torch.equal(x, y) and r == s for (x, r), (y, s) in zip(clips_a, clips_b, strict=True)
    )
    distinct = {hashlib.sha256(wav.numpy().tobytes()).digest() for wav, _ in clips_a}
    assert len(distinct) == 12  # every index has its own clip

    c = BuiltinSource(num_examples=24, seed=4)
    assert _image_bytes(a) != _image_bytes(c)
    assert list(a.texts()) != list(c.texts())
    assert not any(
        x.shape == y.shape and torch.equal(x, y)
        for (x, _), (y, _) in zip(clips_a, c.clips(), strict=True)
    )


def test_builtin_example_depends_on_its_index_only():
    small, large = BuiltinSource(num_examples=12), BuiltinSource(num_examples=30)
    for x, y in zip(small, list(large)[:12], strict=True):
        assert (x.id, x.text, x.split, x.concept) == (y.id, y.text, y.split, y.concept)
        assert x.image is None or x.image.tobytes() == y.image.tobytes()
        assert len(x.audio) == len(y.audio)
        assert all(torch.equal(p, q) for (p, _), (q, _) in zip(x.audio, y.audio, strict=True))


def test_builtin_images_are_rgb_of_the_given_size_and_not_trivial():
    images = list(BuiltinSource(num_examples=12, image_size=32).images())
    assert images and all(im.mode == "RGB" and im.size == (32, 32) for im in images)
    for image in images:  # a textured background and an anti-aliased shape: several colours
        assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) >= 4


def test_builtin_sources_and_modalities():
    source = BuiltinSource(num_examples=30)
    by_source = {e.source: e.modalities for e in source}
    assert by_source == {
        "trimodal": ("text", "image", "audio"),
        "image_text": ("text", "image"),
        "text_only": ("text",),
        "audio_text": ("text", "audio"),
    }
    texts = [e.text for e in source]
    assert list(source.texts()) == texts
    counts = Counter(e.source for e in source)  # sub-sources interleave: 8, 8, 7, 7 of 30
    assert len(list(source.images())) == counts["trimodal"] + counts["image_text"] == 16
    clips = list(source.clips())
    assert len(clips) == counts["trimodal"] + counts["audio_text"] == 15
    with_audio = [e for e in source if e.audio]
    assert all(len(e.audio) == 1 for e in with_audio)
    assert all(torch.equal(c[0], e.audio[0][0]) for c, e in zip(clips, with_audio, strict=True))
    only = BuiltinSource(num_examples=6, sources=("text_only",))
    assert {e.source for e in only} == {"text_only"} and list(only.images()) == []
    assert list(only.clips()) == []
    audio_text = BuiltinSource(num_examples=4, sources="audio_text")
    assert [e.modalities for e in audio_text] == [("text", "audio")] * 4
    assert list(audio_text.images()) == [] and len(list(audio_text.clips())) == 4
    # text_only paragraphs are longer than captions
    lengths = {s: np.mean([len(e.text) for e in source if e.source == s]) for s in by_source}
    assert lengths["text_only"] > 2 * lengths["image_text"]


@pytest.mark.parametrize("modality", ["text", "image", "audio"])
def test_builtin_rendering_one_modality_gives_its_items_and_nothing_else(modality):
    """``rendering``: what a fit reads, the same items as the whole examples', the others not
    drawn or played; ids, splits and concepts unchanged."""
    source = BuiltinSource(num_examples=12, image_size=32, audio_seconds=0.5)
    whole, part = list(source), list(source.rendering((modality,)))
    assert [(e.id, e.split, e.concept) for e in part] == [(e.id, e.split, e.concept) for e in whole]
    for a, b in zip(whole, part, strict=True):
        assert b.modalities == tuple(m for m in a.modalities if m == modality)
        if modality == "text":
            assert b.text == a.text
        elif modality == "image" and a.image is not None:
            assert np.array_equal(np.asarray(b.image), np.asarray(a.image))
        elif modality == "audio":
            assert all(torch.equal(x[0], y[0]) for x, y in zip(a.audio, b.audio, strict=True))


def test_builtin_concepts_and_captions_agree():
    concepts = BuiltinSource.concepts()
    assert len(concepts) == len(set(concepts)) == len(SHAPES) * len(COLOURS) >= 48
    source = BuiltinSource(num_examples=60)
    for example in source:
        assert example.concept in concepts
        colour, shape = example.concept.split()
        assert (example.meta["colour"], example.meta["shape"]) == (colour, shape)
        words = example.text.lower().replace(".", " ").replace(",", " ").split()
        assert colour in words and shape in words, example.text
    captions = {e.text for e in source if e.source == "image_text"}
    assert len(captions) > 10  # templates give variety


# Computed by running the generator *before* audio was added (the three sub-sources of the time)
# and hard-coded: sampling the audio nuisances must not change any image or caption.
# (id, caption, first 16 hex digits of sha256(image.tobytes())).
BEFORE_AUDIO = {
    (0, 64): [
        ("trimodal/s0/000000", "a black background with a medium blue diamond", "bb5e8034567ae576"),
        ("image_text/s0/000001", "a medium blue circle on the right", "1a9b557185622932"),
        ("text_only/s0/000002", "Here is a short description of a green cross. A cross is made "
         "of two bars that meet in the middle. A cross looks like a plus sign. Green is the "
         "colour of fresh grass.", None),
        ("trimodal/s0/000003", "there is a large pink hexagon near the top right",
         "a0b15afc755f6c0e"),
        ("image_text/s0/000004", "there is a small purple triangle near the centre",
         "c74958e2529144b4"),
        ("text_only/s0/000005", "This note is about a red square. Every corner of a square is a "
         "right angle. Red is the colour of a stop sign. A small red square can hide in a corner, "
         "while a large one fills the picture.", None),
        ("trimodal/s0/000006", "a black background with a medium blue ring", "e904c9765b2e4c88"),
        ("image_text/s0/000007", "a beige background with a large cyan triangle",
         "4933d67634aeaa6a"),
    ],
    (7, 32): [
        ("trimodal/s7/000000", "a large green triangle in the middle", "2a7da5b3b23e6b6b"),
        ("image_text/s7/000001", "a large blue star in the middle", "3df9d9d2c9419077"),
        ("text_only/s7/000002", "This note is about a cyan star. A star has five sharp points. "
         "Cyan is the colour of shallow tropical water.", None),
        ("trimodal/s7/000003", "you can see a red triangle on the right of the picture",
         "c1a659ae1cba22c6"),
    ],
}  # fmt: skip


def _digest(example: Example) -> tuple[str, str | None, str | None]:
    image = example.image
    return (
        example.id,
        example.text,
        None if image is None else hashlib.sha256(image.tobytes()).hexdigest()[:16],
    )


@pytest.mark.parametrize("seed, image_size", list(BEFORE_AUDIO))
def test_builtin_images_and_captions_did_not_change_when_audio_came(seed, image_size):
    expected = BEFORE_AUDIO[seed, image_size]
    old_mix = BuiltinSource(
        num_examples=len(expected),
        image_size=image_size,
        seed=seed,
        sources=("trimodal", "image_text", "text_only"),
    )
    assert [_digest(e) for e in old_mix] == expected
    # The default mix adds audio_text last: example i is sources[i % 4], the first three agree.
    default = BuiltinSource(num_examples=3, image_size=image_size, seed=seed)
    assert [_digest(e) for e in default] == expected[:3]


def test_builtin_clips_are_mono_float_at_the_given_rate_and_length():
    for seconds, rate in ((3.0, 24_000), (1, 16_000)):
        source = BuiltinSource(num_examples=16, audio_seconds=seconds, sample_rate=rate)
        clips = list(source.clips())
        assert len(clips) == 8
        lengths = []
        for wav, clip_rate in clips:
            assert clip_rate == rate and wav.dtype == torch.float32 and wav.ndim == 2
            assert wav.shape[0] == 1 and torch.isfinite(wav).all()
            assert 0.25 <= wav.abs().max() <= 1.0  # loudness 0.3 to 0.8, plus a little noise
            lengths.append(wav.shape[1] / rate)
        assert all(0.92 * seconds - 1e-3 <= n <= 1.08 * seconds + 1e-3 for n in lengths)
        assert len(set(lengths)) > 1  # tempo varies from example to example
        assert abs(np.mean(lengths) - seconds) < 0.06 * seconds


def _clip_features(wav: torch.Tensor, rate: int) -> np.ndarray:
    """A log-frequency spectrogram, 40 bands (100 Hz to 8 kHz) x 16 time steps (the clip's length
    is normalised away), centred and scaled to unit norm: simple spectral features, nothing learnt.
    """
    x = wav[0].numpy()
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::512] * np.hanning(1024)
    spec = np.abs(np.fft.rfft(frames, axis=1))  # (time, 513)
    band = np.searchsorted(np.logspace(2, 3.9, 41), np.fft.rfftfreq(1024, 1 / rate)) - 1
    pool = np.stack([band == k for k in range(40)], axis=1).astype(np.float64)  # (513, 40)
    bands = spec @ pool
    bands = np.log1p(100 * bands / bands.max())
    grid = np.stack([chunk.mean(axis=0) for chunk in np.array_split(bands, 16)]).ravel()
    grid = grid - grid.mean()
    return grid / np.linalg.norm(grid)


def test_builtin_audio_carries_shape_and_colour():
    """A nearest-centroid classifier on spectral features, fitted on 2 clips per concept, names
    the shape and the colour of held-out clips (4 shapes x 4 colours; chance is 1/4 for each)."""
    seed, concepts = 5, [f"{c} {s}" for s in SHAPES[::2] for c in list(COLOURS)[1::2]]
    found: dict[str, list[int]] = defaultdict(list)  # concept -> the first 4 indices that show it
    index = 0
    while any(len(found[c]) < 4 for c in concepts):
        concept = _sample_scene(seed, index).concept
        if concept in concepts and len(found[concept]) < 4:
            found[concept].append(index)
        index += 1
    source = BuiltinSource(num_examples=index, seed=seed, sources=("audio_text",))
    features = {c: [_clip_features(*source[i].audio[0]) for i in found[c]] for c in concepts}
    assert all(source[found[c][0]].concept == c for c in concepts)
    centroids = np.stack([np.mean(features[c][:2], axis=0) for c in concepts])
    held_out = [(c, f) for c in concepts for f in features[c][2:]]
    predicted = [concepts[int(np.argmax(centroids @ f))] for _, f in held_out]
    shape_ok = [p.split()[1] == c.split()[1] for p, (c, _) in zip(predicted, held_out, strict=True)]
    colour_ok = [
        p.split()[0] == c.split()[0] for p, (c, _) in zip(predicted, held_out, strict=True)
    ]
    assert np.mean(shape_ok) >= 0.8 and np.mean(colour_ok) >= 0.8, (shape_ok, colour_ok)
    # ... while the clips of one concept are not copies of each other.
    assert not np.allclose(features[concepts[0]][0], features[concepts[0]][1], atol=1e-3)


def test_iter_items_gives_what_the_audio_tokenizer_reads(tmp_path):
    from tokenize_mm.cli.common import _fit_items
    from tokenize_mm.tokenizers.audio.io import save_wav, to_model_input

    examples = list(BuiltinSource(num_examples=8))
    items = list(iter_items(examples, "audio"))
    assert len(items) == 4
    assert all(
        item is e.audio[0] for item, e in zip(items, [e for e in examples if e.audio], strict=True)
    )
    assert all(item is fit for item, fit in zip(items, _fit_items(examples, "audio"), strict=True))
    wav, rate = items[0]
    model_input = to_model_input(items[0], target_rate=rate, channels=1)
    assert torch.equal(model_input, wav)

    save_wav(tmp_path / "a.wav", wav, rate)
    ref = AudioRef(tmp_path / "a.wav", {"sr": rate})
    assert os.fspath(ref) == str(tmp_path / "a.wav") and str(ref) == str(tmp_path / "a.wav")
    from_file = Example("f", audio=(ref,))
    assert list(iter_items([from_file], "audio")) == [ref]
    assert _fit_items([from_file], "audio") == [tmp_path / "a.wav"]
    loaded = to_model_input(ref, target_rate=rate, channels=1)  # an AudioRef reads as its path
    assert loaded.shape == wav.shape and torch.allclose(loaded, wav, atol=1 / 16384)


def test_builtin_splits_are_about_80_10_10_and_partition_the_data():
    source = BuiltinSource(num_examples=600, sources=("text_only",))
    counts = Counter(e.split for e in source)
    assert 0.72 < counts["train"] / 600 < 0.88
    assert 0.05 < counts["val"] / 600 < 0.15 and 0.05 < counts["test"] / 600 < 0.15
    by_split = {s: BuiltinSource(num_examples=600, sources=("text_only",), split=s) for s in counts}
    assert {s: len(v) for s, v in by_split.items()} == counts
    ids = [e.id for v in by_split.values() for e in v]
    assert sorted(ids) == sorted(e.id for e in source)
    assert all(e.split == s for s, v in by_split.items() for e in v)
    assert by_split["val"][0].text == next(e for e in source if e.split == "val").text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_examples": -1},
        {"image_size": 4},
        {"audio_seconds": 0.1},
        {"audio_seconds": math.nan},
        {"audio_seconds": "3"},
        {"audio_seconds": True},
        {"sample_rate": 100},
        {"sample_rate": 24_000.0},
        {"sources": ("video",)},
        {"sources": ()},
        {"split": "dev"},
    ],
)
def test_builtin_rejects_bad_arguments(kwargs):
    with pytest.raises(DataError):
        BuiltinSource(**kwargs)


@pytest.mark.parametrize("group_size", [2, 5, 8])
def test_hard_negative_groups_share_colour_and_background_and_differ_in_shape(group_size):
    """``example_at(i, group_size)``: each sub-source's consecutive examples in groups sharing
    colour, background and texture, no two members of a group with one shape; the concepts stay
    spread over all 64; the id and split are the example's own; the rendering follows the
    grouped scene (the caption names the group's colour and the member's shape)."""
    source = BuiltinSource(num_examples=8, image_size=16, audio_seconds=0.5)
    n = len(source.sources)
    groups: dict[tuple[int, int], list] = defaultdict(list)
    concepts = Counter()
    for index in range(n * group_size * (1024 // group_size)):
        scene = _grouped_scene(0, index, n, group_size)
        groups[index % n, index // (n * group_size)].append(scene)
        concepts[scene.concept] += 1
    for members in groups.values():
        assert len(members) == group_size
        assert len({(s.colour, s.background, s.texture) for s in members}) == 1
        assert len({s.shape for s in members}) == group_size
        assert len({(s.cx, s.cy, s.scale) for s in members}) == group_size  # places stay own
    assert len(concepts) == 64
    plain, grouped = source.example_at(13), source.example_at(13, group_size)
    assert (grouped.id, grouped.split, grouped.source) == (plain.id, plain.split, plain.source)
    scene = _grouped_scene(0, 13, n, group_size)
    assert grouped.concept == scene.concept and scene.colour in grouped.text
    assert source.example_at(13, 1).text == plain.text  # 1: the plain scene


@pytest.mark.parametrize("group_size", [0, 9, 2.0, True])
def test_hard_negative_group_size_out_of_range_is_refused(group_size):
    with pytest.raises(DataError, match="group_size"):
        BuiltinSource(num_examples=4).example_at(0, group_size)


# ----------------------------------------------------------------------------------- Manifest


def _make_files(root: Path) -> None:
    (root / "img").mkdir()
    (root / "snd").mkdir()
    for name, colour in (("a", "red"), ("b", "blue")):
        Image.new("RGB", (8, 8), colour).save(root / "img" / f"{name}.png")
    for name in ("a", "b"):
        (root / "snd" / f"{name}.wav").write_bytes(b"RIFF")  # existence is all that is checked


def _write_manifest(root: Path, lines: list) -> Path:
    path = root / "manifest.jsonl"
    with path.open("wb") as f:
        for line in lines:
            raw = (
                line
                if isinstance(line, bytes)
                else (line if isinstance(line, str) else json.dumps(line)).encode()
            )
            f.write(raw + b"\n")
    return path


GOOD = [
    {"id": "t1", "text": "only text", "split": "train", "lang": "en"},
    {"id": "i1", "text": "a red square", "image": "img/a.png", "split": "val", "subset": "pics"},
    {"id": "a1", "text": None, "audio": "snd/a.wav", "split": "test", "concept": "beep"},
    {
        "id": "ta1",
        "text": "two clips",
        "image": None,
        "audio": [{"path": "snd/a.wav", "sr": 16000}, {"path": "snd/b.wav", "kind": "speech"}],
        "modalities": ["text", "audio"],
    },
    {"id": "e1", "text": "empty audio list", "image": "img/b.png", "audio": []},
]


def test_manifest_reads_good_records(tmp_path):
    _make_files(tmp_path)
    source = ManifestSource(_write_manifest(tmp_path, GOOD))
    assert source.skipped == [] and len(source) == 5 and source.num_records == 5
    t1, i1, a1, ta1, e1 = source
    assert (t1.modalities, t1.split, t1.meta) == (("text",), "train", {"lang": "en"})
    assert t1.source == tmp_path.name  # no subset: the manifest folder's name
    assert i1.image == tmp_path / "img" / "a.png" and i1.image.is_absolute()
    assert (i1.split, i1.source) == ("val", "pics")
    assert a1.modalities == ("audio",) and a1.audio == (AudioRef(tmp_path / "snd" / "a.wav", {}),)
    assert a1.concept == "beep"
    assert [r.path.name for r in ta1.audio] == ["a.wav", "b.wav"]
    assert [r.meta for r in ta1.audio] == [{"sr": 16000}, {"kind": "speech"}]
    assert ta1.split == "train" and ta1.modalities == ("text", "audio")
    assert e1.modalities == ("text", "image")
    assert list(source.texts()) == ["only text", "a red square", "two clips", "empty audio list"]
    assert len(list(source.images())) == 2


def test_manifest_accepts_absolute_paths_and_a_folder(tmp_path):
    _make_files(tmp_path)
    _write_manifest(tmp_path, [{"id": "x", "image": str(tmp_path / "img" / "a.png")}])
    (example,) = ManifestSource(tmp_path)
    assert example.image == tmp_path / "img" / "a.png"


BAD = [
    ("{not json", "invalid_json"),
    (b'{"id": "\xff"}', "invalid_json"),
    ("[1, 2]", "wrong_type"),
    ({"text": "no id"}, "missing_id"),
    ({"id": None, "text": "null id"}, "missing_id"),
    ({"id": 7, "text": "int id"}, "wrong_type"),
    ({"id": "t1", "text": "again"}, "duplicate_id"),
    ({"id": "b1", "text": 3}, "wrong_type"),
    ({"id": "b2", "audio": {"path": "snd/a.wav"}}, "wrong_type"),
    ({"id": "b3", "audio": [{"file": "snd/a.wav"}]}, "wrong_type"),
    ({"id": "b4", "text": "x", "split": "dev"}, "bad_split"),
    ({"id": "b5", "text": None, "image": None}, "no_modality"),
    ({"id": "b6", "text": "x", "modalities": ["text", "image"]}, "modalities_mismatch"),
    ({"id": "b7", "text": "x", "image": "img/missing.png"}, "missing_file"),
    ({"id": "b8", "audio": [{"path": "snd/a.wav"}, {"path": "snd/nope.wav"}]}, "missing_file"),
]


def test_manifest_reports_every_bad_record_with_line_and_reason(tmp_path):
    _make_files(tmp_path)
    lines = [*GOOD[:2], "", *[line for line, _ in BAD], "   "]
    source = ManifestSource(_write_manifest(tmp_path, lines))
    assert [e.id for e in source] == ["t1", "i1"]
    assert [(r.line, r.reason) for r in source.skipped] == [
        (4 + k, reason) for k, (_, reason) in enumerate(BAD)
    ]
    # nothing dropped silently: every non-blank line is an example or a skipped record
    assert len(source) + len(source.skipped) == source.num_records == len(GOOD[:2]) + len(BAD)
    assert source.skip_counts() == Counter(reason for _, reason in BAD)
    by_id = {r.id: r for r in source.skipped}
    assert by_id["t1"].reason == "duplicate_id" and "line 1" in by_id["t1"].detail
    assert "img/missing.png" in by_id["b7"].detail and "snd/nope.wav" in by_id["b8"].detail
    assert [r.id for r in source.skipped if r.reason == "missing_id"] == [None, None]
    assert isinstance(source.skipped[0], SkippedRecord) and "line 4" in str(source.skipped[0])


def test_manifest_strict_mode_raises_typed_error(tmp_path):
    _make_files(tmp_path)
    path = _write_manifest(tmp_path, [GOOD[0], {"id": "b", "image": "img/none.png"}])
    with pytest.raises(BadRecordError, match="line 2") as info:
        ManifestSource(path, strict=True)
    assert isinstance(info.value, DataError) and isinstance(info.value, ValueError)
    assert info.value.record == SkippedRecord(2, "b", "missing_file", info.value.record.detail)
    assert pickle.loads(pickle.dumps(info.value)).record == info.value.record


def test_manifest_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataNotFoundError, match=r"nope\.jsonl") as info:
        ManifestSource(missing)
    assert isinstance(info.value, FileNotFoundError)


def test_manifest_split_and_modality_filters(tmp_path):
    _make_files(tmp_path)
    lines = [*GOOD, {"id": "m1", "text": "image gone", "image": "img/gone.png"}]
    path = _write_manifest(tmp_path, lines)
    val = ManifestSource(path, split="val")
    assert [e.id for e in val] == ["i1"] and val.num_filtered == 5
    # missing image is reported only when images are kept
    assert ManifestSource(path).skip_counts() == Counter(missing_file=1)
    texts = ManifestSource(path, modalities=("text",))
    assert texts.skipped == [] and all(e.modalities == ("text",) for e in texts)
    assert [e.id for e in texts] == ["t1", "i1", "ta1", "e1", "m1"] and texts.num_filtered == 1
    with pytest.raises(DataError):
        ManifestSource(path, modalities=("video",))


def test_manifest_records_without_split_use_the_id_hash(tmp_path):
    lines = [{"id": f"r{i}", "text": "x"} for i in range(200)]
    path = _write_manifest(tmp_path, lines)
    assert {e.split for e in ManifestSource(path)} == {"train"}
    counts = Counter(e.split for e in ManifestSource(path, val_fraction=0.2, test_fraction=0.2))
    assert 20 < counts["val"] < 60 and 20 < counts["test"] < 60
    again = Counter(e.split for e in ManifestSource(path, val_fraction=0.2, test_fraction=0.2))
    assert counts == again


# ------------------------------------------------------------------------------------- Folder


@pytest.fixture
def folder(tmp_path) -> Path:
    for rel in (
        "b.png",
        "a/z.JPG",
        "a/c/d.webp",
        ".hidden.png",
        ".git/x.png",
        "notes.txt",
        "s.wav",
    ):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".png", ".jpg", ".webp"):
            Image.new("RGB", (4, 4)).save(path)
        else:
            path.write_bytes("héllo\n".encode())
    return tmp_path


def test_folder_lists_files_of_a_modality_in_sorted_order(folder):
    images = FolderSource(folder, "image")
    assert [e.id for e in images] == ["a/c/d.webp", "a/z.JPG", "b.png"]
    assert all(e.image == folder / e.id and e.split == "train" for e in images)
    assert list(images.images()) == [folder / e.id for e in images]
    assert [e.id for e in FolderSource(folder, "image", recursive=False)] == ["b.png"]
    assert [e.id for e in FolderSource(folder, "image", extensions=(".jpg", "webp"))] == [
        "a/c/d.webp",
        "a/z.JPG",
    ]
    (text,) = FolderSource(folder, "text")
    assert (text.id, text.text, text.modalities) == ("notes.txt", "héllo\n", ("text",))
    (clip,) = FolderSource(folder, "audio")
    assert clip.audio == (AudioRef(folder / "s.wav"),)


def test_folder_val_fraction_is_deterministic(tmp_path):
    for i in range(100):
        (tmp_path / f"{i:03d}.txt").write_text("x")
    splits = [e.split for e in FolderSource(tmp_path, "text", val_fraction=0.3)]
    assert splits == [e.split for e in FolderSource(tmp_path, "text", val_fraction=0.3)]
    assert 15 < splits.count("val") < 45 and set(splits) == {"train", "val"}
    assert len(FolderSource(tmp_path, "text", val_fraction=0.3, split="val")) == splits.count("val")


def test_folder_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="nowhere"):
        FolderSource(tmp_path / "nowhere", "image")
    with pytest.raises(DataError, match="modality"):
        FolderSource(tmp_path, "video")
    with pytest.raises(DataError):
        FolderSource(tmp_path, "text", val_fraction=1.5)


def test_folder_text_keeps_its_bytes_exactly(tmp_path):
    """read_text translated newlines: "\\r\\n" and a lone "\\r" became "\\n"."""
    raw = "héllo\r\nline two\rline three\n\r\nlast".encode()
    (tmp_path / "crlf.txt").write_bytes(raw)
    (text,) = FolderSource(tmp_path, "text")
    assert text.text == raw.decode("utf-8") and text.text.count("\r") == 3
    assert list(FolderSource(tmp_path, "text").texts()) == [raw.decode("utf-8")]


def test_folder_fingerprint_follows_files_and_arguments(tmp_path):
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
    first = FolderSource(tmp_path, "text").fingerprint()
    assert FolderSource(tmp_path, "text").fingerprint() == first
    assert FolderSource(tmp_path, "text", name="other").fingerprint() != first
    (tmp_path / "b.txt").write_text("b.txt, longer")
    changed = FolderSource(tmp_path, "text").fingerprint()
    assert changed != first
    os.utime(tmp_path / "a.txt", ns=(1, 1))
    assert FolderSource(tmp_path, "text").fingerprint() != changed
    (tmp_path / "0.txt").write_text("first")  # a file sorted before the others
    assert len({changed, FolderSource(tmp_path, "text").fingerprint()}) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_folder_leaves_out_fifos_and_broken_links_without_opening_them(tmp_path):
    """A FIFO named like a text file was listed, and reading it blocked for ever."""
    (tmp_path / "a.txt").write_text("a")
    os.mkfifo(tmp_path / "b-fifo.txt")  # sorted before the broken link: read first
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "sub" / "pipe.txt")
    (tmp_path / "link.txt").symlink_to(tmp_path / "a.txt")
    (tmp_path / "c-broken.txt").symlink_to(tmp_path / "nowhere.txt")

    def read():
        source = FolderSource(tmp_path, "text")
        return [e.id for e in source], list(source.texts()), source.fingerprint()

    ids, texts, fingerprint = _run_with_timeout(read)
    assert ids == ["a.txt", "link.txt"] and texts == ["a", "a"] and len(fingerprint) == 64


# ------------------------------------------------------------- manifest: not regular files


def _run_with_timeout(fn, seconds: float = 10.0):
    """``fn()`` in a daemon thread: a reader that blocks (opening a FIFO) fails the test."""
    import threading

    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["value"] = fn()
        except BaseException as error:  # re-raised in the test's thread
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "reading the manifest blocked (did it open a FIFO?)"
    if "error" in result:
        raise result["error"]
    return result["value"]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_manifest_reports_fifo_device_and_folder_for_what_they_are(tmp_path):
    os.mkfifo(tmp_path / "pipe.wav")
    (tmp_path / "folder.png").mkdir()
    _make_files(tmp_path)
    records = [
        {"id": "fifo", "audio": "pipe.wav"},
        {"id": "dir", "image": "folder.png"},
        {"id": "ok", "image": "img/a.png"},
    ]
    if os.path.exists("/dev/zero"):
        records.append({"id": "dev", "audio": "/dev/zero"})
    path = _write_manifest(tmp_path, records)
    source = _run_with_timeout(lambda: ManifestSource(path))
    assert [e.id for e in source] == ["ok"]
    details = {r.id: (r.reason, r.detail) for r in source.skipped}
    assert (
        details["fifo"][0] == "not_a_file" and "is a FIFO, not a regular file" in details["fifo"][1]
    )
    assert "pipe.wav" in details["fifo"][1]
    assert "is a directory, not a regular file" in details["dir"][1]
    if "dev" in details:
        assert "is a character device, not a regular file" in details["dev"][1]
    assert all("not found" not in detail for _, detail in details.values())
    with pytest.raises(BadRecordError, match="FIFO"):
        _run_with_timeout(lambda: ManifestSource(path, strict=True))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs (POSIX)")
def test_a_manifest_that_is_a_fifo_is_refused_without_opening_it(tmp_path):
    os.mkfifo(tmp_path / "manifest.jsonl")

    def build():
        with pytest.raises(DataError, match="is a FIFO, not a regular file") as info:
            ManifestSource(tmp_path / "manifest.jsonl")
        return info.value

    assert not isinstance(_run_with_timeout(build), DataNotFoundError)


def test_manifest_fingerprint_follows_bytes_files_and_arguments(tmp_path):
    _make_files(tmp_path)
    path = _write_manifest(tmp_path, GOOD)
    first = ManifestSource(path).fingerprint()
    assert ManifestSource(path).fingerprint() == first and len(first) == 64
    assert ManifestSource(path, split="val").fingerprint() != first
    os.utime(tmp_path / "snd" / "b.wav", ns=(1, 1))  # a referenced file changed
    touched = ManifestSource(path).fingerprint()
    assert touched != first
    _write_manifest(tmp_path, [GOOD[1], GOOD[0], *GOOD[2:]])  # same records, other order
    assert ManifestSource(path).fingerprint() != touched
