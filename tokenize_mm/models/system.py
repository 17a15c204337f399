"""``BalancedLM``: the LightningModule that trains a ``DecoderLM`` without letting a modality dominate.

Each step (docs/architecture.md §6): the trunk's final hidden states h (B, L, D) predict the next
token; the cross-entropy of every target position is grouped by the target's modality into L_m
(mean over its N_m positions), the loss weighting combines them, and one backward pass measures
each modality's gradient share at h (the head is position-wise and the modalities own disjoint
rows of ∂L/∂h, so masking the rows by modality gives every g_m exactly; ``grad_share`` rescales
those rows in the same pass). Logged as ``stage/quantity/modality``: ``train/loss/<m>``,
``train/acc/<m>``, ``train/tokens/<m>``, ``train/token_share/<m>``, ``train/loss_share/<m>``,
``train/grad_share/<m>``, ``train/weight/<m>``, ``train/dominance`` (max g / min g): written to the
trainer's loggers directly (``step_metrics``; Lightning's ``self.log`` costs about 1 ms a metric on
a CPU), under the step Lightning gives its own rows.

The module knows nothing of the data: after each step it leaves the all-reduced per-modality
losses (and the contrastive objective's, when it ran) in ``step_losses``, and the ``SamplerFeedback`` callback (``tokenize_mm.data.datamodule``)
hands them to the data module's sampler. The data position and the sampler are checkpointed by the
data module (``StoreDataModule.state_dict``); this module's checkpoint entry ``balance`` holds only
the layout fingerprint.

Distributed: token counts, loss sums and gradient norms are all-reduced (sums over ranks) before a
weighting or sampler sees them, so every rank holds the same state (two all-reduces a step: the
forward's statistics packed in one tensor; after the backward, the gradient norms with the loss's
finiteness). One host read a step: the weights come from ``weighting.weight_vector`` of the counts
(and mean losses) still on the device, and the statistics join the after-backward read; only a
weighting that is not ``combines_on_device`` (GradNorm at the weights of a compiled model) has them
read before its ``combine``. Each rank's
loss for the gradient is its local sum over the *global* count times the world size, so DDP's
gradient average is the gradient of the global mean. A non-finite loss on any rank skips the step on every rank and
is counted (``train/skipped_steps``): every rank runs its backward, then drops its gradients, so it
never reaches the weights, the optimizer state, or a balancer (the skipped batch still advances
``global_step`` and the learning-rate schedule).

Targets that are special tokens (eos) are not trained: every loss belongs to a modality.

Contrastive alignment (``contrastive=ContrastiveHead(...)``, ``models/contrastive.py``): a second
pass of the model reads every span alone (``isolate_modalities``), the spans are pooled per
document and modality, and CLIP's symmetric InfoNCE over the paired spans becomes one more
objective, ``contrastive``, beside the modalities: the weighting combines it like any other (it
must be built over ``OBJECTIVES``), its gradient at the isolated hidden states is measured (and,
under ``grad_share``, rescaled) like a modality's rows, and it is logged as
``train/loss/contrastive``, ``train/weight/contrastive``, ``train/grad_share/contrastive``,
``train/loss_share/contrastive`` (w_c L_c over Σ w L, with the effective weights),
``train/pairs/contrastive`` and ``train/logit_scale``; ``val/loss/contrastive`` per pair. Its
count for ``token_mean`` is the number of (document, modality pair) pairs. With
``contrastive.momentum`` > 0 the keys come from ``key_encoder`` (``models/momentum.py``), an EMA of
the model updated after every optimizer step (in the state dict, not in a trained-model folder);
the head's memory of past keys (``contrastive.memory_size``) is saved in the checkpoint as
``contrastive_memory`` and restored on resume. Validation scores the online model alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from tokenize_mm.balance.split_grad import SplitWeightGrad
from tokenize_mm.balance.weighting import LossWeighting
from tokenize_mm.core.errors import CheckpointError, ConfigError
from tokenize_mm.core.modalities import CONTRASTIVE, MODALITIES, MODALITY_IDS, SPECIAL_MODALITY
from tokenize_mm.core.schedules import warmup_cosine
from tokenize_mm.models.contrastive import ContrastiveHead
from tokenize_mm.models.momentum import MomentumEncoder
from tokenize_mm.models.sparse_attention import causal_rows
from tokenize_mm.models.transformer import DecoderLM

#: What a weighting is built over when the contrastive objective is on.
OBJECTIVES = (*MODALITIES, CONTRASTIVE)

#: AdamW as in GPT-style training; ``conf/optimizer/adamw.yaml`` is the main job's.
DEFAULT_OPTIMIZER = partial(torch.optim.AdamW, lr=3e-4, weight_decay=0.1, betas=(0.9, 0.95))
#: Warm-up then cosine decay over 1000 steps; ``conf/scheduler/warmup_cosine.yaml`` ties it to
#: ``trainer.max_steps``.
DEFAULT_SCHEDULER = partial(warmup_cosine, max_steps=1000)


class BalancedLM(L.LightningModule):
    """Train ``model`` on packed batches (``tokenize_mm.data.Batch``).

    Args:
        model: the decoder.
        weighting: how per-modality losses combine (``tokenize_mm.balance.weighting``).
        optimizer: builds the optimizer from parameter groups (Hydra's ``_partial_``, e.g.
            ``partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.1)``). Its ``weight_decay``
            applies to the matrices; biases, norms and the weighting's parameters get none.
        scheduler: turns the optimizer into Lightning's optimizer config (``configure_optimizers``'
            return value), e.g. ``partial(warmup_cosine, max_steps=1000)``; ``None``: a constant
            learning rate.
        layout_fingerprint: the VocabLayout fingerprint of the tokens; saved in checkpoints and
            checked against the data module's store.
        contrastive: the contrastive objective's projections and temperature (``None``: off);
            ``weighting`` must then be built over ``OBJECTIVES``.

    Raises:
        ConfigError: ``contrastive`` is given and ``weighting`` does not know the objective, or
            its sizes do not match the model.
    """

    def __init__(
        self,
        model: DecoderLM,
        weighting: LossWeighting,
        optimizer: Callable[[Iterable[dict]], torch.optim.Optimizer] = DEFAULT_OPTIMIZER,
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = DEFAULT_SCHEDULER,
        layout_fingerprint: str | None = None,
        contrastive: ContrastiveHead | None = None,
    ):
        super().__init__()
        if contrastive is not None:
            if CONTRASTIVE not in weighting.modalities:
                raise ConfigError(
                    f"the contrastive objective needs a weighting built over {OBJECTIVES}, this "
                    f"one weighs {weighting.modalities}: build it with modalities={OBJECTIVES}"
                )
            if contrastive.proj[0].in_features != model.d_model or (
                contrastive.num_modalities != len(MODALITIES)
            ):
                raise ConfigError(
                    f"the contrastive head reads {contrastive.proj[0].in_features}-d states of "
                    f"{contrastive.num_modalities} modalities, the model has d_model="
                    f"{model.d_model} and {len(MODALITIES)} modalities"
                )
        self.model, self.weighting, self.contrastive = model, weighting, contrastive
        # The weighting's state stays on the CPU (balance/weighting.py) and every rank computes
        # the same from all-reduced statistics: DDP neither broadcasts it nor could over NCCL.
        self._ddp_params_and_buffers_to_ignore = [
            f"weighting.{name}" for name, _ in weighting.named_buffers()
        ]
        #: the momentum encoder of the contrastive keys (``contrastive.momentum`` > 0), else None
        self.key_encoder = (
            MomentumEncoder(model, contrastive)
            if contrastive is not None and contrastive.momentum > 0
            else None
        )
        self.objectives = OBJECTIVES if contrastive is not None else MODALITIES
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.layout_fingerprint = layout_fingerprint
        self.register_buffer("skipped_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("dominance_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("dominance_count", torch.zeros((), dtype=torch.long))
        self._grad_sq: dict[str, torch.Tensor] = {}
        self._stats: dict[str, Any] = {}
        #: the step's summed forward statistics and weights while their read waits for the
        #: after-backward read (``weighting.combines_on_device``), else None
        self._table: torch.Tensor | None = None
        self._device_weights: torch.Tensor | None = None
        self._total: torch.Tensor | None = None  # the step's loss, detached
        #: (sum, count) of the dominance buffers on the host, so that their mean is not read
        #: from the device every step; None until the first step and after a state dict load
        self._dominance_host: tuple[float, int] | None = None
        self.register_load_state_dict_post_hook(_forget_host_dominance)
        #: GradNorm at the weights: the step's per-modality split of the shared layer's gradient
        self._shared_split: SplitWeightGrad | None = None
        #: (rows, row length) of the last training batch (``cli/throughput.py`` counts them)
        self.last_batch_shape: tuple[int, ...] | None = None
        #: modality → the last step's mean loss, all-reduced over ranks (``None`` after a skipped
        #: step): what ``SamplerFeedback`` gives the sampler.
        self.step_losses: dict[str, float] | None = None
        #: the last step's balance metrics (``train/loss/<m>``, ``train/grad_share/<m>``, ...),
        #: as the loggers receive them
        self.step_metrics: dict[str, float] = {}

    @property
    def _batch_size(self) -> int:
        """Rows of the last training batch (what ``self.log`` averages over)."""
        return self.last_batch_shape[0] if self.last_batch_shape else 1

    # -- shared forward ----------------------------------------------------------------------
    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over ranks (identity on one process)."""
        trainer = self._trainer  # None when not attached (``self.trainer`` would raise)
        if trainer is not None and trainer.world_size > 1:
            return trainer.strategy.reduce(x, reduce_op="sum")
        return x

    def _world(self) -> int:
        return self._trainer.world_size if self._trainer is not None else 1

    def modality_losses(self, batch, single_document_rows: bool | None = None) -> dict[str, Any]:
        """Forward a batch → hidden states, per-position CE and per-modality sums and counts.
        ``single_document_rows``: ``causal_rows`` of the batch, if known (``DecoderLM.forward``)."""
        hidden = self.model(batch.tokens, batch.modality, batch.positions, batch.segment_ids,
                            single_document_rows=single_document_rows)  # fmt: skip
        target = batch.tokens[:, 1:]
        target_modality = batch.modality[:, 1:].long()
        valid = batch.target_mask()[:, :-1]
        logits = self.model.logits(hidden[:, :-1], target_modality)
        # over (B (L-1), V) rows: the class dimension contiguous (3.5 times faster forward and
        # backward on a CPU than over the transposed (B, V, L-1))
        ce = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), reduction="none")
        ce = ce.view(target.shape)  # (B, L-1)
        # top-1 as "the target's logit is the largest" (amax, not argmax: 7 times cheaper; an
        # exact tie counts as a hit)
        correct = logits.gather(-1, target[..., None])[..., 0] >= logits.amax(-1)
        sums, counts, hits = {}, {}, {}
        for m in MODALITIES:
            mask = valid & (target_modality == MODALITY_IDS[m])
            sums[m] = (ce * mask).sum()
            counts[m] = mask.sum().to(torch.float32)
            hits[m] = (correct & mask).sum().to(torch.float32)
        special = torch.full_like(target_modality, SPECIAL_MODALITY)
        row_modality = torch.where(valid, target_modality, special)
        # the last position has no target
        row_modality = F.pad(row_modality, (0, 1), value=SPECIAL_MODALITY)
        return {"hidden": hidden, "sums": sums, "counts": counts, "hits": hits,
                "row_modality": row_modality}  # fmt: skip

    # -- training -------------------------------------------------------------------------------
    def training_step(self, dataloader_iter):
        # Taking the iterator (not a batch) stops Lightning from fetching a batch ahead: the next
        # batch is drawn only now, after the last step's sampler update, as it is after a resume.
        batch, _, _ = next(dataloader_iter)
        single = causal_rows(batch.segment_ids)  # on the host copy: no read of the device
        batch = batch.to(self.device)
        self.last_batch_shape = tuple(int(n) for n in batch.tokens.shape)
        self.step_losses = None
        shared = self._watch_shared()  # GradNorm at the weights: what its norms are read from
        try:
            out = self.modality_losses(batch, single_document_rows=single)
            aligned = self.contrastive_loss(batch) if self.contrastive is not None else None
        finally:
            if shared is not None:
                shared.remove()
        table = self._forward_table(out, aligned)  # one all-reduce; read below or deferred
        # (GradNorm at the weights of a compiled model runs its extra backward in ``combine``)
        if self.weighting.combines_on_device and (shared is not None or not self._shared_layer()):
            # read after the backward with the gradient norms: one host read a step
            total, stats = self._combine_on_device(out, aligned, table), {}
            self._table = table
        else:  # a weighting that combines host numbers: the statistics are read now
            stats = self._table_stats(table.tolist(), aligned is not None)
            total = self._combine_on_host(out, aligned, stats, shared)
            self._table = None
        # Whether the loss is finite is read after the backward, with the gradient norms: every
        # rank runs its backward, then all skip the optimizer step together (on_after_backward).
        self._total = total.detach()
        self._grad_sq = {}
        if shared is not None:  # the groups of the shared layer's first call, for its backward
            shared.rows = out["row_modality"]
        self._watch_hidden(out["hidden"], out["row_modality"])
        self._stats = stats
        # (its pairs are not known yet when the read is deferred: a step without any gets zeros)
        if aligned is not None and (self._table is not None or stats["pairs"] > 0):
            self._watch_contrastive(aligned["hidden"])
        return total

    def _forward_table(self, out: Mapping[str, Any], aligned: Mapping[str, Any] | None):
        """The step's forward statistics summed over ranks in one all-reduce, still on the device:
        (M, 3) float64, a row (loss sum, count, hits) per modality, and with ``aligned`` one more
        row (pairs, loss, 0) for the contrastive objective."""
        rows = [torch.stack([out["sums"][m].detach(), out["counts"][m], out["hits"][m]]).double()
                for m in MODALITIES]  # fmt: skip
        if aligned is not None:
            rows.append(torch.stack([aligned["pairs"], aligned["loss"].detach(),
                                     torch.zeros_like(aligned["pairs"])]).double())  # fmt: skip
        return self._reduce(torch.stack(rows))

    def _table_stats(self, table: list[list[float]], contrastive: bool) -> dict[str, Any]:
        """``_forward_table`` as read to the host → ``{"counts", "sums", "hits"}`` (modality →
        float), ``"pairs"`` (the contrastive objective's (document, pair) pairs) and
        ``"contrastive"`` (its global loss: each rank's loss is its share times the world size)."""
        stats: dict[str, Any] = {
            key: {m: table[i][j] for i, m in enumerate(MODALITIES)}
            for j, key in enumerate(("sums", "counts", "hits"))
        }
        pairs, loss, _ = table[-1] if contrastive else (0.0, 0.0, 0.0)
        stats["pairs"], stats["contrastive"] = pairs, loss / self._world()
        return stats

    def _combine_on_device(self, out: Mapping[str, Any], aligned: Mapping[str, Any] | None,
                           table: torch.Tensor) -> torch.Tensor:  # fmt: skip
        """The weighted total with nothing read: ``weight_vector`` of the global counts (and
        global mean losses, for a weighting that ``uses_mean_losses``) still on the device, plus
        ``offset_vector``'s terms; each objective's loss is this rank's sum over the global count
        times the world size; absent objectives (count 0) are masked out. The weights wait in
        ``_device_weights`` for the after-backward read."""
        world = self._world()
        count = {m: table[i, 1] for i, m in enumerate(MODALITIES)}
        loss = {m: out["sums"][m] * (world / count[m].clamp(min=1)).float() for m in MODALITIES}
        if aligned is not None:
            count[CONTRASTIVE], loss[CONTRASTIVE] = table[-1, 0], aligned["loss"]
        names = self.weighting.modalities
        zero = table.new_zeros(())
        counts = torch.stack([count.get(m, zero) for m in names])
        losses = torch.stack([loss[m] if m in loss else zero.float() for m in names])
        means = None
        if self.weighting.uses_mean_losses:  # the global means (FAMO), as set_mean_losses gives
            mean = {m: table[i, 0] / count[m].clamp(min=1) for i, m in enumerate(MODALITIES)}
            if aligned is not None:
                mean[CONTRASTIVE] = table[-1, 1] / world
            means = torch.stack([mean.get(m, zero) for m in names])
        weights = self.weighting.weight_vector(counts, means)
        terms = weights.to(losses.dtype) * losses
        offset = self.weighting.offset_vector(counts)
        if offset is not None:
            terms = terms + offset.to(losses.dtype)
        self._device_weights = weights.detach()
        # absent objectives stay in the graph with a zero (DDP wants every parameter used)
        return torch.where(counts > 0, terms, 0.0).sum()

    def _combine_on_host(self, out: Mapping[str, Any], aligned: Mapping[str, Any] | None,
                         stats: Mapping[str, Any], shared) -> torch.Tensor:  # fmt: skip
        """The weighted total through ``weighting.combine`` on the read statistics: present
        objectives only, FAMO's global mean losses first (``set_mean_losses``)."""
        counts: dict[str, float] = dict(stats["counts"])
        world = self._world()
        losses = {m: out["sums"][m] * (world / counts[m]) for m in MODALITIES if counts[m] > 0}
        if aligned is not None:
            counts[CONTRASTIVE] = stats["pairs"]
            if stats["pairs"] > 0:
                losses[CONTRASTIVE] = aligned["loss"]
        means = {m: stats["sums"][m] / counts[m] for m in MODALITIES if counts[m] > 0}
        if CONTRASTIVE in losses:
            means[CONTRASTIVE] = stats["contrastive"]
        self.weighting.set_mean_losses(means)  # the global values; `losses` are this rank's
        total = self.weighting.combine(
            losses, counts, shared=[] if shared is not None else self._shared_layer()
        )
        if aligned is not None and CONTRASTIVE not in losses:  # no pair on any rank: a zero
            total = total + aligned["loss"] * 0.0  # that keeps the head in the graph (DDP)
        return total

    def _shared_name(self) -> str:
        """The name of GradNorm's shared layer (``measure_at="weights"``): the trunk's last
        residual output projection (a ``Linear``), in ``self.model``."""
        names = [n for n, _ in self.model.named_parameters() if n.endswith(".out.weight")]
        return names[-1].removesuffix(".weight")

    def _shared_layer(self) -> list[torch.Tensor]:
        """GradNorm's shared layer's weight, for ``combine``'s extra backward per objective (the
        compiled model's path; see ``_watch_shared``)."""
        if not self.weighting.needs_shared:
            return []
        return [self.model.get_submodule(self._shared_name()).weight]

    def _watch_shared(self) -> SplitWeightGrad | None:
        """GradNorm at the weights without an extra backward: while the step's forward runs, the
        shared layer W (``_shared_name``) computes its weight gradient in the step's own backward
        block by block, one block per target modality (``balance/split_grad.py``: the same
        products the backward runs anyway, plus one gather of the rows). Exact, because nothing
        after W mixes positions in the language-model pass (the MLP, a residual add, the final
        norm and the head are per position, so row t of ∂L/∂y is position t's loss alone) and the
        contrastive pass is a call of its own. Returns the split, or ``None`` when the weighting
        does not measure at the weights or the model is compiled (then ``combine`` runs the extra
        backward per objective)."""
        self._shared_split: SplitWeightGrad | None = None
        compiled = getattr(self.model, "_compiled_call_impl", None) is not None
        if not self.weighting.needs_shared or compiled or not torch.is_grad_enabled():
            return None
        layer = self.model.get_submodule(self._shared_name())
        self._shared_split = SplitWeightGrad(layer, groups=SPECIAL_MODALITY + 1).attach()
        return self._shared_split

    def _shared_norms(self, objectives: Iterable[str], values: list[float]) -> dict[str, float]:
        """Each objective's ||∇_W (w_m L_m)|| from the step's backward (this rank's gradient, as
        the extra backward gave): ``values`` are the split's block norms as read with the step's
        other figures (``_after_backward_read``), the language-model call's by target modality,
        then the contrastive call's whole."""
        if not values:
            return {}
        norms: dict[str, float] = {}
        for m in objectives:
            if m == CONTRASTIVE:
                if len(values) > SPECIAL_MODALITY + 1:
                    norms[m] = values[SPECIAL_MODALITY + 1]
            else:
                norms[m] = values[MODALITY_IDS[m]]
        return norms

    def contrastive_loss(self, batch, local: bool = False) -> dict[str, Any]:
        """The isolated pass → ``{"loss", "pairs", "hidden"}`` of the batch's paired spans:
        ``loss`` as ``ContrastiveHead`` returns it on this rank, ``pairs`` this rank's (the
        training step sums them over ranks with its other statistics). With ``local``
        (validation, where ranks may see different numbers of batches) no collective runs: the
        negatives are this rank's batch's."""
        hidden = self.contrastive.read(self.model, batch.tokens, batch.modality, batch.positions,
                                       batch.segment_ids)  # fmt: skip
        pooled, present = self.contrastive.pool(hidden, batch.modality, batch.segment_ids)
        world = 1 if local else self._world()
        rank = self.trainer.global_rank if world > 1 else 0
        keys = None
        if self.key_encoder is not None and not local:  # validation scores the online model
            keys = self.key_encoder.keys(batch.tokens, batch.modality, batch.positions,
                                         batch.segment_ids)  # fmt: skip
        loss, pairs = self.contrastive(pooled, present, keys=keys, world=world, rank=rank)
        return {"loss": loss, "pairs": torch.tensor(float(pairs), device=hidden.device),
                "hidden": hidden}  # fmt: skip

    def _watch_contrastive(self, hidden: torch.Tensor) -> None:
        """Hook on the isolated pass's h: the contrastive objective's gradient, rescaled as the
        weighting rescales an objective's rows, and its squared norm."""
        if not hidden.requires_grad:
            return
        index = self.weighting.modalities.index(CONTRASTIVE)

        def hook(grad: torch.Tensor) -> torch.Tensor:
            rows = torch.full(grad.shape[:2], index, device=grad.device)
            grad = self.weighting.rescale_grad(grad, rows)
            self._grad_sq[CONTRASTIVE] = grad.float().pow(2).sum().detach()
            return grad

        hidden.register_hook(hook)

    def _watch_hidden(self, hidden: torch.Tensor, row_modality: torch.Tensor) -> None:
        """Hook on h: rescale rows (grad_share) and keep each modality's squared gradient norm."""
        if not hidden.requires_grad:
            return

        def hook(grad: torch.Tensor) -> torch.Tensor:
            grad = self.weighting.rescale_grad(grad, row_modality)
            # each row's squared norm, summed per modality id in one pass (special rows: id 3)
            sq = grad.detach().float().pow(2).sum(-1).flatten()
            ids = row_modality.flatten().long()
            per_id = torch.zeros(SPECIAL_MODALITY + 1, device=sq.device).index_add_(0, ids, sq)
            for m in MODALITIES:
                self._grad_sq[m] = per_id[MODALITY_IDS[m]]
            return grad

        hidden.register_hook(hook)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Lightning logs a step's metrics under its count of optimizer steps, which equals
        # ``global_step`` when a step starts; ``_write_metrics`` logs under ``global_step``. After a
        # resume from a checkpoint saved when SIGTERM stopped a step that had just validated,
        # Lightning finishes that validation again and counts the step twice: every later row
        # would be one ahead, and the report would split each step in two. Kept equal here.
        loop = self.trainer.fit_loop.epoch_loop
        if getattr(loop, "_batches_that_stepped", self.global_step) != self.global_step:
            loop._batches_that_stepped = self.global_step

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.key_encoder is not None:  # after the optimizer step: θ' ← m θ' + (1 - m) θ
            self.key_encoder.update(self.model, self.contrastive)

    def on_after_backward(self) -> None:
        if not self._stats and self._table is None:
            return
        after = self._after_backward_read()
        if self._table is not None:  # the statistics and weights read with the gradient norms
            self._stats = self._table_stats(after["table"], self.contrastive is not None)
            counts = {**self._stats["counts"], CONTRASTIVE: self._stats["pairs"]}
            self.weighting.record({m: w for m, w in zip(self.weighting.modalities, after["weights"],
                                                        strict=True) if counts.get(m, 0) > 0})  # fmt: skip
            self._table = None
        if after["finite"] < self._world():  # any rank: skip everywhere, count it
            self._skip_step()
            return
        self.log("train/loss", after["loss"], on_step=True, prog_bar=True,
                 batch_size=self._batch_size)  # fmt: skip
        counts, sums, hits = self._stats["counts"], self._stats["sums"], self._stats["hits"]
        present = [m for m in MODALITIES if counts[m] > 0]
        losses = {m: sums[m] / counts[m] for m in present}
        if self._stats["pairs"] > 0:
            losses[CONTRASTIVE] = self._stats["contrastive"]
        self.step_losses = dict(losses)  # the sampler's: every objective seen this step
        if self.contrastive is not None:
            counts = {**counts, CONTRASTIVE: self._stats["pairs"]}
        grad_sq = after["grad_sq"]
        if self._shared_split is not None:  # GradNorm at the weights, off this step's backward
            self.weighting.observe_shared(self._shared_norms(losses, after["shared"]))
            self._shared_split = None
        self.weighting.observe(losses, grad_sq)
        self._log_balance(losses, counts, hits, grad_sq, present, after["logit_scale"])

    def _after_backward_read(self) -> dict[str, Any]:
        """What the step needs after its backward, in one all-reduce and one host read: every
        objective's squared gradient norm and the number of ranks whose loss was finite (summed
        over ranks), then this rank's loss, the contrastive logit scale and GradNorm's shared-layer
        norms (this rank's)."""
        zero = torch.zeros((), device=self.device)
        summed = [self._grad_sq.get(m, zero).float() for m in self.objectives]
        summed.append(torch.isfinite(self._total).float())
        local = [self._total.float().reshape(1)]
        if self.contrastive is not None:
            local.append(self.contrastive.logit_scale.detach().exp().float().reshape(1))
        blocks = self._shared_split.norms() if self._shared_split is not None else []
        shared = []  # the language-model call's blocks, then the contrastive call's if it ran
        if blocks and len(blocks[0]):
            shared = [b.float() for b in blocks[:2] if len(b)]
        deferred = []  # the forward's statistics and weights, when the combination needed none
        if self._table is not None:
            deferred = [self._table.flatten(), self._device_weights.reshape(-1)]
        parts = [self._reduce(torch.stack(summed)), *local, *shared, *deferred]
        values = torch.cat([p.double() for p in parts]).tolist()
        n = len(self.objectives)
        after: dict[str, Any] = {
            "grad_sq": dict(zip(self.objectives, values[:n], strict=True)),
            "finite": values[n],
            "loss": values[n + 1],
            "logit_scale": values[n + 2] if self.contrastive is not None else None,
        }
        start = n + 1 + len(local)
        end = start + sum(len(p) for p in shared)
        after["shared"] = values[start:end]
        if deferred:
            rows, width = self._table.shape
            after["table"] = [values[end + i * width : end + (i + 1) * width] for i in range(rows)]
            after["weights"] = values[end + rows * width :]
        return after

    def _skip_step(self) -> None:
        """A non-finite loss on some rank: no rank's optimizer step sees this step's gradients
        (they are dropped: an optimizer skips a parameter without one), no balancer sees it,
        and it is counted."""
        self.skipped_steps += 1
        self.log("train/skipped_steps", self.skipped_steps.float(), on_step=True,
                 batch_size=self._batch_size)  # fmt: skip
        for param in self.parameters():
            param.grad = None
        self._stats, self._shared_split, self._table = {}, None, None

    def _log_balance(self, losses, counts, hits, grad_sq, present, logit_scale=None) -> None:
        total_tokens = sum(float(counts[m]) for m in present) or 1.0
        shares = {m: float(counts[m]) / total_tokens for m in present}
        weighted = sum(shares[m] * losses[m] for m in present) or 1.0
        norms = {m: grad_sq[m] ** 0.5 for m in present}
        if CONTRASTIVE in losses:
            norms[CONTRASTIVE] = grad_sq[CONTRASTIVE] ** 0.5
        norm_total = sum(norms.values()) or 1.0
        metrics: dict[str, float] = {}
        weights = self.weighting.weights()
        for m in MODALITIES:
            metrics[f"train/tokens/{m}"] = counts[m]
            metrics[f"train/weight/{m}"] = weights[m]
            if m in present:
                metrics[f"train/loss/{m}"] = losses[m]
                metrics[f"train/acc/{m}"] = hits[m] / counts[m]
                metrics[f"train/token_share/{m}"] = shares[m]
                metrics[f"train/loss_share/{m}"] = shares[m] * losses[m] / weighted
                metrics[f"train/grad_share/{m}"] = norms[m] / norm_total
        if CONTRASTIVE in losses:
            self._log_contrastive(losses, counts, grad_sq, norms, weights, metrics)
        if logit_scale is not None and CONTRASTIVE in losses:
            metrics["train/logit_scale"] = logit_scale
        positive = [n for n in norms.values() if n > 0]
        if len(positive) > 1:
            dominance = max(positive) / min(positive)  # over the objectives present
            if self._dominance_host is None:  # the buffers' values, read once (and after a load)
                self._dominance_host = (float(self.dominance_sum), int(self.dominance_count))
            total, count = self._dominance_host
            self._dominance_host = (total + dominance, count + 1)
            self.dominance_sum += dominance  # the checkpointed buffers: device ops, never read
            self.dominance_count += 1
            metrics["train/dominance"] = dominance
            metrics["train/dominance_mean"] = (total + dominance) / (count + 1)
        self._write_metrics(metrics)

    def _write_metrics(self, metrics: dict[str, float]) -> None:
        """The step's balance metrics (``step_metrics``), written straight to the trainer's loggers
        under the row Lightning gives the step's own metrics, every ``log_every_n_steps`` steps.
        Not through ``self.log``: Lightning moves a logged metric's state to the device on every
        call, about 1 ms a metric on a CPU, and these are some 25 a step (measured with
        ``benchmarks/step_cost.py``). Loggers write on rank 0 only."""
        self.step_metrics = metrics
        trainer = self._trainer
        if trainer is None or not trainer.loggers or not trainer.log_every_n_steps:
            return
        if (self.global_step + 1) % trainer.log_every_n_steps and not trainer.should_stop:
            return
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def _log_contrastive(self, losses, counts, grad_sq, norms, weights, metrics) -> None:
        present = [m for m in self.objectives if m in losses]
        weighted = sum(weights[m] * losses[m] for m in present) or 1.0
        metrics[f"train/loss/{CONTRASTIVE}"] = losses[CONTRASTIVE]
        metrics[f"train/weight/{CONTRASTIVE}"] = weights[CONTRASTIVE]
        metrics[f"train/pairs/{CONTRASTIVE}"] = counts[CONTRASTIVE]
        metrics[f"train/loss_share/{CONTRASTIVE}"] = (
            weights[CONTRASTIVE] * losses[CONTRASTIVE] / weighted
        )
        metrics[f"train/grad_share/{CONTRASTIVE}"] = norms[CONTRASTIVE] / (
            sum(norms.values()) or 1.0
        )

    # -- validation -----------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        # one row per modality, then the contrastive objective's (loss x pairs, pairs, 0)
        rows = len(MODALITIES) + 1
        self._val = torch.zeros(rows, 3, dtype=torch.float64, device=self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        out = self.modality_losses(batch)
        for i, m in enumerate(MODALITIES):  # loss sum, tokens, hits
            self._val[i] += torch.stack([out["sums"][m], out["counts"][m], out["hits"][m]]).double()
        if self.contrastive is not None:
            aligned = self.contrastive_loss(batch, local=True)
            if float(aligned["pairs"]) > 0:
                pairs = aligned["pairs"].double()
                self._val[-1, 0] += aligned["loss"].double() * pairs
                self._val[-1, 1] += pairs

    def on_validation_epoch_end(self) -> None:
        # One all-reduce on every rank, whatever modalities each rank's batches held (logging
        # with sync_dist only where a modality is present would leave the other ranks waiting).
        totals = self._reduce(self._val)
        for i, m in enumerate(MODALITIES):
            loss_sum, count, hits = totals[i].tolist()
            if count > 0:
                self.log(f"val/loss/{m}", loss_sum / count)
                self.log(f"val/acc/{m}", hits / count)
        loss_sum, pairs, _ = totals[-1].tolist()
        if pairs > 0:  # per pair, negatives within each validation batch
            self.log(f"val/loss/{CONTRASTIVE}", loss_sum / pairs)

    # -- optimisation and checkpoints -----------------------------------------------------------
    def configure_optimizers(self):
        params = list(self.model.parameters())
        if self.contrastive is not None:  # projections decay; the temperature does not
            params += list(self.contrastive.parameters())
        decay = [p for p in params if p.requires_grad and p.dim() >= 2]
        no_decay = [p for p in params if p.requires_grad and p.dim() < 2]
        groups = [{"params": decay},  # the optimizer's own weight_decay
                  {"params": no_decay + list(self.weighting.parameters()), "weight_decay": 0.0}]  # fmt: skip
        opt = self.optimizer_factory(groups)
        return opt if self.scheduler_factory is None else self.scheduler_factory(opt)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["balance"] = {"layout_fingerprint": self.layout_fingerprint}
        memory = self.contrastive.memory if self.contrastive is not None else None
        if memory is not None:  # not in the state dict (a model folder holds no memory)
            checkpoint["contrastive_memory"] = memory.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        balance = checkpoint.get("balance", {})
        saved = balance.get("layout_fingerprint")
        if self.layout_fingerprint and saved and saved != self.layout_fingerprint:
            raise CheckpointError(
                f"the checkpoint was trained on tokens of layout {saved[:12]}, this run's tokens "
                f"are laid out by {self.layout_fingerprint[:12]}: resume with the same tokenizers"
            )
        memory = self.contrastive.memory if self.contrastive is not None else None
        if memory is not None and "contrastive_memory" in checkpoint:
            try:
                memory.load_state(checkpoint["contrastive_memory"])
            except ValueError as err:
                raise CheckpointError(str(err)) from err
        self._migrate_data_state(checkpoint, balance)

    def _migrate_data_state(self, checkpoint: dict[str, Any], balance: Mapping[str, Any]) -> None:
        """Checkpoints written before the data module kept its own state hold the stream and the
        sampler in ``balance``: hand them to the data module's entry (Lightning restores the data
        module after this hook, from ``checkpoint[<its class name>]``), which reads them as
        ``{"legacy": {"stream": ..., "sampler": ...}}``."""
        if balance.get("stream") is None and balance.get("sampler") is None:
            return
        datamodule = self._trainer.datamodule if self._trainer is not None else None
        if datamodule is None:
            return
        key = type(datamodule).__qualname__
        if key not in checkpoint:
            checkpoint[key] = {"legacy": {"stream": balance.get("stream"),
                                          "sampler": balance.get("sampler")}}  # fmt: skip


def _forget_host_dominance(module: BalancedLM, incompatible_keys: Any) -> None:
    """After a state dict load: the dominance buffers changed, read them again."""
    module._dominance_host = None
