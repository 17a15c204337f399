"""Evaluation measures: sequence scoring, grounding gain, zero-shot ranking, and the regret W.

Invariants, not trained figures: scores do not depend on batching, shuffling identical contexts
gains nothing, a context is cut to fit and the target never is, W is 0 for a strategy that is best
on every modality.
"""

from __future__ import annotations

import math

import pytest
import torch

from tokenize_mm.data import BuiltinSource
from tokenize_mm.data.builtin import caption_prompts, concept_caption, sample_scene, scene_captions
from tokenize_mm.data.errors import DataError
from tokenize_mm.evaluation import (
    EvalExample,
    average_loss,
    encode_examples,
    grounding_gains,
    modality_losses,
    seed_spread,
    sequence_losses,
    worst_modality_regret,
    zero_shot,
)
from tokenize_mm.evaluation.grounding import derangement, pair_sequence
from tokenize_mm.evaluation.scoring import continuation_losses
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.sequence import MODALITY_IDS, VocabLayout, deinterleave


@pytest.fixture(scope="module")
def layout(tiny_text, tiny_image, tiny_audio) -> VocabLayout:
    return VocabLayout.from_tokenizers(
        {"text": tiny_text, "image": tiny_image, "audio": tiny_audio}
    )


@pytest.fixture(scope="module")
def examples(tiny_text, tiny_image, tiny_audio) -> list[EvalExample]:
    source = BuiltinSource(num_examples=6, image_size=32, audio_seconds=0.5, sources=("trimodal",))
    tokenizers = {"text": tiny_text, "image": tiny_image, "audio": tiny_audio}
    return encode_examples(source, tokenizers)


@pytest.fixture(scope="module")
def model(layout) -> DecoderLM:
    torch.manual_seed(0)
    return DecoderLM(preset("tiny", max_positions=256), vocab_size=layout.vocab_size)


def test_encode_examples_keeps_items_and_concepts(examples):
    assert len(examples) == 6
    for ex in examples:
        assert set(ex.items) == {"text", "image", "audio"}
        assert ex.concept in BuiltinSource.concepts()
        assert all(codes.dtype == torch.int64 and codes.dim() == 2 for c in ex.items.values()
                   for codes in c)  # fmt: skip


def test_scores_do_not_depend_on_batching(model, layout, examples):
    seqs = [pair_sequence(layout, ("image", ex.items["image"]), ("text", ex.items["text"]))
            for ex in examples]  # fmt: skip
    together = sequence_losses(model, layout, seqs)
    alone = [sequence_losses(model, layout, [s], max_tokens=1)[0] for s in seqs]
    for (ce_a, mod_a), (ce_b, mod_b), seq in zip(together, alone, seqs, strict=True):
        assert ce_a.shape == (seq.numel() - 1,)
        torch.testing.assert_close(ce_a, ce_b, rtol=1e-5, atol=1e-5)
        assert torch.equal(mod_a, mod_b)
        assert torch.equal(mod_a, layout.modality_of(seq[1:]).long())
    only_text = sequence_losses(model, layout, seqs, only="text")
    for (ce, mods), (ce_text, _) in zip(together, only_text, strict=True):
        is_text = mods == MODALITY_IDS["text"]
        torch.testing.assert_close(ce_text[is_text], ce[is_text], rtol=1e-5, atol=1e-5)
        assert torch.isnan(ce_text[~is_text]).all()
    loss, count = modality_losses(together, "text")
    assert modality_losses(only_text, "text") == pytest.approx((loss, count))
    assert count == sum(int((m == MODALITY_IDS["text"]).sum()) for _, m in together)
    assert math.isfinite(loss) and loss > 0


