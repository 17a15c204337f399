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
from tokenize_mm.models.memory import NegativeMemory
from tokenize_mm.models.momentum import MomentumEncoder
from tokenize_mm.models.pooling import AttentionPool


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


def _spans():
    torch.manual_seed(0)
    hidden = torch.randn(2, 7, 8)
    modality = torch.tensor([[0, 0, 1, 1, 1, 3, 2], [2, 2, 2, 0, 0, 0, 0]])
    segment = torch.tensor([[1, 1, 1, 1, 1, 2, 2], [1, 1, 1, 0, 0, 0, 0]])
    return hidden, modality, segment


def test_attention_pool_starts_at_the_mean_and_keeps_spans_apart():
    """Zero queries: the mean (``pool_spans``). Learnt queries: each span's weights are its own
    softmax (a convex combination of its positions, unchanged by other documents, padding or
    special tokens), and the pool is differentiable in its query and key."""
    hidden, modality, segment = _spans()
    pool = AttentionPool(d_model=8, num_modalities=3, heads=2)
    pooled, present = pool(hidden, modality, segment)
    mean, mean_present = pool_spans(hidden, modality, segment, 3)
    assert torch.equal(present, mean_present) and torch.allclose(pooled, mean, atol=1e-6)
    with torch.no_grad():
        pool.query.normal_(0, 3.0)
    pooled, _ = pool(hidden, modality, segment)
    assert not torch.allclose(pooled, mean, atol=1e-3)
    # a single-position span pools to its position; the text span lies within its positions' hull
    assert torch.allclose(pooled[1, 2], hidden[0, 6], atol=1e-6)
    lo, hi = hidden[0, :2].min(0).values, hidden[0, :2].max(0).values
    assert bool(((pooled[0, 0] >= lo - 1e-6) & (pooled[0, 0] <= hi + 1e-6)).all())
    # another document's positions do not move this one's pool
    changed = hidden.clone()
    changed[1] += 5.0
    assert torch.allclose(pool(changed, modality, segment)[0][0], pooled[0], atol=1e-6)
    pooled.sum().backward()
    assert pool.query.grad.abs().sum() > 0 and pool.key.weight.grad.abs().sum() > 0


def test_head_with_attention_pooling_and_bad_pooling():
    hidden, modality, segment = _spans()
    head = ContrastiveHead(d_model=8, num_modalities=3, embed_dim=4, pooling="attention",
                           pool_heads=2)  # fmt: skip
    pooled, present = head.pool(hidden, modality, segment)
    assert pooled.shape == (3, 3, 8)
    assert torch.equal(present, pool_spans(hidden, modality, segment, 3)[1])
    with pytest.raises(ValueError, match="pooling"):
        ContrastiveHead(d_model=8, num_modalities=3, embed_dim=4, pooling="max")
    with pytest.raises(ValueError, match="multiple of heads"):
        ContrastiveHead(d_model=8, num_modalities=3, embed_dim=4, pooling="attention",
                        pool_heads=3)  # fmt: skip


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


def test_keys_and_negatives_are_the_columns():
    """With momentum keys, a's rows are scored against the keys b' (and b's against a'); the
    memory's past keys are extra columns; keys equal to the online embeddings give the plain
    loss."""
    torch.manual_seed(0)
    a, b = (F.normalize(torch.randn(4, 8), dim=-1) for _ in range(2))
    ka, kb = (F.normalize(torch.randn(4, 8), dim=-1) for _ in range(2))
    qa, qb = (F.normalize(torch.randn(3, 8), dim=-1) for _ in range(2))
    scale = torch.tensor(math.log(10.0))
    plain, _ = info_nce(a, b, scale)
    same, _ = info_nce(a, b, scale, keys=(a.detach(), b.detach()))
    assert torch.allclose(plain, same)
    loss, n = info_nce(a, b, scale, keys=(ka, kb), negatives=(qa, qb))
    rows = F.cross_entropy(10.0 * a @ torch.cat([kb, qb]).T, torch.arange(4), reduction="sum")
    cols = F.cross_entropy(10.0 * b @ torch.cat([ka, qa]).T, torch.arange(4), reduction="sum")
    assert n == 4 and torch.allclose(loss, (rows + cols) / 8)


