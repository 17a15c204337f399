"""Where a benchmark writes when not told where: a scratch folder, never the recorded results.

``--out docs/results/...`` (or ``RESULTS=docs/results`` for the make targets) updates the record;
the default is ``$TMPDIR/tokenize_mm/<name>``, so rerunning a documented command to check it
leaves docs/results as committed.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

SCRATCH = Path(tempfile.gettempdir()) / "tokenize_mm"


def scratch(name: str) -> str:
    """``$TMPDIR/tokenize_mm/<name>`` as a string (argparse defaults)."""
    return str(SCRATCH / name)
