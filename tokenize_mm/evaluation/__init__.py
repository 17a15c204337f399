"""Evaluation of a trained model across modalities (docs/architecture.md §6).

``scoring``: per-target cross-entropy of token sequences; ``grounding``: the grounding gain
G(m ← c); ``zero_shot``: concept classification by caption likelihood; ``regret``: worst-modality
regret W and the other balance measures over a set of strategies.
"""

from tokenize_mm.evaluation.grounding import EvalExample, encode_examples, grounding_gains
from tokenize_mm.evaluation.regret import average_loss, seed_spread, worst_modality_regret
from tokenize_mm.evaluation.scoring import modality_losses, sequence_losses
from tokenize_mm.evaluation.zero_shot import zero_shot

__all__ = [
    "EvalExample",
    "average_loss",
    "encode_examples",
    "grounding_gains",
    "modality_losses",
    "seed_spread",
    "sequence_losses",
    "worst_modality_regret",
    "zero_shot",
]
