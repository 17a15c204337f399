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

from tokenize_mm.core.modalities import MODALITY_IDS
from tokenize_mm.sequence.vocab import VocabLayout


@torch.inference_mode()
def sequence_losses(
    model: torch.nn.Module,
    layout: VocabLayout,
    sequences: Sequence[torch.Tensor],
    max_tokens: int = 16_384,
    only: str | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-target cross-entropy of each sequence.

    Args:
        model: a ``DecoderLM`` (its device is used; it is put in eval mode and left there).
        layout: the layout the sequences' global ids belong to.
        sequences: 1-D int64 global ids, each at least 2 long and at most the model's
            ``max_positions``.
        max_tokens: padded positions per forward batch.
        only: score only the targets of this modality (the others are NaN): the output head,
            as costly as the trunk at a small width, then runs on those positions alone.

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
        target, target_modality = tokens[:, 1:], modality[:, 1:]
        scored = segments[:, 1:].to(device) > 0
        if only is not None:
            scored &= target_modality == MODALITY_IDS[only]
        ce = torch.full(target.shape, float("nan"), device=device)
        logits = model.logits(hidden[:, :-1][scored], target_modality[scored])
        ce[scored] = F.cross_entropy(logits.float(), target[scored], reduction="none")
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


@torch.inference_mode()
def continuation_losses(
    model: torch.nn.Module,
    layout: VocabLayout,
    prefix: torch.Tensor,
    continuations: Sequence[torch.Tensor],
) -> torch.Tensor:
    """−log p(continuation | prefix), summed over each continuation's tokens, in one forward pass.

    The prefix is laid out once and every continuation after it as a branch (``block_mask``): a
    branch sees the prefix and itself, with positions continuing the prefix's, so each score
    equals that of ``prefix + continuation`` scored alone (``sequence_losses``), at the cost of
    one row of ``len(prefix) + Σ len(continuation)`` tokens instead of one row per continuation.

    Args:
        model: a ``DecoderLM``.
        layout: the layout of the ids.
        prefix: (P,) global ids, P >= 1.
        continuations: (C_i,) global ids each, C_i >= 1.

    Returns:
        (len(continuations),) float32 nats on the CPU.
    """
    if prefix.numel() < 1 or any(c.numel() < 1 for c in continuations):
        raise ValueError("continuation_losses needs a non-empty prefix and non-empty continuations")
    model.eval()
    device = next(model.parameters()).device
    p = prefix.numel()
    tokens = torch.cat([prefix, *continuations])
    branches = torch.cat([torch.zeros(p, dtype=torch.int64)]
                         + [torch.full((c.numel(),), k + 1) for k, c in enumerate(continuations)])  # fmt: skip
    positions = torch.cat(
        [torch.arange(p)] + [torch.arange(p, p + c.numel()) for c in continuations]
    )
    modality = layout.modality_of(tokens).long()
    row = [x[None].to(device) for x in (tokens, modality, positions, torch.ones_like(tokens))]
    hidden = model(*row, branches=branches[None].to(device))[0]  # (N, D)
    # Each branch's first token is predicted by the prefix's last position, every later one by
    # the position before it in the same branch.
    starts = torch.tensor([0] + [c.numel() for c in continuations]).cumsum(0)[:-1] + p
    source = torch.arange(tokens.numel()) - 1
    source[starts] = p - 1
    targets = torch.arange(p, tokens.numel())
    logits = model.logits(hidden[source[targets].to(device)], modality[targets].to(device))
    ce = F.cross_entropy(logits.float(), tokens[targets].to(device), reduction="none").cpu()
    owner = branches[targets] - 1
    return torch.zeros(len(continuations)).index_add_(0, owner, ce)
