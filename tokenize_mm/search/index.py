"""An embedding index: what ``tmm-search`` builds from items and queries against.

    <index>/
      embeddings.safetensors   (N, E) float32 unit rows; metadata: format, version and the
                               fingerprint of the model that embedded them
      items.json               the N items (id, modality, path, a text's first characters,
                               truncated) in row order, and the files or records not indexed

The folder is written atomically; loading reads safetensors and JSON only. A query is embedded by
a model whose fingerprint must equal the index's (``IndexMismatchError`` otherwise: embeddings of
two models share no space), and ranked by cosine similarity with a backend of ``backends.py``,
over every row or over one modality's rows.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from tokenize_mm.core.atomic import write_dir_atomic
from tokenize_mm.models.bundle import TrainedModel
from tokenize_mm.search.backends import make_backend
from tokenize_mm.search.embed import Item, ItemEmbedder
from tokenize_mm.search.errors import EmptyIndexError, IndexMismatchError, SearchError
from tokenize_mm.tokenizers.errors import InvalidInputError

FORMAT, VERSION = "tokenize_mm.index", "1"
EMBEDDINGS, ITEMS = "embeddings.safetensors", "items.json"
INDEX_WHAT = "an embedding index"  # for the folder guard's messages (core/atomic.py)


@dataclass(frozen=True)
class Hit:
    """One search result: its rank (1 = best), cosine similarity and the indexed item's record."""

    rank: int
    score: float
    item: dict[str, Any]


@dataclass
class EmbeddingIndex:
    """Embeddings of items and what they are.

    Attributes:
        embeddings: (N, E) float32 unit rows.
        items: N records (``Item.record()`` plus ``truncated``), in row order.
        model_fingerprint: the fingerprint of the model that embedded them.
        skipped: files or records not indexed, each with its reason.
        path: the folder it was loaded from or saved to.
    """

    embeddings: torch.Tensor
    items: list[dict[str, Any]]
    model_fingerprint: str
    skipped: list[str] = field(default_factory=list)
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.items)

    def name(self) -> str:
        return str(self.path) if self.path else "the index"

    def save(self, folder: str | Path) -> Path:
        """Write the index into ``folder``: replaced atomically if it is an earlier index or
        empty; ``ForeignFolderError`` if it holds anything else (nothing is deleted)."""
        rows = self.embeddings.detach().float().cpu().contiguous()
        meta = {"format": FORMAT, "version": VERSION, "model_fingerprint": self.model_fingerprint}

        def write(tmp: Path) -> None:
            save_file({"embeddings": rows}, str(tmp / EMBEDDINGS), metadata=meta)
            text = json.dumps({"items": self.items, "skipped": self.skipped}, indent=1)
            (tmp / ITEMS).write_text(text + "\n", encoding="utf-8")

        self.path = write_dir_atomic(folder, write, is_ours=is_index_dir, what=INDEX_WHAT)
        return self.path

    @classmethod
    def load(cls, folder: str | Path) -> EmbeddingIndex:
        """Read an index folder (safetensors and JSON only).

        Raises:
            SearchError: no index there, or a damaged one (rows and items disagree).
        """
        folder = Path(folder)
        if not (folder / EMBEDDINGS).is_file() or not (folder / ITEMS).is_file():
            raise SearchError(
                f"{folder} is not an index (no {EMBEDDINGS} and {ITEMS}); build one with "
                f"tmm-search model_dir=<model folder> index_dir={folder} inputs=<folder or manifest>"
            )
        try:
            with safe_open(str(folder / EMBEDDINGS), framework="pt") as fh:
                meta = fh.metadata() or {}
            rows = load_file(str(folder / EMBEDDINGS))["embeddings"]
            listing = json.loads((folder / ITEMS).read_text(encoding="utf-8"))
        except (
            OSError,
            SafetensorError,
            KeyError,
            UnicodeDecodeError,
            json.JSONDecodeError,
        ) as err:
            raise SearchError(f"the index {folder} cannot be read ({err}); build it again") from err
        if meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise SearchError(f"{folder / EMBEDDINGS} is not a {FORMAT} v{VERSION} index")
        items = listing.get("items", [])
        if rows.dim() != 2 or rows.shape[0] != len(items):
            raise SearchError(
                f"the index {folder} is damaged: {tuple(rows.shape)} embeddings for "
                f"{len(items)} items; build it again"
            )
        return cls(rows, items, meta.get("model_fingerprint", ""), listing.get("skipped", []),
                   folder)  # fmt: skip

    def check_model(self, trained: TrainedModel) -> None:
        """Raise ``IndexMismatchError`` unless ``trained`` is the model that built the index."""
        if trained.fingerprint != self.model_fingerprint:
            raise IndexMismatchError(
                f"{self.name()} was built with the model {self.model_fingerprint[:12]}, the query "
                f"model {trained.path} is {trained.fingerprint[:12]}: query with that model, or "
                "build the index again with this one"
            )

    def search(self, query: torch.Tensor, k: int = 5, modality: str | None = None,
               backend: str = "exact") -> list[Hit]:  # fmt: skip
        """The ``k`` items most similar to the unit ``query`` (E,), over every row or over
        ``modality``'s rows, best first.

        Raises:
            EmptyIndexError: no row to search (of that modality).
            SearchError: ``k`` < 1 or a query of another width.
        """
        if k < 1:
            raise SearchError(f"k must be at least 1, got {k}")
        rows = [i for i, it in enumerate(self.items) if modality in (None, it["modality"])]
        if not rows:
            what = f"no {modality} item" if modality else "no item"
            raise EmptyIndexError(
                f"{self.name()} holds {what}; index a folder or manifest with some"
            )
        if query.shape != (self.embeddings.shape[1],):
            raise SearchError(
                f"the query embedding has shape {tuple(query.shape)}, the index's rows "
                f"{self.embeddings.shape[1]} values"
            )
        scores, ids = make_backend(backend, self.embeddings[rows]).search(query[None], k)
        return [Hit(r + 1, float(s), self.items[rows[int(i)]])
                for r, (s, i) in enumerate(zip(scores[0], ids[0], strict=True))]  # fmt: skip


def build_index(
    trained: TrainedModel,
    items: Sequence[Item],
    skipped: Sequence[str] = (),
    progress: Callable[[int, int], None] | None = None,
) -> EmbeddingIndex:
    """Embed ``items`` with ``trained``. An item its tokenizer cannot read is added to
    ``skipped`` with the reason (naming it), never dropped silently.

    Raises:
        EmptyIndexError: no item could be embedded.
        ModelFolderError: the model has no contrastive head.
    """
    embed = ItemEmbedder(trained)
    rows, records, skipped = [], [], list(skipped)
    for done, item in enumerate(items, start=1):
        try:
            vector, truncated = embed(item)
        except InvalidInputError as err:
            skipped.append(str(err))
        else:
            rows.append(vector)
            records.append({**item.record(), "truncated": truncated})
        if progress:
            progress(done, len(items))
    if not rows:
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        reasons = ("; ".join(skipped[:3]) + more) or "nothing to index"
        raise EmptyIndexError(f"no item could be indexed ({reasons})")
    return EmbeddingIndex(torch.stack(rows), records, trained.fingerprint, skipped)


def is_index_dir(path: Path) -> bool:
    """Whether ``path`` is an index folder written by ``EmbeddingIndex.save``."""
    return (path / EMBEDDINGS).is_file() and (path / ITEMS).is_file()
