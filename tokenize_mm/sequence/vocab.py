"""``VocabLayout``: one global vocabulary over the text, image and audio tokenizers.

An early-fusion decoder predicts one id per position from a single softmax, so every tokenizer's
local ids get a disjoint global range (docs/architecture.md §5). Reserved specials come first, then one
contiguous range per modality in the canonical order text, image, audio, and for multi-codebook
audio one range per codebook, so that every global id maps back to exactly one
(modality, codebook, local id)::

    id:        0    1    2    3          4       5        6        7         8        9
    special:   pad  bos  eos  delay_pad  <text>  </text>  <image>  </image>  <audio>  </audio>

    then  text [10, 10 + V_text)  image [.., + V_image)  audio codebook 0 [.., + V_audio)
          audio codebook 1 [.., + V_audio)  ...  audio codebook K - 1

(only the modalities present get ranges and markers; the specials' ids do not depend on them).
``delay_pad`` fills the empty positions of the MusicGen delay pattern inside audio spans.

Each position's *modality id* (``MODALITY_IDS``: text 0, image 1, audio 2, special 3) is that of
its range; span markers belong to their modality, ``delay_pad`` to audio, and pad, bos, eos are
special. The *fingerprint* is a sha256 over the layout (specials, ranges, codebook pattern) and the
identity of each tokenizer (its artifact's manifest hash when built from artifacts, else its
``info``): a store or a checkpoint records it, and training refuses tokens laid out by another.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tokenize_mm.core.atomic import write_text_atomic
from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.core.modalities import MODALITIES, MODALITY_IDS
from tokenize_mm.tokenizers.base import TokenizerInfo
from tokenize_mm.tokenizers.errors import InvalidCodesError

SPECIALS: tuple[str, ...] = (
    "pad", "bos", "eos", "delay_pad",
    "<text>", "</text>", "<image>", "</image>", "<audio>", "</audio>",
)  # fmt: skip
LAYOUT_VERSION = 1


class LayoutError(TokenizeMMError, ValueError):
    """A vocabulary layout cannot be built, or ids do not belong to it."""


@dataclass(frozen=True)
class TokenRange:
    """Global ids [start, start + size) hold local ids [0, size) of one modality's codebook."""

    modality: str
    codebook: int
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size


