"""Contrastive alignment of paired spans: CLIP's symmetric InfoNCE with a learnable temperature.

Radford et al. 2021, "Learning Transferable Visual Models From Natural Language Supervision": for
N pairs (a_i, b_i) of L2-normalised embeddings, logits = exp(t) · A Bᵀ and the loss is
(CE(logits, i) + CE(logitsᵀ, i)) / 2, so each item picks its own partner among the batch's N.
The log inverse temperature t is learnt, initialised at log(1 / 0.07) and clamped at log(100).

Here the pairs are a document's spans of two modalities (text-image, text-audio, image-audio,
wherever a document holds both): the model's hidden states are pooled over each document's
positions of each modality (``models/pooling.py``: the mean, or learnt attention pooling with
``pooling="attention"``), a per-modality linear projection maps them into the shared space, and
``ContrastiveHead`` sums the InfoNCE of every modality pair with at least two documents, divided
by the number of such pairs.

Multi-process (``world > 1``): every rank's embeddings are gathered from all ranks with their
gradients (``torch.distributed.nn.functional.all_gather``), so the negatives are the global batch,
as in open_clip's ``gather_with_grad``; each rank scores its own rows against all columns (and
the columns' side of the symmetric loss the same way), weighted by its share of the global pairs,
so that DDP's gradient average is the gradient of the one-process loss on the global batch.

Momentum keys and a memory (He et al. 2020, MoCo; Li et al. 2021, ALBEF): with ``momentum > 0``
the training module embeds every span a second time with an exponential moving average of the
model and the projections (``models/momentum.py``), and each online embedding is scored against
those keys; ``memory_size`` keeps the keys of past steps (``models/memory.py``) as extra negatives,
so that an item is told from far more than its batch's few partners (8 built-in pairs rarely
hold two of one colour: nothing asks the image embedding for the shape). The keys change slowly,
so the memory stays consistent; without them the memory holds the online model's own past
embeddings, and the loss rewards drifting away from them (measured: retrieval fell to chance).
Evaluation (``eval()``, or no keys) never reads or writes the memory.

Shapes: hidden (B, L, D); pooled (G, M, D) for G documents, M modalities; embeddings (n, E).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokenize_mm.models.memory import NegativeMemory
from tokenize_mm.models.pooling import AttentionPool, pool_spans

__all__ = ["ContrastiveHead", "info_nce", "pool_spans"]

#: Span poolings (``models/pooling.py``).
POOLINGS = ("mean", "attention")
#: How the isolated pass reads a span (``ContrastiveHead.read``).
SPAN_ATTENTIONS = ("causal", "bidirectional")
#: CLIP's initial and largest inverse temperature.
INIT_SCALE, MAX_SCALE = 1 / 0.07, 100.0


def info_nce(
    a: Tensor,
    b: Tensor,
    logit_scale: Tensor,
    *,
    world: int = 1,
    rank: int = 0,
    keys: tuple[Tensor, Tensor] | None = None,
    negatives: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, int]:
    """Symmetric InfoNCE of n local pairs (a_i, b_i), a and b (n, E) L2-normalised.

    With ``world > 1`` the pairs of all ranks are the negatives (gathered with gradients; ranks
    may hold different n, even 0) and the value returned is this rank's share of the global loss
    times ``world``, so that the mean over ranks, and DDP's gradient average, equal the
    one-process loss on the concatenated pairs.

    ``keys`` = (a', b') (n, E): the same pairs embedded by a momentum encoder (detached); the
    rows of a are then scored against the keys b' (and b's against a') instead of the online
    embeddings. ``negatives`` = (past a' (q, E), past b' (q, E)): extra columns, b's side for the
    rows of a and a's side for the rows of b.

    Returns:
        ``(loss, N)``: N the pairs over all ranks; the loss is 0 (with gradients to a, b) when
        N < 2, where there is nothing to contrast with.
    """
    all_a, sizes = _gather(keys[0] if keys is not None else a, world)
    all_b, _ = _gather(keys[1] if keys is not None else b, world)
    return _scored(a, b, all_a, all_b, sizes, logit_scale, rank, negatives)


def _scored(
    a: Tensor,
    b: Tensor,
    all_a: Tensor,
    all_b: Tensor,
    sizes: list[int],
    logit_scale: Tensor,
    rank: int,
    negatives: tuple[Tensor, Tensor] | None,
) -> tuple[Tensor, int]:
    """``info_nce`` once its columns are gathered: ``all_a``, ``all_b`` every rank's (keys or
    online embeddings), ``sizes`` each rank's n."""
    scale = logit_scale.exp().clamp(max=MAX_SCALE)
    total = sum(sizes)
    if total < 2:
        return (a.sum() + b.sum()) * 0.0, total
    if negatives is not None:
        all_a = torch.cat([all_a, negatives[0].to(all_a.dtype)])
        all_b = torch.cat([all_b, negatives[1].to(all_b.dtype)])
    start = sum(sizes[:rank])
    target = torch.arange(start, start + a.shape[0], device=a.device)
    rows = F.cross_entropy(scale * a @ all_b.T, target, reduction="sum")
    cols = F.cross_entropy(scale * b @ all_a.T, target, reduction="sum")
    return (rows + cols) / 2 / total * len(sizes), total  # len(sizes): the world size


