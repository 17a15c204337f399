"""Span pooling: one vector per document and modality, by mean or by learnt attention.

A document's span of one modality (a caption, an image's 256 codes, a clip's frames) is summarised
for the contrastive objective (``models/contrastive.py``) by pooling the model's hidden states over
its positions.

- ``pool_spans``: the mean (CLIP's text side pools one token; mean pooling is the common choice for
  sequence encoders without a class token). Every position counts the same, so an image whose
  codes are mostly background is summarised mostly by its background.
- ``AttentionPool``: multi-head attention pooling with one learnt query per modality (Lee et al.
  2019, "Set Transformer", PMA; the MAP head of Zhai et al. 2022, "Scaling Vision Transformers",
  and of SigLIP): each head's softmax weights over a span's positions choose which positions speak
  for it, so the few positions on a shape's edges can outweigh a flat background.

Both read the positions of each (row, document, modality) slot with index operations over the
flattened batch (no padding to the longest span, no Python loop over documents).

Shapes: hidden (B, L, D); modality, segment_ids (B, L); pooled (G, M, D) for the G documents of the
batch in row order, then segment order, M modalities; present (G, M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class SpanSlots:
    """Where each kept position goes: ``slot`` (P,) the (row, document, modality) slot of each
    of the P kept positions (``keep`` (B, L) marks them), ``documents`` (B * per_row,) which
    (row, document) slots hold a document, ``per_row`` the slots per row (largest segment id
    + 1)."""

    keep: Tensor
    slot: Tensor
    documents: Tensor
    per_row: int
    num_modalities: int

    @staticmethod
    def of(modality: Tensor, segment_ids: Tensor, num_modalities: int) -> SpanSlots:
        b = segment_ids.shape[0]
        seg = segment_ids.long()
        per_row = int(seg.max()) + 1 if seg.numel() else 1
        keep = (seg > 0) & (modality.long() < num_modalities)
        rows = torch.arange(b, device=seg.device)[:, None] * per_row + seg
        slot = (rows * num_modalities + modality.long().clamp(max=num_modalities - 1))[keep]
        documents = torch.zeros(b * per_row, dtype=torch.bool, device=seg.device)
        documents[rows[seg > 0]] = True
        return SpanSlots(keep, slot, documents, per_row, num_modalities)

    @property
    def num_slots(self) -> int:
        return int(self.documents.numel()) * self.num_modalities

    def counts(self, dtype: torch.dtype) -> Tensor:
        """(num_slots,) positions per slot."""
        ones = torch.ones_like(self.slot, dtype=dtype)
        return ones.new_zeros(self.num_slots).index_add(0, self.slot, ones)

    def gather(self, per_slot: Tensor, counts: Tensor) -> tuple[Tensor, Tensor]:
        """(num_slots, D) sums → ``(pooled (G, M, D), present (G, M))`` of the documents."""
        m = self.num_modalities
        pooled = per_slot.view(-1, m, per_slot.shape[-1])[self.documents]
        return pooled, (counts > 0).view(-1, m)[self.documents]


def pool_spans(
    hidden: Tensor, modality: Tensor, segment_ids: Tensor, num_modalities: int
) -> tuple[Tensor, Tensor]:
    """Mean of ``hidden`` over each document's positions of each modality.

    Args:
        hidden: (B, L, D) hidden states.
        modality: (B, L) modality id of each position, in [0, num_modalities) for the modalities
            pooled (larger ids, e.g. special tokens, are left out).
        segment_ids: (B, L) 1, 2, ... per document, 0 at padding (left out).
        num_modalities: M.

    Returns:
        ``(pooled (G, M, D), present (G, M) bool)`` over the G documents of the batch in row
        order, then segment order; ``present[g, m]`` is whether document g has modality m
        (``pooled`` is 0 there otherwise).
    """
    slots = SpanSlots.of(modality, segment_ids, num_modalities)
    counts = slots.counts(hidden.dtype)
    sums = hidden.new_zeros(slots.num_slots, hidden.shape[-1])
    sums = sums.index_add(0, slots.slot, hidden[slots.keep])
    return slots.gather(sums / counts.clamp_min(1)[:, None], counts)


class AttentionPool(nn.Module):
    """Multi-head attention pooling with a learnt query per modality (PMA / MAP).

    Head h of modality m scores each position p of a span by ``q_{m,h} · k_h(LN(x_p)) / √d_h``
    and pools the span's values ``x_p`` (head h's slice of the width) with the softmax of those
    scores over the span. The queries start at zero: uniform weights, i.e. the mean, which the
    training then moves away from.

    Args:
        d_model: D, the width of the hidden states (a multiple of ``heads``).
        num_modalities: M.
        heads: H.
    """

    def __init__(self, d_model: int, num_modalities: int, heads: int = 4):
        super().__init__()
        if heads < 1 or d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be a positive multiple of heads ({heads})")
        self.heads, self.num_modalities = heads, num_modalities
        self.norm = nn.LayerNorm(d_model)
        self.key = nn.Linear(d_model, d_model, bias=False)
        self.query = nn.Parameter(torch.zeros(num_modalities, d_model))

    def forward(
        self, hidden: Tensor, modality: Tensor, segment_ids: Tensor
    ) -> tuple[Tensor, Tensor]:
        """``pool_spans``' contract, attention-weighted: (pooled (G, M, D), present (G, M))."""
        slots = SpanSlots.of(modality, segment_ids, self.num_modalities)
        x = hidden[slots.keep]  # (P, D)
        p, d = x.shape
        h = self.heads
        m = slots.slot % self.num_modalities
        k = self.key(self.norm(x)).view(p, h, d // h)
        scores = (k * self.query[m].view(p, h, d // h)).sum(-1) / math.sqrt(d // h)  # (P, H)
        with torch.no_grad():  # the softmax's shift: a constant
            top = scores.new_full((slots.num_slots, h), -math.inf)
            top = top.scatter_reduce(0, slots.slot[:, None].expand(p, h), scores, "amax")
        weights = torch.exp(scores - top[slots.slot])
        total = weights.new_zeros(slots.num_slots, h).index_add(0, slots.slot, weights)
        weights = weights / total[slots.slot]  # softmax within each slot
        values = (weights[:, :, None] * x.view(p, h, d // h)).view(p, d)
        pooled = x.new_zeros(slots.num_slots, d).index_add(0, slots.slot, values)
        return slots.gather(pooled, slots.counts(hidden.dtype))
