"""Search: the trained-model folder, the embedding index, its backends and its errors.

The model is the tiny preset with an untrained contrastive head over the session's tiny
tokenizers: what is checked here is bookkeeping (an item finds itself, faiss agrees with exact
search, every bad input is named), not the quality of the space.
"""

from __future__ import annotations

import itertools
import json

import pytest
import soundfile as sf
import torch
from conftest import make_clips, make_images

from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.bundle import (
    WEIGHTS,
    ModelFolderError,
    load_trained_model,
    save_trained_model,
)
from tokenize_mm.models.contrastive import ContrastiveHead
from tokenize_mm.search import (
    EmbeddingIndex,
    EmptyIndexError,
    ExactSearch,
    FaissSearch,
    IndexMismatchError,
    ItemEmbedder,
    SearchError,
    build_index,
    collect_items,
)
from tokenize_mm.search.embed import file_item
from tokenize_mm.sequence import VocabLayout
from tokenize_mm.tokenizers.errors import InvalidInputError


def _model_folder(root, tokenizers, seed=0, head=True, pooling="mean", span_attention="causal"):
    dirs = {m: tokenizers[m].save(root / "artifacts" / m) for m in MODALITIES}
    layout = VocabLayout.from_artifacts(dirs)
    torch.manual_seed(seed)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size)
    contrastive = None
    if head:
        contrastive = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=16,
                                      pooling=pooling, pool_heads=2,
                                      span_attention=span_attention)  # fmt: skip
        if contrastive.pooler is not None:  # queries away from zero: not the mean
            torch.nn.init.normal_(contrastive.pooler.query, std=2.0)
    return save_trained_model(root / "model", model, contrastive, dirs, layout, step=7), model


