"""Models: a decoder-only transformer as a plain ``nn.Module``. Imports neither Lightning nor
Hydra, nor ``tokenize_mm.data`` (it reads batches as tensors)::

    from tokenize_mm.models import DecoderLM, allowed_ids_mask, preset

    model = DecoderLM(vocab_size=layout.vocab_size, fusion="early", **preset("small"))
    hidden = model(batch.tokens, batch.modality, batch.positions, batch.segment_ids)  # (B, L, d)
    logits = model.logits(hidden)  # (B, L, vocab_size)

    # restricted softmax: score only the ids of the next position's modality
    model = DecoderLM(vocab_size=layout.vocab_size, restricted_softmax=True, **preset("small"))
    model.set_allowed_ids(allowed_ids_mask(layout, model.vocab_size))
    logits = model.logits(hidden[:, :-1], target_modality=batch.modality[:, 1:])
"""

from tokenize_mm.models.attention import Block, block_mask
from tokenize_mm.models.transformer import (
    SIZES,
    DecoderLM,
    ModelConfigError,
    ModelInputError,
    allowed_ids_mask,
    preset,
)

__all__ = [
    "SIZES",
    "Block",
    "DecoderLM",
    "ModelConfigError",
    "ModelInputError",
    "allowed_ids_mask",
    "block_mask",
    "preset",
]
