"""VocabLayout and interleaving: disjoint ranges, exact id maps, fingerprints, exact round trips."""

from __future__ import annotations

import random

import pytest
import torch

from tokenize_mm import InvalidCodesError, TokenizerInfo
from tokenize_mm.sequence.interleave import (
    ORDER_TEMPLATES,
    SpanOrder,
    deinterleave,
    interleave,
)
from tokenize_mm.sequence.vocab import MODALITY_IDS, SPECIALS, LayoutError, VocabLayout


def infos(k_audio: int = 3) -> dict[str, TokenizerInfo]:
    return {
        "text": TokenizerInfo(modality="text", kind="text.sentencepiece", codebook_size=300),
        "image": TokenizerInfo(modality="image", kind="image.vq", codebook_size=64),
        "audio": TokenizerInfo(
            modality="audio", kind="audio.codec", codebook_size=32, num_codebooks=k_audio,
            sample_rate=24_000, frame_rate=50.0, tokens_per_second=50.0 * k_audio,
        ),
    }  # fmt: skip


def layout(pattern: str = "flatten", k_audio: int = 3, **ids) -> VocabLayout:
    i = infos(k_audio)
    return VocabLayout(i, {m: ids.get(m, f"id-{m}") for m in i}, pattern)


def random_items(rng: random.Random, lay: VocabLayout) -> list[tuple[str, torch.Tensor]]:
    items = []
    for m, info in lay.infos.items():
        for _ in range(rng.choice([0, 1, 1, 2]) if m == "audio" else rng.choice([0, 1])):
            k = info.num_codebooks if m == "audio" else 1
            t = rng.randint(0, 9)
            g = torch.Generator().manual_seed(rng.randrange(10**6))
            items.append((m, torch.randint(info.codebook_size, (k, t), generator=g)))
    return items


def test_ranges_are_disjoint_and_cover_the_vocabulary():
    lay = layout()
    assert lay.vocab_size == len(SPECIALS) + 300 + 64 + 3 * 32
    ids = torch.arange(lay.vocab_size)
    modality, codebook, local = lay.to_local(ids)
    seen = set()
    for r in lay.ranges:
        assert (r.modality, r.codebook) not in seen
        seen.add((r.modality, r.codebook))
        assert bool((modality[r.start : r.stop] == MODALITY_IDS[r.modality]).all())
        assert torch.equal(local[r.start : r.stop], torch.arange(r.size))
        assert bool((codebook[r.start : r.stop] == r.codebook).all())
    assert [r.start for r in lay.ranges] == sorted(r.start for r in lay.ranges)
    assert all(a.stop == b.start for a, b in zip(lay.ranges, lay.ranges[1:], strict=False))


def test_to_global_and_to_local_are_inverse():
    lay = layout()
    g = torch.Generator().manual_seed(0)
    for m, info in lay.infos.items():
        for k in range(info.num_codebooks if m == "audio" else 1):
            local = torch.randint(info.codebook_size, (50,), generator=g)
            mod, cb, back = lay.to_local(lay.to_global(m, local, k))
            assert torch.equal(back, local) and bool((cb == k).all())
            assert bool((mod == MODALITY_IDS[m]).all())


def test_specials_and_markers_modalities():
    lay = layout()
    assert lay.special("pad") == 0
    assert int(lay.modality_of(torch.tensor(lay.begin("image")))) == MODALITY_IDS["image"]
    assert int(lay.modality_of(torch.tensor(lay.special("eos")))) == MODALITY_IDS["special"]
    assert int(lay.modality_of(torch.tensor(lay.special("delay_pad")))) == MODALITY_IDS["audio"]
    with pytest.raises(LayoutError, match="unknown special"):
        lay.special("sep")
    with pytest.raises(LayoutError, match="another layout"):
        lay.to_local(torch.tensor([lay.vocab_size]))
    with pytest.raises(InvalidCodesError, match="text ids"):
        lay.to_global("text", torch.tensor([300]))


def test_fingerprint_changes_with_tokenizers_and_layout():
    base = layout().fingerprint
    assert layout().fingerprint == base
    assert layout(text="another artifact").fingerprint != base
    assert layout("delay").fingerprint != base
    assert layout(k_audio=2).fingerprint != base
    only_text = VocabLayout({"text": infos()["text"]}, {"text": "id-text"})
    assert only_text.fingerprint != base


def test_save_load_round_trip(tmp_path):
    lay = layout("delay")
    lay.save(tmp_path / "layout.json")
    back = VocabLayout.load(tmp_path / "layout.json")
    assert back == lay and back.fingerprint == lay.fingerprint
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left nothing behind


