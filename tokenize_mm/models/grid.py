"""Row and column embeddings for image codes: where on the grid each code sits.

An image tokenizer writes a g x g grid of codes in raster order, and the decoder reads them as one
span of a 1-D sequence: rotary positions tell a code its distance to the previous codes, but
vertical neighbours are g positions apart and nothing marks where a row starts. A shape is a 2-D
arrangement of codes, so DALL-E (Ramesh et al. 2021, "Zero-Shot Text-to-Image Generation") adds
learnt row and column embeddings to its image tokens; ``GridEmbedding`` does the same for the
image codes of a packed batch.

A code's place comes from the batch itself: its index in its span is its position minus the
position of the span's ``<image>`` marker (the latest one in its row, which must be in its own
document: a code whose marker is not in its row, e.g. the rest of a span cut across rows, gets no
grid embedding). Index k (0-based, after the marker) is row k // g, column k % g; rows past the
last are clamped to it (a grid of g x g codes has none). The markers get none.

Shapes: tokens, modality, segment_ids (B, L); the embedding added (B, L, d_model).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokenize_mm.core.modalities import MODALITY_IDS
from tokenize_mm.sequence.vocab import SPECIALS

IMAGE = MODALITY_IDS["image"]
BEGIN, END = SPECIALS.index("<image>"), SPECIALS.index("</image>")


class GridEmbedding(nn.Module):
    """Learnt row and column embeddings of a ``grid`` x ``grid`` image code raster.

    Args:
        grid: codes per row of the image tokenizer (e.g. 16 for 256 codes).
        d_model: the embedding width.
    """

    def __init__(self, grid: int, d_model: int):
        super().__init__()
        if grid < 1:
            raise ValueError(f"grid must be >= 1 codes per row, got {grid}")
        self.grid = grid
        self.row = nn.Embedding(grid, d_model)
        self.col = nn.Embedding(grid, d_model)

    def index(self, tokens: Tensor, modality: Tensor, segment_ids: Tensor) -> Tensor:
        """(B, L) index of each image code in its span (0 for the first code), -1 elsewhere."""
        length = tokens.shape[1]
        steps = torch.arange(length, device=tokens.device).expand_as(tokens)
        marker = torch.where(tokens == BEGIN, steps, torch.full_like(steps, -1))
        last = marker.cummax(dim=1).values  # the latest <image> at or before each position
        own = torch.gather(segment_ids, 1, last.clamp_min(0)) == segment_ids
        code = (modality == IMAGE) & (tokens != BEGIN) & (tokens != END) & (last >= 0) & own
        return torch.where(code, steps - last - 1, torch.full_like(steps, -1))

    def forward(self, tokens: Tensor, modality: Tensor, segment_ids: Tensor) -> Tensor:
        """(B, L, d_model): row plus column embedding at image codes, 0 elsewhere."""
        k = self.index(tokens, modality, segment_ids)
        valid = k >= 0
        k = k.clamp_min(0)
        rows = (k // self.grid).clamp_max(self.grid - 1)
        out = self.row(rows) + self.col(k % self.grid)
        return out * valid[..., None].to(out.dtype)
