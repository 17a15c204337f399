"""``PackedDataset``: packed or token-budget batches as a seeded, sharded ``IterableDataset``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from tokenize_mm.data.errors import DataError
from tokenize_mm.data.packing.batch import Batch
from tokenize_mm.data.packing.documents import Document
from tokenize_mm.data.packing.packer import (
    Packer,
    TokenBudgetBatcher,
    batch_rows,
    check_positive,
)


class PackedDataset(IterableDataset):
    """Batches for a DataLoader (``batch_size=None``): packed rows, or token-budget batches.

    Documents are shuffled per epoch (``set_epoch``) from ``seed``, then dealt round-robin to the
    shards, one shard per (rank, DataLoader worker): document i of the epoch's order goes to shard
    i mod (world_size × num_workers) only. Each shard packs its own documents, so the batches
    depend only on (documents, seed, epoch, shard) and not on timing.

    Args:
        documents: a sequence of documents, or a zero-argument callable returning a fresh iterable
            of them (a stream, read in its own order and never shuffled here).
        pad_id: global id of the pad token.
        context: row length for packing; the longest row for token-budget batches.
        batch_size: rows per batch when packing.
        max_tokens: if given, yield ``TokenBudgetBatcher`` batches of this budget instead.
        buffer_size: look-ahead of the packer or batcher, in pieces.
        split_spans: cut a span longer than ``context`` mid-span instead of raising.
        shuffle: shuffle a sequence of documents each epoch.
        seed: seed of the shuffle and of the batch order.
        drop_last: drop a last packed batch smaller than ``batch_size``.
        rank: this process's rank in distributed training.
        world_size: number of distributed processes.
    """

    def __init__(
        self,
        documents: Sequence[Document] | Callable[[], Iterable[Document]],
        pad_id: int,
        context: int = 1024,
        batch_size: int = 8,
        max_tokens: int | None = None,
        buffer_size: int = 256,
        split_spans: bool = False,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        check_positive(context=context, batch_size=batch_size, world_size=world_size)
        if not 0 <= rank < world_size:
            raise DataError(f"rank must lie in [0, world_size={world_size}), got {rank}.")
        self.documents, self.pad_id, self.context = documents, pad_id, context
        self.batch_size, self.max_tokens, self.buffer_size = batch_size, max_tokens, buffer_size
        self.split_spans, self.shuffle, self.seed = split_spans, shuffle, seed
        self.drop_last, self.rank, self.world_size = drop_last, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.iter_shard(self.rank * workers + worker, self.world_size * workers)

    def iter_shard(self, shard: int, num_shards: int) -> Iterator[Batch]:
        """The batches of one shard of ``num_shards``: documents shard, shard + num_shards, ..."""
        docs = (d for i, d in enumerate(self._ordered()) if i % num_shards == shard)
        if self.max_tokens is not None:
            batcher = TokenBudgetBatcher(
                self.max_tokens, self.pad_id, self.context, self.buffer_size, self.split_spans,
                seed=(self.seed, self.epoch, shard),
            )  # fmt: skip
            return batcher.batches(docs)
        packer = Packer(self.context, self.pad_id, self.buffer_size, self.split_spans)
        return batch_rows(packer.pack(docs), self.batch_size, self.drop_last)

    def _ordered(self) -> Iterable[Document]:
        if callable(self.documents):
            return self.documents()
        if not self.shuffle:
            return self.documents
        order = np.random.default_rng((self.seed, self.epoch)).permutation(len(self.documents))
        return (self.documents[i] for i in order)
