"""``DecoderLM``: a decoder-only transformer over global token ids, for early or late fusion.

Every modality's tokens live in one vocabulary (``VocabLayout``) and one sequence, and the model
predicts the next id with one softmax, as in early-fusion models such as Chameleon (Chameleon Team
2024, arXiv:2405.09818). A learned *modality embedding*, read from the batch's ``modality`` ids
(text 0, image 1, audio 2, special 3), is added to each token embedding.

- ``fusion="early"``: ``n_layers`` shared blocks over the interleaved sequence.
- ``fusion="late"``: first, each modality id m (special included) has its own ``late_layers``
  blocks, in which a position attends only to earlier positions of its own modality and segment;
  each position keeps the output of its own modality's blocks. Then ``n_layers`` shared blocks.
  Specials (pad, bos, eos; span markers belong to their modality) thus take a path of their own,
  like any modality. Each per-modality stack runs over the whole row and its outputs at other
  modalities' positions are discarded: simple and compile-friendly, at ``num_modalities`` times
  the late stage's compute. With ``n_layers=0`` (late fusion only) there is no shared stack:
  one tower per modality and no cross-attention, the two-tower CLIP baseline's architecture
  (``conf/model/towers_small.yaml``).

With ``image_grid``, image codes also get learnt row and column embeddings (``grid.py``).

The blocks (``attention.py``) are pre-norm RMSNorm / rotary / SwiGLU. ``forward`` returns the
final-normed hidden states (B, L, d_model), the trunk output on which gradient shares are
measured (docs/architecture.md §6); ``logits`` applies the output head. Initialisation follows GPT-2
(Radford et al. 2019) as in nanoGPT: weights N(0, 0.02), residual output projections
N(0, 0.02 / sqrt(2 · depth)) with depth the blocks on a position's path (``late_layers +
n_layers`` under late fusion). The output head is tied to the token embedding by default.

Restricted softmax: the modality of the next position is known from the layout, so the head can
score only the ids of that modality (``allowed_ids_mask``, ``set_allowed_ids``, and
``logits(hidden, target_modality)``), an alternative to the full-vocabulary softmax.

The architecture is one ``DecoderConfig`` (sizes, fusion, head options), the model's constructor
argument beside the vocabulary size: ``DecoderLM(config, vocab_size=layout.vocab_size)``. Named
sizes are the files ``conf/model/<name>.yaml`` (``tiny`` for tests, ``small`` the CPU default,
``base100m`` for GPUs), which the main job's Hydra config instantiates and ``preset(name)`` reads.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import torch
from torch import nn

from tokenize_mm.core.errors import TokenizeMMError
from tokenize_mm.core.modalities import MODALITY_IDS
from tokenize_mm.models.attention import Block, block_mask, rotary_table
from tokenize_mm.models.document_attention import DocumentRuns
from tokenize_mm.models.grid import GridEmbedding
from tokenize_mm.models.sparse_attention import (
    AttentionMask,
    causal_rows,
    flex_block_mask,
    flex_runs,
)
from tokenize_mm.sequence.vocab import VocabLayout

FUSIONS = ("early", "late")
ATTENTIONS = ("dense", "documents", "flex")


class ModelConfigError(TokenizeMMError, ValueError):
    """A model argument (size, fusion, preset name, allowed-ids mask) cannot be used."""


class ModelInputError(TokenizeMMError, ValueError):
    """Tensors given to the model have the wrong shape or are longer than ``max_positions``."""


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """Architecture of ``DecoderLM`` (all but the vocabulary, which the layout gives).

    Attributes:
        d_model: residual width; a multiple of ``n_heads`` with an even head width.
        n_layers: shared blocks (after the per-modality blocks under late fusion; 0 there: no
            shared stack, one tower per modality).
        n_heads: attention heads.
        d_ff: hidden width of the SwiGLU MLP.
        max_positions: longest row L the model accepts (size of the rotary table). Positions
            restart per document and never exceed their row index, so L <= max_positions keeps
            every position in the table.
        num_modalities: modality ids 0 .. num_modalities - 1 (text, image, audio, special).
        fusion: ``"early"`` or ``"late"`` (module docstring).
        late_layers: per-modality blocks under late fusion (ignored under early fusion).
        dropout: dropout on embeddings, attention probabilities and residual branches.
        tie_embeddings: share the output head's weight with the token embedding.
        norm_eps: RMSNorm epsilon.
        rope_base: rotary base (10,000 as in RoFormer).
        restricted_softmax: make ``logits`` score only the ids allowed for the target modality
            when it is given one.
        image_grid: > 0: learnt row and column embeddings for the image codes of a raster of
            this many codes per row (``models/grid.py``, as DALL-E); 0: none.
        attention: ``"dense"``: ``scaled_dot_product_attention`` with a (B, 1, L, L) mask, or
            with none (causal) when every row is one document; ``"documents"``: as dense, but
            packed rows under the plain causal rule run causal attention per document, the
            documents gathered and batched by length (``document_attention.py``; their layout
            read on the host: free on a CPU, one device read on a GPU); ``"flex"``: block-sparse
            ``flex_attention`` from the segment ids, compiled, on a GPU (``sparse_attention.py``;
            no dropout; on a CPU the dense mask, as flex has no CPU backward).

    The sizes have no defaults: named sizes are ``conf/model/<name>.yaml`` (``preset``).

    Raises:
        ModelConfigError: a field is out of range (the message names it).
    """

    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    max_positions: int
    num_modalities: int = 4
    fusion: str = "early"
    late_layers: int = 1
    dropout: float = 0.0
    tie_embeddings: bool = True
    norm_eps: float = 1e-5
    rope_base: float = 10_000.0
    restricted_softmax: bool = False
    image_grid: int = 0
    attention: str = "dense"

    def __post_init__(self) -> None:
        _check_positive(
            d_model=self.d_model, n_heads=self.n_heads, d_ff=self.d_ff,
            max_positions=self.max_positions, num_modalities=self.num_modalities,
            late_layers=self.late_layers if self.fusion == "late" else 1,
        )  # fmt: skip
        fewest = 0 if self.fusion == "late" else 1  # late fusion may be towers only
        if (
            not isinstance(self.n_layers, int)
            or isinstance(self.n_layers, bool)
            or (self.n_layers < fewest)
        ):
            raise ModelConfigError(
                f"n_layers must be an integer >= {fewest} under {self.fusion} fusion, got "
                f"{self.n_layers!r}"
            )
        if self.fusion not in FUSIONS:
            raise ModelConfigError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise ModelConfigError(
                f"d_model {self.d_model} must be a multiple of n_heads {self.n_heads} with an "
                "even head width (rotary positions turn channel pairs)"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ModelConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.attention not in ATTENTIONS:
            raise ModelConfigError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.attention == "flex" and self.dropout > 0:
            raise ModelConfigError(
                f"attention='flex' has no attention dropout; set dropout=0 (got {self.dropout}) "
                "or attention='dense'"
            )
        if (
            isinstance(self.image_grid, bool)
            or not isinstance(self.image_grid, int)
            or (self.image_grid < 0)
        ):
            raise ModelConfigError(
                f"image_grid must be 0 (none) or the image codes per row, got {self.image_grid!r}"
            )


def _sizes_dir() -> Path:
    """``conf/model``: the checkout's, else the copy packaged as ``tokenize_mm/conf``."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "conf" / "model", here.parents[1] / "conf" / "model"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("tokenize_mm configs not found (expected conf/ beside the package)")


