"""Items to index, and each item's embedding in a trained model's contrastive space.

``collect_items`` reads what to index: every file under a folder that a tokenizer reads (``.txt``
as text, images, audio; other files are listed as skipped, never dropped silently), or every
item of a manifest's records (a record with a caption and an image gives two items, both named
after the record's id). ``ItemEmbedder`` tokenizes one item with the model's own tokenizers and
embeds it as training pooled it (``evaluation.embedding.SpanEmbedder``); an item longer than the
model's context is embedded from its beginning (the part that fits) and marked ``truncated``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tokenize_mm.evaluation.embedding import SpanEmbedder
from tokenize_mm.models.bundle import ModelFolderError, TrainedModel
from tokenize_mm.search.errors import SearchError
from tokenize_mm.tokenizers.errors import InvalidInputError

TEXT_PREVIEW = 80  # characters of a text item kept in the index for printing


@dataclass(frozen=True)
class Item:
    """One thing to index or to query with.

    Attributes:
        id: its name (a file's path relative to the folder; ``<record id>:<modality>``).
        modality: ``text``, ``image`` or ``audio``.
        value: what the tokenizer encodes (the text; an image or audio file's path).
        path: the file it comes from, if any.
    """

    id: str
    modality: str
    value: Any
    path: Path | None = None

    def record(self) -> dict[str, Any]:
        """What the index keeps of it (JSON)."""
        text = self.value if self.modality == "text" else None
        return {"id": self.id, "modality": self.modality,
                "path": str(self.path) if self.path else None,
                "text": text[:TEXT_PREVIEW] if text is not None else None}  # fmt: skip


def modality_of_file(path: Path) -> str | None:
    """The modality whose tokenizer reads ``path`` by its suffix (``None``: none does)."""
    from tokenize_mm.tokenizers.suffixes import encodable_suffixes

    suffix = path.suffix.lower()
    for modality in ("text", "image", "audio"):
        if suffix in encodable_suffixes(modality):
            return modality
    return None


def file_item(path: Path, name: str | None = None) -> Item:
    """A file as an item (a ``.txt`` file's text is its UTF-8 content).

    Raises:
        InvalidInputError: no tokenizer reads the file's type, or a text file is not UTF-8.
    """
    modality = modality_of_file(path)
    if modality is None:
        raise InvalidInputError(
            "no tokenizer reads this type of file (text: .txt; images: .png, .jpg, ...; audio: "
            ".wav, .flac, .mp3, ...)", item=str(path),
        )  # fmt: skip
    value: Any = path
    if modality == "text":
        try:
            value = path.read_bytes().decode("utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise InvalidInputError(
                f"cannot read it as UTF-8 text ({err})", item=str(path)
            ) from err
    return Item(name or str(path), modality, value, path)


MANIFEST_SUFFIXES = (".jsonl", ".json", ".ndjson")  # a file given as inputs is read as a manifest


def collect_items(data: str | Path) -> tuple[list[Item], list[str]]:
    """Items of a folder (every file, recursively, dot-files left out) or of a JSONL manifest
    (its records' items). Returns ``(items, skipped)``: ``skipped`` names each file or record not
    taken, with the reason.

    Raises:
        SearchError: ``data`` does not exist, or is a file not named as a manifest.
    """
    data = Path(data)
    if data.is_dir() and not (data / "manifest.jsonl").is_file():
        items, skipped = [], []
        files = sorted(p for p in data.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(data).parts))  # fmt: skip
        for path in files:
            try:
                items.append(file_item(path, str(path.relative_to(data))))
            except InvalidInputError as err:
                skipped.append(str(err))
        return items, skipped
    if data.is_file() and data.suffix.lower() not in MANIFEST_SUFFIXES:
        raise SearchError(
            f"{data}: inputs must be a folder or a JSONL manifest ({', '.join(MANIFEST_SUFFIXES)}"
            f"), not a single file; to search with this file, give file={data}"
        )
    if data.exists():
        from tokenize_mm.data import ManifestSource

        source = ManifestSource(data)
        items = []
        for ex in source:
            if ex.text is not None:
                items.append(Item(f"{ex.id}:text", "text", ex.text))
            if ex.image is not None:
                path = ex.image if isinstance(ex.image, (str, Path)) else None
                items.append(
                    Item(f"{ex.id}:image", "image", ex.image, Path(path) if path else None)
                )
            for i, audio in enumerate(ex.audio):
                path = getattr(audio, "path", None)
                name = f"{ex.id}:audio" + (f"{i}" if len(ex.audio) > 1 else "")
                items.append(Item(name, "audio", path or audio, path))
        skipped = [f"{r.id or f'line {r.line}'}: {r.reason} ({r.detail})" for r in source.skipped]
        return items, skipped
    raise SearchError(f"{data} does not exist: give a folder or a JSONL manifest to index")


class ItemEmbedder:
    """Tokenize and embed items with a trained model: ``embedder(item) -> ((E,) unit, truncated)``.

    Raises:
        ModelFolderError: the model has no contrastive head (trained without ``contrastive=clip``).
    """

    def __init__(self, trained: TrainedModel):
        if trained.head is None:
            raise ModelFolderError(
                f"the model in {trained.path} was trained without the contrastive objective, so "
                "it has no embedding space to search: train with tmm-train contrastive=clip"
            )
        self.trained = trained
        self.span = SpanEmbedder(trained.model, trained.head, trained.layout, truncate=True)

    @torch.no_grad()
    def __call__(self, item: Item) -> tuple[torch.Tensor, bool]:
        """Raises ``InvalidInputError`` (naming the item) when its tokenizer cannot read it."""
        tokenizer = self.trained.tokenizers.get(item.modality)
        if tokenizer is None:
            raise InvalidInputError(
                f"the model has no {item.modality} tokenizer", item=str(item.path or item.id)
            )
        try:
            codes = tokenizer.encode(item.value).codes
        except InvalidInputError as err:
            if err.item is None:  # a text or in-memory item: name it
                raise InvalidInputError(err.reason, item=item.id) from err
            raise
        if codes.shape[1] == 0:
            raise InvalidInputError("it encodes to no token (empty?)", item=item.id)
        before = self.span.truncated
        return self.span(item.modality, [codes]), self.span.truncated > before
