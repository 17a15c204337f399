"""Band-limited resampling with bounded memory and time for any pair of integer rates.

The filter is torchaudio's default one (``torchaudio.functional.resample``, after J. O. Smith's
bandlimited interpolation, "Digital Audio Resampling Home Page"): output sample j lies at input
time t_j = j · orig / new (in input samples) and is

    y[j] = s · Σ_i x[i] · sinc(π · s · (i − t_j)) · cos²(π · s · (i − t_j) / (2 · W)),

with s = rolloff · min(1, new / orig) (the lowpass cut-off as a fraction of the input's Nyquist
frequency), W = 6 zero crossings (``lowpass_filter_width``), rolloff 0.99, and s · (i − t_j)
clamped to [−W, W] (the weights vanish outside it), so only the 2·width + 1 inputs nearest t_j
count, width = ceil(W / s).

With g = gcd(orig, new), o = orig / g and n = new / g, t_j = ⌊j·o / n⌋ + r / n with the phase
r = j·o mod n: the weights depend on r only. torchaudio tabulates them as one convolution kernel
of n × (o + 2·width) entries, most of them zeros. That is small for the usual rates (44100 →
24000: 80 × 171) but explodes for nearly coprime ones: 24001 → 24000 needs 24000 × 24015 entries,
4.6 GB in float64 while it is built, 44101 → 24000 8.5 GB. ``resample`` uses torchaudio when its
kernel fits ``KERNEL_BUDGET``; otherwise the direct path computes, for ``CHUNK_ELEMENTS`` // taps
outputs at a time, each output's phase and first input in integer arithmetic (nothing drifts,
however long the audio), and sums its 2·width + 1 inputs with weights from a table of the n phases
(n × (2·width + 1) entries: 24000 × 15 for 24001 → 24000), or evaluated per output when even that
table is over the budget. Both paths give the same numbers (equal in float64; in float32
torchaudio rounds each phase to float32 first) and exactly ceil(S · new / orig) samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio.functional as AF

LOWPASS_FILTER_WIDTH = 6  # zero crossings of the sinc on each side (torchaudio's default)
ROLLOFF = 0.99  # cut-off as a fraction of the lower rate's Nyquist frequency (torchaudio's)
# torchaudio's tabulated kernel is used up to this many entries (float32: 16 MiB; it is built in
# float64 with a few temporaries of the same size, so about 150 MiB at most).
KERNEL_BUDGET = 2**22
# The direct path holds about this many (output, tap, channel) elements per chunk (int64 input
# indices, float32 weights and gathered samples: a few tens of MiB). Its phase table, like
# torchaudio's kernel, may have up to KERNEL_BUDGET entries.
CHUNK_ELEMENTS = 2**21


def output_length(num_samples: int, orig_rate: int, new_rate: int) -> int:
    """ceil(S · new / orig), exactly (integer arithmetic)."""
    return -(-num_samples * new_rate // orig_rate)


def _reduced(orig_rate: int, new_rate: int) -> tuple[int, int]:
    g = math.gcd(orig_rate, new_rate)
    return orig_rate // g, new_rate // g


def _cutoff(orig_rate: int, new_rate: int) -> float:
    """s = rolloff · min(1, new / orig): the lowpass cut-off in cycles per input sample × 2."""
    o, n = _reduced(orig_rate, new_rate)
    return ROLLOFF * min(o, n) / o


def filter_width(orig_rate: int, new_rate: int) -> int:
    """Half-length of the filter in input samples: ceil(W / s), as torchaudio computes it."""
    o, n = _reduced(orig_rate, new_rate)
    return math.ceil(LOWPASS_FILTER_WIDTH * o / (min(o, n) * ROLLOFF))


def kernel_elements(orig_rate: int, new_rate: int) -> int:
    """Entries of torchaudio's tabulated kernel: n × (o + 2·width) for gcd-reduced rates o, n."""
    o, n = _reduced(orig_rate, new_rate)
    return n * (o + 2 * filter_width(orig_rate, new_rate))


