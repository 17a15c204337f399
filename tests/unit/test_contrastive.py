"""CLIP-style contrastive alignment (models/contrastive.py): span pooling, symmetric InfoNCE
with a learnable temperature, and negatives gathered across processes with gradients."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from tokenize_mm.models.contrastive import ContrastiveHead, info_nce, pool_spans


def test_pool_spans_averages_each_documents_modality():
    hidden = torch.arange(2 * 6 * 1, dtype=torch.float32).view(2, 6, 1)
    modality = torch.tensor([[0, 0, 1, 3, 0, 2], [2, 2, 0, 0, 0, 0]])
    segment = torch.tensor([[1, 1, 1, 1, 2, 2], [1, 1, 0, 0, 0, 0]])  # row 1 is padded
    pooled, present = pool_spans(hidden, modality, segment, num_modalities=3)
    assert pooled.shape == (3, 3, 1)  # documents (0,1), (0,2), (1,1)
    assert present.tolist() == [[True, True, False], [True, False, True], [False, False, True]]
    assert pooled[0, :, 0].tolist() == [0.5, 2.0, 0.0]  # the special token (3) is left out
    assert pooled[1, :, 0].tolist() == [4.0, 0.0, 5.0]
    assert pooled[2, 2, 0].item() == 6.5  # padding (segment 0) is left out


def test_info_nce_is_clips_loss():
    torch.manual_seed(0)
    a, b = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    scale = torch.tensor(math.log(10.0))
    loss, n = info_nce(a, b, scale)
    logits = 10.0 * a @ b.T
    expected = sum(
        -torch.log_softmax(logits[i], 0)[i] - torch.log_softmax(logits[:, i], 0)[i]
        for i in range(5)
    ) / 10  # fmt: skip
    assert n == 5 and torch.allclose(loss, expected)
    # matched pairs score lower than shuffled ones
    aligned, _ = info_nce(a, a, torch.tensor(math.log(20.0)))
    assert float(aligned) < float(loss)


def test_head_learns_to_align_and_skips_lonely_pairs():
    torch.manual_seed(0)
    head = ContrastiveHead(d_model=16, num_modalities=3, embed_dim=8)
    assert math.isclose(float(head.logit_scale.detach().exp()), 1 / 0.07, rel_tol=1e-5)
    concept = torch.randn(32, 16)
    pooled = torch.stack([concept, concept @ torch.randn(16, 16), torch.randn(32, 16)], 1)
    present = torch.ones(32, 3, dtype=torch.bool)
    present[:, 2] = False  # no document holds modality 2: only the pair (0, 1) counts
    present[0, 2] = True  # one lonely document: nothing to contrast with
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    first, count = head(pooled, present)
    assert count == 32
    for _ in range(100):
        loss, _ = head(pooled, present)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.2 * float(first)
    empty, none = head(pooled, torch.zeros(32, 3, dtype=torch.bool))
    assert none == 0 and float(empty) == 0.0 and empty.requires_grad


def _worker(rank: int, world: int, port: int, data: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        head = ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4)
        lo, hi = data["splits"][rank], data["splits"][rank + 1]
        loss, _ = head(data["pooled"][lo:hi], data["present"][lo:hi], world=world, rank=rank)
        loss.backward()
        grads = [p.grad.clone() for p in head.parameters()]
        for g in grads:  # DDP's average
            dist.all_reduce(g)
            g /= world
        total = loss.detach().clone()
        dist.all_reduce(total)
        out[rank] = (float(total) / world, grads)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
def test_two_processes_equal_one_on_the_global_batch():
    """Negatives gathered across two ranks with unequal shares: the mean loss and the averaged
    gradients equal one process's on the concatenated documents."""
    torch.manual_seed(1)
    pooled = torch.randn(11, 3, 6)
    present = torch.rand(11, 3) > 0.3
    torch.manual_seed(0)
    head = ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4)
    loss, _ = head(pooled, present)
    loss.backward()
    data = {"pooled": pooled, "present": present, "splits": [0, 4, 11]}
    out = mp.Manager().dict()
    mp.spawn(_worker, args=(2, _free_port(), data, out), nprocs=2, join=True)
    for rank in range(2):
        distributed, grads = out[rank]
        assert math.isclose(distributed, float(loss), rel_tol=1e-5)
        for g, p in zip(grads, head.parameters(), strict=True):
            assert torch.allclose(g, p.grad, atol=1e-6)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_isolated_pass_reads_each_span_alone(fusion):
    """``isolate_modalities``: a span's hidden states do not move when another modality's tokens
    of the same document change; without it (the language-model pass) they do."""
    from tokenize_mm.models.transformer import DecoderLM, preset

    torch.manual_seed(0)
    model = DecoderLM(preset("tiny", fusion=fusion), vocab_size=64).eval()
    modality = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2]])
    positions, segment = torch.arange(8)[None], torch.ones(1, 8, dtype=torch.long)
    tokens = torch.randint(0, 64, (1, 8))
    changed = tokens.clone()
    changed[0, :3] = (changed[0, :3] + 1) % 64  # the text span
    image = modality[0] == 1
    with torch.no_grad():
        alone = [
            model(t, modality, positions, segment, isolate_modalities=True)
            for t in (tokens, changed)
        ]
        fused = [model(t, modality, positions, segment) for t in (tokens, changed)]
    assert torch.allclose(alone[0][0, image], alone[1][0, image])
    assert not torch.allclose(fused[0][0, image], fused[1][0, image])


def test_no_pair_gives_a_zero_that_reaches_every_parameter():
    """A batch without pairs: the loss is 0 and every head parameter still gets a (zero)
    gradient, as DDP requires of parameters that took part in the step."""
    head = ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4)
    pooled = torch.randn(3, 3, 6, requires_grad=True)
    loss, pairs = head(pooled, torch.tensor([[True, False, False]] * 3))
    loss.backward()
    assert pairs == 0 and float(loss) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in head.parameters())
