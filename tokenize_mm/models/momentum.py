"""Momentum encoder: a slowly moving copy of the model that embeds the contrastive keys.

He et al. 2020, "Momentum Contrast for Unsupervised Visual Representation Learning" (MoCo), and
Li et al. 2021, "Align before Fuse" (ALBEF) for image-text pairs: the keys an online embedding is
scored against come from an exponential moving average θ' ← m θ' + (1 - m) θ of the online
weights, updated after every optimizer step and never trained. Keys from a slowly moving encoder
stay comparable across steps, which is what lets a memory of past keys (``models/memory.py``)
serve as negatives: scored against the online model's own past embeddings instead, the loss
rewards the embeddings for drifting away from them.

``MomentumEncoder`` holds the copies of the decoder and of the contrastive head (pooling and
projections; the temperature and the memory used are the online head's); its weights are in the
training module's state dict, so a checkpoint resumes it exactly, and never in a trained-model
folder.

Shapes: keys (G, M, E) for G documents, M modalities, L2-normalised (0 where a document lacks a
modality, as the head's pooling leaves it).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from tokenize_mm.models.contrastive import ContrastiveHead


class MomentumEncoder(nn.Module):
    """EMA copies of ``model`` and of ``head``'s pooling and projections, made at construction.

    Args:
        model: the online decoder (``DecoderLM``).
        head: the online contrastive head; its ``momentum`` is m.
    """

    def __init__(self, model: nn.Module, head: ContrastiveHead):
        super().__init__()
        if not 0.0 < head.momentum < 1.0:
            raise ValueError(f"the head's momentum must be in (0, 1), got {head.momentum}")
        self.momentum = head.momentum
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.head = copy.deepcopy(head).requires_grad_(False)
        self.head.memory = None  # the memory is the online head's

    @torch.no_grad()
    def update(self, model: nn.Module, head: ContrastiveHead) -> None:
        """θ' ← m θ' + (1 - m) θ for every weight of the decoder, the pooling and the
        projections (the temperature is copied along, unused)."""
        online = [*model.parameters(), *head.parameters()]
        ema = [*self.model.parameters(), *self.head.parameters()]
        torch._foreach_lerp_(ema, online, 1.0 - self.momentum)

    @torch.no_grad()
    def keys(self, tokens: Tensor, modality: Tensor, positions: Tensor,
             segment_ids: Tensor) -> Tensor:  # fmt: skip
        """The batch's spans read alone by the EMA model, pooled and projected: (G, M, E)."""
        hidden = self.head.read(self.model, tokens, modality, positions, segment_ids)
        pooled, _ = self.head.pool(hidden, modality, segment_ids)
        return torch.stack([self.head.embed(pooled[:, m], m) for m in range(pooled.shape[1])], 1)
