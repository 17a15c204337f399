"""``StoreDataModule``: a pretokenized store as Lightning's train and validation data.

Training batches come from a ``MixtureStream`` over the store's ``train`` examples grouped by
source, drawn by a mixture sampler (``tokenize_mm.balance.sampling``) that the training module
updates; validation batches are the ``val`` examples packed in order. The store is opened with the
layout fingerprint of the tokenizers the run was given, so tokens laid out by other tokenizers are
refused (``StoreMismatchError``).

The stream lives in the main process (``num_workers=0``: its state and sampler must be the ones
the training module updates and checkpoints), and the training step pulls each batch itself
(``training_step(dataloader_iter)``), so no batch is drawn before the previous step's sampler
update: the stream state after the step's batch is the exact data position a checkpoint keeps.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import lightning as L
import torch

from tokenize_mm.balance.sampling import build_sampler
from tokenize_mm.data.mixture import MixtureStream, source_modalities, source_sizes, store_sources
from tokenize_mm.data.packed_dataset import PackedDataset
from tokenize_mm.data.packing import Batch
from tokenize_mm.data.store import TokenStore


class StreamIterable(torch.utils.data.IterableDataset):
    """The stream's batches, drawn one at a time when the training step asks for one."""

    def __init__(self, stream: MixtureStream):
        self.stream = stream

    def __iter__(self) -> Iterator[Batch]:
        while True:
            yield next(self.stream)


class StoreDataModule(L.LightningDataModule):
    """Train and validation data from a store.

    Args:
        store_dir: a merged store (``tmm-pretokenize``).
        sampler: sampler name (``proportional``, ``temperature``, ``unimax``, ``fixed``,
            ``adaptive``); ``sampler_options`` its arguments (e.g. ``tau``).
        context, batch_size, buffer_size, split_spans: packing (``MixtureStream``).
        seed: the stream's seed.
        expected_fingerprint: the layout fingerprint of the run's tokenizers (``None``: trust the
            store's own layout).
    """

    def __init__(
        self,
        store_dir: str,
        sampler: str = "proportional",
        sampler_options: Mapping[str, Any] | None = None,
        context: int = 512,
        batch_size: int = 8,
        buffer_size: int = 256,
        split_spans: bool = True,
        seed: int = 0,
        expected_fingerprint: str | None = None,
    ):
        super().__init__()
        self.store_dir, self.sampler_name = store_dir, sampler
        self.sampler_options = dict(sampler_options or {})
        self.context, self.batch_size, self.buffer_size = context, batch_size, buffer_size
        self.split_spans, self.seed = split_spans, seed
        self.expected_fingerprint = expected_fingerprint
        self.stream: MixtureStream | None = None
        self.iterable: StreamIterable | None = None
        self.sampler = None

    def setup(self, stage: str | None = None) -> None:
        if self.stream is not None:
            return
        kw = {"expected_fingerprint": self.expected_fingerprint}
        self.train_store = TokenStore(self.store_dir, split="train", **kw)
        self.val_store = TokenStore(self.store_dir, split="val", **kw)
        self.layout = self.train_store.layout
        self.pad_id = self.layout.special("pad")
        docs = store_sources(self.train_store)
        self.sampler = build_sampler(
            self.sampler_name, source_sizes(docs), source_modalities(docs), **self.sampler_options
        )
        rank, world = self._rank_world()
        self.stream = MixtureStream(
            docs, self.sampler, self.pad_id, context=self.context, batch_size=self.batch_size,
            buffer_size=self.buffer_size, split_spans=self.split_spans, seed=self.seed,
            rank=rank, world_size=world,
        )  # fmt: skip
        self.iterable = StreamIterable(self.stream)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(self.iterable, batch_size=None, num_workers=0)

    def val_dataloader(self):
        rank, world = self._rank_world()
        data = PackedDataset(
            self.val_store.documents(), self.pad_id, context=self.context,
            batch_size=self.batch_size, split_spans=self.split_spans, shuffle=False,
            rank=rank, world_size=world,
        )  # fmt: skip
        return torch.utils.data.DataLoader(data, batch_size=None, num_workers=0)
