"""Finite scalar quantization (tokenizers/quant/fsq.py) behind the ``Quantizer`` protocol, the
``quantizer``/``fsq_levels`` config fields, and artifacts that name no quantizer (VQ)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from tokenize_mm.tokenizers.arch import config_from_hparams
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel
from tokenize_mm.tokenizers.errors import InvalidInputError
from tokenize_mm.tokenizers.image.model import VQImageConfig, VQImageModel
from tokenize_mm.tokenizers.quant import (
    FiniteScalarQuantizer,
    Quantizer,
    ResidualFiniteScalarQuantizer,
    ResidualVectorQuantizer,
    VectorQuantizer,
)
from tokenize_mm.tokenizers.quant.fsq import default_levels


@pytest.mark.parametrize(
    ("size", "levels"),
    [(2, (2,)), (8, (8,)), (256, (8, 8, 4)), (512, (8, 8, 8)), (1024, (8, 8, 4, 4)),
     (4096, (8, 8, 8, 8))],
)  # fmt: skip
def test_default_levels_multiply_to_the_codebook(size, levels):
    assert default_levels(size) == levels and math.prod(levels) == size


@pytest.mark.parametrize("size", [0, 1, 1000, 96])
def test_default_levels_need_a_power_of_two(size):
    with pytest.raises(ValueError, match="power of two"):
        default_levels(size)


@pytest.mark.parametrize(
    "quantizer",
    [lambda: FiniteScalarQuantizer(16, (8, 5, 4)), lambda: ResidualFiniteScalarQuantizer(16, 3, (8, 5, 4)),
     lambda: FiniteScalarQuantizer(16, (2, 2, 2, 2, 2, 5)),
     lambda: ResidualFiniteScalarQuantizer(16, 3, (2, 2, 2, 2, 2, 5))],
    ids=["fsq", "residual_fsq", "fsq_binary", "residual_fsq_binary"],
)  # fmt: skip
def test_fsq_meets_the_protocol_and_round_trips(quantizer):
    """Also with levels of 2 (binary grid dimensions, as the main job's codec uses), which the
    library allows only with its symmetric bound."""
    torch.manual_seed(0)
    q = quantizer().eval()
    assert isinstance(q, Quantizer) and q.codebook_size == 160
    z = torch.randn(2, 30, 16) * 3
    quantized, codes, loss = q(z)
    k = q.num_codebooks
    assert codes.dtype == torch.int64
    assert codes.shape == ((2, 30) if isinstance(q, FiniteScalarQuantizer) else (2, k, 30))
    assert int(codes.min()) >= 0 and int(codes.max()) < 160
    assert float(loss) == 0.0  # no codebook to commit to
    assert torch.equal(q.encode(z), codes)
    assert torch.allclose(q.decode(codes), quantized, atol=1e-6)


def test_fsq_passes_gradients_straight_through():
    q = FiniteScalarQuantizer(8, (4, 4))
    z = torch.randn(1, 10, 8, requires_grad=True)
    quantized, _, _ = q(z)
    quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0


def test_fsq_uses_every_code_of_its_grid():
    """A fixed grid: spread latents reach every code, whatever the weights (no codebook to
    collapse). A (1, 2) projection of inputs on a fine 2-d grid visits all 4 x 4 cells."""
    torch.manual_seed(0)
    q = FiniteScalarQuantizer(2, (4, 4)).eval()
    with torch.no_grad():
        q.project_in.weight.copy_(torch.eye(2))
        q.project_in.bias.zero_()
    grid = torch.stack(torch.meshgrid(torch.linspace(-3, 3, 40), torch.linspace(-3, 3, 40),
                                      indexing="ij"), -1).reshape(1, -1, 2)  # fmt: skip
    assert q.encode(grid).unique().numel() == 16


@pytest.mark.parametrize(("config_class", "model_class", "quant_class", "kwargs"), [
    (VQImageConfig, VQImageModel, FiniteScalarQuantizer,
     dict(image_size=32, downsample=8, base_channels=8, latent_dim=16, codebook_size=64)),
    (CodecConfig, CodecModel, ResidualFiniteScalarQuantizer,
     dict(n_filters=4, dimension=16, lstm=0, codebook_size=64, num_codebooks=2)),
])  # fmt: skip
def test_configs_choose_the_quantizer(config_class, model_class, quant_class, kwargs):
    fsq = config_class(**kwargs, quantizer="fsq")
    assert fsq.fsq_levels is None and fsq.fsq_grid == (8, 8)  # default_levels(64)
    assert isinstance(model_class(fsq).quantizer, quant_class)
    vq = config_class(**kwargs, quantizer="vq")
    assert vq.fsq_grid is None
    assert isinstance(model_class(vq).quantizer, (VectorQuantizer, ResidualVectorQuantizer))
    explicit = config_class(**kwargs, quantizer="fsq", fsq_levels=[4, 4, 4])
    assert explicit.fsq_levels == explicit.fsq_grid == (4, 4, 4)
    # fields change freely on a default config (levels are not fixed until a fit writes them)
    assert dataclasses.replace(fsq, codebook_size=256).fsq_grid == (8, 8, 4)
    assert dataclasses.replace(fsq, quantizer="vq").fsq_grid is None


@pytest.mark.parametrize("config_class", [VQImageConfig, CodecConfig])
@pytest.mark.parametrize(("fields", "named"), [
    ({"quantizer": "lfq"}, "quantizer='lfq'"),
    ({"quantizer": "fsq", "fsq_levels": [8, 8]}, "fsq_levels=[8, 8]"),
    ({"quantizer": "fsq", "fsq_levels": [8, 1, 32]}, "fsq_levels"),
    ({"quantizer": "fsq", "codebook_size": 1000}, "power of two"),
    ({"quantizer": "vq", "fsq_levels": [8, 8, 4]}, "quantizer=fsq only"),
])  # fmt: skip
def test_bad_quantizer_fields_are_named(config_class, fields, named):
    base = {"codebook_size": 256}
    with pytest.raises(InvalidInputError, match=named.replace("[", r"\[").replace("]", r"\]")):
        config_class(**{**base, **fields})


@pytest.mark.parametrize("config_class", [VQImageConfig, CodecConfig])
def test_artifacts_that_name_no_quantizer_are_vq(config_class):
    """Artifacts written before the quantizer field meant VQ, whatever today's default."""
    arch = {k: v for k, v in dataclasses.asdict(config_class(quantizer="vq")).items()
            if k not in ("quantizer", "fsq_levels")}  # fmt: skip
    assert config_from_hparams(config_class, {"arch": arch}).quantizer == "vq"
    assert config_from_hparams(config_class, dict(arch)).quantizer == "vq"  # the flat layout
    saved = dict(arch, quantizer="fsq", codebook_size=256, fsq_levels=[8, 8, 4])
    assert config_from_hparams(config_class, {"arch": saved}).fsq_levels == (8, 8, 4)


def test_a_fit_writes_its_levels_into_the_artifact(tiny_image, tiny_audio):
    for tok in (tiny_image, tiny_audio):
        assert tok.model.config.quantizer == "fsq"
        assert tok.hparams["arch"]["fsq_levels"] == list(tok.model.config.fsq_grid)


def test_radius_keeps_directions_that_would_saturate():
    """Latents far outside the normalised range: without a radius every one lands in a corner
    cell (each dimension saturates on its own); with one they are scaled back onto the sphere and
    their directions land in many cells. Inside the radius nothing changes."""
    torch.manual_seed(0)
    plain, bounded = FiniteScalarQuantizer(2, (8, 8)).eval(), FiniteScalarQuantizer(2, (8, 8), 2.5)
    bounded.eval()
    for q in (plain, bounded):
        with torch.no_grad():
            q.project_in.weight.copy_(torch.eye(2))
            q.project_in.bias.zero_()
    angles = torch.linspace(0, 2 * math.pi, 200)
    far = 50 * torch.stack([angles.cos(), angles.sin()], -1)[None]  # (1, 200, 2)
    assert plain.encode(far).unique().numel() <= 12  # corners and edges
    assert bounded.encode(far).unique().numel() >= 20
    assert float(bounded._grid_input(far).norm(dim=-1).max()) <= 2.5 + 1e-5
    near = 0.5 * torch.randn(1, 100, 2)
    assert torch.equal(plain.encode(near), bounded.encode(near))
    with pytest.raises(ValueError, match="radius"):
        FiniteScalarQuantizer(2, (8, 8), radius=-1.0)


def test_codec_fields_added_later_are_off_in_older_artifacts():
    """Artifacts written before ``fsq_radius`` and ``companding`` used neither."""
    on = CodecConfig(codebook_size=256, fsq_radius=3.0, companding=255.0)
    assert config_from_hparams(CodecConfig, {"arch": dataclasses.asdict(on)}) == on
    arch = {k: v for k, v in dataclasses.asdict(CodecConfig(codebook_size=256)).items()
            if k not in ("fsq_radius", "companding")}  # fmt: skip
    old = config_from_hparams(CodecConfig, {"arch": arch})
    assert old.fsq_radius == 0.0 and old.companding == 0.0
    assert CodecConfig().fsq_radius == 0 and CodecConfig().companding == 0  # options, off
    with pytest.raises(InvalidInputError, match="companding"):
        CodecConfig(companding=-1.0)


@pytest.mark.parametrize(
    "quantizer",
    [lambda: ResidualFiniteScalarQuantizer(16, 3, (8, 5, 4)),
     lambda: ResidualVectorQuantizer(16, 3, 32)],
    ids=["residual_fsq", "residual_vq"],
)  # fmt: skip
def test_residual_decode_from_the_first_stages(quantizer):
    """Decoding K' < K stages sums the first K' (a lower bitrate); each added stage brings the
    reconstruction closer to the latents."""
    torch.manual_seed(0)
    q = quantizer()
    z = torch.randn(2, 40, 16)
    q(z)  # a VQ codebook initialises on its first batch
    q.eval()
    codes = q.encode(z)
    errors = [float((q.decode(codes[:, :k]) - z).pow(2).mean()) for k in (1, 2, 3)]
    assert torch.allclose(q.decode(codes[:, :3]), q.decode(codes), atol=1e-6)
    assert errors[2] <= errors[1] <= errors[0]
    with pytest.raises(ValueError, match="stages"):
        q.decode(codes[:, :0])


@pytest.mark.parametrize("levels,stages", [((2,) * 8, 1), ((8, 5, 5, 5), 3), ((8, 8, 4), 2)])
def test_residual_decode_is_the_librarys_sum_bit_for_bit(levels, stages):
    """``decode`` sums the stages' grid points without the library's ``einx`` lookup: its
    ``get_output_from_indices`` values exactly, for every number of stages given."""
    torch.manual_seed(0)
    q = ResidualFiniteScalarQuantizer(16, stages, levels)
    for given in range(1, stages + 1):
        indices = torch.randint(0, q.codebook_size, (3, 17, given))
        padded = torch.nn.functional.pad(indices, (0, stages - given), value=-1)
        assert torch.equal(q._stage_sum(indices), q.fsq.get_output_from_indices(padded))