def test_memory_is_a_ring_saved_apart_from_the_weights():
    memory = NegativeMemory(slots=2, size=4, embed_dim=2)
    assert memory.read(0).shape == (0, 2)
    memory.push(0, torch.ones(3, 2))
    memory.push(0, torch.full((3, 2), 2.0))  # 6 written: the two oldest overwritten
    assert sorted(memory.read(0)[:, 0].tolist()) == [1.0, 2.0, 2.0, 2.0]
    assert memory.read(1).shape == (0, 2) and memory.state_dict() == {}
    restored = NegativeMemory(slots=2, size=4, embed_dim=2)
    restored.load_state(memory.state())
    assert torch.equal(restored.read(0), memory.read(0))
    with pytest.raises(ValueError, match="memory_size"):
        NegativeMemory(slots=2, size=8, embed_dim=2).load_state(memory.state())


def test_head_uses_its_memory_in_training_with_keys_only():
    torch.manual_seed(0)
    head = ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4, momentum=0.9, memory_size=8)
    pooled, present = torch.randn(5, 3, 6), torch.ones(5, 3, dtype=torch.bool)
    keys = F.normalize(torch.randn(5, 3, 4), dim=-1)
    head(pooled, present)  # no keys: the memory is not touched
    assert int(head.memory.written.sum()) == 0
    first, _ = head(pooled, present, keys=keys)
    assert head.memory.written.tolist() == [5] * 6  # 3 pairs x 2 sides, after the loss
    second, _ = head(pooled, present, keys=keys)  # now 5 past keys more per column
    assert float(second) > float(first) and head.memory.written.tolist() == [10] * 6
    head.eval()
    head(pooled, present, keys=keys)
    assert head.memory.written.tolist() == [10] * 6  # evaluation never writes it


def test_memory_without_momentum_and_bad_momentum_are_refused():
    with pytest.raises(ValueError, match="drift"):
        ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4, memory_size=8)
    with pytest.raises(ValueError, match="momentum"):
        ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4, momentum=1.0)


@pytest.mark.parametrize("pooling", ["mean", "attention"])
def test_momentum_encoder_follows_the_online_weights(pooling):
    from tokenize_mm.models.transformer import DecoderLM, preset

    torch.manual_seed(0)
    model = DecoderLM(preset("tiny"), vocab_size=32)
    head = ContrastiveHead(model.d_model, num_modalities=3, embed_dim=4, momentum=0.75,
                           pooling=pooling)  # fmt: skip
    encoder = MomentumEncoder(model, head)
    assert encoder.head.memory is None
    before = [p.clone() for p in encoder.parameters()]
    with torch.no_grad():
        for p in [*model.parameters(), *head.parameters()]:
            p.add_(1.0)
    encoder.update(model, head)
    for old, new in zip(before, encoder.parameters(), strict=True):
        assert torch.allclose(new, old + 0.25)  # m θ' + (1 - m)(θ' + 1)
    tokens = torch.randint(0, 32, (1, 6))
    modality = torch.tensor([[0, 0, 1, 1, 2, 2]])
    keys = encoder.keys(tokens, modality, torch.arange(6)[None], torch.ones(1, 6, dtype=torch.long))
    assert keys.shape == (1, 3, 4) and not keys.requires_grad
    assert torch.allclose(keys.norm(dim=-1), torch.ones(1, 3))


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


def _step(head, pooled, present, keys, world=1, rank=0):
    """Without keys: one loss. With keys: a first call fills the memory (every rank with the
    global batch's keys), the loss is the second call's, which reads it."""
    if keys is not None:
        head(pooled, present, keys=keys, world=world, rank=rank)
    return head(pooled, present, keys=keys, world=world, rank=rank)[0]


