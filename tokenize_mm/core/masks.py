"""The attention mask of packed documents, written once for the data and model layers.

Several documents share one row; ``segment_ids`` numbers them 1, 2, ... (0 is padding). A query
may attend a key only if the key is not later and lies in the same segment: causal and
block-diagonal (Krell et al. 2021, "Efficient Sequence Packing without Cross-contamination",
arXiv:2107.02027). Padding is one more segment, so a padding query sees earlier padding and
itself: no softmax row is empty and no NaN appears. ``data.packing`` re-exports it as
``attention_mask`` (and ``Batch.attention_mask``); ``models.attention.block_mask`` starts from it
and adds the late-fusion and branch conditions. Imports torch only.
"""

from __future__ import annotations

import torch


def attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(..., L, L) bool, True where query t may attend key s: s <= t and same segment.

    Block-diagonal causal. This is ``scaled_dot_product_attention``'s boolean ``attn_mask``
    (add a head axis: ``mask[:, None]``); ``nn.Transformer*`` layers want its negation.
    """
    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segment_ids.device).tril()
    return (segment_ids[..., :, None] == segment_ids[..., None, :]) & causal
