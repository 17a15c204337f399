"""Evaluation of a trained model across modalities (docs/architecture.md §6).

``scoring``: per-target cross-entropy of token sequences; ``grounding``: the grounding gain
G(m ← c); ``zero_shot``: concept classification by caption likelihood; ``embedding``: span
embeddings of a contrastively trained model, zero-shot classification by embedding similarity
and cross-modal retrieval R@k; ``regret``: worst-modality regret W and the other balance
measures over a set of strategies.
"""

from tokenize_mm.evaluation.embedding import (
    SpanEmbedder,
    class_embeddings,
    contrastive_evaluation,
    retrieval_at_k,
    zero_shot_by_embedding,
)
from tokenize_mm.evaluation.grounding import EvalExample, encode_examples, grounding_gains
from tokenize_mm.evaluation.regret import average_loss, seed_spread, worst_modality_regret
from tokenize_mm.evaluation.scoring import modality_losses, sequence_losses
from tokenize_mm.evaluation.zero_shot import zero_shot

__all__ = [
    "EvalExample",
    "SpanEmbedder",
    "average_loss",
    "class_embeddings",
    "contrastive_evaluation",
    "encode_examples",
    "grounding_gains",
    "modality_losses",
    "retrieval_at_k",
    "seed_spread",
    "sequence_losses",
    "worst_modality_regret",
    "zero_shot",
    "zero_shot_by_embedding",
]
