"""The modalities and their ids, defined once for every layer.

``MODALITIES`` is the canonical order used everywhere (vocabulary ranges, sequences, metrics,
shards, per-modality tensors). A position's *modality id* is its modality's index in
``MODALITIES`` (text 0, image 1, audio 2); pad, bos and eos (and packing's padding) carry
``SPECIAL_MODALITY`` (3). ``MODALITY_IDS`` maps the four names to their ids, in id order. Imports
nothing.
"""

from __future__ import annotations

MODALITIES: tuple[str, ...] = ("text", "image", "audio")
"""The modalities, in the canonical order used everywhere (sequences, metrics, shards)."""

CONTRASTIVE: str = "contrastive"
"""The contrastive objective's name beside the modalities' (a weighting's objective, a loss key
that training reports to the sampler)."""

SPECIAL_MODALITY: int = 3
"""Modality id of the special tokens pad, bos and eos and of packing's padding; 0, 1, 2 are text,
image, audio (span markers and ``delay_pad`` carry their modality's id)."""

MODALITY_IDS: dict[str, int] = {
    **{m: i for i, m in enumerate(MODALITIES)},
    "special": SPECIAL_MODALITY,
}
"""Name → modality id: text 0, image 1, audio 2, special 3."""