def sizes() -> list[str]:
    """The named sizes: the files of ``conf/model``."""
    return sorted(p.stem for p in _sizes_dir().glob("*.yaml"))


def preset(name: str, **overrides: object) -> DecoderConfig:
    """The ``DecoderConfig`` of size ``name``, read from ``conf/model/<name>.yaml`` (the one
    place sizes are written), with ``overrides`` (config fields) replacing its values:
    ``DecoderLM(preset("tiny", fusion="late"), vocab_size=...)``."""
    from omegaconf import OmegaConf

    path = _sizes_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ModelConfigError(f"unknown model size {name!r}; sizes are {sizes()}")
    fields = OmegaConf.to_container(OmegaConf.load(path))
    assert isinstance(fields, dict)
    fields.pop("_target_", None)
    return DecoderConfig(**{**fields, **overrides})  # type: ignore[arg-type]


def allowed_ids_mask(layout: VocabLayout, vocab_size: int | None = None) -> torch.Tensor:
    """Which ids each target modality may predict, for ``DecoderLM.set_allowed_ids``.

    Row m holds the ids whose modality (``layout.modality_of``) is m: its range and its span
    markers (delay_pad for audio); row 3, special, holds pad, bos and eos. The rows partition the
    layout's ids.

    Args:
        layout: the run's vocabulary layout.
        vocab_size: the model's vocabulary, if larger than the layout's (padded for speed); the
            extra ids are allowed for no modality.

    Returns:
        (4, vocab_size) bool, rows in ``MODALITY_IDS`` order.
    """
    size = layout.vocab_size if vocab_size is None else vocab_size
    if size < layout.vocab_size:
        raise ModelConfigError(
            f"vocab_size {size} is smaller than the layout's {layout.vocab_size}; "
            "build the model with at least layout.vocab_size ids"
        )
    owner = layout.modality_of(torch.arange(layout.vocab_size)).long()  # (V_layout,)
    mask = torch.zeros(len(MODALITY_IDS), size, dtype=torch.bool)
    mask[owner, torch.arange(layout.vocab_size)] = True
    return mask


