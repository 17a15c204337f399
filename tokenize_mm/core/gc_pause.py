"""Pausing Python's cyclic garbage collector while a batch's many small objects are built.

The collector runs a generation-0 pass every 700 new container objects, and a full pass (over
every object of the process: with torch imported, hundreds of thousands) once enough of them have
survived. Building a batch of 4,096 encoded texts makes ~12,000 objects that all survive, so the
collector keeps walking the whole heap for nothing: two thirds of ``TextTokenizer.encode_batch``'s
time before this pause (docs/results/tokenizer_benchmark.md). Nothing built under the pause is
part of a reference cycle; anything that is will be collected at the next pass after it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it after only if it was enabled
    (a caller's own ``gc.disable()`` is kept). Thread-safe in the sense that matters: a thread
    that enters while another holds the pause sees the collector off and leaves it as it was."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
