"""The one-read step: ``BalancedLM`` forms the weighted total from the summed statistics still on
the device (``weight_vector``) and reads them after the backward. It must give what the read-first
path (``weighting.combine`` on host numbers) gives: the same total, gradients and reported weights,
with absent modalities and with the contrastive objective, for every weighting that combines so."""

from __future__ import annotations

import pytest
import torch

from tokenize_mm.balance import WEIGHTINGS
from tokenize_mm.balance.weighting import FixedWeighting, GradShareWeighting
from tokenize_mm.core.modalities import MODALITIES
from tokenize_mm.models import DecoderLM, preset
from tokenize_mm.models.contrastive import ContrastiveHead
from tokenize_mm.models.system import CONTRASTIVE, OBJECTIVES, BalancedLM

ON_DEVICE = sorted(WEIGHTINGS)


def _weighting(name: str, objectives):
    cls = WEIGHTINGS[name]
    if cls is FixedWeighting:
        return cls({m: 1.0 + i for i, m in enumerate(objectives)}, objectives)
    return cls(objectives)


def _statistics(counts, contrastive_pairs=None, seed=0):
    """A forward's per-modality sums (with grad), counts and hits, and the contrastive pass."""
    g = torch.Generator().manual_seed(seed)
    leaf = torch.rand(len(MODALITIES), generator=g, dtype=torch.float32) * 5
    leaf.requires_grad_(True)
    sums = {m: leaf[i] * counts[i] for i, m in enumerate(MODALITIES)}
    out = {"sums": sums, "counts": {m: torch.tensor(float(c)) for m, c in zip(MODALITIES, counts, strict=True)},
           "hits": {m: torch.tensor(0.0) for m in MODALITIES}}  # fmt: skip
    aligned = None
    if contrastive_pairs is not None:
        c_leaf = torch.tensor(1.7, requires_grad=True)
        aligned = {"loss": c_leaf * 1.0, "pairs": torch.tensor(float(contrastive_pairs))}
        return out, aligned, (leaf, c_leaf)
    return out, aligned, (leaf,)


def test_every_weighting_combines_on_the_device():
    # GradNorm too: its extra backward per objective (a compiled model at the weights) aside
    assert all(_weighting(name, OBJECTIVES).combines_on_device for name in WEIGHTINGS)


@pytest.mark.parametrize("name", ON_DEVICE)
@pytest.mark.parametrize("contrastive_pairs", [None, 0, 6])
@pytest.mark.parametrize("counts", [(10, 30, 60), (0, 40, 0), (7, 0, 3)])
def test_device_combination_equals_the_host_one(name, contrastive_pairs, counts):
    objectives = MODALITIES if contrastive_pairs is None else OBJECTIVES
    model = DecoderLM(preset("tiny"), vocab_size=64)
    head = None if contrastive_pairs is None else ContrastiveHead(model.d_model, 3, 8)
    results = []
    for path in ("device", "host"):
        weighting = _weighting(name, objectives)
        if isinstance(weighting, GradShareWeighting):  # non-trivial effective weights
            weighting.scales.copy_(torch.linspace(0.5, 2.0, len(objectives)))
        module = BalancedLM(model, weighting, contrastive=head)
        out, aligned, leaves = _statistics(counts, contrastive_pairs)
        table = module._forward_table(out, aligned)
        if path == "device":
            total = module._combine_on_device(out, aligned, table)
            stats = module._table_stats(table.tolist(), aligned is not None)
            present = {**stats["counts"], CONTRASTIVE: stats["pairs"]}
            values = module._device_weights.tolist()
            weighting.record({m: w for m, w in zip(objectives, values, strict=True)
                              if present.get(m, 0) > 0})  # fmt: skip
        else:
            stats = module._table_stats(table.tolist(), aligned is not None)
            total = module._combine_on_host(out, aligned, stats, shared=None)
        total.backward()
        grads = [t.grad.clone() for t in (*leaves, *weighting.parameters())]  # uncertainty's s
        results.append((total.detach(), grads, weighting.weights()))
    (t_dev, g_dev, w_dev), (t_host, g_host, w_host) = results
    torch.testing.assert_close(t_dev, t_host, rtol=1e-6, atol=0)
    for a, b in zip(g_dev, g_host, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
    assert w_dev == pytest.approx(w_host, rel=1e-6)
