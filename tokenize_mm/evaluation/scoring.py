"""Score token sequences with a ``DecoderLM``: the cross-entropy of every target, by modality.

Sequences of different lengths are sorted by length, right-padded into batches (causal
attention: padding after a sequence cannot change its scores) and run under ``inference_mode``.
Position t predicts token t + 1; a target belongs to the modality of its token, and special
targets (eos, pad) are not scored, as in training (``BalancedLM``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tokenize_mm.sequence.vocab import MODALITY_IDS, VocabLayout


@torch.inference_mode()
def sequence_losses(
    model: torch.nn.Module,
    layout: VocabLayout,
    sequences: Sequence[torch.Tensor],
    max_tokens: int = 16_384,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-target cross-entropy of each sequence.

    Args:
        model: a ``DecoderLM`` (its device is used; it is put in eval mode and left there).
        layout: the layout the sequences' global ids belong to.
        sequences: 1-D int64 global ids, each at least 2 long and at most the model's
            ``max_positions``.
        max_tokens: padded positions per forward batch.

    Returns:
        for each sequence, ``(ce (N-1,), target_modality (N-1,))``: float32 nats on the CPU, and
        the ``MODALITY_IDS`` id of each target.

    Raises:
        ValueError: a sequence is shorter than 2 or longer than the model's context (names it).
    """
    limit = getattr(model, "max_positions", None)
    for i, seq in enumerate(sequences):
        if seq.dim() != 1 or seq.numel() < 2 or (limit is not None and seq.numel() > limit):
            raise ValueError(
                f"sequence {i} has shape {tuple(seq.shape)}: scoring needs 1-D sequences of 2 to "
                f"{limit} tokens (the model's max_positions); shorten the context items"
            )
    model.eval()
    device = next(model.parameters()).device
    pad = layout.special("pad")
    order = sorted(range(len(sequences)), key=lambda i: -sequences[i].numel())
    out: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(sequences)
    start = 0
    while start < len(order):
        longest = sequences[order[start]].numel()
        stop = min(len(order), start + max(1, max_tokens // longest))
        group = order[start:stop]
        tokens = torch.full((len(group), longest), pad, dtype=torch.int64)
        segments = torch.zeros((len(group), longest), dtype=torch.int64)
        for row, i in enumerate(group):
            n = sequences[i].numel()
            tokens[row, :n] = sequences[i]
            segments[row, :n] = 1
        modality = layout.modality_of(tokens).long()
        positions = torch.arange(longest).expand(len(group), longest)
        tokens, modality = tokens.to(device), modality.to(device)
        hidden = model(tokens, modality, positions.to(device), segments.to(device))
        logits = model.logits(hidden[:, :-1], modality[:, 1:])
        ce = F.cross_entropy(logits.float().transpose(1, 2), tokens[:, 1:], reduction="none")
        ce, modality = ce.cpu(), modality.cpu()
        for row, i in enumerate(group):
            n = sequences[i].numel()
            out[i] = (ce[row, : n - 1], modality[row, 1:n])
        start = stop
    return out  # type: ignore[return-value]


def modality_losses(
    scored: Sequence[tuple[torch.Tensor, torch.Tensor]], modality: str
) -> tuple[float, int]:
    """Mean cross-entropy over every target of ``modality`` in ``scored``, and their count."""
    target = MODALITY_IDS[modality]
    total, count = 0.0, 0
    for ce, mods in scored:
        mask = mods == target
        total += float(ce[mask].sum())
        count += int(mask.sum())
    return (total / count if count else float("nan")), count