def test_from_artifacts_identity_is_the_artifact(tmp_path, tiny_text, tiny_image, tiny_audio):
    dirs = {"text": tiny_text.save(tmp_path / "t"), "image": tiny_image.save(tmp_path / "i"),
            "audio": tiny_audio.save(tmp_path / "a")}  # fmt: skip
    lay = VocabLayout.from_artifacts(dirs)
    assert lay.infos["audio"] == tiny_audio.info
    assert all(v.startswith("artifact:") for v in lay.identities.values())
    assert VocabLayout.from_artifacts(dirs).fingerprint == lay.fingerprint
    refit = tiny_text.save(tmp_path / "t2")
    (refit / "manifest.json").write_text(  # same tokenizer, another description: another artifact
        (refit / "manifest.json").read_text().replace('"fit_data": {', '"fit_data": {"x": 1, ', 1)
    )
    assert VocabLayout.from_artifacts({**dirs, "text": refit}).fingerprint != lay.fingerprint
    mem = VocabLayout.from_tokenizers({"text": tiny_text, "image": tiny_image, "audio": tiny_audio})
    assert mem.vocab_size == lay.vocab_size and mem.fingerprint != lay.fingerprint


@pytest.mark.parametrize("pattern", ["flatten", "delay"])
@pytest.mark.parametrize("mode", ["fixed", "random", *ORDER_TEMPLATES])
def test_interleave_round_trip(pattern, mode):
    rng = random.Random(hash((pattern, mode)) % 1000)
    for k_audio in (1, 3):
        lay = layout(pattern, k_audio)
        for i in range(30):
            items = random_items(rng, lay)
            seq = interleave(lay, items, order=SpanOrder(mode), example_id=f"ex{i}")
            back = deinterleave(lay, seq.tokens)
            by_modality = {m: [c for mm, c in items if mm == m] for m in lay.modalities}
            for m in lay.modalities:
                got = [c for mm, c in back if mm == m]
                assert len(got) == len(by_modality[m])
                assert all(torch.equal(a, b) for a, b in zip(got, by_modality[m], strict=True))
            assert torch.equal(seq.modality, lay.modality_of(seq.tokens))
            assert [s[1] for s in seq.spans][1:] == seq.cuts.tolist()
            assert all(0 < c < seq.tokens.numel() for c in seq.cuts.tolist())


def test_span_orders():
    lay = layout()
    items = [("audio", torch.zeros(3, 2, dtype=torch.long)), ("text", torch.zeros(1, 2, dtype=torch.long)),
             ("image", torch.zeros(1, 4, dtype=torch.long))]  # fmt: skip
    order = lambda o, i="": [s[0] for s in interleave(lay, items, order=o, example_id=i).spans]  # noqa: E731
    assert order(SpanOrder()) == ["text", "image", "audio"]
    assert order(SpanOrder("caption_after_image")) == ["image", "text", "audio"]
    assert order(SpanOrder("fixed", ("audio", "image", "text"))) == ["audio", "image", "text"]
    randoms = {tuple(order(SpanOrder("random"), f"e{i}")) for i in range(40)}
    assert len(randoms) == 6  # every permutation occurs
    assert order(SpanOrder("random"), "e1") == order(SpanOrder("random"), "e1")  # per example
    with pytest.raises(LayoutError, match="span order"):
        SpanOrder("sideways")


def test_deinterleave_names_malformed_positions():
    lay = layout()
    seq = interleave(lay, [("text", torch.tensor([[1, 2, 3]])), ("image", torch.tensor([[4]]))])
    tokens = seq.tokens.clone()
    with pytest.raises(InvalidCodesError, match="bos"):
        deinterleave(lay, tokens[1:])
    bad = tokens.clone()
    bad[3] = lay.to_global("image", torch.tensor(0))  # an image id inside the text span
    with pytest.raises(InvalidCodesError, match="position 3"):
        deinterleave(lay, bad)
    unclosed = torch.cat([tokens[:4], tokens[-1:]])
    with pytest.raises(InvalidCodesError, match="never closed"):
        deinterleave(lay, unclosed)


def test_layout_refuses_modality_mismatch():
    i = infos()
    with pytest.raises(LayoutError, match="is a 'image' tokenizer"):
        VocabLayout({"text": i["image"]}, {"text": "x"})
    with pytest.raises(LayoutError, match="no tokenizer"):
        interleave(
            VocabLayout({"text": i["text"]}, {"text": "x"}),
            [("audio", torch.zeros(3, 1, dtype=torch.long))],
        )
