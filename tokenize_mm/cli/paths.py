"""Where fitted tokenizers and stores are cached, whatever the working directory.

``conf/train.yaml`` says ``cache_dir: ${tmm.cache_dir:}``: the ``tmm.cache_dir`` resolver (registered
when ``cli.common`` is imported, as every entry point does) gives an absolute folder, so running
``tmm-train`` from another folder reuses what an earlier run fitted instead of refitting it:

1. ``$TMM_CACHE_DIR`` when set;
2. in a checkout (``conf/`` beside the package), ``<checkout>/.cache/tokenize_mm``: what
   ``make train`` has always used, so paths in docs/ stay true;
3. otherwise (an installed package) the user cache, ``$XDG_CACHE_HOME/tokenize_mm`` or
   ``~/.cache/tokenize_mm``.

A ``cache_dir=...`` given on the command line is taken as given (relative to the working
directory, as any path a user types).
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

ENV = "TMM_CACHE_DIR"


def checkout_root() -> Path | None:
    """The checkout this package runs from (``conf/train.yaml`` beside ``tokenize_mm/``), or
    ``None`` for an installed package."""
    root = Path(__file__).resolve().parents[2]
    if (root / "conf" / "train.yaml").is_file() and (root / "tokenize_mm").is_dir():
        return root
    return None


def default_cache_dir() -> str:
    """The default cache folder, absolute (the order is in the module docstring)."""
    if os.environ.get(ENV):
        return str(Path(os.environ[ENV]).expanduser().resolve())
    checkout = checkout_root()
    if checkout is not None:
        return str(checkout / ".cache" / "tokenize_mm")
    user = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(user).expanduser().resolve() / "tokenize_mm")


def register() -> None:
    """Register the ``tmm.cache_dir`` resolver (idempotent)."""
    if not OmegaConf.has_resolver("tmm.cache_dir"):
        OmegaConf.register_new_resolver("tmm.cache_dir", default_cache_dir)


register()
