"""Span embeddings, zero-shot by embedding similarity and retrieval R@k (evaluation/embedding.py)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.evaluation.embedding import (
    SpanEmbedder,
    class_embeddings,
    retrieval_at_k,
    zero_shot_by_embedding,
)
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.contrastive import ContrastiveHead, pool_spans
from tokenize_mm.sequence.interleave import SpanOrder, interleave


@pytest.fixture(scope="module")
def layout(store):
    return store[1]  # the tiny tokenizers' layout


def test_a_span_alone_embeds_as_inside_a_training_document(layout):
    """Isolated attention and relative positions: the embedding of an image alone equals the
    one the training pass pools for the same image after a caption in one document."""
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size).eval()
    head = ContrastiveHead(model.d_model, len(MODALITIES), 8)
    image = torch.randint(0, 32, (1, 16))
    text = torch.randint(0, 100, (1, 7))
    seq = interleave(layout, [("text", text), ("image", image)],
                     order=SpanOrder("fixed", order=("text", "image", "audio")))  # fmt: skip
    n = seq.tokens.numel()
    with torch.no_grad():
        hidden = model(seq.tokens[None], seq.modality[None].long(), torch.arange(n)[None],
                       torch.ones(1, n, dtype=torch.long), isolate_modalities=True)  # fmt: skip
        pooled, _ = pool_spans(hidden, seq.modality[None].long(), torch.ones(1, n), 3)
        in_document = head.embed(pooled[:1, 1], 1)[0]
    alone = SpanEmbedder(model, head, layout)("image", [image])
    assert alone.shape == (8,) and torch.allclose(alone.norm(), torch.tensor(1.0))
    assert torch.allclose(alone, in_document, atol=1e-5)
    with pytest.raises(ValueError, match="no audio item"):
        SpanEmbedder(model, head, layout)("audio", [])


def test_an_item_longer_than_the_context_raises_or_embeds_from_its_beginning(layout):
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=layout.vocab_size).eval()  # 128 positions
    head = ContrastiveHead(model.d_model, len(MODALITIES), 8)
    clip = torch.randint(0, 32, (2, 300))  # two codebooks, flattened: 600 + 4 positions
    with pytest.raises(ValueError, match="lays out as 604 tokens, the model reads 128"):
        SpanEmbedder(model, head, layout)("audio", [clip])
    embed = SpanEmbedder(model, head, layout, truncate=True)
    steps = embed.fitting_steps(2)
    assert steps == (128 - 4) // 2
    cut = embed("audio", [clip])
    assert embed.truncated == 1
    assert torch.allclose(cut, SpanEmbedder(model, head, layout)("audio", [clip[:, :steps]]))
    embed("audio", [clip[:, :steps]])  # one that fits is not counted
    assert embed.truncated == 1


def test_zero_shot_picks_the_most_similar_class_after_prompt_ensembling():
    basis = torch.eye(4)
    vectors = {"a red circle": basis[0], "the sound of a red circle": basis[0] + 0.2 * basis[2],
               "a blue star": basis[1], "the sound of a blue star": basis[1]}  # fmt: skip
    classes, table = class_embeddings(
        lambda p: F.normalize(vectors[p], dim=0),
        {"red circle": ["a red circle", "the sound of a red circle"],
         "blue star": ["a blue star", "the sound of a blue star"]},
    )  # fmt: skip
    assert classes == ["red circle", "blue star"] and torch.allclose(
        table.norm(dim=1), torch.ones(2)
    )
    queries = F.normalize(torch.stack([basis[0] + 0.1 * basis[1], basis[1], basis[0]]), dim=1)
    out = zero_shot_by_embedding(queries, ["red circle", "blue star", "blue star"], classes, table)
    assert out["accuracy"] == pytest.approx(2 / 3) and out["chance"] == 0.5
    assert out["predictions"][2] == ("blue star", "red circle")


def test_retrieval_counts_the_paired_item_and_the_concept():
    # 4 pairs; query 0 finds its item first, query 1 second, queries 2 and 3 swap
    gallery = torch.eye(4)
    queries = torch.stack([gallery[0], F.normalize(gallery[1] + 1.5 * gallery[0], dim=0),
                           gallery[3], gallery[2]])  # fmt: skip
    out = retrieval_at_k(queries, gallery, ks=(1, 2), concepts=["x", "y", "z", "z"])
    assert out["R@1"] == 0.25 and out["R@2"] == 0.5
    assert out["R@1_concept"] == 0.75  # 2 and 3 retrieve each other: same concept
    assert out["chance@1"] == 0.25 and out["chance@1_concept"] == pytest.approx(
        (1 + 1 + 2 + 2) / 16
    )
    with pytest.raises(ValueError, match="gallery"):
        retrieval_at_k(queries, gallery[:3])


def test_contrastive_evaluation_covers_every_direction_and_both_contexts():
    """A perfect embedder (each item a one-hot of its concept; prompts of their concept) scores
    R@1 concept 1 in every direction and zero-shot 1 from image and audio."""
    from types import SimpleNamespace

    from tokenize_mm.evaluation import EvalExample, contrastive_evaluation

    concepts = ["red circle", "blue star", "green ring"]

    def embed(modality, items):
        name = next(c for c in concepts if c in items[0])
        return F.one_hot(torch.tensor(concepts.index(name)), len(concepts)).float()

    examples = [
        EvalExample(id=str(i), concept=c, items={m: (f"{c} #{i}",) for m in MODALITIES})
        for i, c in enumerate(concepts * 2)
    ]
    text = SimpleNamespace(encode=lambda prompt: SimpleNamespace(codes=prompt))
    out = contrastive_evaluation(embed, text, examples, concepts=concepts)
    assert len(out["retrieval"]) == 6  # text, image, audio: every ordered pair
    assert all(r["R@1_concept"] == 1.0 for r in out["retrieval"].values())
    assert out["retrieval"]["image->text"]["R@5"] == 1.0  # the pair ties with its twin: top 2
    assert {k: v["accuracy"] for k, v in out["zero_shot"].items()} == {"image": 1.0, "audio": 1.0}
    assert out["zero_shot"]["audio"]["chance"] == pytest.approx(1 / 3)
    assert "zero_shot_captions" not in out  # only with concept_prompts


def test_contrastive_evaluation_by_concept_prompts():
    """With ``concept_prompts`` a second zero-shot figure reads each concept's own prompts: an
    embedder that knows the concepts only by their captions' words scores 1 there and chance-level
    by the templates, whose prompts ("a red circle") it cannot place; each prompt embedded once."""
    from types import SimpleNamespace

    from tokenize_mm.evaluation import EvalExample, contrastive_evaluation

    concepts = ["red circle", "blue star", "green ring"]
    words = {"red circle": "tomato", "blue star": "sky", "green ring": "grass"}
    calls = []

    def embed(modality, items):
        calls.append(items[0])
        key = items[0] if modality != "text" else next(
            (c for c, w in words.items() if w in items[0]), None)  # fmt: skip
        if key is None:  # a template prompt: the same vector for every concept
            return torch.ones(len(concepts)) / len(concepts) ** 0.5
        name = next(c for c in concepts if c in key)
        return F.one_hot(torch.tensor(concepts.index(name)), len(concepts)).float()

    examples = [
        EvalExample(id=str(i), concept=c, items={m: (f"{c} #{i}",) for m in MODALITIES})
        for i, c in enumerate(concepts * 2)
    ]
    text = SimpleNamespace(encode=lambda prompt: SimpleNamespace(codes=prompt))
    out = contrastive_evaluation(
        embed, text, examples, concepts=concepts,
        concept_prompts=lambda c: [f"the {words[c]} one", f"like {words[c]}"],
    )  # fmt: skip
    assert {k: v["accuracy"] for k, v in out["zero_shot_captions"].items()} == {
        "image": 1.0, "audio": 1.0}  # fmt: skip
    assert out["zero_shot"]["image"]["accuracy"] < 1.0
    prompts = [c for c in calls if "one" in c or "like" in c]
    assert len(prompts) == len(set(prompts)) == 6  # 3 concepts x 2 prompts, both contexts
