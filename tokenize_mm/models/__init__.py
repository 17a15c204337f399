"""Models: a decoder-only transformer as a plain ``nn.Module``. Imports neither Lightning nor
Hydra, nor ``tokenize_mm.data`` (it reads batches as tensors; ``preset`` reads a size's yaml
file with OmegaConf when called)::

    from tokenize_mm.models import DecoderConfig, DecoderLM, allowed_ids_mask, preset

    model = DecoderLM(preset("small"), vocab_size=layout.vocab_size)  # conf/model/small.yaml
    hidden = model(batch.tokens, batch.modality, batch.positions, batch.segment_ids)  # (B, L, d)
    logits = model.logits(hidden)  # (B, L, vocab_size)

    # restricted softmax: score only the ids of the next position's modality
    model = DecoderLM(preset("small", restricted_softmax=True), vocab_size=layout.vocab_size)
    model.set_allowed_ids(allowed_ids_mask(layout, model.vocab_size))
    logits = model.logits(hidden[:, :-1], target_modality=batch.modality[:, 1:])

    # any size: the config's fields, written once (conf/model/*.yaml build the same dataclass)
    model = DecoderLM(DecoderConfig(d_model=64, n_layers=2, n_heads=2, d_ff=128,
                                    max_positions=256, fusion="late"), vocab_size=1000)
"""

from tokenize_mm.models.attention import Block, block_mask
from tokenize_mm.models.transformer import (
    DecoderConfig,
    DecoderLM,
    ModelConfigError,
    ModelInputError,
    allowed_ids_mask,
    preset,
    sizes,
)

__all__ = [
    "Block",
    "DecoderConfig",
    "DecoderLM",
    "ModelConfigError",
    "ModelInputError",
    "allowed_ids_mask",
    "block_mask",
    "preset",
    "sizes",
]
