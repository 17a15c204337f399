"""Nearest neighbours by inner product over unit embeddings: exact in torch, or a faiss index.

Both answer ``search(queries (Q, E), k) -> (scores (Q, k), ids (Q, k))``, best first, over the
rows they were built from (``ids`` index those rows). ``ExactSearch`` scores every row (a matrix
product and a stable sort: ties go to the earlier row). ``FaissSearch`` (Johnson et al. 2019,
"Billion-scale similarity search with GPUs") holds the rows in a faiss index: ``flat``
(``IndexFlatIP``, exact, SIMD-fast, for up to a few million rows) or ``hnsw`` (``IndexHNSWFlat``,
Malkov & Yashunin 2018, approximate, sub-linear for larger indexes; ``ef_search`` trades speed
for recall). faiss is imported only when a ``FaissSearch`` is built.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
import torch

from tokenize_mm.core.errors import TokenizeMMError


class Backend(Protocol):
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...


def _check(embeddings: torch.Tensor) -> torch.Tensor:
    if embeddings.dim() != 2 or embeddings.shape[0] == 0:
        raise TokenizeMMError(
            f"a search backend needs (N >= 1, E) embeddings, got {tuple(embeddings.shape)}"
        )
    return embeddings.detach().float().cpu().contiguous()


class ExactSearch:
    """Every row scored: ``queries @ rows.T``, sorted (stable) by score, best first.

    Args:
        embeddings: (N, E) rows, unit norm (cosine similarity = inner product).
    """

    def __init__(self, embeddings: torch.Tensor):
        self.rows = _check(embeddings)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        scores = queries.float() @ self.rows.T
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        return scores.gather(1, order), order


class FaissSearch:
    """The rows in a faiss inner-product index.

    Args:
        embeddings: (N, E) unit rows.
        kind: ``"flat"`` (exact) or ``"hnsw"`` (approximate; for large indexes).
        hnsw_m: neighbours per node of the HNSW graph.
        ef_search: candidates an HNSW search keeps (higher: slower, closer to exact).

    Raises:
        TokenizeMMError: faiss is not installed, or ``kind`` is unknown.
    """

    def __init__(self, embeddings: torch.Tensor, kind: str = "flat", hnsw_m: int = 32,
                 ef_search: int = 128):  # fmt: skip
        logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # its CPU-feature probing
        try:
            import faiss
        except ImportError as err:  # a lean install without it
            raise TokenizeMMError(
                "backend=faiss needs the faiss-cpu package (pip install faiss-cpu); "
                "backend=exact needs nothing more"
            ) from err
        rows = _check(embeddings).numpy()
        dim = rows.shape[1]
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = ef_search
        else:
            raise TokenizeMMError(f"faiss index kind must be 'flat' or 'hnsw', got {kind!r}")
        self.index.add(np.ascontiguousarray(rows, dtype=np.float32))

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        q = np.ascontiguousarray(queries.detach().float().cpu().numpy(), dtype=np.float32)
        scores, ids = self.index.search(q, min(k, self.index.ntotal))
        return torch.from_numpy(scores), torch.from_numpy(ids.astype(np.int64))


BACKENDS = ("exact", "faiss", "faiss_hnsw")


def make_backend(name: str, embeddings: torch.Tensor) -> Backend:
    """``"exact"`` (default), ``"faiss"`` (flat, exact) or ``"faiss_hnsw"`` over ``embeddings``."""
    if name == "exact":
        return ExactSearch(embeddings)
    if name == "faiss":
        return FaissSearch(embeddings, "flat")
    if name == "faiss_hnsw":
        return FaissSearch(embeddings, "hnsw")
    raise TokenizeMMError(f"backend must be one of {BACKENDS}, got {name!r}")
