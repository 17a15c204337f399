"""The run report's alignment section: zero-shot and retrieval of a contrastively trained model.

When ``tmm-train`` trains with ``contrastive=...``, the report shows what the alignment is worth on
held-out examples the run never trained on: on the built-in data, the first ``limit`` tri-modal
examples of the seed's test split (unseen scenes of the 64 concepts; the fresh stream and the
store read train examples only); on a manifest, its test split (up to ``limit`` examples of each
set of modalities). Figures: zero-shot top-1 by embedding from image and audio (built-in data:
the concepts are known), and R@1 / R@5 in every retrieval direction, each with its chance level
(``evaluation.embedding.contrastive_evaluation``).
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Any

from omegaconf import DictConfig


def heldout_examples(source_cfg: DictConfig, limit: int) -> tuple[list[Any], str]:
    """Held-out raw examples of a run's source, and a line saying which."""
    from hydra.utils import instantiate

    from tokenize_mm.data import BuiltinSource, ManifestSource

    source = instantiate(source_cfg, split="test")  # a manifest is read and checked once
    if isinstance(source, BuiltinSource):
        indices = list(islice(source.indices_of("trimodal", "test"), limit))
        examples = [source.example_at(i) for i in indices]
        return examples, f"{len(examples)} tri-modal examples of the seed's test split"
    if isinstance(source, ManifestSource):
        kept: dict[tuple[str, ...], list] = {}
        for ex in source:
            group = kept.setdefault(tuple(ex.modalities), [])
            if len(ex.modalities) > 1 and len(group) < limit:
                group.append(ex)
        counts = ", ".join(f"{len(v)} {'+'.join(k)}" for k, v in kept.items() if v)
        return [ex for group in kept.values() for ex in group], f"the test split: {counts}"
    return [], f"no held-out pairs for a {type(source).__name__}"


def alignment_lines(cfg: DictConfig, artifacts: dict[str, Path], layout: Any, module: Any,
                    limit: int = 64) -> list[str]:  # fmt: skip
    """The report's alignment section (no lines for a run without a contrastive head); ``layout``
    is the run's ``VocabLayout`` over ``artifacts``."""
    from tokenize_mm.data import BuiltinSource
    from tokenize_mm.evaluation import SpanEmbedder, contrastive_evaluation, encode_examples
    from tokenize_mm.tokenizers.artifact import load_tokenizer

    head = getattr(module, "contrastive", None)
    if head is None:
        return []
    raw, about = heldout_examples(cfg.data.source, limit)
    if not raw:
        return ["", "## Alignment", "", f"Not measured: {about}."]
    tokenizers = {m: load_tokenizer(p) for m, p in artifacts.items()}
    builtin = all(getattr(ex, "concept", None) for ex in raw)
    model = module.model.eval()
    result = contrastive_evaluation(
        SpanEmbedder(model, head.eval(), layout, truncate=True), tokenizers["text"],
        encode_examples(raw, tokenizers), concepts=BuiltinSource.concepts() if builtin else None,
    )  # fmt: skip
    lines = ["", "## Alignment", "", f"The contrastive embedding space on held-out data ({about}):"]
    for context, z in result["zero_shot"].items():
        lines.append(f"- zero-shot from {context} by embedding: {z['accuracy']:.3f} top-1 over "
                     f"{round(1 / z['chance'])} concepts (chance {z['chance']:.3f})")  # fmt: skip
    if result["retrieval"]:
        lines += ["", "| retrieval | R@1 | R@5 | chance@5 |", "|---|---|---|---|"]
        for direction, r in result["retrieval"].items():
            lines.append(f"| {direction.replace('->', ' → ')} | {r['R@1']:.2f} | {r['R@5']:.2f} | "
                         f"{r['chance@5']:.2f} |")  # fmt: skip
    return lines