class DecoderLM(nn.Module):
    """Decoder-only transformer over global token ids with modality embeddings.

    Args:
        config: the architecture (``DecoderConfig``; ``preset(name)`` for a named size).
        vocab_size: number of global ids (``VocabLayout.vocab_size`` or more).

    Raises:
        ModelConfigError: ``vocab_size`` is not a positive integer, or ``config`` is no
            ``DecoderConfig``.
    """

    def __init__(self, config: DecoderConfig, vocab_size: int):
        super().__init__()
        if not isinstance(config, DecoderConfig):
            raise ModelConfigError(
                f"DecoderLM takes a DecoderConfig (preset(name) or DecoderConfig(...)), got "
                f"{type(config).__name__}"
            )
        _check_positive(vocab_size=vocab_size)
        c = self.config = config
        self.vocab_size, self.d_model, self.max_positions = vocab_size, c.d_model, c.max_positions
        self.num_modalities, self.fusion = c.num_modalities, c.fusion
        self.restricted_softmax = c.restricted_softmax

        def stack(n: int) -> nn.ModuleList:
            return nn.ModuleList(
                Block(c.d_model, c.n_heads, c.d_ff, c.dropout, c.norm_eps) for _ in range(n)
            )

        self.tok_emb = nn.Embedding(vocab_size, c.d_model)
        self.mod_emb = nn.Embedding(c.num_modalities, c.d_model)
        self.grid_emb = GridEmbedding(c.image_grid, c.d_model) if c.image_grid else None
        self.drop = nn.Dropout(c.dropout)
        n_late = c.late_layers if c.fusion == "late" else 0
        self.late_blocks = nn.ModuleList(
            stack(n_late) for _ in range(c.num_modalities if n_late else 0)
        )
        self.blocks = stack(c.n_layers)
        self.norm = nn.RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        cos, sin = rotary_table(c.max_positions, c.d_model // c.n_heads, c.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        # All True = the full softmax until set_allowed_ids; saved with the weights.
        self.register_buffer(
            "allowed_ids", torch.ones(c.num_modalities, vocab_size, dtype=torch.bool)
        )
        self._init_weights(depth=n_late + c.n_layers)

    def _init_weights(self, depth: int) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
        for name, param in self.named_parameters():
            if name.endswith(".out.weight"):  # attention and MLP outputs into the residual
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * max(depth, 1)))

    def num_parameters(self) -> int:
        """Number of parameters, a tied weight counted once."""
        return sum(p.numel() for p in self.parameters())

    # -- trunk -----------------------------------------------------------------------------------
    def forward(
        self,
        tokens: torch.Tensor,
        modality: torch.Tensor,
        positions: torch.Tensor,
        segment_ids: torch.Tensor,
        branches: torch.Tensor | None = None,
        isolate_modalities: bool = False,
        bidirectional: bool = False,
        single_document_rows: bool | None = None,
    ) -> torch.Tensor:
        """Final-normed hidden states of a packed batch.

        Args:
            tokens: (B, L) global ids in [0, vocab_size).
            modality: (B, L) modality id of each position (any integer dtype).
            positions: (B, L) position within its document, restarting at 0 per segment.
            segment_ids: (B, L) 1, 2, ... per document, 0 at padding.
            branches: (B, L) continuations of a shared prefix (``block_mask``), for scoring:
                a branch's positions continue the prefix's, and a row may then be longer than
                ``max_positions`` as long as every position is below it.
            isolate_modalities: every position sees only positions of its own modality, in
                every block: each span is read as if the document held nothing else (the
                unimodal embeddings that contrastive alignment pools, ``models/contrastive.py``).
            bidirectional: with ``isolate_modalities``, each span is read whole: a position also
                sees the later positions of its span (``ContrastiveHead``'s
                ``span_attention="bidirectional"``; no next-token target may be read off it).
            single_document_rows: ``causal_rows(segment_ids)`` when the caller has it already,
                read off the batch's host copy before it moved (``BalancedLM``): it spares the
                check's read of the device. None: computed here when the causal fast path could
                apply.

        Returns:
            (B, L, d_model) hidden states; position t sees positions s <= t of its segment only
            (with ``bidirectional``, every position of its span). Padding after a row's only
            document may see that document (the causal fast path, ``sparse_attention.py``);
            padding is never a target or pooled.

        Raises:
            ModelInputError: shapes differ or L > max_positions.
            ValueError: ``bidirectional`` without ``isolate_modalities``.
        """
        _check_inputs(tokens.shape, modality, positions, segment_ids,
                      max_positions=self.max_positions, branched=branches is not None)  # fmt: skip
        if bidirectional and not isolate_modalities:
            raise ValueError(
                "bidirectional reading needs isolate_modalities: whole documents are "
                "read causally, or each position would see its own target"
            )
        x = self.embed(tokens, modality)
        if self.grid_emb is not None:
            x = x + self.grid_emb(tokens, modality, segment_ids)
        x = self.late_stage(x, modality, positions, segment_ids, branches, bidirectional)
        mask = self._mask(segment_ids, modality if isolate_modalities else None, branches,
                          bidirectional, single_document_rows)  # fmt: skip
        cos, sin = self._rotary(positions)
        for block in self.blocks:
            x = block(x, mask, cos, sin)
        return self.norm(x)

    def embed(self, tokens: torch.Tensor, modality: torch.Tensor) -> torch.Tensor:
        """Token plus modality embeddings: (B, L) ids and modality ids → (B, L, d_model)."""
        return self.drop(self.tok_emb(tokens) + self.mod_emb(modality.long()))

    def late_stage(
        self,
        x: torch.Tensor,
        modality: torch.Tensor,
        positions: torch.Tensor,
        segment_ids: torch.Tensor,
        branches: torch.Tensor | None = None,
        bidirectional: bool = False,
    ) -> torch.Tensor:
        """The per-modality blocks of late fusion (the identity under early fusion).

        ``x`` (B, L, d_model) embeddings → (B, L, d_model): position t holds the output of its own
        modality's blocks, which saw only earlier positions of that modality in its segment (all
        of them with ``bidirectional``, as ``forward`` reads spans for contrastive embeddings).
        """
        _check_inputs(x.shape[:-1], modality, positions, segment_ids,
                      max_positions=self.max_positions, branched=branches is not None)  # fmt: skip
        if not self.late_blocks:
            return x
        mask = self._mask(segment_ids, modality, branches, bidirectional)
        cos, sin = self._rotary(positions)
        out = x
        for m, blocks in enumerate(self.late_blocks):
            h = x
            for block in blocks:
                h = block(h, mask, cos, sin)
            out = torch.where((modality == m)[..., None], h, out)
        return out

    def _mask(
        self,
        segment_ids: torch.Tensor,
        modality: torch.Tensor | None,
        branches: torch.Tensor | None,
        bidirectional: bool,
        single_document_rows: bool | None = None,
    ) -> AttentionMask:
        """The blocks' attention mask (``block_mask``'s rule) in the form the config asks for: a
        flex ``BlockMask`` (on a GPU); else None (plain causal) when rows are single documents
        and only the causal rule applies; else, with ``attention="documents"`` and only the
        causal rule, the rows' ``DocumentRuns``; else the dense (B, 1, L, L) mask."""
        if self.config.attention == "flex" and flex_runs(segment_ids.device):
            return flex_block_mask(segment_ids, modality, branches, bidirectional)
        if modality is None and branches is None:
            if single_document_rows is None:
                single_document_rows = causal_rows(segment_ids)  # one read of the device
            if single_document_rows:
                return None
            if self.config.attention == "documents":
                runs = DocumentRuns.from_segment_ids(segment_ids)
                if runs is not None:
                    return runs.to(segment_ids.device)  # once, not in every block
        return block_mask(segment_ids, modality, branches, bidirectional=bidirectional)

    def _rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) positions → cos, sin (B, 1, L, head_dim / 2), one per head."""
        return self.rope_cos[positions][:, None], self.rope_sin[positions][:, None]

    # -- head ------------------------------------------------------------------------------------
    def logits(
        self, hidden: torch.Tensor, target_modality: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of every id at every position.

        Args:
            hidden: (..., d_model), usually ``forward``'s (B, L, d_model).
            target_modality: (...) modality id of the token each position predicts (that of the
                next position). Used only when the model has ``restricted_softmax``.

        Returns:
            (..., vocab_size). Under the restricted softmax with ``target_modality`` given, ids
            not allowed for the target modality (``allowed_ids``) score the dtype's most negative
            finite value (masked_fill): their softmax probability is exactly 0 and the allowed
            ids get the full softmax renormalised over them. Finite rather than -inf so that
            ``p · log p`` stays 0 and bf16/fp16 stay NaN-free; the tensor keeps ``hidden``'s dtype
            policy (bf16 under autocast).
        """
        out = self.lm_head(hidden)
        if not self.restricted_softmax or target_modality is None:
            return out
        if target_modality.shape != hidden.shape[:-1]:
            raise ModelInputError(
                f"target_modality must have shape {tuple(hidden.shape[:-1])} (hidden without its "
                f"last axis), got {tuple(target_modality.shape)}"
            )
        allowed = self.allowed_ids[target_modality.long()]  # (..., vocab_size)
        return out.masked_fill(~allowed, torch.finfo(out.dtype).min)

    def set_allowed_ids(self, mask: torch.Tensor) -> None:
        """Set the ids each target modality may predict: (num_modalities, vocab_size) bool, as
        built by ``allowed_ids_mask(layout, model.vocab_size)``.

        Raises:
            ModelConfigError: wrong shape or dtype, or a modality that allows no id.
        """
        shape = (self.num_modalities, self.vocab_size)
        if mask.dtype != torch.bool or tuple(mask.shape) != shape:
            raise ModelConfigError(
                f"allowed ids must be a bool tensor of shape {shape}, got {mask.dtype} of shape "
                f"{tuple(mask.shape)}; build it with allowed_ids_mask(layout, model.vocab_size)"
            )
        empty = [m for m in range(shape[0]) if not bool(mask[m].any())]
        if empty:
            raise ModelConfigError(f"modality ids {empty} allow no token id; every row needs one")
        self.allowed_ids.copy_(mask)


