"""Span embeddings, zero-shot classification by embedding similarity, and cross-modal retrieval.

CLIP (Radford et al. 2021, section 3.1.4) classifies without training a classifier: every class
name is written into prompt templates ("a photo of a {}."), the prompts are embedded, their
normalised embeddings averaged per class (prompt ensembling) and renormalised, and an input goes
to the class whose embedding is most similar (cosine). ``SpanEmbedder`` gives the same embedding
that contrastive training pools (``models/contrastive.py``): one item laid out alone
(``bos <m> … </m> eos``), read by the model with every span isolated, its positions of modality m
averaged and projected by the head. With isolated attention and rotary (relative) positions a span
has the same embedding alone as inside a training document (tested).

Retrieval (``retrieval_at_k``): queries of one modality rank a gallery of another by cosine
similarity; R@k is the share of queries whose paired item is among the k best, and, where items
carry concepts, the share whose top k holds any item of the query's concept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from tokenize_mm.core.modalities import MODALITIES, MODALITY_IDS
from tokenize_mm.evaluation.zero_shot import classification_summary
from tokenize_mm.models.contrastive import ContrastiveHead
from tokenize_mm.sequence.interleave import SpanOrder, interleave
from tokenize_mm.sequence.vocab import VocabLayout

#: Prompt templates for the built-in concepts ("{}" is the concept, e.g. "red circle").
TEMPLATES: dict[str, tuple[str, ...]] = {
    "image": ("a {}", "a picture of a {}", "a {} on a background"),
    "audio": ("the sound of a {}", "a {} played as a melody", "a {}"),
}


class SpanEmbedder:
    """Embeds one item (codes (K, T)) of a modality into the contrastive space: (E,) unit norm.

    Args:
        model: a ``DecoderLM`` trained with contrastive alignment.
        head: its ``ContrastiveHead``.
        layout: the vocabulary layout of the model's tokens.
        truncate: embed an item longer than the model's context from its beginning (the first
            item, cut to the steps that fit) instead of raising; ``truncated`` counts them.
    """

    def __init__(self, model: torch.nn.Module, head: ContrastiveHead, layout: VocabLayout,
                 truncate: bool = False):  # fmt: skip
        self.model, self.head, self.layout, self.truncate = model, head, layout, truncate
        self.limit = getattr(model, "max_positions", None)
        self.truncated = 0

    def fitting_steps(self, codebooks: int) -> int:
        """Steps T of one item of K codebooks that fit the context with its 4 markers (bos,
        begin, end, eos) under the layout's audio pattern."""
        room = (self.limit or 0) - 4
        if self.layout.audio_pattern == "delay" and codebooks > 1:
            return room // codebooks - (codebooks - 1)
        return room // codebooks

    @torch.no_grad()
    def __call__(self, modality: str, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """The items of one example's ``modality`` (each (K, T)) → (E,) float32.

        Raises:
            ValueError: an unknown modality, no item, or a sequence longer than the model's
                context (``max_positions``; the message names the length).
        """
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
        if not items:
            raise ValueError(f"no {modality} item to embed")
        order = SpanOrder("fixed", order=(modality, *(m for m in MODALITIES if m != modality)))
        seq = interleave(self.layout, [(modality, codes) for codes in items], order=order)
        n = int(seq.tokens.numel())
        if self.limit is not None and n > self.limit:
            if not self.truncate:
                raise ValueError(
                    f"the {modality} item lays out as {n} tokens, the model reads {self.limit}: "
                    f"shorten it (a shorter clip or caption)"
                )
            codes = items[0][:, : self.fitting_steps(int(items[0].shape[0]))]
            seq = interleave(self.layout, [(modality, codes)], order=order)
            n, self.truncated = int(seq.tokens.numel()), self.truncated + 1
        device = next(self.model.parameters()).device
        tokens, mod = seq.tokens[None].to(device), seq.modality[None].long().to(device)
        positions = torch.arange(n, device=device)[None]
        segment = torch.ones_like(tokens)
        hidden = self.head.read(self.model, tokens, mod, positions, segment)
        pooled, present = self.head.pool(hidden, mod, segment)
        m = MODALITY_IDS[modality]
        if not bool(present[0, m]):
            raise ValueError(f"the {modality} item has no {modality} position to pool")
        return self.head.embed(pooled[:1, m], m)[0].float().cpu()


def class_embeddings(
    embed_text: Callable[[str], torch.Tensor], prompts: Mapping[str, Sequence[str]]
) -> tuple[list[str], torch.Tensor]:
    """Prompt ensembling: class → its prompts' mean normalised embedding, renormalised.

    Returns:
        ``(classes, (C, E) unit rows)`` in ``prompts``' order.
    """
    classes = list(prompts)
    rows = []
    for c in classes:
        if not prompts[c]:
            raise ValueError(f"class {c!r} has no prompt")
        rows.append(F.normalize(torch.stack([embed_text(p) for p in prompts[c]]).mean(0), dim=0))
    return classes, torch.stack(rows)


def zero_shot_by_embedding(
    embeddings: torch.Tensor, labels: Sequence[str], classes: Sequence[str], table: torch.Tensor
) -> dict[str, Any]:
    """Classify unit ``embeddings`` (N, E) by their most similar class row of ``table`` (C, E).

    Returns:
        ``{"accuracy", "chance", "examples", "predictions": [(true, predicted), ...]}``.
    """
    if not len(classes):
        raise ValueError("zero-shot needs at least one class")
    best = (embeddings @ table.T).argmax(1).tolist() if len(labels) else []
    predictions = [(t, classes[b]) for t, b in zip(labels, best, strict=True)]
    return classification_summary(predictions, len(classes))


def retrieval_at_k(
    queries: torch.Tensor,
    gallery: torch.Tensor,
    ks: Sequence[int] = (1, 5, 10),
    concepts: Sequence[str] | None = None,
) -> dict[str, float]:
    """Queries (N, E) and their paired gallery items (N, E) (row i pairs with row i), unit rows.

    Returns:
        ``R@k`` (the paired item among the k most similar), ``chance@k`` (k / N), and with
        ``concepts`` (one per row, shared by query and gallery) ``R@k_concept`` (any item of the
        query's concept among the k best) and ``chance@k_concept`` (1 − the chance that k random
        gallery items all miss the concept, averaged over queries).
    """
    n = queries.shape[0]
    if gallery.shape[0] != n or n == 0:
        raise ValueError(
            f"need as many gallery items as queries (> 0), got {n} and {gallery.shape[0]}"
        )
    # stable: tied scores rank the earlier gallery item first, the same on every run
    order = torch.sort(queries @ gallery.T, dim=1, descending=True, stable=True).indices
    truth = torch.arange(n)[:, None]
    if concepts is not None:
        ids = {c: i for i, c in enumerate(sorted(set(concepts)))}
        label = torch.tensor([ids[c] for c in concepts])
        same = torch.bincount(label, minlength=len(ids))[label].double()  # items of its concept
    out: dict[str, float] = {}
    for k in ks:
        top = order[:, : min(k, n)]
        out[f"R@{k}"] = float((top == truth).any(1).float().mean())
        out[f"chance@{k}"] = min(k, n) / n
        if concepts is not None:
            out[f"R@{k}_concept"] = float((label[top] == label[:, None]).any(1).float().mean())
            miss = torch.ones(n, dtype=torch.float64)
            for j in range(min(k, n)):  # draws without replacement
                miss *= ((n - same - j) / (n - j)).clamp(min=0)
            out[f"chance@{k}_concept"] = float((1 - miss).mean())
    return out


def contrastive_evaluation(
    embedder: Callable[[str, Sequence[torch.Tensor]], torch.Tensor],
    text_tokenizer: Any,
    examples: Sequence[Any],
    concepts: Sequence[str] | None = None,
    templates: Mapping[str, Sequence[str]] = TEMPLATES,
    concept_prompts: Callable[[str], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Retrieval in every direction and zero-shot classification from image and audio.

    Args:
        embedder: (modality, items) → unit embedding (``SpanEmbedder``).
        text_tokenizer: encodes the prompts.
        examples: ``EvalExample``s (their ``items`` and, for the concept figures, ``concept``).
        concepts: the class names for zero-shot (``None``: no zero-shot).
        templates: context modality → prompt templates with one ``{}``.
        concept_prompts: concept → its own prompts (e.g. ``caption_prompts``, captions of the
            concept as the training data writes them), a second zero-shot figure beside the
            templates' (``None``: none).

    Returns:
        ``{"retrieval": {"image->text": retrieval_at_k(...), ...} for every ordered pair with at
        least two examples holding both, "zero_shot": {"image": {...}, "audio": {...}}}``, with
        ``concept_prompts`` also ``"zero_shot_captions"`` (the same by those prompts); zero-shot
        results without their predictions.
    """
    emb: dict[str, dict[int, torch.Tensor]] = {m: {} for m in MODALITIES}
    for i, ex in enumerate(examples):
        for m, items in ex.items.items():
            emb[m][i] = embedder(m, items)
    labelled = all(getattr(ex, "concept", None) for ex in examples)
    out: dict[str, Any] = {"retrieval": {}, "zero_shot": {}}
    for q in MODALITIES:
        for g in MODALITIES:
            both = [i for i in emb[q] if i in emb[g]] if q != g else []
            if len(both) < 2:
                continue
            out["retrieval"][f"{q}->{g}"] = retrieval_at_k(
                torch.stack([emb[q][i] for i in both]), torch.stack([emb[g][i] for i in both]),
                concepts=[examples[i].concept for i in both] if labelled else None,
            )  # fmt: skip
    if concepts:
        seen: dict[str, torch.Tensor] = {}  # a prompt shared by contexts is embedded once

        def embed_text(prompt: str) -> torch.Tensor:
            if prompt not in seen:
                seen[prompt] = embedder("text", [text_tokenizer.encode(prompt).codes])
            return seen[prompt]

        ensembles = {"zero_shot": lambda c, context: [t.format(c) for t in templates[context]]}
        if concept_prompts is not None:
            ensembles["zero_shot_captions"] = lambda c, context: list(concept_prompts(c))
        for key, prompts_of in ensembles.items():
            out[key] = {}
            for context in ("image", "audio"):
                have = [i for i in emb[context] if getattr(examples[i], "concept", None)]
                if not have:
                    continue
                prompts = {c: prompts_of(c, context) for c in concepts}
                classes, table = class_embeddings(embed_text, prompts)
                result = zero_shot_by_embedding(
                    torch.stack([emb[context][i] for i in have]),
                    [examples[i].concept for i in have], classes, table,
                )  # fmt: skip
                result.pop("predictions")
                out[key][context] = result
    return out
