"""Vector quantizer: a k-means-initialised, EMA-updated codebook with dead-code restart.

The idea is VQ-VAE's (van den Oord et al., 2017, "Neural Discrete Representation Learning"):
replace each latent vector by its nearest codebook entry, pass gradients straight through, and
pull the encoder towards the codes with a commitment loss. The codebook is not trained by
gradient but by exponential moving averages of the vectors assigned to each code (Razavi et al.,
2019, VQ-VAE-2), initialised by k-means on the first batch and with codes that fall out of use
restarted on batch vectors (Zeghidour et al., 2021, SoundStream).

We reuse the codebook of EnCodec (Défossez et al., 2022, "High Fidelity Neural Audio
Compression"; ``encodec.quantization.core_vq.EuclideanCodebook``) for its EMA update with Laplace
smoothing, code expiry, buffers and distributed broadcasts, and replace three methods:

- ``quantize``: EnCodec builds three (N, K) temporaries for ``-(|x|^2 - 2 x E^T + |E|^2)`` and
  takes ``max``. ``nearest_code`` computes ``argmin(|E|^2 - 2 x E^T)`` (|x|^2 is constant per row
  and cannot change the argmin): on the CPU with the fused kernel of ``fused.py`` (scores in
  registers, never in memory), elsewhere with one ``addmm`` per chunk of rows into a reused block
  small enough to stay in cache, then an argmin over it. Same indices, up to float rounding at
  near-ties.
- ``init_embed_``: EnCodec's k-means materialises an (N, K, D) tensor (gigabytes for N = 8192,
  K = 1024, D = 64). Ours runs Lloyd's algorithm with the chunked assignment on at most
  ``kmeans_max_samples`` vectors. It also sets ``embed_avg = embed * cluster_size`` where EnCodec
  sets ``embed_avg = embed``: with EnCodec's choice the first EMA step divides the centres by their
  cluster sizes (a codebook of norm ~10 drops to ~0.2), which undoes the k-means initialisation.
- ``replace_``: EnCodec writes the restarted codes into ``embed`` only, and the EMA step that
  follows in the same ``forward`` overwrites ``embed`` with ``embed_avg / cluster_size``, so a dead
  code is put straight back. Ours also resets ``embed_avg`` and ``cluster_size`` of restarted codes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from encodec import distrib
from encodec.quantization.core_vq import EuclideanCodebook, sample_vectors
from torch import Tensor, nn

from tokenize_mm.tokenizers.quant import fused as fused_kernel

# Rows per chunk: the (rows, K) float32 score block is about 4 MiB (the two cores' L2), but never
# fewer than 512 rows (the matmul loses efficiency below that) nor more than 4096 rows.
# Chosen by measurement: see benchmarks/vq_assign.py and its chunk sweep.
_BLOCK_ELEMS = 1 << 20
_MIN_ROWS, _MAX_ROWS = 512, 4096
# torch's CPU argmin is a scalar loop (~2 G elements/s on 2 cores) while amin is vectorised
# (~20 G elements/s): find the group of 64 codes holding the minimum with amin, then argmin
# inside that group only. Both steps keep the first minimal index, as torch.argmin does.
_GROUP = 64


def default_chunk_rows(codebook_size: int) -> int:
    """Rows per chunk used by ``nearest_code`` when ``chunk_rows`` is None."""
    return min(max(_BLOCK_ELEMS // max(codebook_size, 1), _MIN_ROWS), _MAX_ROWS)


@torch.no_grad()
def nearest_code(
    x: Tensor,
    codebook: Tensor,
    codebook_sqnorm: Tensor | None = None,
    chunk_rows: int | None = None,
    fused: bool | None = None,
) -> Tensor:
    """Index of the nearest codebook entry (Euclidean) of every row of ``x``.

    Runs in the dtype of its inputs: call it outside autocast (``VectorQuantizer`` does). On the
    CPU in float32 it runs the fused kernel (``fused.py``: no (N, K) scores in memory, codes
    bitwise the same on every CPU and thread count) on ``torch.get_num_threads()`` threads;
    elsewhere, or without the kernel, a matmul per block of rows and an argmin.

    Args:
        x: vectors, float tensor of shape (N, D).
        codebook: entries, tensor of shape (K, D) with the dtype and device of ``x``.
        codebook_sqnorm: squared norms of the entries, shape (K,); computed when None.
        chunk_rows: rows scored per block of shape (chunk_rows, K) by the matmul path; None
            picks ``default_chunk_rows(K)``.
        fused: True requires the fused kernel (``kernels.KernelError`` where it cannot run), False
            takes the matmul path; None: the fused kernel where it applies and is available.

    Returns:
        int64 tensor of shape (N,) with values in [0, K); ties go to the lowest index.
    """
    if x.dim() != 2 or codebook.dim() != 2 or x.shape[1] != codebook.shape[1]:
        raise ValueError(
            f"nearest_code: expected x (N, D) and codebook (K, D), got {tuple(x.shape)} and "
            f"{tuple(codebook.shape)}"
        )
    if x.dtype != codebook.dtype or x.device != codebook.device:
        raise ValueError(
            f"nearest_code: x ({x.dtype}, {x.device}) and codebook ({codebook.dtype}, "
            f"{codebook.device}) must share dtype and device; cast one of them"
        )
    if chunk_rows is not None and chunk_rows < 1:
        raise ValueError(f"nearest_code: chunk_rows must be >= 1, got {chunk_rows}")
    n, k = x.shape[0], codebook.shape[0]
    if codebook_sqnorm is None:
        codebook_sqnorm = codebook.pow(2).sum(dim=1)
    applies = x.device.type == "cpu" and x.dtype == torch.float32 and 0 < k < fused_kernel.MAX_CODES
    if fused or (fused is None and applies and fused_kernel.available()):
        return fused_kernel.fused_nearest_code(
            x, codebook, codebook_sqnorm, threads=torch.get_num_threads()
        )
    rows = min(chunk_rows or default_chunk_rows(k), n)
    codes = torch.empty(n, dtype=torch.long, device=x.device)
    if n == 0:
        return codes
    # A transposed view, not a copy: BLAS reads it as is (a contiguous copy measured slower).
    codebook_t = codebook.t()
    block = x.new_empty(rows, k)  # reused for every chunk, so it stays cache-resident
    row_ids = torch.arange(rows, device=x.device)
    for start in range(0, n, rows):
        chunk = x[start : start + rows]
        m = chunk.shape[0]
        scores = block[:m]
        # scores = |E|^2 - 2 x E^T, shape (m, K), in one BLAS call.
        torch.addmm(codebook_sqnorm, chunk, codebook_t, beta=1, alpha=-2, out=scores)
        _first_argmin(scores, codes[start : start + m], row_ids[:m])
    return codes


def _first_argmin(scores: Tensor, out: Tensor, row_ids: Tensor) -> None:
    """``torch.argmin(scores, dim=1, out=out)`` for scores (m, K): the first minimal index of
    each row, on the CPU through the group minima (``_GROUP``) when K allows."""
    m, k = scores.shape
    if scores.device.type == "cpu" and k % _GROUP == 0 and k > _GROUP:
        groups = scores.view(m, k // _GROUP, _GROUP)
        best_group = groups.amin(dim=2).argmin(dim=1)  # (m,)
        within = groups[row_ids, best_group].argmin(dim=1)  # (m, _GROUP) -> (m,)
        torch.add(within, best_group, alpha=_GROUP, out=out)
    else:
        torch.argmin(scores, dim=1, out=out)


@torch.no_grad()
def encodec_nearest_code(x: Tensor, codebook: Tensor, chunk_rows: int | None = None) -> Tensor:
    """EnCodec's ``EuclideanCodebook.quantize`` with the same floats, in cache-sized blocks.

    EnCodec scores ``-(|x|^2 - (2x) E^T + |E|^2)`` over all N rows at once and takes the first
    maximum (five (N, K) passes, the last a scalar loop). Here each block of rows gets
    ``|x|^2 - 2 (x E^T)`` (``(2x) E^T`` is ``2 (x E^T)`` exactly: scaling by 2 is exact) plus
    ``|E|^2`` in that order, and the first minimum of that, the same index. The pretrained codecs
    use it in their folded copies (``audio/batch.py``), where the codes must stay the package's.

    Args:
        x: vectors (N, D); codebook: (K, D), the same dtype and device.
        chunk_rows: rows per block; None picks ``default_chunk_rows(K)``.

    Returns:
        int64 (N,): EnCodec's indices.
    """
    n, k = x.shape[0], codebook.shape[0]
    embed = codebook.t()
    x_sq = x.pow(2).sum(1, keepdim=True)  # (N, 1), as EnCodec computes it
    e_sq = embed.pow(2).sum(0, keepdim=True)  # (1, K)
    rows = min(chunk_rows or default_chunk_rows(k), max(n, 1))
    codes = torch.empty(n, dtype=torch.long, device=x.device)
    block = x.new_empty(rows, k)
    row_ids = torch.arange(rows, device=x.device)
    for start in range(0, n, rows):
        chunk = x[start : start + rows]
        m = chunk.shape[0]
        scores = block[:m]
        torch.mm(chunk, embed, out=scores)
        torch.sub(x_sq[start : start + m], scores, alpha=2, out=scores)
        scores.add_(e_sq)
        _first_argmin(scores, codes[start : start + m], row_ids[:m])
    return codes


@torch.no_grad()
def kmeans(samples: Tensor, num_clusters: int, num_iters: int = 10) -> tuple[Tensor, Tensor]:
    """Lloyd's k-means in O(N·D + chunk·K) memory; EnCodec's semantics otherwise.

    Initial centres are drawn from ``samples`` through the global torch RNG (EnCodec's
    ``sample_vectors``); a cluster left empty keeps its previous centre.

    Args:
        samples: float tensor of shape (N, D).
        num_clusters: K.
        num_iters: Lloyd iterations, >= 1.

    Returns:
        means of shape (K, D) and bins of shape (K,): the int64 cluster sizes of the last
        assignment (made against the centres before the last update, as in EnCodec).
    """
    if samples.dim() != 2 or samples.shape[0] == 0:
        raise ValueError(
            f"kmeans: expected samples of shape (N, D), N >= 1, got {tuple(samples.shape)}"
        )
    if num_clusters < 1 or num_iters < 1:
        raise ValueError(
            f"kmeans: num_clusters and num_iters must be >= 1, got {num_clusters}, {num_iters}"
        )
    means = sample_vectors(samples, num_clusters)
    bins = torch.zeros(num_clusters, dtype=torch.long, device=samples.device)
    for _ in range(num_iters):
        buckets = nearest_code(samples, means)
        bins = torch.bincount(buckets, minlength=num_clusters)
        sums = samples.new_zeros(num_clusters, samples.shape[1]).index_add_(0, buckets, samples)
        new_means = sums / bins.clamp(min=1).unsqueeze(1).to(samples.dtype)
        means = torch.where((bins == 0).unsqueeze(1), means, new_means)
    return means, bins


class Codebook(EuclideanCodebook):
    """EnCodec's EMA codebook with a fast assignment, lean k-means and working restarts.

    Args are EnCodec's (``dim``, ``codebook_size``, ``kmeans_init``, ``kmeans_iters``, ``decay``,
    ``epsilon``, ``threshold_ema_dead_code``) plus ``kmeans_max_samples``: k-means runs on a
    random subset of at most that many vectors of the first batch.
    """

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        decay: float = 0.99,
        epsilon: float = 1e-5,
        threshold_ema_dead_code: float = 2.0,
        kmeans_max_samples: int = 16384,
    ):
        for name, value in [("dim", dim), ("codebook_size", codebook_size)]:
            if value < 1:
                raise ValueError(f"Codebook: {name} must be >= 1, got {value}")
        if kmeans_iters < 1 or kmeans_max_samples < 1:
            raise ValueError(
                f"Codebook: kmeans_iters and kmeans_max_samples must be >= 1, got "
                f"{kmeans_iters} and {kmeans_max_samples}"
            )
        if not 0.0 < decay < 1.0:
            raise ValueError(f"Codebook: decay must be in (0, 1), got {decay}")
        if epsilon <= 0.0 or threshold_ema_dead_code < 0.0:
            raise ValueError(
                f"Codebook: epsilon must be > 0 and threshold_ema_dead_code >= 0, got {epsilon} "
                f"and {threshold_ema_dead_code}"
            )
        super().__init__(
            dim, codebook_size, kmeans_init, kmeans_iters, decay, epsilon, threshold_ema_dead_code
        )
        self.kmeans_max_samples = kmeans_max_samples

    def quantize(self, x: Tensor) -> Tensor:
        """Codes (N,) of vectors x (N, D)."""
        return nearest_code(x, self.embed)

    @torch.jit.ignore
    def init_embed_(self, data: Tensor) -> None:
        """k-means on (a subset of) the first batch data (N, D); a no-op once initialised."""
        if self.inited:
            return
        n = data.shape[0]
        if n > self.kmeans_max_samples:
            data = sample_vectors(data, self.kmeans_max_samples)  # a subset, without replacement
        embed, bins = kmeans(data, self.codebook_size, self.kmeans_iters)
        # cluster_size counts vectors per batch: scale the subset's counts back to the batch.
        cluster_size = bins.to(embed.dtype) * (n / data.shape[0])
        self.embed.data.copy_(embed)
        self.embed_avg.data.copy_(embed * cluster_size.unsqueeze(1))
        self.cluster_size.data.copy_(cluster_size)
        self.inited.data.copy_(torch.Tensor([True]))
        distrib.broadcast_tensors(self.buffers())

    def replace_(self, samples: Tensor, mask: Tensor) -> None:
        """Move the codes in mask (K,) to random vectors of samples (N, D), EMA state included."""
        super().replace_(samples, mask)
        # The codes were assigned before expiry, so this step's EMA sees none for them: start
        # them one decay step above the threshold (plus a hair against float rounding) so they
        # get the next batch to win vectors before they can be judged dead again.
        restart_size = self.threshold_ema_dead_code / self.decay * (1.0 + 1e-3)
        self.cluster_size.data[mask] = restart_size
        self.embed_avg.data[mask] = self.embed[mask] * restart_size


class VectorQuantizer(nn.Module):
    """Channel-last vector quantizer with straight-through gradients; float32 inside.

    Args:
        dim: channels of the input (B, N, dim).
        codebook_size: number of codes K.
        codebook_dim: dimension of the codes; when it differs from dim, linear projections map
            dim -> codebook_dim -> dim around the codebook.
        decay: EMA decay of the codebook statistics, in (0, 1).
        kmeans_init: initialise the codebook by k-means on the first training batch.
        kmeans_iters: Lloyd iterations of that k-means.
        threshold_ema_dead_code: codes whose EMA cluster size falls below it are restarted on
            batch vectors; 0 disables restarts.
        commitment_weight: weight of the commitment loss |z - sg(q)|^2.
        epsilon: Laplace smoothing of the cluster sizes.

    A ``Quantizer`` (``quant/base.py``) with one codebook: codes have shape (B, N).
    """

    num_codebooks: int = 1

    def __init__(
        self,
        dim: int,
        codebook_size: int,
        codebook_dim: int | None = None,
        decay: float = 0.99,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        threshold_ema_dead_code: float = 2.0,
        commitment_weight: float = 0.25,
        epsilon: float = 1e-5,
    ):
        super().__init__()
        if dim < 1 or (codebook_dim is not None and codebook_dim < 1):
            raise ValueError(
                f"VectorQuantizer: dim and codebook_dim must be >= 1, got {dim}, {codebook_dim}"
            )
        if commitment_weight < 0.0:
            raise ValueError(
                f"VectorQuantizer: commitment_weight must be >= 0, got {commitment_weight}"
            )
        code_dim = dim if codebook_dim is None else codebook_dim
        self.dim, self.codebook_size, self.commitment_weight = dim, codebook_size, commitment_weight
        self.project_in = nn.Linear(dim, code_dim) if code_dim != dim else nn.Identity()
        self.project_out = nn.Linear(code_dim, dim) if code_dim != dim else nn.Identity()
        self.codebook = Codebook(
            code_dim,
            codebook_size,
            kmeans_init=kmeans_init,
            kmeans_iters=kmeans_iters,
            decay=decay,
            epsilon=epsilon,
            threshold_ema_dead_code=threshold_ema_dead_code,
        )

    def _check(self, z: Tensor) -> None:
        if z.dim() != 3 or z.shape[-1] != self.dim or not z.is_floating_point():
            raise ValueError(
                f"VectorQuantizer: expected a float tensor of shape (B, N, {self.dim}), got "
                f"{z.dtype} {tuple(z.shape)}"
            )

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize z (B, N, dim).

        Returns:
            quantized (B, N, dim) in z's dtype with gradients passed straight through to z, codes
            (B, N) int64, and the weighted commitment loss (a float32 scalar). In training mode
            the codebook is initialised (first call) and updated; in eval mode no buffer changes.
        """
        self._check(z)
        # The EMA buffers are float32: keep the whole quantizer out of autocast.
        with torch.autocast(z.device.type, enabled=False):
            x = self.project_in(z.float())  # (B, N, code_dim)
            if self.training:
                quantized, codes = self.codebook(x.detach())
            else:
                codes = self.codebook.encode(x)
                quantized = self.codebook.decode(codes)
            commit_loss = F.mse_loss(x, quantized) * self.commitment_weight
            quantized = x + (quantized - x).detach()  # straight-through estimator
            out = self.project_out(quantized)
        return out.to(z.dtype), codes, commit_loss

    def encode(self, z: Tensor) -> Tensor:
        """Codes (B, N) int64 of z (B, N, dim); never changes the codebook."""
        self._check(z)
        with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
            return self.codebook.encode(self.project_in(z.float()))

    def decode(self, codes: Tensor) -> Tensor:
        """Float32 vectors (B, N, dim) of codes (B, N)."""
        if codes.dim() != 2 or codes.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"VectorQuantizer: expected int64 codes (B, N), got {codes.dtype} {tuple(codes.shape)}"
            )
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.codebook_size):
            raise ValueError(f"VectorQuantizer: codes must lie in [0, {self.codebook_size})")
        with torch.autocast(codes.device.type, enabled=False):
            return self.project_out(self.codebook.decode(codes))


class PackageExactCodebook(EuclideanCodebook):
    """EnCodec's own codebook with ``encodec_nearest_code`` as its ``quantize``: the package's
    indices, faster. ``audio/batch.py`` gives this class to the ``EuclideanCodebook`` modules of a
    folded inference copy (the pretrained codecs); everything else is the package's."""

    def quantize(self, x: Tensor) -> Tensor:
        """Codes (N,) of vectors x (N, D), as ``EuclideanCodebook.quantize`` gives them."""
        return encodec_nearest_code(x, self.embed)
