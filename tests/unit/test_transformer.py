"""DecoderLM: shapes, causal and per-document isolation, late-fusion isolation by modality, the
restricted softmax, preset sizes, gradient flow, and a tiny model overfitting a fixed batch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tokenize_mm.data import attention_mask
from tokenize_mm.models import (
    DecoderConfig,
    DecoderLM,
    ModelConfigError,
    ModelInputError,
    allowed_ids_mask,
    block_mask,
    preset,
    sizes,
)
from tokenize_mm.sequence import MODALITY_IDS, VocabLayout
from tokenize_mm.tokenizers.base import TokenizerInfo

VOCAB = 64
TEXT, IMAGE, AUDIO, SPECIAL = (MODALITY_IDS[m] for m in ("text", "image", "audio", "special"))


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matrices: a second intra-op thread only adds hand-off cost, which on a busy 2-core
    runner stalls every matmul for milliseconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(fusion: str = "early", seed: int = 0, **kwargs) -> DecoderLM:
    torch.manual_seed(seed)
    return DecoderLM(preset("tiny", fusion=fusion, **kwargs), vocab_size=VOCAB).eval()


def packed_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Two rows of 16: row 0 holds document 1 (positions 0-6) and document 2 (7-12) then
    padding; row 1 is one document of mixed modalities. Every modality id occurs."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, VOCAB, (2, 16), generator=g)
    segment_ids = torch.tensor([[1] * 7 + [2] * 6 + [0] * 3, [1] * 16], dtype=torch.int32)
    positions = torch.tensor([[*range(7), *range(6), 0, 0, 0], list(range(16))])
    modality = torch.tensor(
        [[3, 0, 0, 1, 1, 0, 3, 3, 2, 2, 2, 0, 3, 3, 3, 3], [3, 1, 1, 1, 0, 0, 2, 2, 2, 1, 1, 0, 0, 2, 1, 3]],
        dtype=torch.uint8,
    )  # fmt: skip
    return dict(tokens=tokens, modality=modality, positions=positions, segment_ids=segment_ids)


def with_token(batch: dict[str, torch.Tensor], row: int, col: int) -> dict[str, torch.Tensor]:
    tokens = batch["tokens"].clone()
    tokens[row, col] = (tokens[row, col] + 1) % VOCAB
    return {**batch, "tokens": tokens}


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_shapes_and_determinism(fusion):
    batch = packed_batch()
    hidden = tiny(fusion)(**batch)
    assert hidden.shape == (2, 16, 32) and hidden.dtype == torch.float32
    assert tiny(fusion).logits(hidden).shape == (2, 16, VOCAB)
    torch.testing.assert_close(tiny(fusion)(**batch), hidden, rtol=0, atol=0)


def test_block_mask_matches_packing_attention_mask():
    segment_ids = packed_batch()["segment_ids"]
    assert torch.equal(block_mask(segment_ids)[:, 0], attention_mask(segment_ids))


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_causal_and_document_isolation(fusion):
    model, batch = tiny(fusion), packed_batch()
    base = model(**batch)
    # A later token of document 1 changes nothing before it, nor document 2.
    changed = model(**with_token(batch, 0, 4))
    torch.testing.assert_close(changed[0, :4], base[0, :4], rtol=0, atol=1e-6)
    torch.testing.assert_close(changed[0, 7:], base[0, 7:], rtol=0, atol=1e-6)
    assert not torch.allclose(changed[0, 4], base[0, 4])
    # Document 2's first token changes nothing in document 1 (which comes before it anyway)
    # and document 2 itself does change.
    changed = model(**with_token(batch, 0, 7))
    torch.testing.assert_close(changed[0, :7], base[0, :7], rtol=0, atol=1e-6)
    assert not torch.allclose(changed[0, 7:13], base[0, 7:13])
    # Row 1 is untouched by edits in row 0.
    torch.testing.assert_close(changed[1], base[1], rtol=0, atol=0)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_document_is_scored_the_same_wherever_it_is_packed(fusion):
    """Positions restart per document: document 2 alone in a row gives the same hidden states."""
    model, batch = tiny(fusion), packed_batch()
    alone = {k: torch.zeros_like(v[:1]) for k, v in batch.items()}
    for key, value in batch.items():
        alone[key][0, :6] = value[0, 7:13]
    alone["segment_ids"][0, :6] = 1
    alone["modality"][0, 6:] = SPECIAL
    torch.testing.assert_close(model(**alone)[0, :6], model(**batch)[0, 7:13], atol=1e-5, rtol=0)


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_padding_rows_are_finite(fusion):
    batch = packed_batch()
    batch["segment_ids"][1] = 0  # row 1 all padding
    batch["positions"][1] = 0
    batch["modality"][1] = SPECIAL
    model = tiny(fusion)
    hidden = model(**batch)
    assert torch.isfinite(hidden).all() and torch.isfinite(model.logits(hidden)).all()


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_runs_under_bf16_autocast(fusion):
    model, batch = tiny(fusion), packed_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model(**batch)
        logits = model.logits(hidden)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    torch.testing.assert_close(hidden.float(), model(**batch), atol=0.1, rtol=0.05)


def test_late_stage_keeps_modalities_apart():
    model, batch = tiny("late"), packed_batch()

    def late(b):
        return model.late_stage(model.embed(b["tokens"], b["modality"]), **_rest(b))

    image = batch["modality"][1] == IMAGE
    col = int(image.nonzero()[0])  # the first image token of row 1
    base, changed = late(batch), late(with_token(batch, 1, col))
    others = ~image
    torch.testing.assert_close(changed[1][others], base[1][others], rtol=0, atol=0)
    assert not torch.allclose(changed[1, col], base[1, col])
    # The shared stack after it does mix modalities: a later text position changes.
    later_text = next(t for t in range(col + 1, 16) if batch["modality"][1, t] == TEXT)
    hidden, hidden_changed = model(**batch), model(**with_token(batch, 1, col))
    assert not torch.allclose(hidden_changed[1, later_text], hidden[1, later_text])


def test_early_fusion_late_stage_is_identity():
    model, batch = tiny("early"), packed_batch()
    x = model.embed(batch["tokens"], batch["modality"])
    assert model.late_stage(x, **_rest(batch)) is x


def _rest(batch):
    return {k: batch[k] for k in ("modality", "positions", "segment_ids")}


def small_layout() -> VocabLayout:
    infos = {
        "text": TokenizerInfo(modality="text", kind="text.sentencepiece", codebook_size=20),
        "image": TokenizerInfo(modality="image", kind="image.vq", codebook_size=16),
        "audio": TokenizerInfo(
            modality="audio", kind="audio.rvq", codebook_size=8, num_codebooks=2
        ),
    }
    return VocabLayout(infos, {m: m for m in infos})


def test_allowed_ids_mask_partitions_the_layout():
    layout = small_layout()
    mask = allowed_ids_mask(layout, vocab_size=layout.vocab_size + 6)
    assert mask.shape == (4, layout.vocab_size + 6)
    ids = torch.arange(layout.vocab_size)
    assert torch.equal(mask[:, : layout.vocab_size].sum(0), torch.ones_like(ids))
    assert torch.equal(
        mask[:, : layout.vocab_size].long().argmax(0), layout.modality_of(ids).long()
    )
    assert not mask[:, layout.vocab_size :].any()  # padded ids: allowed for no modality
    assert mask[SPECIAL, [layout.special(s) for s in ("pad", "bos", "eos")]].all()
    assert mask[IMAGE, layout.begin("image")] and mask[AUDIO, layout.special("delay_pad")]
    with pytest.raises(ModelConfigError, match="smaller than the layout"):
        allowed_ids_mask(layout, vocab_size=10)


def test_restricted_softmax_is_the_full_softmax_renormalised():
    layout = small_layout()
    torch.manual_seed(0)
    model = DecoderLM(preset("tiny", restricted_softmax=True), layout.vocab_size).eval()
    mask = allowed_ids_mask(layout)
    model.set_allowed_ids(mask)
    tokens = torch.randint(0, layout.vocab_size, (2, 12))
    modality = layout.modality_of(tokens)
    hidden = model(
        tokens, modality, torch.arange(12).expand(2, 12), torch.ones(2, 12, dtype=torch.int32)
    )
    target = torch.tensor([TEXT, IMAGE, AUDIO, SPECIAL]).repeat(6).view(2, 12)
    restricted = model.logits(hidden, target).softmax(-1)
    full = model.logits(hidden).softmax(-1)
    allowed = mask[target]  # (2, 12, V)
    assert (restricted[~allowed] == 0).all()
    renormalised = torch.where(allowed, full, 0) / (full * allowed).sum(-1, keepdim=True)
    torch.testing.assert_close(restricted, renormalised)
    # Targets of the right modality: the restricted loss is finite and below the full one.
    own = layout.modality_of(tokens).long()
    restricted_loss = F.cross_entropy(model.logits(hidden, own).flatten(0, 1), tokens.flatten())
    full_loss = F.cross_entropy(model.logits(hidden).flatten(0, 1), tokens.flatten())
    assert torch.isfinite(restricted_loss) and restricted_loss < full_loss
    # Under bf16 autocast the masked logits stay finite and still get zero probability.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.logits(model(tokens, modality, *_positions_segments(2, 12)), target)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert (logits.float().softmax(-1)[~allowed] == 0).all()


def _positions_segments(b: int, length: int):
    return torch.arange(length).expand(b, length), torch.ones(b, length, dtype=torch.int32)


def test_set_allowed_ids_rejects_bad_masks():
    model = tiny(restricted_softmax=True)
    with pytest.raises(ModelConfigError, match="shape"):
        model.set_allowed_ids(torch.ones(3, VOCAB, dtype=torch.bool))
    empty = torch.ones(4, VOCAB, dtype=torch.bool)
    empty[2] = False
    with pytest.raises(ModelConfigError, match=r"\[2\]"):
        model.set_allowed_ids(empty)


def test_bad_configs_and_inputs_raise_typed_errors():
    with pytest.raises(ModelConfigError, match="fusion"):
        preset("tiny", fusion="middle")
    with pytest.raises(ModelConfigError, match="n_heads"):
        DecoderConfig(d_model=30, n_layers=1, n_heads=4, d_ff=8, max_positions=8)
    with pytest.raises(ModelConfigError, match="d_ff"):
        DecoderConfig(d_model=32, n_layers=1, n_heads=4, d_ff=0, max_positions=8)
    with pytest.raises(ModelConfigError, match="vocab_size"):
        DecoderLM(preset("tiny"), vocab_size=0)
    with pytest.raises(ModelConfigError, match="DecoderConfig"):
        DecoderLM(dict(d_model=32), vocab_size=VOCAB)  # type: ignore[arg-type]
    with pytest.raises(ModelConfigError, match="sizes are"):
        preset("huge")
    model, batch = tiny(), packed_batch()
    with pytest.raises(ModelInputError, match="positions"):
        model(**{**batch, "positions": batch["positions"][:, :8]})
    long = {k: v.repeat(1, 9) for k, v in batch.items()}  # L = 144 > max_positions 128
    with pytest.raises(ModelInputError, match="max_positions"):
        model(**long)


def test_preset_parameter_counts():
    def count(name: str, vocab: int) -> int:
        with torch.device("meta"):  # no memory, no init time
            return DecoderLM(preset(name), vocab_size=vocab).num_parameters()

    assert 1_000 <= count("tiny", 100) <= 100_000
    assert 1_000_000 <= count("small", 10_000) <= 5_000_000
    assert count("base100m", 10_000) == 99_714_816  # the figure in conf/model/base100m.yaml
    assert 90e6 <= count("base100m", 10_000) <= 110e6
    assert set(sizes()) == {"tiny", "small", "base100m", "towers_small"}
    # one tower of the small model's depth per modality id (4), no shared stack
    assert count("towers_small", 10_000) == 5_479_040  # the figure in conf/model/towers_small.yaml
    assert preset("tiny") == DecoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64,
                                           max_positions=128, attention="documents")  # fmt: skip
    # Untied head: one more vocab × d_model matrix.
    with torch.device("meta"):
        untied = DecoderLM(preset("tiny", tie_embeddings=False), 100).num_parameters()
    assert untied == count("tiny", 100) + 100 * 32


@pytest.mark.parametrize("fusion", ["early", "late"])
def test_gradient_reaches_every_parameter(fusion):
    model, batch = tiny(fusion, tie_embeddings=False).train(), packed_batch()
    logits = model.logits(model(**batch))
    F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["tokens"][:, 1:].flatten()).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_init_scales_residual_projections():
    config = DecoderConfig(d_model=256, n_layers=8, n_heads=4, d_ff=512, max_positions=512)
    model = DecoderLM(config, vocab_size=VOCAB)
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 2e-3
    assert abs(model.blocks[0].mlp.out.weight.std().item() - 0.02 / 4) < 1e-3


def test_tiny_model_overfits_a_fixed_batch():
    model, batch = tiny("late").train(), packed_batch(seed=1)
    batch["segment_ids"][0] = 1  # one document per row: every target counts
    batch["positions"][0] = torch.arange(16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(50):
        logits = model.logits(model(**batch))
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), batch["tokens"][:, 1:].flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


# -- image row and column embeddings (models/grid.py) ---------------------------------------------
BEGIN_IMAGE, END_IMAGE = 6, 7  # VocabLayout's <image>, </image>


def image_document(codes: list[int]) -> dict[str, torch.Tensor]:
    """One document: bos, <image>, the codes, </image>, a text token, eos."""
    tokens = [1, BEGIN_IMAGE, *codes, END_IMAGE, 40, 2]
    modality = [SPECIAL, IMAGE, *[IMAGE] * len(codes), IMAGE, TEXT, SPECIAL]
    n = len(tokens)
    return dict(tokens=torch.tensor([tokens]), modality=torch.tensor([modality]),
                positions=torch.arange(n)[None], segment_ids=torch.ones(1, n, dtype=torch.int32))  # fmt: skip


def test_grid_index_counts_codes_from_their_own_marker():
    from tokenize_mm.models.grid import GridEmbedding

    grid = GridEmbedding(grid=2, d_model=4)
    tokens = torch.tensor(
        [[1, 6, 20, 21, 22, 23, 7, 2, 4, 6, 30, 31], [20, 21, 7, 2, 1, 6, 20, 0, 0, 0, 0, 0]]
    )
    modality = torch.tensor(
        [[3, 1, 1, 1, 1, 1, 1, 3, 0, 1, 1, 1], [1, 1, 1, 3, 3, 1, 1, 3, 3, 3, 3, 3]]
    )
    segment = torch.tensor([[1] * 8 + [2] * 4, [1, 1, 1, 1, 2, 2, 2, 0, 0, 0, 0, 0]])  # fmt: skip
    assert grid.index(tokens, modality, segment).tolist() == [
        [-1, -1, 0, 1, 2, 3, -1, -1, -1, -1, 0, 1],
        [-1, -1, -1, -1, -1, -1, 0, -1, -1, -1, -1, -1],  # a span's rest without its marker: none
    ]
    out = grid(tokens, modality, segment)
    torch.testing.assert_close(out[0, 3], grid.row.weight[0] + grid.col.weight[1])
    torch.testing.assert_close(out[0, 4], grid.row.weight[1] + grid.col.weight[0])
    assert not out[0, [0, 1, 6, 7, 8, 9]].any()


def test_image_grid_tells_the_model_where_each_code_sits():
    """The same codes in another raster order: indistinguishable to a bag of codes, told apart
    with row and column embeddings; a document is still read the same wherever it is packed;
    the grid embeddings are trained."""
    torch.manual_seed(0)
    model = tiny(image_grid=2)
    doc = image_document([20, 21, 22, 23])
    hidden = model(**doc)
    swapped = model(**image_document([20, 22, 21, 23]))  # transposed raster
    assert not torch.allclose(hidden[0, -1], swapped[0, -1], atol=1e-4)
    other = image_document([30, 31, 32, 33])
    packed = {k: torch.cat([other[k], doc[k]], 1) for k in doc}
    packed["segment_ids"][0, other["tokens"].shape[1] :] = 2
    n = doc["tokens"].shape[1]
    torch.testing.assert_close(model(**packed)[0, -n:], hidden[0], atol=1e-5, rtol=0)
    model.train()
    model.logits(model(**doc)).sum().backward()
    assert model.grid_emb.row.weight.grad.abs().sum() > 0
    with pytest.raises(ModelConfigError, match="image_grid"):
        preset("tiny", image_grid=-1)


def test_image_grid_must_match_the_image_tokenizer():
    from tokenize_mm.cli.validate import check_image_grid
    from tokenize_mm.core.errors import ConfigError

    check_image_grid(0, (4, 4))
    check_image_grid(4, (4, 4))
    check_image_grid(4, None)  # no image tokenizer, or its grid not known yet
    with pytest.raises(ConfigError, match=r"model\.image_grid=5.*set model\.image_grid=4"):
        check_image_grid(5, (4, 4))
    with pytest.raises(ConfigError, match="square grid"):
        check_image_grid(4, (4, 8))