@dataclass(frozen=True)
class VocabLayout:
    """Disjoint global id ranges for the tokenizers of a run. Build with ``from_tokenizers`` or
    ``from_artifacts``; ``vocab_size`` is the decoder's output size.

    Attributes:
        infos: modality → its tokenizer's ``TokenizerInfo``, modalities in canonical order.
        identities: modality → what identifies its tokenizer (artifact manifest sha256, or a hash
            of its info for a tokenizer that was never saved).
        audio_pattern: ``"flatten"`` or ``"delay"`` (``tokenize_mm.sequence.patterns``).
        ranges: one ``TokenRange`` per (modality, codebook), in id order.
    """

    infos: Mapping[str, TokenizerInfo]
    identities: Mapping[str, str]
    audio_pattern: str = "flatten"
    ranges: tuple[TokenRange, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        unknown = [m for m in self.infos if m not in MODALITIES]
        if unknown or not self.infos:
            raise LayoutError(
                f"a layout needs tokenizers for some of {MODALITIES}, got {list(self.infos)}"
            )
        for modality, info in self.infos.items():
            if info.modality != modality:
                raise LayoutError(
                    f"the tokenizer given for {modality!r} is a {info.modality!r} tokenizer"
                )
        if self.audio_pattern not in ("flatten", "delay"):
            raise LayoutError(
                f"audio_pattern must be 'flatten' or 'delay', got {self.audio_pattern!r}"
            )
        ordered = {m: self.infos[m] for m in MODALITIES if m in self.infos}
        object.__setattr__(self, "infos", ordered)
        object.__setattr__(self, "identities", {m: self.identities[m] for m in ordered})
        ranges, start = [], len(SPECIALS)
        for modality, info in ordered.items():
            for k in range(info.num_codebooks if modality == "audio" else 1):
                ranges.append(TokenRange(modality, k, start, info.codebook_size))
                start += info.codebook_size
        object.__setattr__(self, "ranges", tuple(ranges))

    # -- construction ----------------------------------------------------------------------------
    @classmethod
    def from_tokenizers(
        cls, tokenizers: Mapping[str, Any], *, audio_pattern: str = "flatten"
    ) -> VocabLayout:
        """A layout over in-memory tokenizers (modality → tokenizer). Their identity is a hash of
        their ``info``; prefer ``from_artifacts`` for saved tokenizers, whose identity is the
        artifact itself."""
        infos = {m: tok.info for m, tok in tokenizers.items()}
        identities = {m: "info:" + _sha256_json(info.to_dict()) for m, info in infos.items()}
        return cls(infos, identities, audio_pattern)

    @classmethod
    def from_artifacts(
        cls, directories: Mapping[str, str | os.PathLike], *, audio_pattern: str = "flatten"
    ) -> VocabLayout:
        """A layout over saved tokenizers (modality → artifact directory); each identity is the
        sha256 of the artifact's manifest, which lists the sha256 of every payload file."""
        from tokenize_mm.tokenizers.artifact import MANIFEST, read_artifact, sha256_file

        infos, identities = {}, {}
        for modality, directory in directories.items():
            artifact = read_artifact(directory)  # verified: payload hashes match the manifest
            infos[modality] = artifact.info
            identities[modality] = "artifact:" + sha256_file(Path(directory) / MANIFEST)
        return cls(infos, identities, audio_pattern)

    # -- ids -------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.ranges[-1].stop if self.ranges else len(SPECIALS)

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.infos)

    def special(self, name: str) -> int:
        """The global id of a special (``"pad"``, ``"bos"``, ``"<image>"``, ...)."""
        try:
            return SPECIALS.index(name)
        except ValueError:
            raise LayoutError(f"unknown special {name!r}; specials are {SPECIALS}") from None

    def begin(self, modality: str) -> int:
        return self.special(f"<{modality}>")

    def end(self, modality: str) -> int:
        return self.special(f"</{modality}>")

    def range_of(self, modality: str, codebook: int = 0) -> TokenRange:
        for r in self.ranges:
            if r.modality == modality and r.codebook == codebook:
                return r
        raise LayoutError(
            f"the layout has no range for {modality!r} codebook {codebook}; it covers "
            f"{[(r.modality, r.codebook) for r in self.ranges]}"
        )

    def to_global(self, modality: str, local: torch.Tensor, codebook: int | torch.Tensor = 0):
        """Local ids of ``modality`` (any shape) → global ids; ``codebook`` (a scalar or a tensor
        broadcastable to ``local``) picks the audio codebook of each id.

        Raises:
            InvalidCodesError: a local id is outside its codebook.
        """
        local = torch.as_tensor(local, dtype=torch.int64)
        size = self.range_of(modality, 0).size
        if local.numel() and (int(local.min()) < 0 or int(local.max()) >= size):
            raise InvalidCodesError(
                f"{modality} ids must be in [0, {size}), got [{int(local.min())}, "
                f"{int(local.max())}]",
                item=f"VocabLayout.to_global({modality!r})",
            )
        starts = torch.tensor([r.start for r in self.ranges if r.modality == modality])
        return local + starts[torch.as_tensor(codebook, dtype=torch.int64)]

    def to_local(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Global ids (any shape) → (modality ids, codebook indices, local ids), same shape.

        Specials map to their own modality id (markers to their modality, pad/bos/eos to special),
        codebook 0 and local id = their global id.

        Raises:
            LayoutError: an id is negative or not below ``vocab_size``.
        """
        ids = torch.as_tensor(ids, dtype=torch.int64)
        self._check_ids(ids)
        table = self._tables()
        return table["modality"][ids], table["codebook"][ids], ids - table["offset"][ids]

    def modality_of(self, ids: torch.Tensor) -> torch.Tensor:
        """Global ids (any shape) → modality ids (uint8), see ``MODALITY_IDS``."""
        ids = torch.as_tensor(ids, dtype=torch.int64)
        self._check_ids(ids)
        return self._tables()["modality"][ids]

    def _check_ids(self, ids: torch.Tensor) -> None:
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise LayoutError(
                f"global ids must be in [0, {self.vocab_size}), got [{int(ids.min())}, "
                f"{int(ids.max())}]; were the tokens laid out by another layout?"
            )

    def _tables(self) -> dict[str, torch.Tensor]:
        """Per-id lookup tables (built once): modality id, codebook, and the range's start."""
        cached = self.__dict__.get("_table_cache")
        if cached is not None:
            return cached
        n = self.vocab_size
        modality = torch.full((n,), MODALITY_IDS["special"], dtype=torch.uint8)
        codebook = torch.zeros(n, dtype=torch.int64)
        offset = torch.zeros(n, dtype=torch.int64)
        for name in SPECIALS:
            owner = name.strip("<>/")
            if owner in MODALITY_IDS:
                modality[SPECIALS.index(name)] = MODALITY_IDS[owner]
        modality[SPECIALS.index("delay_pad")] = MODALITY_IDS["audio"]
        for r in self.ranges:
            modality[r.start : r.stop] = MODALITY_IDS[r.modality]
            codebook[r.start : r.stop] = r.codebook
            offset[r.start : r.stop] = r.start
        tables = {"modality": modality, "codebook": codebook, "offset": offset}
        object.__setattr__(self, "_table_cache", tables)
        return tables

    # -- identity --------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "layout_version": LAYOUT_VERSION,
            "specials": list(SPECIALS),
            "audio_pattern": self.audio_pattern,
            "infos": {m: info.to_dict() for m, info in self.infos.items()},
            "identities": dict(self.identities),
            "ranges": [[r.modality, r.codebook, r.start, r.size] for r in self.ranges],
            "vocab_size": self.vocab_size,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VocabLayout:
        """Rebuild a layout saved with ``to_dict``; refuses one whose specials or ranges differ
        from what this version of the code would lay out."""
        if data.get("layout_version") != LAYOUT_VERSION or list(data.get("specials", [])) != list(
            SPECIALS
        ):
            raise LayoutError(
                f"layout version {data.get('layout_version')!r} is not {LAYOUT_VERSION}; it was "
                "written by another tokenize_mm: pretokenize again"
            )
        infos = {m: TokenizerInfo.from_dict(d) for m, d in data["infos"].items()}
        layout = cls(infos, dict(data["identities"]), str(data["audio_pattern"]))
        if [list(x) for x in data["ranges"]] != layout.to_dict()["ranges"]:
            raise LayoutError("the saved ranges differ from the layout rebuilt from them")
        return layout

    @property
    def fingerprint(self) -> str:
        """sha256 (hex) of the layout and its tokenizers' identities."""
        return _sha256_json(self.to_dict())

    def save(self, path: str | os.PathLike) -> Path:
        """Write the layout as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike) -> VocabLayout:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{m}: {info.num_codebooks if m == 'audio' else 1}×{info.codebook_size}"
            for m, info in self.infos.items()
        )
        return f"VocabLayout({parts}, vocab_size={self.vocab_size}, audio_pattern={self.audio_pattern!r})"


def _sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
