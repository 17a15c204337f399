"""Cross-modal search with a contrastively trained model (``tmm-search``).

Items (images, audio clips, texts) of a folder or manifest are embedded with a trained model's
contrastive head (``embed.py``) into an index (``index.py``: embeddings in safetensors with the
model's fingerprint, items in JSON); a query of any modality is embedded the same way and ranked
against the index by cosine similarity, exactly in torch or with a faiss index (``backends.py``);
image hits can be laid out on a contact sheet (``sheet.py``).
"""

from tokenize_mm.search.backends import BACKENDS, ExactSearch, FaissSearch, make_backend
from tokenize_mm.search.embed import ItemEmbedder, collect_items
from tokenize_mm.search.index import (
    EmbeddingIndex,
    EmptyIndexError,
    IndexMismatchError,
    SearchError,
    build_index,
)
from tokenize_mm.search.sheet import contact_sheet

__all__ = [
    "BACKENDS",
    "EmbeddingIndex",
    "EmptyIndexError",
    "ExactSearch",
    "FaissSearch",
    "IndexMismatchError",
    "ItemEmbedder",
    "SearchError",
    "build_index",
    "collect_items",
    "contact_sheet",
    "make_backend",
]