def _check_positive(**sizes: int) -> None:
    for label, value in sizes.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ModelConfigError(f"{label} must be a positive integer, got {value!r}")


def _check_inputs(
    shape: tuple[int, ...], *tensors: torch.Tensor, max_positions: int, branched: bool = False
) -> None:
    """Every tensor has ``shape`` (B, L), and L <= max_positions (shape checks only: no device
    sync; ids out of range fail in the embedding lookup). Branched rows (``block_mask``) may be
    longer: their positions, not their length, must stay below max_positions (one sync)."""
    if len(shape) != 2:
        raise ModelInputError(f"tokens must be (B, L), got shape {tuple(shape)}")
    for name, tensor in zip(("modality", "positions", "segment_ids"), tensors, strict=True):
        if tuple(tensor.shape) != tuple(shape):
            raise ModelInputError(
                f"{name} must have the tokens' shape (B, L) = {tuple(shape)}, got "
                f"{tuple(tensor.shape)}"
            )
    if branched:
        top = int(tensors[1].max()) if tensors[1].numel() else -1
        if top >= max_positions:
            raise ModelInputError(
                f"a branch reaches position {top}, beyond max_positions {max_positions}; score "
                "shorter continuations or build the model with a larger max_positions"
            )
    elif shape[1] > max_positions:
        raise ModelInputError(
            f"rows of {shape[1]} tokens exceed max_positions {max_positions}; pack shorter rows "
            "or build the model with a larger max_positions"
        )
