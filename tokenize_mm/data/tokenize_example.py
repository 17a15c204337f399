"""One example → one token sequence: each tokenizer encodes its items, ``interleave`` lays them out.

``ExampleTokenizer`` is what the pretokenized store runs per example. Items of a chunk of examples
are encoded with each tokenizer's ``encode_batch`` (batched audio encoding, multithreaded text);
when a batch holds a bad item, the chunk's items of that modality are encoded one by one so that
only the examples with bad items fail, each with its reason. Alongside the tokens it records what
the token-accounting report needs: tokens per modality, seconds of audio, images, text words.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.core.modalities import MODALITY_IDS
from tokenize_mm.data.example import Example
from tokenize_mm.sequence.interleave import DEFAULT_ORDER, SpanOrder, interleave
from tokenize_mm.sequence.vocab import VocabLayout


@dataclass(frozen=True)
class TokenizedExample:
    """An example's sequence and what it is made of.

    Attributes:
        tokens: (N,) global ids (int64 numpy).
        cuts: positions where a span begins (the packer may split there).
        tokens_per_modality: positions per modality name (``text``, ``image``, ``audio``,
            ``special``), markers counted with their modality.
        units: what the tokens encode: ``audio_seconds``, ``audio_clips``, ``images``,
            ``text_words``.
    """

    tokens: np.ndarray
    cuts: list[int]
    tokens_per_modality: dict[str, int]
    units: dict[str, float]


class ExampleTokenizer:
    """Encode examples with the tokenizers of a layout.

    Args:
        tokenizers: modality → tokenizer (the ones ``layout`` was built from).
        layout: the global vocabulary.
        order: span order (see ``SpanOrder``).
    """

    def __init__(
        self, tokenizers: Mapping[str, Any], layout: VocabLayout, order: SpanOrder = DEFAULT_ORDER
    ):
        self.tokenizers, self.layout, self.order = dict(tokenizers), layout, order

    def __call__(self, examples: Sequence[Example]) -> list[TokenizedExample | str]:
        """Each example's ``TokenizedExample``, or the reason it failed (a string)."""
        encoded, failures = encode_items(self.tokenizers, examples, self.layout.modalities)
        out: list[TokenizedExample | str] = []
        for i, ex in enumerate(examples):
            unknown = [m for m in ex.modalities if m not in self.layout.modalities]
            if unknown:
                out.append(f"no tokenizer for {unknown}")
            elif i in failures:
                out.append(failures[i])
            elif not ex.modalities:
                out.append("the example has no items")
            else:
                out.append(self._sequence(ex, {m: encoded.get((i, m), []) for m in ex.modalities}))
        return out

    def _sequence(self, ex: Example, encoded: Mapping[str, list]) -> TokenizedExample:
        pairs = [(m, e.codes) for m, encs in encoded.items() for e in encs]
        seq = interleave(self.layout, pairs, order=self.order, example_id=ex.id)
        counts = torch.bincount(seq.modality.long(), minlength=len(MODALITY_IDS))
        per = {name: int(counts[i]) for name, i in MODALITY_IDS.items()}
        units = {"audio_seconds": 0.0, "audio_clips": 0.0, "images": 0.0, "text_words": 0.0}
        if "audio" in encoded:
            rate = self.layout.infos["audio"].sample_rate or 1
            units["audio_seconds"] = sum(
                int(e.extras["num_samples"].reshape(-1)[0]) / rate for e in encoded["audio"]
            )
            units["audio_clips"] = float(len(encoded["audio"]))
        if "image" in encoded:
            units["images"] = float(len(encoded["image"]))
        if ex.text is not None and "text" in encoded:
            units["text_words"] = float(len(ex.text.split()))
        return TokenizedExample(seq.tokens.numpy(), seq.cuts.tolist(), per, units)


def encode_items(
    tokenizers: Mapping[str, Any], examples: Sequence[Example], modalities: Sequence[str]
) -> tuple[dict[tuple[int, str], list], dict[int, str]]:
    """Encode the examples' items of each modality, one ``encode_batch`` per modality.

    Returns:
        ``encoded``: (example index, modality) → its items' ``Encoded``, in order; ``failures``:
        example index → the first reason one of its items failed (``"<modality>: <reason>"``).
        When a batch holds a bad item, that modality's items are encoded one by one, so only the
        examples with bad items fail.
    """
    encoded: dict[tuple[int, str], list] = {}
    failures: dict[int, str] = {}
    for modality in modalities:
        owners, items = [], []
        for i, ex in enumerate(examples):
            for item in modality_items(ex, modality):
                owners.append(i)
                items.append(item)
        for i, result in zip(owners, _encode(tokenizers[modality], items), strict=True):
            if isinstance(result, str):
                failures.setdefault(i, f"{modality}: {result}")
            else:
                encoded.setdefault((i, modality), []).append(result)
    return encoded, failures


def _encode(tok: Any, items: list[Any]) -> Sequence[Any]:
    """``tok.encode_batch(items)``; if the batch fails, each item alone (a string if it fails)."""
    if not items:
        return []
    try:
        return tok.encode_batch(items)
    except TokenizeMMError:
        pass
    results: list[Any] = []
    for item in items:
        try:
            results.append(tok.encode(item))
        except TokenizeMMError as err:
            results.append(str(err))
    return results


def modality_items(ex: Example, modality: str) -> list[Any]:
    """What the modality's tokenizer encodes for this example (audio files as paths)."""
    if modality == "text":
        return [] if ex.text is None else [ex.text]
    if modality == "image":
        return [] if ex.image is None else [ex.image]
    return [getattr(a, "path", a) for a in ex.audio]