def test_pair_sequence_puts_the_context_first_and_cuts_only_it(layout, examples):
    ex = examples[0]
    seq = pair_sequence(layout, ("audio", ex.items["audio"]), ("text", ex.items["text"]))
    items = deinterleave(layout, seq)
    assert [m for m, _ in items] == ["audio", "text"]
    assert torch.equal(items[1][1], ex.items["text"][0])
    short = pair_sequence(layout, ("audio", ex.items["audio"]), ("text", ex.items["text"]),
                          limit=seq.numel() - 5)  # fmt: skip
    assert short is not None and short.numel() <= seq.numel() - 5
    cut = deinterleave(layout, short)
    assert torch.equal(cut[1][1], ex.items["text"][0])  # the target is whole
    assert cut[0][1].shape[1] < ex.items["audio"][0].shape[1]  # the context lost its tail
    text_only = ex.items["text"][0].shape[1] + 6
    assert pair_sequence(layout, ("audio", ex.items["audio"]), ("text", ex.items["text"]),
                         limit=text_only - 2) is None  # fmt: skip


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_continuations_as_branches_score_as_if_alone(fusion, layout, examples):
    """One row with the prefix once and every continuation as a branch gives each continuation
    the loss it gets after the prefix in a row of its own (positions continue the prefix's)."""
    torch.manual_seed(1)
    net = DecoderLM(preset("tiny", fusion=fusion), vocab_size=layout.vocab_size)
    prefix = pair_sequence(layout, ("image", examples[0].items["image"]),
                           ("text", examples[0].items["text"]))  # fmt: skip
    prefix = prefix[: int(torch.nonzero(prefix == layout.special("<text>"))[0])]
    conts = [torch.cat([torch.tensor([layout.special("<text>")]),
                        layout.to_global("text", ex.items["text"][0][0])]) for ex in examples]  # fmt: skip
    assert prefix.numel() + sum(c.numel() for c in conts) > 128  # longer than max_positions
    together = continuation_losses(net, layout, prefix, conts)
    for k, cont in enumerate(conts):
        ((ce, _),) = sequence_losses(net, layout, [torch.cat([prefix, cont])])
        torch.testing.assert_close(
            together[k], ce[prefix.numel() - 1 :].sum(), rtol=1e-4, atol=1e-4
        )


def test_sequence_losses_names_a_bad_sequence(model, layout):
    with pytest.raises(ValueError, match="sequence 1"):
        sequence_losses(model, layout, [torch.tensor([1, 2, 3]), torch.tensor([1])])


@pytest.mark.parametrize("n", [2, 3, 7, 20])
def test_derangement_moves_every_example(n):
    perm = derangement(n, seed=n)
    assert sorted(perm) == list(range(n))
    assert all(perm[i] != i for i in range(n))


def test_grounding_covers_every_pair_and_is_zero_when_contexts_are_identical(model, layout,
                                                                             examples):  # fmt: skip
    gains = grounding_gains(model, layout, examples, seed=0)
    assert set(gains) == {f"{m}<-{c}" for m in ("text", "image", "audio")
                          for c in ("text", "image", "audio") if m != c}  # fmt: skip
    for g in gains.values():
        assert math.isclose(g["gain"], g["shuffled"] - g["true"])
        assert g["examples"] == len(examples) and g["tokens"] > 0
    # Every example gets the same image: shuffling the image context cannot change L_text.
    same = [
        EvalExample(ex.id, {**ex.items, "image": examples[0].items["image"]}) for ex in examples
    ]
    g = grounding_gains(model, layout, same, seed=0)["text<-image"]
    assert g["gain"] == pytest.approx(0.0, abs=1e-6)


def test_zero_shot_ranks_every_candidate(model, layout, examples, tiny_text):
    captions = {c: concept_caption(c) for c in BuiltinSource.concepts()}
    result = zero_shot(model, layout, tiny_text, examples, captions, "image")
    assert result["chance"] == 1 / 64 and result["examples"] == len(examples)
    assert 0.0 <= result["accuracy"] <= 1.0
    assert [t for t, _ in result["predictions"]] == [ex.concept for ex in examples]
    assert all(p in captions for _, p in result["predictions"])
    no_concepts = [EvalExample(ex.id, ex.items) for ex in examples]
    assert math.isnan(
        zero_shot(model, layout, tiny_text, no_concepts, captions, "audio")["accuracy"]
    )
    with pytest.raises(ValueError, match="candidate"):
        zero_shot(model, layout, tiny_text, examples, {}, "image")


def test_concept_caption_names_the_concept():
    for concept in BuiltinSource.concepts():
        colour, shape = concept.split(" ")
        caption = concept_caption(concept)
        assert caption.endswith(f" {colour} {shape}") and caption.startswith("this picture shows")
    assert concept_caption("orange star") == "this picture shows an orange star"
    with pytest.raises(DataError, match="unknown concept"):
        concept_caption("plaid circle")


def test_caption_prompts_name_the_concept_in_every_template():
    """Each prompt names its concept (with its article) and nothing of another concept; the 16
    prompts use all 8 templates, vary the nuisances, and are the same on every call."""
    from tokenize_mm.data.builtin import BACKGROUNDS, COLOURS, SHAPES

    for concept in BuiltinSource.concepts():
        colour, shape = concept.split(" ")
        prompts = caption_prompts(concept)
        assert len(prompts) == 16 and prompts == caption_prompts(concept)
        for p in prompts:
            words = p.split()
            assert colour in words and shape in words
            assert not set(words) & (set(COLOURS) | set(SHAPES)) - {colour, shape}
            # the background is never the shape colour's near twin (sample_scene's rule)
            for bg in set(words) & set(BACKGROUNDS):
                assert math.dist(BACKGROUNDS[bg], COLOURS[colour]) > 110
        assert len(set(prompts)) >= 12  # nuisances vary
    assert caption_prompts("orange star", count=4)[3] == "this picture shows an orange star"
    assert caption_prompts("red ring", count=3, seed=1) != caption_prompts("red ring", count=3)
    with pytest.raises(DataError, match="unknown concept"):
        caption_prompts("plaid circle")
    with pytest.raises(DataError, match="count"):
        caption_prompts("red ring", count=0)


