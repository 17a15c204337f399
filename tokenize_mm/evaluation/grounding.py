"""Grounding gain G(m ← c): how much a model uses modality c to predict modality m.

docs/architecture.md §6: G(m ← c) = L_m with the context modality c shuffled across examples − L_m
with the true pairing, on held-out examples that hold both. Each example is laid out with only the
two spans, c first (``bos <c> … </c> <m> … </m> eos``): under causal attention that is exactly the
prefix m sees in a training sequence where c comes right before it, with no third modality
carrying the same information. The shuffle is a seeded derangement (no example keeps its own
context), so the shuffled context always comes from another example; the two losses are over the
same m tokens. Positive G means the model reads c; about 0 means it ignores it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.evaluation.scoring import modality_losses, sequence_losses
from tokenize_mm.sequence.interleave import SpanOrder, interleave
from tokenize_mm.sequence.vocab import VocabLayout
from tokenize_mm.tokenizers.errors import InvalidInputError


@dataclass(frozen=True)
class EvalExample:
    """An example's encoded items, for evaluation.

    Attributes:
        id: the example's id.
        items: modality → the codes (K, T) of each of its items (several audio clips stay apart).
        concept: the example's concept label (built-in data), or ``None``.
    """

    id: str
    items: Mapping[str, tuple[torch.Tensor, ...]]
    concept: str | None = None


def encode_examples(examples: Iterable[Any], tokenizers: Mapping[str, Any]) -> list[EvalExample]:
    """Encode each example's items with ``tokenizers`` (modality → tokenizer), batched per modality.

    Raises:
        InvalidInputError: an item failed to encode; names the example, the modality and why.
    """
    from tokenize_mm.data.tokenize_example import encode_items

    examples = list(examples)
    encoded, failures = encode_items(tokenizers, examples, list(tokenizers))
    if failures:
        i, reason = next(iter(failures.items()))
        raise InvalidInputError(
            f"example {examples[i].id!r} cannot be evaluated, {reason}; fix or drop the item "
            f"({len(failures)} example(s) failed)"
        )
    return [
        EvalExample(
            id=ex.id,
            items={m: tuple(e.codes for e in encoded[(i, m)]) for m in MODALITIES
                   if (i, m) in encoded},
            concept=getattr(ex, "concept", None),
        )
        for i, ex in enumerate(examples)
    ]  # fmt: skip


def pair_sequence(
    layout: VocabLayout, context: tuple[str, Sequence[torch.Tensor]],
    target: tuple[str, Sequence[torch.Tensor]], limit: int | None = None,
) -> torch.Tensor | None:  # fmt: skip
    """``bos <c> … </c> <m> … </m> eos`` from the context's items and the target's items.

    With ``limit`` set, a context too long to fit keeps only its first steps (the target is never
    cut); ``None`` when even one context step would not fit.
    """
    (c, c_items), (m, m_items) = context, target
    rest = tuple(x for x in MODALITIES if x not in (c, m))
    order = SpanOrder("fixed", order=(c, m, *rest))
    steps = sum(int(codes.shape[1]) for codes in c_items)
    while steps > 0:
        kept, left = [], steps
        for codes in c_items:
            if left > 0:
                kept.append(codes[:, :left])
                left -= int(codes.shape[1])
        items = [(c, codes) for codes in kept] + [(m, codes) for codes in m_items]
        tokens = interleave(layout, items, order=order).tokens
        if limit is None or tokens.numel() <= limit:
            return tokens
        steps = min(steps - 1, steps - (tokens.numel() - limit) // max(1, c_items[0].shape[0]))
    return None


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of ``range(n)`` with no fixed point (n >= 2)."""
    perm = list(range(n))
    random.Random(seed).shuffle(perm)
    out = [0] * n
    for k in range(n):  # each example takes the context of the next one in a random cycle
        out[perm[k]] = perm[(k + 1) % n]
    return out


def grounding_gains(
    model: torch.nn.Module,
    layout: VocabLayout,
    examples: Sequence[EvalExample],
    seed: int = 0,
    max_tokens: int = 16_384,
) -> dict[str, dict[str, float]]:
    """G(m ← c) for every ordered pair of modalities that at least two examples hold together.

    Args:
        model: a trained ``DecoderLM``.
        layout: the layout of the model's vocabulary.
        examples: held-out examples (``encode_examples``).
        seed: seeds the derangement.
        max_tokens: padded positions per forward batch.

    Returns:
        ``"m<-c"`` → ``{"true": L_m, "shuffled": L_m, "gain": G, "examples": n, "tokens": N_m}``,
        losses in nats per m token.
    """
    limit = getattr(model, "max_positions", None)
    out: dict[str, dict[str, float]] = {}
    for m in MODALITIES:
        for c in MODALITIES:
            if c == m:
                continue
            both = [ex for ex in examples if m in ex.items and c in ex.items]
            if len(both) < 2:
                continue
            other = derangement(len(both), seed)
            true_seqs, shuffled = [], []
            for j, ex in enumerate(both):
                a = pair_sequence(layout, (c, ex.items[c]), (m, ex.items[m]), limit)
                b = pair_sequence(layout, (c, both[other[j]].items[c]), (m, ex.items[m]), limit)
                if a is not None and b is not None:  # the same m tokens on both sides
                    true_seqs.append(a)
                    shuffled.append(b)
            if not true_seqs:
                continue
            scored = sequence_losses(model, layout, true_seqs + shuffled, max_tokens, only=m)
            true_loss, tokens = modality_losses(scored[: len(true_seqs)], m)
            shuffled_loss, _ = modality_losses(scored[len(true_seqs) :], m)
            out[f"{m}<-{c}"] = {"true": true_loss, "shuffled": shuffled_loss,
                                "gain": shuffled_loss - true_loss, "examples": len(true_seqs),
                                "tokens": tokens}  # fmt: skip
    return out
