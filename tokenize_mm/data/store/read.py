"""Reading a store: ``TokenStore`` maps a merged store's chunks and gives its examples.

Opening checks every JSON field it reads, that the chunk paths of ``store.json`` are the store's
own, the layout fingerprint (``expected_fingerprint``: ``StoreMismatchError``) and each chunk
file's size (a stat per chunk). ``verify()`` also reads every chunk: sha256, records, and that
every id lies in the layout's vocabulary. An example is a ``StoredExample`` (``tokens``: a
read-only ``(length,)`` view of the memory map) or, through ``document(i)``, a packer
``Document``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tokenize_mm.data.packing import Document
from tokenize_mm.data.store.checks import (
    _check_bin,
    _check_checksum,
    _check_chunk_path,
    _check_index,
    _check_records,
    _redo_chunk,
)
from tokenize_mm.data.store.errors import (
    StoreError,
    StoreFormatError,
    StoreIntegrityError,
    StoreMismatchError,
)
from tokenize_mm.data.store.format import (
    _CHUNK_PATH,
    STORE_FORMAT,
    STORE_VERSION,
    _load_layout,
    token_dtype,
)
from tokenize_mm.data.store.json_fields import JsonFile


@dataclass(frozen=True)
class StoredExample:
    """One example read from a store: ``tokens`` is a read-only view of the memory map."""

    tokens: np.ndarray
    cuts: list[int]
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Chunk:
    """A chunk of an open store: its files, its checked index, its tokens (a memory map)."""

    name: str  # "parts/<part>/chunk-NNNNNN", relative to the store
    index_path: Path
    bin_path: Path
    index: dict[str, Any]
    data: np.ndarray  # (num_tokens,) of the store's dtype

    @property
    def fix(self) -> str:
        return _redo_chunk(self.index_path)


class TokenStore:
    """Read a merged store through memory maps.

    Opening checks every JSON field it reads, that the chunk paths are the store's own, and that
    each chunk file has the size its index records (a stat per chunk). ``verify()`` also reads
    every chunk: sha256 and ids.

    Args:
        path: the store directory.
        expected_fingerprint: if given, refuse a store whose layout fingerprint differs (pass
            ``VocabLayout.from_artifacts(...).fingerprint`` of the tokenizers you train with).
        split: keep only this split's examples.
        verify: run ``verify()`` once opened.

    Raises:
        StoreError: not a (merged) store.
        StoreMismatchError: the fingerprint differs.
        StoreFormatError: a file of the store is malformed (the message names the file and key).
        StoreIntegrityError: a chunk file is missing or of the wrong size (or, with ``verify``,
            has another sha256 or an id outside the vocabulary).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        expected_fingerprint: str | None = None,
        split: str | None = None,
        verify: bool = False,
    ):
        self.path = Path(path)
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise StoreError(f"{self.path}: no store.json; pretokenize into it and merge first")
        jf = JsonFile(manifest, "run merge_store on the store again")
        self.manifest = jf.load()
        if self.manifest.get("format") != STORE_FORMAT:
            raise StoreFormatError(f"{manifest}: not a tokenize_mm store")
        self.version = jf.count(self.manifest, "format_version")
        if self.version < 1:
            raise jf.error(f"format_version is {self.version}; versions start at 1")
        if self.version > STORE_VERSION:
            raise StoreError(f"{manifest}: written by a newer tokenize_mm; upgrade to read it")
        self.layout = _load_layout(self.path)
        fingerprint = jf.field(self.manifest, "fingerprint", str)
        if expected_fingerprint is not None and fingerprint != expected_fingerprint:
            raise StoreMismatchError(
                f"{self.path}: its tokens were laid out by other tokenizers (store fingerprint "
                f"{fingerprint[:12]}, given tokenizers {expected_fingerprint[:12]}); the store's "
                f"tokenizer artifacts are {self.manifest.get('identities')}: pretokenize again "
                "with the tokenizers you train with"
            )
        if fingerprint != self.layout.fingerprint:
            raise jf.error(
                f"fingerprint {fingerprint[:12]} is not that of layout.json "
                f"({self.layout.fingerprint[:12]})"
            )
        self.dtype = token_dtype(self.layout.vocab_size)
        if jf.field(self.manifest, "dtype", str) != self.dtype.name:
            raise jf.error(f"dtype {self.manifest['dtype']!r} is not the layout's {self.dtype}")
        names = [_check_chunk_path(jf, rel, k)
                 for k, rel in enumerate(jf.field(self.manifest, "chunks", list))]  # fmt: skip
        if len(set(names)) != len(names):
            raise jf.error("lists a chunk twice")
        self._chunks = [self._open_chunk(name) for name in names]
        self.examples: list[dict[str, Any]] = []
        self.errors: list[dict[str, Any]] = []
        for c, chunk in enumerate(self._chunks):
            for entry in chunk.index["examples"]:
                if split is None or entry["split"] == split:
                    self.examples.append({**entry, "chunk": c})
            self.errors += chunk.index["errors"]
        if verify:
            self.verify()

    def _open_chunk(self, name: str) -> _Chunk:
        """Read and check a chunk's index, check its ``.bin`` size, and map it."""
        index_path, bin_path = self.path / f"{name}.json", self.path / f"{name}.bin"
        jf = JsonFile(index_path, _redo_chunk(index_path))
        number = int(_CHUNK_PATH.fullmatch(name).group(3))  # type: ignore[union-attr]
        index = _check_index(jf, number, self.dtype, self.version)
        _check_bin(bin_path, index, self.dtype, jf.fix)
        size = index["num_tokens"]
        data = (np.memmap(bin_path, dtype=self.dtype, mode="r", shape=(size,)) if size
                else np.zeros(0, self.dtype))  # fmt: skip
        return _Chunk(name, index_path, bin_path, index, data)

    def verify(self) -> None:
        """Read every chunk: check its sha256 against its index, that it covers each of its
        records once, and that every id is below the layout's ``vocab_size``.

        Raises:
            StoreIntegrityError: the first bad chunk, named (and the example, for a bad id).
            StoreError: a format-1 store, which records no checksums.
        """
        if self.version < 2:
            raise StoreError(
                f"{self.path}: a format-{self.version} store records no chunk checksums; "
                "pretokenize it again to be able to verify it"
            )
        for chunk in self._chunks:
            jf = JsonFile(chunk.index_path, chunk.fix)
            _check_records(jf, chunk.index, chunk.index["positions"])
            _check_checksum(chunk.bin_path, chunk.index, chunk.fix)
            if chunk.data.size and int(chunk.data.max()) >= self.layout.vocab_size:
                bad = int(np.argmax(chunk.data >= self.layout.vocab_size))
                entry = next((e for e in chunk.index["examples"]
                              if e["offset"] <= bad < e["offset"] + e["length"]), None)  # fmt: skip
                self._raise_out_of_range(chunk, entry, int(chunk.data[bad]))

    def _raise_out_of_range(self, chunk: _Chunk, entry: dict[str, Any] | None, value: int) -> None:
        example = f"example {entry['id']!r}" if entry else "a gap between examples"
        raise StoreIntegrityError(
            f"{chunk.bin_path}: {example} holds token id {value}, outside the vocabulary "
            f"(vocab_size {self.layout.vocab_size}): the chunk file is corrupt or was written "
            f"with another layout; {chunk.fix}"
        )

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> StoredExample:
        """Example ``i``; ``StoreIntegrityError`` if it holds an id outside the vocabulary."""
        e = self.examples[i]
        chunk = self._chunks[e["chunk"]]
        tokens = chunk.data[e["offset"] : e["offset"] + e["length"]]
        if tokens.size and int(tokens.max()) >= self.layout.vocab_size:
            self._raise_out_of_range(chunk, e, int(tokens.max()))
        return StoredExample(tokens, e["cuts"], e)

    def __iter__(self) -> Iterator[StoredExample]:
        for i in range(len(self)):
            yield self[i]

    def document(self, i: int) -> Document:
        """Example ``i`` as a packer ``Document``: int64 tokens, their modality ids, span cuts."""
        item = self[i]
        tokens = np.asarray(item.tokens, dtype=np.int64)
        modality = self.modality_table[tokens]
        return Document(tokens, modality, np.asarray(item.cuts, dtype=np.int64), doc_id=i)

    def documents(self) -> list[Document]:
        """Every example as a ``Document`` (what ``PackedDataset`` takes)."""
        return [self.document(i) for i in range(len(self))]

    @property
    def modality_table(self) -> np.ndarray:
        """(vocab_size,) the modality id (0 text, 1 image, 2 audio, 3 special) of every token id."""
        table = self.__dict__.get("_modality_lookup")
        if table is None:
            ids = np.arange(self.layout.vocab_size)
            table = self.layout.modality_of(torch.from_numpy(ids)).numpy()
            self.__dict__["_modality_lookup"] = table
        return table