def sinc_weights(offsets: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Filter weights at ``offsets`` = i − t_j (input samples, float64, any shape).

    s · sinc(π s u) · cos²(π s u / 2W), with s u clamped to [−W, W] as torchaudio does. In place
    where possible: three temporaries of the offsets' size at most.
    """
    t = (offsets * cutoff).clamp_(-LOWPASS_FILTER_WIDTH, LOWPASS_FILTER_WIDTH)
    window = torch.cos(t * (math.pi / LOWPASS_FILTER_WIDTH / 2)).square_()
    t.mul_(math.pi)
    sinc = torch.sin(t).div_(t).masked_fill_(t == 0, 1.0)
    return sinc.mul_(window).mul_(cutoff)


@dataclass(frozen=True)
class _Plan:
    """What every chunk of the direct path shares."""

    o: int  # gcd-reduced input rate
    n: int  # gcd-reduced output rate
    width: int  # taps k = -width .. width around ⌊t_j⌋
    cutoff: float  # s
    table: torch.Tensor | None  # (n, T) weights of every phase, when small enough

    @property
    def taps(self) -> torch.Tensor:
        return torch.arange(-self.width, self.width + 1, dtype=torch.int64)  # (T,)

    def weights(self, phase: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(N,) phases r (t_j = ⌊t_j⌋ + r / n) → (N, T) weights."""
        if self.table is not None:
            return self.table[phase]
        offsets = self.taps.to(torch.float64)[None, :] - (phase.to(torch.float64) / self.n)[:, None]
        return sinc_weights(offsets, self.cutoff).to(dtype)


def _plan(orig_rate: int, new_rate: int, dtype: torch.dtype) -> _Plan:
    o, n = _reduced(orig_rate, new_rate)
    width, cutoff = filter_width(orig_rate, new_rate), _cutoff(orig_rate, new_rate)
    plan = _Plan(o, n, width, cutoff, None)
    if n * (2 * width + 1) <= KERNEL_BUDGET:  # n phases only: tabulate them once
        plan = _Plan(o, n, width, cutoff, plan.weights(torch.arange(n), dtype))
    return plan


def _direct_chunk(wav: torch.Tensor, plan: _Plan, start: int, stop: int) -> torch.Tensor:
    """Outputs ``start`` ≤ j < ``stop`` of the direct path: (C, S) → (C, stop − start)."""
    steps = torch.arange(start, stop, dtype=torch.int64) * plan.o
    base, phase = steps // plan.n, steps % plan.n  # t_j = base + phase / n, exactly
    weights = plan.weights(phase, wav.dtype)  # (N, T)
    lo, hi = int(base[0]) - plan.width, int(base[-1]) + plan.width + 1  # inputs they touch
    size = wav.shape[1]
    segment = wav[:, max(lo, 0) : min(hi, size)]
    segment = torch.nn.functional.pad(segment, (max(0, -lo), max(0, hi - size)))  # zeros outside
    index = (base - lo)[:, None] + plan.taps[None, :]  # (N, T): input base + k, in the segment
    return torch.einsum("cnt,nt->cn", segment[:, index], weights)


def resample_direct(
    wav: torch.Tensor, orig_rate: int, new_rate: int, start: int = 0, stop: int | None = None
) -> torch.Tensor:
    """The direct path: outputs ``start`` ≤ j < ``stop`` (default: all of them) of ``resample``.

    Memory is bounded by ``CHUNK_ELEMENTS`` per chunk, plus a table of every phase's weights
    (n × (2·width + 1), at most ``KERNEL_BUDGET``; without it the weights are evaluated per
    output), plus the output; time is 2·width + 1 multiply-adds per output sample and channel.

    Args:
        wav: float tensor (C, S).
        orig_rate, new_rate: positive integers, in Hz.
        start, stop: the range of output samples to compute; ``stop`` ≤ ceil(S · new / orig).

    Returns:
        Tensor (C, stop − start) of ``wav.dtype``.
    """
    total = output_length(wav.shape[1], orig_rate, new_rate)
    stop = total if stop is None else stop
    if not 0 <= start <= stop <= total:
        raise ValueError(f"need 0 <= start <= stop <= {total}, got {start} and {stop}")
    plan = _plan(orig_rate, new_rate, wav.dtype)
    if stop * plan.o >= 2**62:
        raise ValueError(f"output positions overflow int64 for rates {orig_rate} -> {new_rate}")
    per_chunk = max(1, CHUNK_ELEMENTS // ((2 * plan.width + 1) * max(1, wav.shape[0])))
    out = wav.new_empty(wav.shape[0], stop - start)  # one buffer: no pieces between temporaries
    for a in range(start, stop, per_chunk):
        b = min(a + per_chunk, stop)
        out[:, a - start : b - start] = _direct_chunk(wav, plan, a, b)
    return out


def resample(
    wav: torch.Tensor, orig_rate: int, new_rate: int, *, method: str = "auto"
) -> torch.Tensor:
    """Resample ``wav`` from ``orig_rate`` to ``new_rate`` with torchaudio's default filter.

    Args:
        wav: float tensor (C, S) (float32 in this package).
        orig_rate, new_rate: positive integers, in Hz.
        method: ``"auto"`` (torchaudio's tabulated kernel when it has at most ``KERNEL_BUDGET``
            entries, else the direct path), ``"kernel"`` or ``"direct"`` (to force one; for
            tests and benchmarks).

    Returns:
        Tensor (C, ceil(S · new_rate / orig_rate)) of ``wav.dtype``; ``wav`` itself if the rates
        are equal.
    """
    if orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"rates must be positive, got {orig_rate} and {new_rate}")
    if method not in ("auto", "kernel", "direct"):
        raise ValueError(f"method must be 'auto', 'kernel' or 'direct', got {method!r}")
    if orig_rate == new_rate:
        return wav
    if method == "auto":
        small = kernel_elements(orig_rate, new_rate) <= KERNEL_BUDGET
        method = "kernel" if small else "direct"
    if method == "direct":
        return resample_direct(wav, orig_rate, new_rate)
    total = output_length(wav.shape[1], orig_rate, new_rate)
    out = AF.resample(wav, orig_rate, new_rate)[:, :total]
    if out.shape[1] < total:  # torchaudio rounds the length through float32 past 2**24 samples
        tail = resample_direct(wav, orig_rate, new_rate, out.shape[1], total)
        out = torch.cat([out, tail], dim=1)
    return out