def _gather(x: Tensor, world: int) -> tuple[Tensor, list[int]]:
    """All ranks' rows of x (n_r, E), concatenated in rank order with gradients; the n_r."""
    if world == 1:
        return x, [x.shape[0]]
    import torch.distributed as dist
    from torch.distributed.nn.functional import all_gather

    n = torch.tensor([x.shape[0]], device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes_int = [int(s) for s in sizes]
    longest = max(sizes_int)
    padded = F.pad(x, (0, 0, 0, longest - x.shape[0]))  # all_gather needs equal shapes
    parts = all_gather(padded)
    return torch.cat([p[:s] for p, s in zip(parts, sizes_int, strict=True)]), sizes_int


class ContrastiveHead(nn.Module):
    """Per-modality projections into one space and the learnable temperature.

    Args:
        d_model: width of the pooled hidden states.
        num_modalities: M (the modality ids 0 .. M-1 pooled).
        embed_dim: width of the shared space.
        momentum: > 0: the training module keeps a momentum (EMA) copy of the model and of these
            projections, ``models/momentum.py``, whose embeddings are the keys each online
            embedding is scored against (MoCo, ALBEF); 0: the online embeddings of the batch.
        memory_size: keys of past steps kept per side of each modality pair as extra negatives
            in training (``models/memory.py``); needs ``momentum`` > 0.
        pooling: how a span becomes one vector (``models/pooling.py``): ``"mean"`` of its
            positions, or ``"attention"``, learnt multi-head attention pooling (``AttentionPool``).
        pool_heads: the attention pool's heads (a divisor of ``d_model``).
        span_attention: how the isolated pass reads a span (``read``): ``"causal"``, as the
            language model reads it (a position sees the span's earlier positions), or
            ``"bidirectional"``, whole, as an encoder reads it (UniLM's shared weights under
            another mask: Dong et al. 2019, arXiv:1905.03197); the pass has no next-token
            targets, so nothing leaks, and an image's first rows then see the shape below them.
    """

    def __init__(self, d_model: int, num_modalities: int, embed_dim: int,
                 momentum: float = 0.0, memory_size: int = 0, pooling: str = "mean",
                 pool_heads: int = 4, span_attention: str = "causal"):  # fmt: skip
        super().__init__()
        if min(d_model, num_modalities, embed_dim) < 1 or memory_size < 0:
            raise ValueError(
                f"sizes must be >= 1 (memory_size >= 0), got d_model={d_model}, num_modalities="
                f"{num_modalities}, embed_dim={embed_dim}, memory_size={memory_size}"
            )
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if memory_size and not momentum:
            raise ValueError(
                "a memory of past embeddings needs momentum keys: scored against the online "
                "model's own past embeddings, training rewards the embeddings for drifting away "
                "from them, and on the built-in benchmark retrieval fell to chance (memory of 128 "
                "or 1,024); set momentum (e.g. 0.99) or memory_size=0"
            )
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if span_attention not in SPAN_ATTENTIONS:
            raise ValueError(
                f"span_attention must be one of {SPAN_ATTENTIONS}, got {span_attention!r}"
            )
        self.num_modalities = num_modalities
        self.span_attention = span_attention
        self.momentum = float(momentum)
        self.pooling = pooling
        self.pooler = (
            AttentionPool(d_model, num_modalities, pool_heads) if pooling == "attention" else None
        )
        self.proj = nn.ModuleList(
            nn.Linear(d_model, embed_dim, bias=False) for _ in range(num_modalities)
        )
        self.logit_scale = nn.Parameter(torch.tensor(math.log(INIT_SCALE)))
        self.pairs = list(combinations(range(num_modalities), 2))
        self.memory = (
            NegativeMemory(2 * len(self.pairs), memory_size, embed_dim) if memory_size else None
        )

    def read(self, model: nn.Module, tokens: Tensor, modality: Tensor, positions: Tensor,
             segment_ids: Tensor) -> Tensor:  # fmt: skip
        """The isolated pass of ``model`` (a ``DecoderLM``) over a packed batch (B, L): every span
        read alone, with this head's ``span_attention`` → hidden (B, L, D)."""
        return model(tokens, modality, positions, segment_ids, isolate_modalities=True,
                     bidirectional=self.span_attention == "bidirectional")  # fmt: skip

    def pool(self, hidden: Tensor, modality: Tensor, segment_ids: Tensor) -> tuple[Tensor, Tensor]:
        """hidden (B, L, D) → (pooled (G, M, D), present (G, M)) with this head's pooling."""
        if self.pooler is None:
            return pool_spans(hidden, modality, segment_ids, self.num_modalities)
        return self.pooler(hidden, modality, segment_ids)

    def embed(self, pooled: Tensor, m: int) -> Tensor:
        """pooled (n, D) of modality m → L2-normalised embeddings (n, E)."""
        return F.normalize(self.proj[m](pooled), dim=-1)

    def forward(
        self,
        pooled: Tensor,
        present: Tensor,
        *,
        keys: Tensor | None = None,
        pairs: Sequence[tuple[int, int]] | None = None,
        world: int = 1,
        rank: int = 0,
    ) -> tuple[Tensor, int]:
        """Mean InfoNCE over modality pairs.

        Args:
            pooled, present: ``pool``'s output (G, M, D), (G, M).
            keys: (G, M, E) the momentum encoder's embeddings of the same spans (``info_nce``'s
                keys); in training they are pushed into the memory, if there is one, after the
                loss, and the memory's keys are extra negatives.
            pairs: the modality pairs to align (default: every pair).
            world, rank: the process group (``info_nce``).

        Returns:
            ``(loss, num_pairs)``: the mean over the modality pairs that have at least two
            documents holding both (over all ranks; 0 when none has), and the number of
            (document, modality pair) pairs it covers on this rank.
        """
        pairs = list(pairs) if pairs is not None else self.pairs
        memory = self.memory if self.training and keys is not None else None
        terms, count = [], 0
        for m1, m2 in pairs:  # the same order on every rank: each gathers
            both = present[:, m1] & present[:, m2]
            a, b = self.embed(pooled[both, m1], m1), self.embed(pooled[both, m2], m2)
            # the columns, gathered once: the momentum keys when given, else the embeddings
            all_a, sizes = _gather(keys[both, m1] if keys is not None else a, world)
            all_b, _ = _gather(keys[both, m2] if keys is not None else b, world)
            negatives = None
            if memory is not None:
                slot = 2 * self.pairs.index((m1, m2))
                negatives = (memory.read(slot), memory.read(slot + 1))
            loss, total = _scored(a, b, all_a, all_b, sizes, self.logit_scale, rank, negatives)
            if total >= 2:  # the same decision on every rank (N is global)
                terms.append(loss)
                count += int(both.sum())
            if memory is not None:  # after the loss: a batch is never its own negative
                memory.push(slot, all_a)
                memory.push(slot + 1, all_b)
        if not terms:  # a zero that still touches every parameter (DDP expects them used)
            return pooled.sum() * 0.0 + sum(p.sum() for p in self.parameters()) * 0.0, 0
        return torch.stack(terms).mean(), count