@pytest.fixture(scope="module")
def tokenizers(tiny_text, tiny_image, tiny_audio):
    return {"text": tiny_text, "image": tiny_image, "audio": tiny_audio}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Two images, two clips, two texts, an unreadable image and a file of no known type."""
    root = tmp_path_factory.mktemp("items")
    for i, img in enumerate(make_images(2, seed=5)):
        img.save(root / f"img{i}.png")
    for i, (wav, sr) in enumerate(make_clips(2, seed=5)):
        sf.write(root / f"clip{i}.wav", wav[0].numpy(), sr)
    (root / "a.txt").write_text("a red circle", encoding="utf-8")
    (root / "sub").mkdir()
    (root / "sub" / "b.txt").write_text("the sound of a blue star", encoding="utf-8")
    (root / "broken.png").write_bytes(b"not a png")
    (root / "notes.md").write_text("# not indexed", encoding="utf-8")
    (root / ".hidden.txt").write_text("left out", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizers):
    path, _ = _model_folder(tmp_path_factory.mktemp("model"), tokenizers)
    return load_trained_model(path)


@pytest.mark.parametrize(("pooling", "span_attention"),
                         [("mean", "causal"), ("attention", "causal"), ("mean", "bidirectional")])  # fmt: skip
def test_the_model_folder_round_trips_and_embeds_as_the_model_did(tmp_path, tokenizers, pooling,
                                                                  span_attention):  # fmt: skip
    path, model = _model_folder(tmp_path, tokenizers, pooling=pooling,
                                span_attention=span_attention)  # fmt: skip
    loaded = load_trained_model(path)
    assert loaded.step == 7 and loaded.head is not None and loaded.head.pooling == pooling
    assert loaded.head.span_attention == span_attention
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key
    if pooling == "attention":
        assert loaded.head.pooler.heads == 2 and loaded.head.pooler.query.abs().sum() > 0
    assert loaded.model.tok_emb.weight.data_ptr() == loaded.model.lm_head.weight.data_ptr()  # tied
    (tmp_path / "q.txt").write_text("a red circle", encoding="utf-8")
    item = file_item(tmp_path / "q.txt")
    a, _ = ItemEmbedder(loaded)(item)
    b, _ = ItemEmbedder(load_trained_model(path))(item)
    assert torch.equal(a, b) and a.norm().item() == pytest.approx(1.0, abs=1e-5)


def test_an_altered_or_foreign_model_folder_is_refused(tmp_path, tokenizers):
    path, _ = _model_folder(tmp_path, tokenizers)
    weights = path / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(ModelFolderError, match="sha256"):
        load_trained_model(path)
    with pytest.raises(ModelFolderError, match="not a trained-model folder"):
        load_trained_model(tmp_path / "artifacts")
    meta = json.loads((path / "model.json").read_text())
    (path / "model.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(ModelFolderError, match="version 99"):
        load_trained_model(path)


def test_a_model_without_a_contrastive_head_cannot_embed(tmp_path, tokenizers):
    path, _ = _model_folder(tmp_path, tokenizers, head=False)
    with pytest.raises(ModelFolderError, match="contrastive=clip"):
        ItemEmbedder(load_trained_model(path))


def test_an_index_of_a_folder_lists_what_it_left_out_and_finds_each_item(trained, folder, tmp_path):
    items, skipped = collect_items(folder)
    assert sorted(i.id for i in items) == ["a.txt", "broken.png", "clip0.wav", "clip1.wav",
                                           "img0.png", "img1.png", "sub/b.txt"]  # fmt: skip
    assert any("notes.md" in s for s in skipped)
    index = build_index(trained, items, skipped)
    assert len(index) == 6 and any("broken.png" in s for s in index.skipped)
    saved = EmbeddingIndex.load(index.save(tmp_path / "index"))
    assert torch.equal(saved.embeddings, index.embeddings) and saved.items == index.items
    saved.check_model(trained)
    embed = ItemEmbedder(trained)
    for record in saved.items:
        vector, _ = embed(file_item(folder / record["id"], record["id"]))
        hits = saved.search(vector, k=3, modality=record["modality"])
        assert hits[0].item["id"] == record["id"] and hits[0].score == pytest.approx(1, abs=1e-4)
        assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
        assert {h.item["modality"] for h in hits} == {record["modality"]}
    assert len(saved.search(vector, k=100)) == 6  # k beyond the index: every row once


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_faiss_gives_the_top_k_of_exact_search(kind):
    g = torch.Generator().manual_seed(0)
    rows = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=1)
    queries = torch.nn.functional.normalize(torch.randn(25, 32, generator=g), dim=1)
    exact_scores, exact_ids = ExactSearch(rows).search(queries, 10)
    scores, ids = FaissSearch(rows, kind).search(queries, 10)
    assert torch.equal(ids, exact_ids)
    assert torch.allclose(scores, exact_scores, atol=1e-5)


def test_bad_queries_and_indexes_are_named(trained, folder, tmp_path, tokenizers):
    index = build_index(trained, [file_item(folder / "a.txt", "a.txt")])
    vector, _ = ItemEmbedder(trained)(file_item(folder / "a.txt"))
    with pytest.raises(InvalidInputError, match=r"broken\.png"):  # a query file it cannot read
        ItemEmbedder(trained)(file_item(folder / "broken.png"))
    with pytest.raises(InvalidInputError, match=r"notes\.md"):  # a type no tokenizer reads
        file_item(folder / "notes.md")
    with pytest.raises(EmptyIndexError, match="no image item"):
        index.search(vector, modality="image")
    other_path, _ = _model_folder(tmp_path / "other", tokenizers, seed=1)
    with pytest.raises(IndexMismatchError, match="built with the model"):
        index.check_model(load_trained_model(other_path))
    with pytest.raises(EmptyIndexError, match=r"broken\.png"):
        build_index(trained, [file_item(folder / "broken.png")])
    with pytest.raises(SearchError, match="not an index"):
        EmbeddingIndex.load(tmp_path)
    with pytest.raises(SearchError, match="does not exist"):
        collect_items(tmp_path / "missing")
    with pytest.raises(
        SearchError, match=r"not a single file; to search with this file, give file="
    ):
        collect_items(folder / "a.txt")


@pytest.mark.parametrize(("bad", "message"), [({"k": 0}, "k=0"), ({"k": "abc"}, "k='abc'"),
                                              ({"modality": "video"}, "modality=video"),
                                              ({"file": "q.png"}, "not both")])  # fmt: skip
def test_the_command_refuses_bad_options_before_loading_anything(tmp_path, bad, message):
    from omegaconf import OmegaConf

    from tokenize_mm.cli.search import run

    base = {"model_dir": str(tmp_path / "missing"), "index_dir": str(tmp_path), "inputs": None,
            "query": "a red circle", "file": None, "modality": None, "k": 5, "backend": "exact",
            "sheet": None}  # fmt: skip
    with pytest.raises(SearchError, match=message):
        run(OmegaConf.create({**base, **bad}))


def test_the_command_never_indexes_into_a_folder_of_the_users(tmp_path):
    """index_dir naming a folder of photos (or the very folder being indexed) is refused before the
    model is even loaded; the folder is left as it was."""
    from omegaconf import OmegaConf

    from tokenize_mm.cli.search import run
    from tokenize_mm.core.errors import ForeignFolderError

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(b"mine")
    cfg = {"model_dir": str(tmp_path / "missing"), "index_dir": str(photos),
           "inputs": str(photos), "query": None, "file": None, "modality": None, "k": 5,
           "backend": "exact", "sheet": None}  # fmt: skip
    with pytest.raises(ForeignFolderError, match="not an embedding index"):
        run(OmegaConf.create(cfg))
    assert [p.name for p in photos.iterdir()] == ["a.png"]
