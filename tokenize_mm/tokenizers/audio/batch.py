"""Batched, exact inference for SEANet codecs (the 50 Hz codec and pretrained EnCodec).

Many clips of different lengths are encoded in few forward passes, with the codes each clip gets
when it is encoded alone:

* Weight normalisation (Salimans & Kingma, 2016) is folded into plain weights once
  (``folded_copy``); the ``encodec`` modules recompute w = g · v / ||v|| at every forward. The copy's
  padded convolutions pad by slicing (``padding.py``), its ELUs run in place where their input is
  fresh, and the package's codebooks score in cache-sized blocks (``quant/vector.py``,
  ``encodec_nearest_code``): the same numbers and codes, less time.
* On the CPU its ELUs run through the native kernel (``elu.py``), at the cost of a copy where
  torch's expm1 cost six; values within an ulp of torch's, so a latent on a quantizer boundary
  can take the other code (``benchmarks/audio_encode.py`` counts them against the package).
* On the CPU the convolutions before the LSTM run on (1, C, 1, L) channels-last tensors
  (``padding.py``): oneDNN's faster layout, whose sums run in another order than the package's
  (``benchmarks/audio_encode.py`` counts the codes that differ from the package's). One-by-one
  ``encode`` runs the same path, so ``encode_batch`` still equals it.
* Every piece is zero-padded to whole frames before it reaches the encoder, also when it is
  encoded alone, so that no convolution pads its right edge by reflection. With causal
  convolutions frame t then depends only on samples before (t + 1) · hop, and padding a piece
  further with zeros to the length of a batch leaves its frames unchanged, once it is long enough
  that no layer pads it specially (``min_mixed_length``). Shorter pieces, and pieces of a
  non-causal encoder, are batched only with pieces of the same length.
* The convolutions before the LSTM run piece by piece on the CPU (a batch of long pieces leaves the
  cache and was slower; ``benchmarks/audio_encode.py``) and as padded batches on a GPU. The LSTM,
  the last convolution and the quantizer always run on the padded batch, where the LSTM's
  matrix-vector products become matrix products.
* On the CPU the caller runs every op on one torch thread (``tokenizers/threads.py``: codes that do
  not depend on the thread count), and ``workers`` Python threads encode whole groups instead,
  each from the waveform to the codes (convolutions, LSTM, quantizer): every piece is computed by
  one thread, so the codes are the same for any number of workers (and the LSTM's and the
  quantizer's rows do not depend on the batch they share, tested). Work split by group keeps both
  cores busy through the LSTM (which ran on one thread while the other waited, when only the
  convolutions were split) and has no barrier between threads, so it also slows gracefully on a
  busy machine, where torch's intra-op threads wait on each other.

A model used here has ``encoder`` (an ``encodec.modules.SEANetEncoder``), ``hop_length``,
``compand(wav) -> wav`` (what the encoder reads; elementwise, zero to zero, so padding commutes
with it) and ``quantize(latent (B, D, T)) -> codes (B, K, T)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from encodec.modules.conv import SConv1d
from encodec.modules.lstm import SLSTM
from encodec.quantization.core_vq import EuclideanCodebook
from torch import nn

from tokenize_mm.tokenizers.audio.elu import swap_elus
from tokenize_mm.tokenizers.audio.padding import FastPadConv1d, swap_padded_convs, to_channels_last
from tokenize_mm.tokenizers.quant.vector import PackageExactCodebook


def folded_copy(model: nn.Module, build: Callable[[], nn.Module]) -> nn.Module:
    """A copy of ``model`` (``build()`` makes an empty one) with weight normalisation folded into
    plain weights, in eval mode, without gradients, on ``model``'s device. ``model`` is unchanged
    (its state dict keeps ``weight_g`` / ``weight_v``, as artifacts store them)."""
    copy = build()
    copy.load_state_dict(model.state_dict())
    for module in copy.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)
    swap_padded_convs(copy)  # the same numbers, reflection padding by slicing
    _elu_in_place(copy)
    swap_elus(copy)  # the native ELU on the CPU (elu.py)
    for module in copy.modules():  # the package's codebooks (pretrained codecs): same indices
        if type(module) is EuclideanCodebook:
            module.__class__ = PackageExactCodebook
    device = next(model.parameters()).device
    return copy.to(device).eval().requires_grad_(False)


def _elu_in_place(model: nn.Module) -> None:
    """ELU in place wherever its input is the fresh output of the module before it in a
    ``Sequential`` (not the first module, whose input the caller may still hold: SEANet's residual
    blocks also feed it to their shortcut). The same values; a large activation less to allocate
    (a fresh tensor of megabytes costs its page faults on every allocation)."""
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for before, layer in itertools.pairwise(seq):
                if isinstance(layer, nn.ELU) and not isinstance(before, nn.Identity):
                    layer.inplace = True


def split_encoder(encoder: nn.Module) -> tuple[nn.Module, nn.Module]:
    """A SEANet encoder → (the convolutions before its LSTM, the LSTM and what follows)."""
    layers = list(encoder.model)
    cut = next((i for i, layer in enumerate(layers) if isinstance(layer, SLSTM)), len(layers))
    return nn.Sequential(*layers[:cut]), nn.Sequential(*layers[cut:])


def min_mixed_length(encoder: nn.Module) -> int:
    """The shortest piece (samples) that may share a padded batch with longer ones.

    SEANet's ``pad1d`` treats an input no longer than its padding specially (it appends zeros
    before reflecting), so a piece that short at some layer is padded differently alone and in a
    batch: every convolution's input must be longer than its padding, at that layer's stride."""
    need, stride = 1, 1
    for module in encoder.modules():
        if isinstance(module, (SConv1d, FastPadConv1d)):  # a folded copy has the latter
            conv = module.conv.conv
            k, s, d = conv.kernel_size[0], conv.stride[0], conv.dilation[0]
            need = max(need, ((k - 1) * d - (s - 1) + 1) * stride)
            stride *= s
    return need


# Pieces a group has room for at least, when workers share the groups (_groups).
MIN_MEMBERS = 4


def _groups(
    lengths: Sequence[int],
    *,
    causal: bool,
    batch_samples: int,
    min_mixed: int = 1,
    workers: int = 1,
) -> list[list[int]]:
    """Indices grouped for batching, longest first: a group's padded size (members × longest)
    stays within its budget (a longer piece is a group of its own). Pieces of different lengths
    share a group only for a causal encoder and when at least ``min_mixed`` samples long;
    otherwise a group holds pieces of one length.

    The budget is ``batch_samples``, and with ``workers`` > 1 (workers taking the groups in order)
    also one worker's share of all the samples (a few clips still make a group per worker) and
    a 1 / (2 · workers) share of the samples not yet grouped, but room for ``MIN_MEMBERS`` pieces
    as long as the group's first (for the LSTM's matrix products, slow on fewer rows): groups
    shrink as the work left does, so the workers finish close together (guided self-scheduling;
    Polychronopoulos and Kuck, 1987). Equal groups left one worker a whole group behind the
    other (up to an eighth of the work, idle on a second core).
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    remaining = sum(lengths)
    share = -(-remaining // workers)  # one worker's share of all the samples
    groups: list[list[int]] = []
    budget = batch_samples
    for i in order:
        if groups:
            group = groups[-1]
            longest = lengths[group[0]]
            fits = (len(group) + 1) * longest <= budget
            mixed = causal and lengths[i] >= min_mixed
            if fits and (mixed or lengths[i] == longest):
                group.append(i)
                remaining -= lengths[i]
                continue
        if workers > 1:
            guided = -(-remaining // (2 * workers))
            budget = min(batch_samples, share, max(guided, MIN_MEMBERS * lengths[i]))
        groups.append([i])
        remaining -= lengths[i]
    return groups


def _pad_stack(xs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Tensors (C, L_i) → (N, C, max L) with zeros on the right."""
    longest = max(x.shape[-1] for x in xs)
    return torch.stack([F.pad(x, (0, longest - x.shape[-1])) for x in xs])


@torch.inference_mode()
def encode_pieces(
    model: nn.Module,
    pieces: Sequence[torch.Tensor],
    *,
    causal: bool,
    batch_samples: int,
    batch_convs: bool,
    workers: int = 1,
) -> list[torch.Tensor]:
    """Encode pieces (C, L_i), each L_i a multiple of ``model.hop_length``, on the model's device.

    Args:
        model: a folded codec (see the module docstring).
        pieces: waveforms at the model's rate and channels, on any device.
        causal: whether the encoder's convolutions are causal (pieces of any length may then share
            a padded batch).
        batch_samples: most samples (members × longest) in one batch.
        batch_convs: run the convolutions before the LSTM on the padded batch (GPU) rather than
            piece by piece (CPU).
        workers: Python threads that encode groups of pieces (``batch_convs`` false); the codes
            do not depend on it.

    Returns:
        Codes (K, L_i / hop) int64 per piece, in the order given, on the CPU.
    """
    hop = model.hop_length
    device = next(model.parameters()).device
    lengths = [int(p.shape[-1]) for p in pieces]
    if any(n % hop for n in lengths):
        raise ValueError(f"piece lengths must be multiples of the hop {hop}, got {lengths}")
    convs, rest = split_encoder(model.encoder)
    out: list[torch.Tensor | None] = [None] * len(pieces)
    min_mixed = min_mixed_length(model.encoder)

    def conv_piece(piece: torch.Tensor) -> torch.Tensor:
        """A piece (C, L) through the convolutions as (1, C, 1, L) channels-last (padding.py)
        → the latent (D, L / hop)."""
        x = to_channels_last(model.compand(piece[None].to(device))[:, :, None])
        return convs(x)[0, :, 0].contiguous()

    @torch.inference_mode()  # inference mode is per thread: the workers enter it too
    def encode_group(group: list[int]) -> torch.Tensor:
        """Codes (N, K, longest / hop) of a group, on the CPU."""
        if batch_convs:  # one copy to the device per group
            latent = convs(model.compand(_pad_stack([pieces[i] for i in group]).to(device)))
        else:
            latent = _pad_stack([conv_piece(pieces[i]) for i in group])
        return model.quantize(rest(latent)).cpu()  # one copy back

    # On the CPU each worker encodes whole groups of its own, from the waveform to the codes:
    # both cores stay busy through the LSTM and the quantizer too (they ran on one thread while
    # the other waited), and nothing waits for another worker until the end.
    # Groups of at most batch_samples / workers samples keep the memory held at once where one
    # group of batch_samples put it, a batch of a few clips still makes a group per worker, and
    # groups shrink towards the end so that the workers finish together (_groups).
    parallel = workers > 1 and not batch_convs
    groups = _groups(
        lengths, causal=causal, batch_samples=batch_samples // workers if parallel else batch_samples,
        min_mixed=min_mixed, workers=workers if parallel else 1,
    )  # fmt: skip
    pool = ThreadPoolExecutor(workers) if parallel and len(groups) > 1 else None
    try:
        results = pool.map(encode_group, groups) if pool else map(encode_group, groups)
        for group, codes in zip(groups, results, strict=True):
            for j, i in enumerate(group):
                out[i] = codes[j, :, : lengths[i] // hop]
    finally:
        if pool is not None:
            pool.shutdown()
    return out  # type: ignore[return-value]
