"""The architectures' config nodes, generated from their dataclasses (written once).

``VQImageConfig`` and ``CodecConfig`` are the image and audio models' constructor argument and
what an artifact saves (``hparams.arch``); this module registers each, with every field at its
dataclass default and a ``_target_`` that builds it, in Hydra's ``ConfigStore`` as the group
``arch`` (``arch/vq_image``, ``arch/codec``). ``conf/tokenizer/image.yaml`` and ``audio.yaml``
take their ``fit.config`` from there (``defaults: [/arch@fit.config: vq_image]``) and set only
what differs, so a field added to a dataclass appears in every config, and any field can be
overridden from the command line (``tokenizer.fit.config.codebook_size=512``) without ``+``.

Importing ``cli.common`` (what every entry point and config test does) registers them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hydra.core.config_store import ConfigStore

from tokenize_mm.tokenizers.audio.model import CodecConfig
from tokenize_mm.tokenizers.image.model import VQImageConfig

#: group option → the dataclass it builds.
ARCHITECTURES: dict[str, type] = {"vq_image": VQImageConfig, "codec": CodecConfig}


def arch_node(cls: type) -> dict[str, Any]:
    """``cls``'s fields at their declared defaults (tuples as lists; not the values
    ``__post_init__`` derives, such as FSQ levels for the default codebook size) and a
    ``_target_`` that builds it."""
    fields = {
        f.name: list(v) if isinstance(v := f.default, tuple) else v for f in dataclasses.fields(cls)
    }
    target = f"{cls.__module__.rsplit('.', 1)[0]}.{cls.__name__}"  # the subpackage exports it
    return {"_target_": target, **fields}


def register() -> None:
    """Store every ``ARCHITECTURES`` node in Hydra's ``ConfigStore`` (idempotent)."""
    store = ConfigStore.instance()
    for name, cls in ARCHITECTURES.items():
        store.store(group="arch", name=name, node=arch_node(cls))


register()
