"""Cross-batch memory: the last steps' embeddings kept as extra negatives for InfoNCE.

Wang et al. 2020, "Cross-Batch Memory for Embedding Learning" (XBM), after He et al. 2020's MoCo
queue: embeddings drift slowly once training has settled, so those of the last few steps,
detached, are nearly as good negatives as the current batch's and cost one matrix product. The
contrastive objective needs them when a batch is small: 8 pairs of built-in examples rarely hold
two of the same colour, so the colour alone tells a caption from its batch's others and the shape
is never needed; a memory of 1,024 holds ~16 same-colour captions by every template.

A ``NegativeMemory`` is a ring per *slot* (one per side of each modality pair): ``push`` writes
the newest rows over the oldest, ``read`` returns the rows written so far. Its buffers are not in
``state_dict`` (a trained-model folder holds the projections only); ``BalancedLM`` saves them in
the training checkpoint (``state`` / ``load_state``) so that a resumed run reads the memory it
had. Every rank pushes the same (gathered) rows, so the memories of all ranks are equal.

Shapes: rows (n, E); a slot's memory (min(written, size), E).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class NegativeMemory(nn.Module):
    """Rings of the last ``size`` embeddings of ``slots`` kinds.

    Args:
        slots: how many rings (2 per modality pair: its a-side and its b-side).
        size: rows each ring holds (>= 1).
        embed_dim: E.
    """

    def __init__(self, slots: int, size: int, embed_dim: int):
        super().__init__()
        if min(slots, size, embed_dim) < 1:
            raise ValueError(
                f"sizes must be >= 1, got slots={slots}, size={size}, embed_dim={embed_dim}"
            )
        self.size = size
        self.register_buffer("rows", torch.zeros(slots, size, embed_dim), persistent=False)
        self.register_buffer("written", torch.zeros(slots, dtype=torch.long), persistent=False)

    def read(self, slot: int) -> Tensor:
        """The rows of ``slot`` written so far (at most ``size``), oldest order not kept."""
        return self.rows[slot, : min(int(self.written[slot]), self.size)]

    @torch.no_grad()
    def push(self, slot: int, x: Tensor) -> None:
        """Write x (n, E) into ``slot`` over its oldest rows (the last ``size`` rows if n > size)."""
        x = x.detach()[-self.size :].to(self.rows.dtype)
        start = int(self.written[slot]) % self.size
        index = (start + torch.arange(x.shape[0], device=x.device)) % self.size
        self.rows[slot, index] = x
        self.written[slot] += x.shape[0]

    def state(self) -> dict[str, Tensor]:
        """The buffers, for a training checkpoint."""
        return {"rows": self.rows.detach().cpu().clone(), "written": self.written.cpu().clone()}

    def load_state(self, state: dict[str, Tensor]) -> None:
        """Restore ``state()``; a checkpoint of another shape raises ValueError."""
        rows, written = state["rows"], state["written"]
        if rows.shape != self.rows.shape or written.shape != self.written.shape:
            raise ValueError(
                f"the checkpoint's negative memory is {tuple(rows.shape)}, this head's is "
                f"{tuple(self.rows.shape)}: resume with the same contrastive.memory_size"
            )
        self.rows.copy_(rows)
        self.written.copy_(written)
