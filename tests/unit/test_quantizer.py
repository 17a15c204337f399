"""Invariants of the vector quantizer (tokenize_mm.tokenizers.quant.vector)."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_same_nearest
from encodec.quantization.core_vq import EuclideanCodebook, sample_vectors

from tokenize_mm.tokenizers.quant.usage import codebook_usage
from tokenize_mm.tokenizers.quant.vector import (
    Codebook,
    PackageExactCodebook,
    VectorQuantizer,
    encodec_nearest_code,
    kmeans,
    nearest_code,
)


# The fused kernel (fused=None on the CPU) and the matmul path; on the latter K = 1024 takes the
# two-level (grouped) argmin, K = 100 and K = 64 the plain one.
@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize(
    ("n", "k", "d", "chunk_rows"), [(3000, 1024, 64, None), (1001, 100, 8, 77), (257, 64, 3, 1)]
)
def test_nearest_code_matches_cdist_and_encodec(n, k, d, chunk_rows, fused):
    gen = torch.Generator().manual_seed(k)
    x, codebook = torch.randn(n, d, generator=gen), torch.randn(k, d, generator=gen)
    codes = nearest_code(x, codebook, chunk_rows=chunk_rows, fused=fused)
    assert codes.dtype == torch.int64 and codes.shape == (n,)
    assert_same_nearest(codes, torch.cdist(x, codebook).argmin(1), x, codebook)
    reference = EuclideanCodebook(d, k)
    reference.embed.copy_(codebook)
    assert_same_nearest(codes, reference.quantize(x), x, codebook)
    sqnorm = codebook.pow(2).sum(1)
    assert torch.equal(
        nearest_code(x, codebook, codebook_sqnorm=sqnorm, chunk_rows=chunk_rows, fused=fused), codes
    )


@pytest.mark.parametrize("fused", [None, False])
def test_nearest_code_ties_go_to_lowest_index(fused):
    # Small integers make every distance exact: entry i and entry i + 128 tie exactly.
    codebook = torch.randint(-3, 4, (128, 4)).float().repeat(2, 1)
    x = codebook[torch.randint(0, 256, (500,))]
    assert (nearest_code(x, codebook, fused=fused) < 128).all()


# scales from tiny to large, where rounding decides close calls; K = 1024 two-level, 100 plain
@pytest.mark.parametrize(
    ("n", "k", "d", "chunk_rows"), [(4000, 1024, 128, None), (999, 100, 8, 64)]
)
def test_encodec_nearest_code_is_the_package_quantize_exactly(n, k, d, chunk_rows):
    gen = torch.Generator().manual_seed(d)
    reference = EuclideanCodebook(d, k)
    reference.embed.copy_(torch.randn(k, d, generator=gen))
    reference.embed[k // 2] = reference.embed[3]  # an exact tie: the first index, as max gives
    for scale in (1e-3, 1.0, 30.0):
        x = torch.randn(n, d, generator=gen) * scale
        x[:5] = reference.embed[3]
        codes = encodec_nearest_code(x, reference.embed, chunk_rows=chunk_rows)
        assert torch.equal(codes, reference.quantize(x)), scale
    fast = PackageExactCodebook(d, k)
    fast.load_state_dict(reference.state_dict())
    assert torch.equal(fast.quantize(x), reference.quantize(x))


def test_nearest_code_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="codebook"):
        nearest_code(torch.randn(5, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="dtype"):
        nearest_code(torch.randn(5, 3), torch.randn(4, 3, dtype=torch.float64))


def _distortion(x, means):
    return (x - means[nearest_code(x, means)]).pow(2).sum(1).mean()


def test_kmeans_lowers_distortion_and_handles_empty_clusters():
    gen = torch.Generator().manual_seed(0)
    x = torch.cat(
        [
            torch.randn(400, 8, generator=gen) + 6 * torch.randn(1, 8, generator=gen)
            for _ in range(5)
        ]
    )
    torch.manual_seed(1)
    initial = sample_vectors(x, 20)
    torch.manual_seed(1)  # kmeans draws the same initial centres through the global RNG
    means, bins = kmeans(x, 20, num_iters=10)
    assert _distortion(x, means) < 0.9 * _distortion(x, initial)
    assert bins.sum() == len(x) and bins.dtype == torch.int64
    # 3 distinct points, 8 clusters: centres are drawn with repetition, so clusters go empty.
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]).repeat(10, 1)
    torch.manual_seed(2)
    initial = sample_vectors(points, 8)
    torch.manual_seed(2)
    means, bins = kmeans(points, 8, num_iters=3)
    assert torch.isfinite(means).all() and (bins == 0).any()
    assert torch.equal(means[bins == 0], initial[bins == 0])


def _buffers(module):
    return {name: b.clone() for name, b in module.named_buffers()}


def test_training_updates_buffers_and_eval_does_not():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, kmeans_iters=3)
    z = torch.randn(2, 100, 16)
    vq.eval()
    before = _buffers(vq)
    vq(z)  # eval on an uninitialised codebook must not run k-means either
    assert all(torch.equal(before[n], b) for n, b in vq.named_buffers())
    vq.train()
    vq(z)
    assert vq.codebook.inited.item() == 1.0
    initialised = _buffers(vq)
    vq(z + 0.1)
    for name in ("embed", "embed_avg", "cluster_size"):
        assert not torch.equal(initialised[f"codebook.{name}"], getattr(vq.codebook, name)), name
    vq.eval()
    before = _buffers(vq)
    _, codes, _ = vq(z)
    assert torch.equal(codes, vq.encode(z))
    assert all(torch.equal(before[n], b) for n, b in vq.named_buffers())


def test_kmeans_init_keeps_the_scale_of_the_data():
    # EnCodec sets embed_avg = embed at init, so its first EMA step shrinks the codebook.
    torch.manual_seed(0)
    z = 3 * torch.randn(1, 4096, 16)
    vq = VectorQuantizer(16, 64, threshold_ema_dead_code=0.0)
    vq(z)
    ratio = vq.codebook.embed.norm(dim=1).mean() / z.norm(dim=-1).mean()
    assert 0.5 < ratio < 1.5


def test_kmeans_runs_on_a_subset_and_counts_per_batch():
    torch.manual_seed(0)
    codebook = Codebook(4, 16, kmeans_init=True, kmeans_iters=2, kmeans_max_samples=100)
    codebook.init_embed_(torch.randn(1000, 4))
    assert math.isclose(codebook.cluster_size.sum().item(), 1000.0, rel_tol=1e-5)


@pytest.mark.parametrize("codebook_dim", [None, 8])
def test_straight_through_gradient_reaches_the_input(codebook_dim):
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, codebook_dim=codebook_dim)
    z = torch.randn(2, 50, 16, requires_grad=True)
    quantized, codes, loss = vq(z)
    assert quantized.shape == z.shape and codes.shape == (2, 50) and loss.dim() == 0
    assert codes.dtype == torch.int64 and codes.min() >= 0 and codes.max() < 32
    (quantized * torch.randn_like(quantized)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    z.grad = None
    vq(z)[2].backward()  # the commitment loss pulls the input towards its code
    assert z.grad.abs().sum() > 0


def _dead_code_case(codebook):
    torch.manual_seed(0)
    x = torch.randn(512, 4)
    codebook.train()
    for _ in range(5):
        codebook(x)
    # Move code 7 far from the data, its EMA state consistent with the new place: dead.
    codebook.embed[7] = 100.0
    codebook.cluster_size[7] = 2.5
    codebook.embed_avg[7] = 100.0 * 2.5
    for _ in range(100):
        _, codes = codebook(x)
    return codes


def test_dead_codes_are_restarted():
    codebook = Codebook(4, 8, kmeans_init=True, threshold_ema_dead_code=2.0)
    codes = _dead_code_case(codebook)
    assert codebook.embed[7].abs().max() < 10.0
    assert (codes == 7).sum() > 0


def test_encodec_restart_is_undone_by_its_own_ema():
    # Why Codebook overrides replace_: in EnCodec the dead code stays where it is.
    codebook = EuclideanCodebook(4, 8, kmeans_init=True, threshold_ema_dead_code=2)
    codes = _dead_code_case(codebook)
    assert codebook.embed[7].abs().min() > 50.0 and (codes == 7).sum() == 0


def test_autocast_bfloat16():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, codebook_dim=8)
    z = torch.randn(2, 64, 16)
    vq(z)  # k-means init in float32
    vq.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        quantized, codes, loss = vq(z.bfloat16())
    assert quantized.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert torch.equal(codes, vq.encode(z.bfloat16().float()))
    vq.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        vq(z.bfloat16())
    assert all(b.dtype == torch.float32 for n, b in vq.codebook.named_buffers() if n != "inited")


def test_state_dict_round_trip_gives_identical_codes():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 32, codebook_dim=8)
    z = torch.randn(2, 64, 16)
    vq(z)
    vq(z)
    clone = VectorQuantizer(16, 32, codebook_dim=8)
    clone.load_state_dict(vq.state_dict())
    assert torch.equal(clone.encode(z), vq.encode(z))
    assert torch.equal(clone.decode(vq.encode(z)), vq.decode(vq.encode(z)))


def test_codebook_usage_on_known_histograms():
    usage = codebook_usage(torch.tensor([0, 0, 1, 1]), 4)
    assert math.isclose(usage["perplexity"], 2.0) and usage["used_fraction"] == 0.5
    usage = codebook_usage(torch.arange(8).repeat(3, 1), 8)
    assert math.isclose(usage["perplexity"], 8.0) and usage["used_fraction"] == 1.0
    assert codebook_usage(torch.zeros(10, dtype=torch.long), 5)["perplexity"] == 1.0
    with pytest.raises(ValueError, match="codes"):
        codebook_usage(torch.tensor([5]), 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 0},
        {"codebook_size": 0},
        {"codebook_dim": 0},
        {"decay": 1.0},
        {"kmeans_iters": 0},
        {"threshold_ema_dead_code": -1.0},
        {"commitment_weight": -0.1},
        {"epsilon": 0.0},
    ],
)
def test_invalid_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        VectorQuantizer(**{"dim": 4, "codebook_size": 8, **kwargs})


def test_invalid_inputs_raise_value_error():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="shape"):
        vq(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="codes"):
        vq.decode(torch.tensor([[8]]))
