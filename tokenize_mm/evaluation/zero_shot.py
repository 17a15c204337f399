"""Zero-shot classification by caption likelihood (as CLIP-style prompts, but generative).

For each held-out example with a concept label and an item of the context modality c (image or
audio), every candidate concept's caption is laid out after the context, ``bos <c> … </c> <text>
caption </text>``, and scored by the log-likelihood of its text tokens (summed, markers
included). The predicted concept is the most likely caption's; accuracy is compared with chance,
1 / number of candidates. The captions differ only in the concept's words, so the ranking reads
what the model learnt to say about the context, never the template.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from tokenize_mm.evaluation.grounding import EvalExample, pair_sequence
from tokenize_mm.evaluation.scoring import sequence_losses
from tokenize_mm.sequence.vocab import MODALITY_IDS, VocabLayout


def zero_shot(
    model: torch.nn.Module,
    layout: VocabLayout,
    text_tokenizer: Any,
    examples: Sequence[EvalExample],
    captions: Mapping[str, str],
    context: str,
    max_tokens: int = 16_384,
) -> dict[str, Any]:
    """Classify ``examples`` from their ``context`` item by ranking candidate captions.

    Args:
        model: a trained ``DecoderLM``.
        layout: the layout of the model's vocabulary.
        text_tokenizer: the layout's text tokenizer (encodes the captions).
        examples: held-out examples with a ``concept`` among ``captions``' keys.
        captions: concept → its caption (the candidates, in a fixed order).
        context: the modality the model is given (``"image"`` or ``"audio"``).
        max_tokens: padded positions per forward batch.

    Returns:
        ``{"accuracy", "chance", "examples", "predictions": [(true, predicted), ...]}``; accuracy
        is NaN when no example has both a concept and a ``context`` item.

    Raises:
        ValueError: ``captions`` is empty or ``context`` is not a modality.
    """
    if not captions:
        raise ValueError("zero_shot needs at least one candidate caption; pass concept → caption")
    if context not in ("text", "image", "audio"):
        raise ValueError(f"context must be 'image' or 'audio', got {context!r}")
    concepts = list(captions)
    candidates = [c.codes for c in text_tokenizer.encode_batch([captions[k] for k in concepts])]
    limit = getattr(model, "max_positions", None)
    usable = [ex for ex in examples if ex.concept in captions and context in ex.items]
    predictions: list[tuple[str, str]] = []
    text_id = MODALITY_IDS["text"]
    for ex in usable:
        seqs = [pair_sequence(layout, (context, ex.items[context]), ("text", (cand,)), limit)
                for cand in candidates]  # fmt: skip
        if any(s is None for s in seqs):
            continue
        scored = sequence_losses(model, layout, seqs, max_tokens=max_tokens)  # type: ignore[arg-type]
        nll = torch.stack([ce[mods == text_id].sum() for ce, mods in scored])
        predictions.append((ex.concept, concepts[int(nll.argmin())]))  # type: ignore[arg-type]
    hits = sum(t == p for t, p in predictions)
    return {
        "accuracy": hits / len(predictions) if predictions else float("nan"),
        "chance": 1.0 / len(concepts),
        "examples": len(predictions),
        "predictions": predictions,
    }
