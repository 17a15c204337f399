"""A spatial concept probe for image codes: a small CNN over the code grid, against one over pixels.

``concept_probe.py``'s linear probe reads a bag of codes, which throws away where each code is:
it can tell a red image from a blue one but hardly a star from a hexagon, whose difference is the
arrangement of edge codes. This probe keeps the grid. Codes (N, g·g) are embedded (64 channels),
read by three 3x3 convolutions and max-pooled over the grid; the reference reads the raw pixels
(N, 3, S, S) through stride-2 convolutions down to an S/8 grid, then the same three 3x3
convolutions. Both are trained with the same recipe (AdamW 2e-3, batch 64, ``EPOCHS`` epochs,
seeded) to predict colour and shape at once (two 8-way heads) on 75 % of the examples; the
accuracy of both right (the concept, chance 1/64) and of each factor is scored on the other 25 %.

The gap between the two is what the tokenizer loses of the concept to a reader that may learn any
spatial function, not only a linear one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

EPOCHS = 15
WIDTH = 96


def _trunk() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(64, WIDTH, 3, padding=1), nn.GELU(),
        nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.GELU(),
        nn.Conv2d(WIDTH, WIDTH, 3, padding=1), nn.GELU(),
    )  # fmt: skip


class CodeGridNet(nn.Module):
    """Codes (B, g·g) int64 → logits (B, 16): 8 colour then 8 shape."""

    def __init__(self, codebook_size: int):
        super().__init__()
        self.embed = nn.Embedding(codebook_size, 64)
        self.trunk, self.head = _trunk(), nn.Linear(WIDTH, 16)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        g = round(codes.shape[1] ** 0.5)
        h = self.embed(codes).view(-1, g, g, 64).permute(0, 3, 1, 2)
        return self.head(self.trunk(h).amax((2, 3)))


class PixelNet(nn.Module):
    """Pixels (B, 3, S, S) in [0, 1] → logits (B, 16), through an S/8 grid."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
            nn.Conv2d(64, 64, 4, 2, 1), nn.GELU(),
        )  # fmt: skip
        self.trunk, self.head = _trunk(), nn.Linear(WIDTH, 16)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(self.stem(pixels)).amax((2, 3)))


def grid_probe(
    net: nn.Module,
    x: torch.Tensor,
    colour: torch.Tensor,
    shape: torch.Tensor,
    seed: int = 0,
    epochs: int = EPOCHS,
) -> dict[str, float]:
    """Train ``net`` ``epochs`` epochs on a seeded 75 % of (x, colour, shape), score the other 25 %.

    Returns:
        ``{"concept", "colour", "shape"}`` held-out accuracies (concept: both factors right).
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    cut = int(0.75 * len(x))
    tr, te = order[:cut], order[cut:]
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.01)
    net.train()
    for _ in range(epochs):
        for batch in tr[torch.randperm(cut, generator=g)].split(64):
            logits = net(x[batch])
            loss = F.cross_entropy(logits[:, :8], colour[batch]) + F.cross_entropy(
                logits[:, 8:], shape[batch]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(x[b]) for b in te.split(256)])
    c_ok, s_ok = logits[:, :8].argmax(1) == colour[te], logits[:, 8:].argmax(1) == shape[te]
    return {
        "concept": float((c_ok & s_ok).float().mean()),
        "colour": float(c_ok.float().mean()),
        "shape": float(s_ok.float().mean()),
    }