def test_scene_captions_are_every_template_of_the_scene():
    """One caption per template; render_caption's pick is among them; swapping the concept in
    changes only the concept's words."""
    import dataclasses

    from tokenize_mm.data.builtin import RenderOptions, render_caption

    scene = sample_scene(0, 3)
    captions = scene_captions(scene)
    assert len(captions) == 8 and render_caption(scene, RenderOptions(image_size=64)) in captions
    other = scene_captions(dataclasses.replace(scene, colour="blue", shape="star"))
    for a, b in zip(captions, other, strict=True):
        swap = {scene.colour: "blue", scene.shape: "star", "an": "a"}
        assert [swap.get(w, w) for w in a.split()] == [swap.get(w, w) for w in b.split()]


def test_worst_modality_regret():
    losses = {"a": {"text": 1.0, "image": 2.0}, "b": {"text": 1.5, "image": 2.0},
              "c": {"text": 1.2, "image": 1.0}}  # fmt: skip
    w = worst_modality_regret(losses)
    assert w["a"] == pytest.approx(1.0)  # image 2.0 vs the best 1.0
    assert w["b"] == pytest.approx(1.0)
    assert w["c"] == pytest.approx(0.2)  # text 1.2 vs the best 1.0
    best = {"a": {"text": 1.0, "image": 1.0}, "b": {"text": 2.0, "image": 3.0}}
    assert worst_modality_regret(best)["a"] == 0.0
    assert average_loss(losses)["c"] == pytest.approx(1.1)
    with pytest.raises(ValueError, match="strategy 'a'"):
        worst_modality_regret({"a": {"text": 0.0}, "b": {"text": 1.0}})
    with pytest.raises(ValueError, match="every strategy"):
        worst_modality_regret({"a": {"text": 1.0}, "b": {"image": 1.0}})


def test_seed_spread():
    s = seed_spread([1.0, 2.0, 3.0])
    assert s == {"mean": 2.0, "std": 1.0, "min": 1.0, "max": 3.0}
    assert seed_spread([4.0])["std"] == 0.0


class _LookupText:
    """A text tokenizer test double: each caption is a fixed code sequence (the tokenizer is
    not what these tests check)."""

    def __init__(self, codes: dict[str, list[int]]):
        self.codes = codes

    def encode_batch(self, texts):
        from tokenize_mm.tokenizers.base import Encoded

        return [Encoded(torch.tensor([self.codes[t]])) for t in texts]


def test_a_model_that_reads_the_image_shows_grounding_and_zero_shot(layout):
    """Positive control: a tiny model trained until its caption depends on the image gets a
    large G(text <- image) and every zero-shot answer right, while G(image <- text), which it
    was never trained on, stays near 0. (The benchmark's near-zero figures are the models'.)"""
    torch.manual_seed(0)
    concepts = [f"c{k}" for k in range(8)]
    captions = {c: [3, 40 + k, 50 + k % 4] for k, c in enumerate(concepts)}  # text local ids
    examples = [EvalExample(f"e{i}", {"image": (torch.full((1, 4), i % 8),),
                                      "text": (torch.tensor([captions[concepts[i % 8]]]),)},
                            concept=concepts[i % 8]) for i in range(32)]  # fmt: skip
    net = DecoderLM(preset("tiny", max_positions=64), vocab_size=layout.vocab_size)
    seqs = torch.stack([pair_sequence(layout, ("image", ex.items["image"]), ("text", ex.items["text"]))
                        for ex in examples])  # fmt: skip
    modality = layout.modality_of(seqs).long()
    positions = torch.arange(seqs.shape[1]).expand_as(seqs)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        hidden = net(seqs, modality, positions, torch.ones_like(seqs))
        loss = torch.nn.functional.cross_entropy(
            net.logits(hidden[:, :-1]).transpose(1, 2), seqs[:, 1:]
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    gains = grounding_gains(net, layout, examples, seed=0)
    assert gains["text<-image"]["gain"] > 0.3
    assert abs(gains["image<-text"]["gain"]) < gains["text<-image"]["gain"] / 5
    names = {c: c for c in concepts}
    result = zero_shot(net, layout, _LookupText({c: captions[c] for c in concepts}), examples,
                       names, "image")  # fmt: skip
    assert result["accuracy"] == 1.0 and result["chance"] == 1 / 8