def _head(keys):
    torch.manual_seed(0)
    extra = {"momentum": 0.9, "memory_size": 32} if keys is not None else {}
    return ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4, **extra)


def _worker(rank: int, world: int, port: int, data: dict, out: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        head = _head(data["keys"])
        lo, hi = data["splits"][rank], data["splits"][rank + 1]
        keys = data["keys"][lo:hi] if data["keys"] is not None else None
        loss = _step(head, data["pooled"][lo:hi], data["present"][lo:hi], keys, world, rank)
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
@pytest.mark.parametrize("with_keys", [False, True], ids=["online", "momentum_keys_memory"])
def test_two_processes_equal_one_on_the_global_batch(with_keys):
    """Negatives gathered across two ranks with unequal shares: the mean loss and the averaged
    gradients equal one process's on the concatenated documents; with momentum keys and a
    memory too (every rank's memory holds the global batch's keys)."""
    torch.manual_seed(1)
    pooled = torch.randn(11, 3, 6)
    present = torch.rand(11, 3) > 0.3
    keys = F.normalize(torch.randn(11, 3, 4), dim=-1) if with_keys else None
    head = _head(keys)
    loss = _step(head, pooled, present, keys)
    loss.backward()
    data = {"pooled": pooled, "present": present, "splits": [0, 4, 11], "keys": keys}
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


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_bidirectional_reading_sees_the_whole_span_and_nothing_else(fusion):
    """``span_attention="bidirectional"``: a span's first position moves when its last token
    changes (it does not under causal reading), and still not when another modality's does."""
    from tokenize_mm.models.transformer import DecoderLM, preset

    torch.manual_seed(0)
    model = DecoderLM(preset("tiny", fusion=fusion), vocab_size=64).eval()
    modality = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 2]])
    positions, segment = torch.arange(8)[None], torch.ones(1, 8, dtype=torch.long)
    tokens = torch.randint(0, 64, (1, 8))
    last_image, text = tokens.clone(), tokens.clone()
    last_image[0, 6] = (last_image[0, 6] + 1) % 64
    text[0, :3] = (text[0, :3] + 1) % 64
    heads = {s: ContrastiveHead(d_model=model.d_model, num_modalities=3, embed_dim=4,
                                span_attention=s) for s in ("causal", "bidirectional")}  # fmt: skip
    with torch.no_grad():
        read = {(s, i): head.read(model, t, modality, positions, segment)[0, 3]  # first image
                for s, head in heads.items() for i, t in enumerate((tokens, last_image, text))}  # fmt: skip
    assert torch.allclose(read["causal", 0], read["causal", 1])
    assert not torch.allclose(read["bidirectional", 0], read["bidirectional", 1])
    assert torch.allclose(read["bidirectional", 0], read["bidirectional", 2])


def test_bidirectional_reading_is_refused_where_targets_would_leak():
    from tokenize_mm.models.attention import block_mask
    from tokenize_mm.models.transformer import DecoderLM, preset

    model = DecoderLM(preset("tiny"), vocab_size=16)
    ones = torch.ones(1, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="isolate_modalities"):
        model(ones, ones, torch.arange(4)[None], ones, bidirectional=True)
    with pytest.raises(ValueError, match="modality"):
        block_mask(ones, bidirectional=True)
    with pytest.raises(ValueError, match="span_attention"):
        ContrastiveHead(d_model=8, num_modalities=3, embed_dim=4, span_attention="full")


def test_no_pair_gives_a_zero_that_reaches_every_parameter():
    """A batch without pairs: the loss is 0 and every head parameter still gets a (zero)
    gradient, as DDP requires of parameters that took part in the step."""
    head = ContrastiveHead(d_model=6, num_modalities=3, embed_dim=4)
    pooled = torch.randn(3, 3, 6, requires_grad=True)
    loss, pairs = head(pooled, torch.tensor([[True, False, False]] * 3))
    loss.backward()
    assert pairs == 0 and float(loss) == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in head.parameters())
