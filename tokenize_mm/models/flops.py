"""Model FLOPs per trained position, for throughput and model-FLOPs utilisation (MFU).

Chowdhery et al. 2022, "PaLM", appendix B: a decoder's forward and backward pass costs
6·N + 12·l·d·T FLOPs per token, N the parameters of its matrix products a token goes through
(the blocks' projections and the output head; the embedding lookups are not products), l layers,
d the width and T the row length (attention's QKᵀ and AV). MFU is the rate of those FLOPs over the
hardware's peak; recomputation, padding and masking count for nothing, so it is the figure to
compare across implementations.

``BalancedLM`` runs up to three passes over a batch: the language model's (forward and backward,
output head included), the contrastive objective's isolated pass (forward and backward, no head)
and, with momentum keys, the EMA model's (forward only, 1/3 of forward and backward).
"""

from __future__ import annotations

import time

import torch

from tokenize_mm.models.transformer import DecoderConfig


def block_parameters(config: DecoderConfig) -> int:
    """Weights of one block's matrix products: QKV (d x 3d), the attention output (d x d) and
    the SwiGLU MLP (d x 2 d_ff in, d_ff x d out)."""
    d, f = config.d_model, config.d_ff
    return 4 * d * d + 3 * d * f


def layers_per_position(config: DecoderConfig) -> int:
    """Blocks a position passes through: the shared stack, plus its own modality's tower under
    late fusion (each position runs through one tower of the ``num_modalities``)."""
    return config.n_layers + (config.late_layers if config.fusion == "late" else 0)


def flops_per_position(
    config: DecoderConfig,
    vocab_size: int,
    row_length: int,
    *,
    contrastive: bool = False,
    momentum: bool = False,
) -> float:
    """Model FLOPs of one trained position (a batch of B rows of T trains B·T of them).

    Args:
        config: the decoder's architecture.
        vocab_size: V (the output head is d x V).
        row_length: T, the packed row length (attention's cost per position grows with it).
        contrastive: add the isolated pass (forward and backward, no output head).
        momentum: add the momentum encoder's forward pass (with ``contrastive``).
    """
    layers = layers_per_position(config)
    trunk = layers * block_parameters(config)
    attention = 12 * layers * config.d_model * row_length
    flops = 6 * (trunk + config.d_model * vocab_size) + attention
    if contrastive:
        flops += 6 * trunk + attention
        if momentum:
            flops += (6 * trunk + attention) / 3
    return float(flops)


def matmul_tflops(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int | None = None,
                  seconds: float = 0.3) -> float:  # fmt: skip
    """The device's measured rate of a square matrix product (TFLOP/s): the peak MFU is taken
    against where no vendor figure applies (a CPU), in the threads the caller runs with.

    ``size`` defaults to 1024 on a CPU and 8192 on a GPU; one warm-up product, then as many as
    fit in ``seconds`` (at least 3), synchronised on a GPU.
    """
    dev = torch.device(device)
    n = size or (8192 if dev.type == "cuda" else 1024)
    gen = torch.Generator(device=dev).manual_seed(0)  # the training's random stream untouched
    a = torch.randn(n, n, device=dev, generator=gen).to(dtype)
    b = torch.randn(n, n, device=dev, generator=gen).to(dtype)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    torch.mm(a, b)
    sync()
    reps, start = 0, time.perf_counter()
    while reps < 3 or time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
        if reps % 8 == 0:
            sync()
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12
