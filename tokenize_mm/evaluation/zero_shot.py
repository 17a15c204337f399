"""Zero-shot classification by caption likelihood (as CLIP-style prompts, but generative).

For each held-out example with a concept label and an item of the context modality c (image or
audio), every candidate concept's caption is laid out after the context, ``bos <c> … </c> <text>
caption </text>``, and scored by the log-likelihood of its text tokens (summed, markers
included). The context is run once per example, the captions as branches after it
(``scoring.continuation_losses``). The predicted concept is the most likely caption's; accuracy is compared with chance,
1 / number of candidates. The captions differ only in the concept's words, so the ranking reads
what the model learnt to say about the context, never the template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tokenize_mm.evaluation.grounding import EvalExample, pair_sequence
from tokenize_mm.evaluation.scoring import continuation_losses
from tokenize_mm.sequence.interleave import span_tokens
from tokenize_mm.sequence.vocab import VocabLayout


def zero_shot(
    model: torch.nn.Module,
    layout: VocabLayout,
    text_tokenizer: Any,
    examples: Sequence[EvalExample],
    captions: Mapping[str, str],
    context: str,
) -> dict[str, Any]:
    """Classify ``examples`` from their ``context`` item by ranking candidate captions.

    Args:
        model: a trained ``DecoderLM``.
        layout: the layout of the model's vocabulary.
        text_tokenizer: the layout's text tokenizer (encodes the captions).
        examples: held-out examples with a ``concept`` among ``captions``' keys.
        captions: concept → its caption (the candidates, in a fixed order).
        context: the modality the model is given (``"image"`` or ``"audio"``).

    Returns:
        ``{"accuracy", "chance", "examples", "skipped", "predictions": [(true, predicted), ...]}``:
        ``skipped`` counts examples whose caption would not fit the model's context even after
        the context item alone; accuracy is NaN when no example has both a concept and a
        ``context`` item.

    Raises:
        ValueError: ``captions`` is empty or ``context`` is not a modality.
    """
    if not captions:
        raise ValueError("zero_shot needs at least one candidate caption; pass concept → caption")
    if context not in ("image", "audio"):
        raise ValueError(f"context must be 'image' or 'audio', got {context!r}")
    concepts = list(captions)
    candidates = [c.codes for c in text_tokenizer.encode_batch([captions[k] for k in concepts])]
    branches = [span_tokens(layout, "text", c) for c in candidates]  # <text> … </text>
    longest = max(candidates, key=lambda c: c.shape[1])
    limit = getattr(model, "max_positions", None)
    usable = [ex for ex in examples if ex.concept in captions and context in ex.items]
    predictions: list[tuple[str, str]] = []
    skipped = 0
    for ex in usable:
        # The context once (cut, if need be, to leave room for the longest caption), every
        # candidate caption as a branch after it: one row per example.
        seq = pair_sequence(layout, (context, ex.items[context]), ("text", (longest,)), limit)
        if seq is None:
            skipped += 1
            continue
        prefix = seq[: int(torch.nonzero(seq == layout.special("<text>"))[0])]
        nll = continuation_losses(model, layout, prefix, branches)
        predictions.append((ex.concept, concepts[int(nll.argmin())]))  # type: ignore[arg-type]
    return {**classification_summary(predictions, len(concepts)), "skipped": skipped}


def classification_summary(predictions: list[tuple[str, str]], num_classes: int) -> dict[str, Any]:
    """``{"accuracy", "chance", "examples", "predictions"}`` of (true, predicted) pairs over
    ``num_classes`` candidates; accuracy is NaN without predictions."""
    hits = sum(t == p for t, p in predictions)
    return {
        "accuracy": hits / len(predictions) if predictions else float("nan"),
        "chance": 1.0 / num_classes,
        "examples": len(predictions),
        "predictions": predictions,
    }
