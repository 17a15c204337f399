"""Each objective's gradient of one shared layer's weights, inside the step's own backward.

GradNorm (Chen et al. 2018, arXiv:1711.02257) steers its weights by each objective's gradient
norm at the last shared layer's weights W, ||∇_W (w_m L_m)||. For a linear layer y = x Wᵀ over N
positions, ∇_W L = Gᵀ X (G = ∂L/∂y, (N, out); X the inputs, (N, in)). When nothing after W mixes
positions (in a decoder's last block: the residual add, the MLP, the final norm and the head are
per position), row t of G is the gradient of position t's loss alone, so grouping the rows by the
objective that owns them splits the product exactly: ∇_W L = Σ_m G_mᵀ X_m, and ∇_W L_m = G_mᵀ X_m.

``SplitWeightGrad`` makes autograd compute the layer's weight gradient that way, block by block,
and keeps each block's norm: the same products the backward runs anyway (2 N in out FLOPs), plus
one gather of the rows, where an extra backward per objective (or a second product after the
backward) would cost an objective's share of the step again. While it is active (a context
manager, or ``remove()``), every call of the layer records one entry in ``calls``: the first
call's rows are grouped by ``rows`` (set before the backward runs; (B, L) group ids in
[0, groups)), any later call (a second pass, such as the contrastive objective's) is one block of
its own.

    split = SplitWeightGrad(layer, groups=4)
    with split:
        loss = model(batch)              # calls the layer: recorded
    split.rows = row_group_ids          # (B, L), before backward
    loss.backward()                      # layer.weight.grad as usual; split.norms() per block
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class _BlockWeightGrad(torch.autograd.Function):
    """y = x Wᵀ + b whose backward computes ∇_W block by block over groups of rows."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, split: Any, call: dict):
        ctx.save_for_backward(x, weight)
        ctx.split, ctx.call, ctx.has_bias = split, call, bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = (g @ weight.to(g.dtype)).to(x.dtype) if ctx.needs_input_grad[0] else None
        g2 = g.reshape(-1, g.shape[-1])
        grad_b = g2.sum(0).to(weight.dtype) if ctx.has_bias else None
        grad_w = None
        if ctx.needs_input_grad[1]:
            x2 = x.reshape(-1, x.shape[-1]).to(g2.dtype)
            grad_w, ctx.call["norms"] = ctx.split.blocks(g2, x2, ctx.call["index"])
            grad_w = grad_w.to(weight.dtype)
        return grad_x, grad_w, grad_b, None, None


class SplitWeightGrad:
    """Args:
    layer: the shared ``nn.Linear`` (any leading shape; its weight (out, in)).
    groups: the number of row groups of the first call (group ids 0 .. groups - 1).
    """

    def __init__(self, layer: nn.Linear, groups: int):
        self.layer, self.groups = layer, groups
        self.calls: list[dict[str, Any]] = []
        self.rows: Tensor | None = None
        self._active = False

    def attach(self) -> SplitWeightGrad:
        """Record the layer's calls from now until ``remove``."""
        layer = self.layer

        def forward(x: Tensor) -> Tensor:
            call: dict[str, Any] = {"index": len(self.calls)}
            self.calls.append(call)
            return _BlockWeightGrad.apply(x, layer.weight, layer.bias, self, call)

        layer.forward = forward  # this instance only, until ``remove``
        self._active = True
        return self

    def __enter__(self) -> SplitWeightGrad:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        """Give the layer its own forward back (the calls already recorded keep their blocks)."""
        if self._active:
            del self.layer.forward
            self._active = False

    def blocks(self, g: Tensor, x: Tensor, index: int) -> tuple[Tensor, Tensor]:
        """Gᵀ X (out, in) in float32 as the sum of its row groups' products, and each group's
        norm: (groups,) for the first call (a group with no row: 0), (1,) for a later one."""
        rows = self.rows if index == 0 else None
        if rows is None:
            grad = (g.T @ x).float()
            return grad, grad.norm().reshape(1)
        ids = rows.reshape(-1).long()
        order = torch.argsort(ids, stable=True)
        ends = torch.bincount(ids, minlength=self.groups).cumsum(0).tolist()  # one host read
        g, x = g.index_select(0, order), x.index_select(0, order)
        grad = torch.zeros(g.shape[1], x.shape[1], dtype=torch.float32, device=g.device)
        norms = torch.zeros(self.groups, dtype=torch.float32, device=g.device)
        lo = 0
        for i, hi in enumerate(ends):
            if hi > lo:
                block = (g[lo:hi].T @ x[lo:hi]).float()
                norms[i] = block.norm()
                grad += block
            lo = hi
        return grad, norms

    def norms(self) -> list[Tensor]:
        """Each recorded call's block norms (empty where its backward has not run)."""
        empty = torch.zeros(0, device=self.layer.weight.device)
        return [c.get("norms", empty) for c in self.calls]
