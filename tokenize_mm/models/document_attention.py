"""Causal attention per packed document: each row's documents cut out, grouped by length, attended.

A packed row holds several documents, and ``block_mask``'s rule lets a position attend only the
earlier positions of its own document (Krell et al. 2021, "Efficient Sequence Packing without
Cross-contamination", arXiv:2107.02027). The dense mask spells that out as (B, 1, L, L) and the
kernel scores every query-key pair of the row before dropping most of them; ``flex_attention``
skips the blocks between documents but has no backward on a CPU (``sparse_attention.py``).

Here the documents themselves are the batch, as in variable-length ("varlen") attention (Dao et
al. 2022, "FlashAttention", arXiv:2205.14135, packs sequences the same way): ``DocumentRuns``
reads each row's runs of equal segment id, pads each run's length up to a multiple of
``quantum`` and groups the runs of one padded length; ``attend_documents`` gathers each group's
queries, keys and values into (n, H, P, D), runs ``scaled_dot_product_attention(is_causal=True)``
on it without a mask, and puts every position's output back where it came from. A run's pad
slots come after all of its real positions, so causal attention never lets a real query see one.
Only the pairs of each document's own square are scored, with no mask to read (on the main
job's rows, one long document and a fragment or two, that is most of the row's square still:
docs/training.md, "Attention").

The same outputs as the dense mask at every document position, summed in another order. The one
difference: padding (segment 0) sees only its own run, where the dense mask joins a row's
separate padding runs; padding is never a target or pooled. A row in which a document's id comes
back after another document (not runs) gets no plan: the dense mask then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: Run lengths are padded up to a multiple of this: fewer, larger groups (one kernel call each)
#: against more padded slots scored. 64 came out ahead of 16, 32 and 128 on rows of the main
#: job's stream in a sweep during development (not recorded).
QUANTUM = 64


@dataclass(frozen=True)
class DocumentRuns:
    """Where each run of equal segment id lies, grouped by padded length (module docstring).

    Attributes:
        shape: (B, L) of the batch the plan is for.
        groups: one (n, P) int64 tensor per padded length P: the flat positions (b · L + t) of
            n runs, each run's positions in order, then its last position repeated up to P.
        inverse: (B · L,) int64: where each position's output lies among the groups' slots,
            concatenated group by group ((n, P) flattened).
    """

    shape: tuple[int, int]
    groups: tuple[torch.Tensor, ...]
    inverse: torch.Tensor

    @classmethod
    def from_segment_ids(cls, segment_ids: torch.Tensor, quantum: int = QUANTUM
                         ) -> DocumentRuns | None:  # fmt: skip
        """The plan of a batch's (B, L) segment ids (read on the host: one device read on a
        GPU), or ``None`` when a row's nonzero id recurs after another run (the dense mask
        then)."""
        if quantum < 1:
            raise ValueError(f"quantum must be >= 1, got {quantum}")
        batch, length = segment_ids.shape
        if segment_ids.numel() == 0:
            return None  # nothing to attend: the dense path handles the empty batch
        seg = segment_ids.detach().cpu().numpy().reshape(-1)
        n = seg.size
        starts = np.ones(n, dtype=bool)
        starts[1:] = seg[1:] != seg[:-1]
        starts[::length] = True  # every row starts a run
        first = np.flatnonzero(starts)  # (R,) run starts, flat
        lengths = np.diff(np.append(first, n))
        row, ids = first // length, seg[first]
        real = ids != 0
        pairs = row[real] * (int(seg.max(initial=0)) + 1) + ids[real]
        if len(np.unique(pairs)) != len(pairs):
            return None
        padded = -(-lengths // quantum) * quantum
        order = np.argsort(padded, kind="stable")
        run_of = np.cumsum(starts) - 1  # (B · L,) each position's run
        slot_base = np.empty(len(first), dtype=np.int64)
        groups, offset = [], 0
        for p in np.unique(padded):
            members = order[padded[order] == p]
            slot_base[members] = offset + np.arange(len(members)) * p
            steps = np.minimum(np.arange(p)[None, :], lengths[members, None] - 1)
            groups.append(torch.from_numpy(first[members, None] + steps))
            offset += len(members) * int(p)
        inverse = slot_base[run_of] + (np.arange(n) - first[run_of])
        return cls((batch, length), tuple(groups), torch.from_numpy(inverse))

    def to(self, device: torch.device) -> DocumentRuns:
        """The plan with its index tensors on ``device``."""
        if self.inverse.device == device:
            return self
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return DocumentRuns(self.shape, tuple(move(g) for g in self.groups), move(self.inverse))


def attend_documents(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, runs: DocumentRuns, dropout_p: float = 0.0
) -> torch.Tensor:
    """Causal attention of (B, H, L, D) queries, keys and values within each run of ``runs``.

    Returns:
        (B, H, L, D): position t of a run attends the positions of its run up to t.
    """
    b, h, length, d = q.shape
    if (b, length) != runs.shape:
        raise ValueError(f"the plan is for (B, L) = {runs.shape}, the queries are {(b, length)}")
    runs = runs.to(q.device)
    flat = [x.transpose(1, 2).reshape(b * length, h, d) for x in (q, k, v)]
    outputs = []
    for index in runs.groups:
        n, p = index.shape
        qg, kg, vg = (x.index_select(0, index.reshape(-1)).view(n, p, h, d).transpose(1, 2)
                      for x in flat)  # fmt: skip
        y = F.scaled_dot_product_attention(qg, kg, vg, is_causal=True, dropout_p=dropout_p)
        outputs.append(y.transpose(1, 2).reshape(n * p, h, d))
    y = torch.cat(outputs).index_select(0, runs.inverse)
    return y.view(b, length, h, d).transpose(1, 2)
