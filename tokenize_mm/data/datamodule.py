"""``StoreDataModule``: a pretokenized store as Lightning's train and validation data.

Training batches come from a ``MixtureStream`` over the store's ``train`` examples grouped by
source (or, with ``fresh``, over fresh built-in examples of the store's source settings, streamed
from the seed: ``tokenize_mm.data.fresh``), drawn by a mixture sampler (``tokenize_mm.balance.sampling``) that the training module
updates; validation batches are the ``val`` examples packed in order. The store is opened with the
layout fingerprint of the tokenizers the run was given, so tokens laid out by other tokenizers are
refused (``StoreMismatchError``).

The data module owns the data state: the stream (its position, packer buffer and generator) and
the sampler (inside the stream's state). Lightning saves ``state_dict()`` in every checkpoint under
the key ``StoreDataModule`` and gives it back to ``load_state_dict`` on resume (after ``setup``,
before the first batch). Under DDP ``state_dict`` gathers every rank's stream state (each rank's
packer buffer and document positions differ), so each rank resumes from its own position.

``SamplerFeedback`` (a Lightning callback) closes the loop: after every training step it hands the
training module's all-reduced per-modality losses (``BalancedLM.step_losses``) to the sampler and
logs ``sampling/prob/<source>``. Nothing else updates the sampler.

The stream lives in the main process (``num_workers=0``: its state and sampler must be the ones
that are updated and checkpointed), and the training step pulls each batch itself
(``training_step(dataloader_iter)``), so no batch is drawn before the previous step's sampler
update: when a checkpoint is taken (at the end of a step) the stream stands exactly after the
step's batch, with the sampler already updated by that step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch

from tokenize_mm.balance.sampling import MixtureSampler, ProportionalSampler
from tokenize_mm.data.errors import DataError
from tokenize_mm.data.fresh import FreshExamples, FreshSpec, expected_documents, fresh_sources
from tokenize_mm.data.mixture import MixtureStream, source_modalities, source_sizes, store_sources
from tokenize_mm.data.packing import Batch, PackedDataset
from tokenize_mm.data.store import TokenStore

log = logging.getLogger(__name__)

#: Most documents ``fresh_ahead`` renders before a fit (a long run's first ones; the worker
#: renders the rest). The tiny debug run's 16384 took its SIGTERM test to 93 s on 2 cores.
AHEAD_MAX_DOCUMENTS = 16384

#: Version of ``StoreDataModule.state_dict``'s layout.
STATE_VERSION = 1


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
        sampler: builds the mixture sampler from the train split's sizes:
            ``sampler(sizes, source_modalities=shares)`` (a sampler class of
            ``tokenize_mm.balance.sampling``, or a ``functools.partial`` of one with its options,
            as Hydra's ``_partial_`` makes from ``conf/balance/sampling/*.yaml``).
        context, batch_size, buffer_size, split_spans: packing (``MixtureStream``).
        seed: the stream's seed.
        expected_fingerprint: the layout fingerprint of the run's tokenizers (``None``: trust the
            store's own layout).
        fresh: train on fresh built-in examples streamed from this spec's source
            (``tokenize_mm.data.fresh``) instead of the store's train split; the store (written
            from the same source settings) still gives the validation batches and the
            sub-sources' sizes. ``None``: the store's train split.
        fresh_ahead: with ``fresh`` and a ``cache_dir`` in it, render the documents the fit is
            expected to read (``trainer.max_steps`` batches at the sampler's first probabilities,
            at most ``AHEAD_MAX_DOCUMENTS`` in all) in this many processes before training
            starts (``FreshExamples.render_ahead``); the stream's workers (as many, at the
            lowest CPU priority) render the rest as the stream reaches it. 0: off (one stream
            worker); DDP runs skip it.
    """

    def __init__(
        self,
        store_dir: str,
        sampler: Callable[..., MixtureSampler] = ProportionalSampler,
        context: int = 512,
        batch_size: int = 8,
        buffer_size: int = 256,
        split_spans: bool = True,
        seed: int = 0,
        expected_fingerprint: str | None = None,
        fresh: FreshSpec | None = None,
        fresh_ahead: int = 0,
    ):
        super().__init__()
        self.store_dir, self.sampler_factory = store_dir, sampler
        self.context, self.batch_size, self.buffer_size = context, batch_size, buffer_size
        self.split_spans, self.seed = split_spans, seed
        self.expected_fingerprint, self.fresh = expected_fingerprint, fresh
        self.fresh_ahead = fresh_ahead
        self.ahead_seconds = 0.0  # wall seconds of the render-ahead (0: none rendered)
        self.fresh_examples: FreshExamples | None = None
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
        docs: dict[str, Any] = store_sources(self.train_store)
        if self.fresh is not None:
            # as many stream workers as render ahead: one renders while the trainer waits on
            # another's chunk (both at the lowest priority, out of the trainer's way otherwise)
            self.fresh_examples = FreshExamples(self.fresh, self.train_store.modality_table,
                                                workers=max(1, self.fresh_ahead))  # fmt: skip
            docs = fresh_sources(self.train_store, self.fresh_examples)
        self.sampler = self.sampler_factory(
            source_sizes(docs), source_modalities=source_modalities(docs)
        )
        rank, world = self._rank_world()
        self.stream = MixtureStream(
            docs, self.sampler, self.pad_id, context=self.context, batch_size=self.batch_size,
            buffer_size=self.buffer_size, split_spans=self.split_spans, seed=self.seed,
            rank=rank, world_size=world,
        )  # fmt: skip
        self.iterable = StreamIterable(self.stream)
        if self.fresh_examples is not None and self.fresh_ahead > 0:
            self._render_ahead(docs, world)

    def _render_ahead(self, docs: dict[str, Any], world: int) -> None:
        """``fresh_ahead``: render what the fit will read while the cores are free."""
        steps = getattr(self.trainer, "max_steps", -1) if self.trainer is not None else -1
        if world > 1 or steps is None or steps < 1:  # DDP ranks would render the same chunks
            return
        positions = steps * self.batch_size * self.context
        wanted = expected_documents(docs, self.sampler.probabilities(), positions)
        total = sum(wanted.values())
        if total > AHEAD_MAX_DOCUMENTS:  # a long run: its first documents, the worker the rest
            wanted = {n: -(-k * AHEAD_MAX_DOCUMENTS // total) for n, k in wanted.items()}
        start = time.perf_counter()
        rendered = self.fresh_examples.render_ahead(wanted)
        if rendered:
            self.ahead_seconds = time.perf_counter() - start
            log.info("rendered %d chunks of fresh examples ahead in %d processes (%.0f s)",
                     rendered, self.fresh_ahead, self.ahead_seconds)  # fmt: skip

    def teardown(self, stage: str | None = None) -> None:
        if self.fresh_examples is not None:  # stop the worker; a later read starts another
            if self.fresh_examples.streamed:
                log.info("the fresh-example workers rendered %d chunks beside the trainer",
                         self.fresh_examples.streamed)  # fmt: skip
            self.fresh_examples.close()

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

    # -- state (checkpointed by Lightning) ------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"version": 1, "stream": state}``: the stream's position, buffer, generator and
        sampler (``MixtureStream.state_dict``); under DDP ``{"ranks": [rank 0, rank 1, ...]}``,
        gathered from every rank (Lightning calls this on every rank when it saves)."""
        if self.stream is None:
            return {}
        return {"version": STATE_VERSION, "stream": self.stream.state_dict(gather=_gatherer())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Put the stream (and its sampler) back where ``state`` left them.

        Also reads what checkpoints written before the data module kept its own state hold
        (``BalancedLM`` moves their ``balance.stream`` and ``balance.sampler`` here as
        ``{"legacy": ...}``): the stream as it was when the last batch was drawn and the sampler
        one update newer, which goes in last. Those hold rank 0's stream only, so a DDP run
        cannot resume from them exactly (``DataError``)."""
        if not state:
            return
        if self.stream is None:
            raise DataError("StoreDataModule.load_state_dict needs setup() first")
        legacy = state.get("legacy")
        if legacy is not None:
            if legacy.get("stream") is not None:
                self.stream.load_state_dict(legacy["stream"])
            if legacy.get("sampler") is not None:
                self.stream.sampler.load_state_dict(legacy["sampler"])
            return
        if state.get("version") != STATE_VERSION:
            raise DataError(
                f"data module state of version {state.get('version')}, this code reads "
                f"{STATE_VERSION}"
            )
        self.stream.load_state_dict(state["stream"])


def _gatherer() -> Callable[[Any], Sequence[Any]] | None:
    """Every rank's object, in rank order (``all_gather_object``); ``None`` on one process."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None

    def gather(obj: Any) -> list[Any]:
        out: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(out, obj)
        return out

    return gather


class SamplerFeedback(L.Callback):
    """After every training step, feed the step's per-modality losses to the data's sampler.

    Reads ``pl_module.step_losses`` (modality → mean loss of the step, all-reduced over ranks, and
    ``contrastive`` when that objective ran; ``None`` for a skipped step) and updates ``trainer.datamodule.sampler``, then logs
    ``sampling/prob/<source>``. The next batch is drawn after this (the training step pulls it),
    so an adaptive sampler's update counts from the next batch on. A data module without a
    sampler, or a module without ``step_losses``, makes it do nothing. ``tmm-train`` adds it when
    the configured callbacks lack it.
    """

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sampler = getattr(trainer.datamodule, "sampler", None)
        losses = getattr(pl_module, "step_losses", None)
        if sampler is None or not losses:
            return
        sampler.update(losses)
        probs = {f"sampling/prob/{s}": float(p) for s, p in sampler.probabilities().items()}
        pl_module.log_dict(probs, on_step=True, on_epoch=False, batch_size=1)
