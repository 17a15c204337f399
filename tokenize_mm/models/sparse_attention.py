"""Attention that skips what the mask hides: the causal fast path and block-sparse ``flex_attention``.

``block_mask`` (``attention.py``) spells out a dense (B, 1, L, L) boolean mask that
``scaled_dot_product_attention`` reads whole: every query-key pair is scored, then the hidden
ones are dropped, and a mask rules out the fused flash kernels on a GPU. Two ways around it:

- **The causal fast path.** When every row of a batch holds one document (segment id the same
  at every position, or one document followed by trailing padding) and nothing else restricts
  attention, the mask is plain causal: ``scaled_dot_product_attention(is_causal=True)`` needs no
  mask tensor and skips the upper triangle (flash attention on a GPU; on a CPU its kernel skips
  the blocks above the diagonal). ``causal_rows`` decides it with one read of a boolean
  (the training step reads it off the batch's host copy: ``DecoderLM.forward``'s
  ``single_document_rows``).
- **Block-sparse attention** (``flex_attention``: Dong et al. 2024, "Flex Attention: A
  Programming Model for Generating Optimized Attention Kernels", arXiv:2412.05496). The mask is
  a function of (batch, head, query, key) built from the segment ids (same document, causal; same
  modality for isolated spans; prefix or same branch for scoring), and ``create_block_mask``
  records which 128 x 128 blocks hold any allowed pair: blocks between two packed documents are
  never computed. Compiled, this is the GPU path for packed rows (``DecoderConfig.attention =
  "flex"``). PyTorch's flex has no backward on a CPU and its uncompiled forward is a dense
  reference of the same function, so on a CPU ``DecoderLM`` keeps the dense mask (``flex_runs``).

Both give ``block_mask``'s answer at every position a loss or a pool reads. The one difference:
on the fast path a padding position after its row's document sees the document too (under the
dense mask it sees only padding); padding is never a target and never pooled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention

from tokenize_mm.models.document_attention import DocumentRuns, attend_documents

AttentionMask = torch.Tensor | BlockMask | DocumentRuns | None
"""What a block's attention reads: a dense bool (B, 1, L, L) mask, a flex ``BlockMask``, the
runs of causal attention per document (``document_attention.py``), or ``None`` for plain causal
attention (the fast path)."""

_compiled_flex: Callable[..., torch.Tensor] | None = None


def causal_rows(segment_ids: torch.Tensor) -> bool:
    """Whether every row is one document, then padding only: causal attention is then exact.

    Args:
        segment_ids: (B, L) 1, 2, ... per document, 0 at padding.

    Returns:
        True when each row starts with a document, holds no second one, and has padding (0) only
        after it. One host read (a device sync on a GPU).
    """
    if segment_ids.numel() == 0:
        return False  # nothing to attend: the dense path handles the empty batch
    real = segment_ids != 0
    one_document = (segment_ids == segment_ids[:, :1]) | ~real
    trailing_padding = real[:, 1:] <= real[:, :-1]  # once padding starts, it goes on
    return bool(real[:, 0].all() & one_document.all() & trailing_padding.all())


def flex_runs(device: torch.device) -> bool:
    """Whether ``DecoderConfig.attention="flex"`` runs flex on ``device``: a GPU's only (a CPU has
    no flex backward and no fused flex forward without ``torch.compile``)."""
    return device.type == "cuda"


def flex_block_mask(
    segment_ids: torch.Tensor,
    modality: torch.Tensor | None = None,
    branches: torch.Tensor | None = None,
    bidirectional: bool = False,
) -> BlockMask:
    """``block_mask``'s rule as a flex ``BlockMask``: the same arguments, the same allowed pairs.

    Args:
        segment_ids: (B, L) 1, 2, ... per document, 0 at padding.
        modality: (B, L) modality ids; a query then sees keys of its own modality only.
        branches: (B, L) 0 on a shared prefix, k > 0 on its k-th continuation.
        bidirectional: with ``modality``, no causal half (a span read whole).

    Returns:
        A ``BlockMask`` for (B, any head, L, L), on ``segment_ids``' device.
    """
    if bidirectional and modality is None:
        raise ValueError("a bidirectional mask is for spans read alone: pass their modality")
    batch, length = segment_ids.shape

    def allowed(b, h, q, k):  # flex calls it with index tensors; it must stay branch-free
        keep = segment_ids[b, q] == segment_ids[b, k]
        if not bidirectional:
            keep = keep & (k <= q)
        if modality is not None:
            keep = keep & (modality[b, q] == modality[b, k])
        if branches is not None:
            keep = keep & ((branches[b, k] == 0) | (branches[b, q] == branches[b, k]))
        return keep

    return create_block_mask(allowed, batch, None, length, length, device=segment_ids.device)


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, dropout_p: float
) -> torch.Tensor:
    """Attention of (B, H, L, D) queries, keys and values under any ``AttentionMask``.

    Returns:
        (B, H, L, D). ``dropout_p`` applies to the dense and causal paths (flex has no dropout:
        ``DecoderConfig`` refuses ``attention="flex"`` with dropout).
    """
    if mask is None:
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=dropout_p
        )
    if isinstance(mask, BlockMask):
        return _flex(q.device)(q, k, v, block_mask=mask)
    if isinstance(mask, DocumentRuns):
        return attend_documents(q, k, v, mask, dropout_p)
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p
    )


def _flex(device: torch.device) -> Callable[..., torch.Tensor]:
    """``flex_attention`` compiled on a GPU (its fused kernel), as is elsewhere (the dense
    reference, forward only: what the tests compare with the dense mask on a CPU)."""
    global _compiled_flex
    if device.type != "cuda":
        return flex_attention
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention, dynamic=False)
    return _compiled_flex
