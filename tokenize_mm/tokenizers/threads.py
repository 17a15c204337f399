"""Encoding on the CPU runs on one torch thread, so codes do not depend on the thread count.

A float32 reduction split over two threads adds its terms in another order than one thread does,
which moves a latent by about 1e-6 of its size; a latent that close to a quantizer boundary (an
FSQ rounding edge, a tie between two VQ codes) then gets another code. Measured on the main job's
codec before its grid was whitened (as issue 17 reported it): 46 of 38,457 codes differed between
1 and 2 threads, and a store built by one process (2 threads) differed from the same store sharded
over worker processes (1 thread each) in 40 of 512 examples, under the same fingerprint. Encoding
in float64 would also remove the effect, but float64 has none of the CPU's fast float32 kernels;
one thread also holds up on a busy machine, where torch's 2 intra-op threads wait on each other
when another process shares the 2 cores (docs/tokenizers.md, the tokenizer-efficiency section).
A large job gets its parallelism from processes instead (a sharded store, ``data/store``), as
PyTorch's own data loaders do.

Only the forward passes that produce codes run under ``one_thread``: decoding, fitting and
training keep the process's thread count. Fits are not bitwise reproducible across thread counts;
their robustness is measured instead (docs/results/codebook_health.md).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

_lock = threading.Lock()
_depth = 0
_saved = 0


@contextmanager
def one_thread(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block with torch's intra-op thread count at 1 on the CPU (on another device:
    unchanged), and restore the count afterwards. Nested and concurrent blocks (Python threads)
    restore it once, when the last one leaves."""
    global _depth, _saved
    if torch.device(device).type != "cpu":
        yield
        return
    with _lock:
        if _depth == 0:
            _saved = torch.get_num_threads()
            torch.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.set_num_threads(_saved)
