"""The pre-norm transformer block of ``DecoderLM`` and the masks that keep packed documents apart.

One block is ``x + attn(norm(x))`` then ``x + mlp(norm(x))`` (pre-norm, GPT-2: Radford et al. 2019)
with

- RMSNorm (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization", arXiv:1910.07467);
- rotary position embeddings (Su et al. 2021, "RoFormer", arXiv:2104.09864) read from the batch's
  ``positions``, which restart at 0 at each packed document: attention scores depend only on
  position differences, so a document scores the same wherever it sits in a row, and no
  parameter is spent on positions;
- a SwiGLU MLP (Shazeer 2020, "GLU Variants Improve Transformer", arXiv:2002.05202);
- ``scaled_dot_product_attention`` with a boolean mask, True where a query may attend a key (or
  without one where rows are single documents, or ``flex_attention``: ``sparse_attention.py``).

The mask is causal and block-diagonal over segments (Krell et al. 2021, "Efficient Sequence
Packing without Cross-contamination", arXiv:2107.02027): ``core.masks.attention_mask``, the one
the data layer's ``Batch.attention_mask`` gives too. Padding (segment 0) is one more segment, so a
padding query sees earlier padding and itself: no softmax row is empty and no NaN appears. Late
fusion adds "same modality"; scoring several continuations of one prefix adds branches.
Linear layers carry no bias (as in LLaMA); the residual output projections are named ``out`` so
that ``DecoderLM`` can scale their initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokenize_mm.core.masks import attention_mask
from tokenize_mm.models.sparse_attention import AttentionMask, attend


def block_mask(
    segment_ids: torch.Tensor,
    modality: torch.Tensor | None = None,
    branches: torch.Tensor | None = None,
    bidirectional: bool = False,
) -> torch.Tensor:
    """Boolean attention mask for ``scaled_dot_product_attention``.

    Args:
        segment_ids: (B, L) segment of each position, 1, 2, ... per document, 0 at padding.
        modality: (B, L) modality ids; when given, a query sees only keys of its own modality
            (the per-modality stage of late fusion).
        branches: (B, L) 0 on a shared prefix, k > 0 on the k-th continuation of it; when
            given, a query of branch k sees the prefix and branch k only (several continuations
            of one prefix scored in one row, as if each followed the prefix alone).
        bidirectional: with ``modality``, drop the causal half: a query sees every key of its
            segment and modality, before and after it (a span read whole, as an encoder reads it;
            for passes without next-token targets only, or the targets leak).

    Returns:
        (B, 1, L, L) bool, True where query t may attend key s: s <= t (any s with
        ``bidirectional``), same segment (and same modality). The diagonal is always True, so no
        row is empty.
    """
    if bidirectional and modality is None:
        raise ValueError("a bidirectional mask is for spans read alone: pass their modality")
    if bidirectional:
        mask = segment_ids[:, :, None] == segment_ids[:, None, :]  # (B, L, L): same segment
    else:
        mask = attention_mask(segment_ids)  # (B, L, L): causal, same segment
    if modality is not None:
        mask = mask & (modality[:, :, None] == modality[:, None, :])
    if branches is not None:
        mask = mask & ((branches[:, None, :] == 0) | (branches[:, :, None] == branches[:, None, :]))
    return mask[:, None]  # (B, 1, L, L): one mask shared by all heads


def rotary_table(max_positions: int, head_dim: int, base: float) -> tuple[torch.Tensor, ...]:
    """cos and sin of the rotation angles, each (max_positions, head_dim // 2), float32.

    Pair i of a head's channels turns by ``position * base ** (-2i / head_dim)``.
    """
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (i, i + D/2) of ``x`` (B, H, L, D) by angles given as ``cos``, ``sin``
    (B, 1, L, D/2). Computed in float32, returned in ``x``'s dtype (bf16 under autocast)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return rotated.type_as(x)


class SelfAttention(nn.Module):
    """Multi-head self-attention with rotary positions.

    Args:
        d_model: width of the residual stream; a multiple of ``n_heads``.
        n_heads: number of heads; head width ``d_model // n_heads`` must be even.
        dropout: attention-probability and output dropout, active in training only.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0):
        super().__init__()
        self.n_heads = n_heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: AttentionMask, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        """x (B, L, d_model), mask (B, 1, L, L) bool (or a flex ``BlockMask``, or None: causal;
        ``sparse_attention.py``), cos/sin (B, 1, L, head_dim / 2) → (B, L, d_model)."""
        b, length, d = x.shape
        # (B, L, 3 d) → three (B, H, L, head_dim)
        q, k, v = self.qkv(x).view(b, length, 3, self.n_heads, -1).permute(2, 0, 3, 1, 4)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = attend(q, k, v, mask, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(b, length, d)  # (B, H, L, hd) → (B, L, d)
        return self.drop(self.out(y))


class SwiGLU(nn.Module):
    """``out(silu(x W_gate) * x W_up)`` with hidden width ``d_ff``: 3 · d_model · d_ff weights."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0):
        super().__init__()
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=False)
        self.out = nn.Linear(d_ff, d_model, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.drop(self.out(F.silu(gate) * up))


class Block(nn.Module):
    """Pre-norm transformer block: 4 · d_model² + 3 · d_model · d_ff + 2 · d_model parameters."""

    def __init__(
        self, d_model: int, n_heads: int, d_ff: int, dropout: float = 0.0, norm_eps: float = 1e-5
    ):
        super().__init__()
        self.norm_attn = nn.RMSNorm(d_model, eps=norm_eps)
        self.attn = SelfAttention(d_model, n_heads, dropout)
        self.norm_mlp = nn.RMSNorm(d_model, eps=norm_eps)
        self.mlp = SwiGLU(d_model, d_ff, dropout)

    def forward(
        self, x: torch.Tensor, mask: AttentionMask, cos: torch.Tensor, sin: torch.Tensor
    ) -> torch.Tensor:
        """x (B, L, d_model) → (B, L, d_model); see ``SelfAttention.forward`` for the rest."""
        x = x + self.attn(self.norm_attn(x), mask, cos, sin)
        return x + self.mlp(self.norm_mlp(x))
