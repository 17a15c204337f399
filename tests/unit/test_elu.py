"""The native ELU (``native/elu.c``, ``audio/elu.py``): every variant this CPU runs returns
bitwise the portable variant's values, within an ulp of the exact ELU; special values pass as
torch passes them; ``FastELU`` takes torch's path wherever the kernel does not apply, and the
codecs' inference copies use it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tokenize_mm.tokenizers import kernels
from tokenize_mm.tokenizers.audio.batch import folded_copy
from tokenize_mm.tokenizers.audio.elu import FastELU, NativeELU, elu, elu_backward, swap_elus
from tokenize_mm.tokenizers.audio.model import CodecConfig, CodecModel

ARCH = CodecConfig(
    sample_rate=24_000, channels=1, ratios=(8, 5, 4, 3), n_filters=4, n_residual_layers=1,
    dimension=16, lstm=1, causal=True, num_codebooks=3, codebook_size=64, codebook_dim=None,
    commitment_weight=1.0,
)  # fmt: skip

SPECIAL = [0.0, -0.0, float("nan"), float("inf"), float("-inf"), -1e-30, -1e-45, 1e-45,
           -17.0, -17.4, -86.9, -87.0, -87.5, -88.0, -1e30, 1e30, -0.34657, -0.34658, -0.693]  # fmt: skip


def _runnable() -> list[str]:
    best = kernels.VARIANTS[kernels.best_variant()]
    return [v for v in ("portable", "avx2") if kernels.VARIANTS[v] <= best]


def _ulps(values: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|values - exact| in units of the last place of exact rounded to float32 (float64 in)."""
    nearest = exact.float()
    step = (torch.nextafter(nearest, torch.tensor(float("inf"))) - nearest).double()
    return (values.double() - exact).abs() / step


@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 1_000_003])  # every tail length of an 8-lane loop
def test_variants_agree_bitwise(n):
    x = 4 * torch.randn(n, generator=torch.Generator().manual_seed(n)) - 1
    reference = elu(x, variant="portable")
    for variant in _runnable():
        assert torch.equal(elu(x, variant=variant), reference), variant


def test_within_an_ulp_of_the_exact_elu():
    x = torch.linspace(-100.0, 5.0, 1_000_001)
    exact = torch.nn.functional.elu(x.double())
    for variant in _runnable():
        assert _ulps(elu(x, variant=variant), exact).max() <= 1.0, variant


def test_special_values_pass_as_torch_passes_them():
    x = torch.tensor(SPECIAL)
    expected = torch.nn.functional.elu(x)
    for variant in _runnable():
        got = elu(x, variant=variant)
        torch.testing.assert_close(got, expected, equal_nan=True, rtol=2e-7, atol=0)
        assert torch.equal(torch.signbit(got), torch.signbit(expected)), variant  # -0.0 stays


def test_in_place_and_channels_last():
    x = torch.randn(2, 5, 1, 37).contiguous(memory_format=torch.channels_last)
    expected = elu(x.contiguous())
    y = elu(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.contiguous(), expected)
    same = elu(x, out=x)
    assert same is x and torch.equal(x.contiguous(), expected)


def test_elu_rejects_what_it_cannot_run():
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        elu(torch.randn(3, 4).t())  # neither contiguous nor channels-last
    with pytest.raises(ValueError, match="float32 CPU tensor"):
        elu(torch.randn(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="out must match"):
        elu(torch.randn(3, 4), out=torch.empty(4, 3))
    with pytest.raises(ValueError, match="variant"):
        elu(torch.randn(3), variant="sse9")
    for variant in set(kernels.VARIANTS) - set(_runnable()) - {"avx512"}:
        with pytest.raises(kernels.KernelError, match="not supported by this CPU"):
            elu(torch.randn(3), variant=variant)
    assert elu(torch.randn(0)).shape == (0,)


def test_fast_elu_takes_torch_where_the_kernel_does_not_apply():
    layer, plain = FastELU(), nn.ELU()
    x = torch.randn(4, 6, 10)
    torch.testing.assert_close(layer(x), plain(x), rtol=2e-7, atol=0)
    for odd in (x.transpose(1, 2), x.double()):  # not dense; not float32: torch's own values
        assert torch.equal(layer(odd), plain(odd))
    grad_in = x.clone().requires_grad_(True)
    in_place = FastELU(inplace=True)(grad_in.clone())  # in place under autograd: torch's
    assert "Elu" in type(in_place.grad_fn).__name__
    half = FastELU(alpha=0.5)  # only alpha 1 is native
    assert torch.equal(half(x), nn.ELU(alpha=0.5)(x))


def test_backward_variants_agree_and_match_torch():
    x = 3 * torch.randn(2, 7, 1, 333, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    grad = torch.randn(2, 7, 1, 333)  # contiguous: made dense in y's layout
    y = elu(x)
    reference = elu_backward(grad, y, variant="portable")
    for variant in _runnable():
        assert torch.equal(elu_backward(grad, y, variant=variant), reference), variant
    leaf = x.clone().requires_grad_(True)
    torch.nn.functional.elu(leaf).backward(grad)
    torch.testing.assert_close(reference, leaf.grad, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="one shape"):
        elu_backward(grad[:1], y)


def test_fast_elu_records_its_gradient():
    x = (3 * torch.randn(4, 6, 50)).requires_grad_(True)
    grad = torch.randn(4, 6, 50)
    out = FastELU()(x)
    assert type(out.grad_fn).__name__ == "NativeELUBackward"
    out.backward(grad)
    ours, x.grad = x.grad, None
    torch.nn.functional.elu(x).backward(grad)
    torch.testing.assert_close(ours, x.grad, rtol=1e-6, atol=1e-7)
    double = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)  # finite differences
    assert torch.autograd.gradcheck(lambda t: NativeELU.apply(t.float()).double(), (double,),
                                    eps=1e-3, atol=1e-2)  # fmt: skip


def test_the_codec_model_is_built_with_the_fast_modules():
    """``CodecModel``: the native ELU and slicing padding, under the package modules' state
    dict keys (artifacts load either way)."""
    from encodec.modules import SEANetDecoder, SEANetEncoder

    from tokenize_mm.tokenizers.audio.padding import FastPadConv1d

    model = CodecModel(ARCH)
    kinds = {type(m) for m in model.modules()}
    assert FastELU in kinds and FastPadConv1d in kinds and nn.ELU not in kinds
    kwargs = dict(channels=1, dimension=16, n_filters=4, n_residual_layers=1, ratios=[8, 5, 4, 3],
                  lstm=1, causal=True, norm="weight_norm")  # fmt: skip
    assert set(model.encoder.state_dict()) == set(SEANetEncoder(**kwargs).state_dict())
    assert set(model.decoder.state_dict()) == set(SEANetDecoder(**kwargs).state_dict())


def test_fast_elu_in_place_writes_its_input():
    x = torch.randn(3, 4, 1, 50).contiguous(memory_format=torch.channels_last)
    expected = elu(x)
    with torch.inference_mode():
        y = FastELU(inplace=True)(x)
    assert y.data_ptr() == x.data_ptr() and torch.equal(x, expected)


def test_in_place_bumps_the_version_a_saved_graph_checks():
    """As with ``nn.ELU(inplace=True)``: a backward through a graph that saved the tensor before
    it was overwritten fails instead of using the new values."""
    a, w = torch.randn(5, 8), torch.randn(5, 8, requires_grad=True)
    h = a * w  # saves a for w's gradient
    FastELU(inplace=True)(a)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        h.sum().backward()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_do_not_change_the_values(threads):
    x = 3 * torch.randn(300_001, generator=torch.Generator().manual_seed(2))
    grad = torch.randn(300_001)
    y = elu(x, threads=1)
    assert torch.equal(elu(x, threads=threads), y)
    assert torch.equal(elu_backward(grad, y, threads=threads), elu_backward(grad, y, threads=1))
    with pytest.raises(ValueError, match="threads"):
        elu(x, threads=0)


def test_swap_elus_and_the_folded_codec():
    seq = nn.Sequential(nn.Conv1d(2, 2, 1), nn.ELU(alpha=1.0, inplace=True), nn.ELU(alpha=0.3))
    swap_elus(seq)
    assert [type(m) for m in seq][1:] == [FastELU, FastELU]
    assert seq[1].inplace and seq[1].alpha == 1.0 and not seq[2].inplace and seq[2].alpha == 0.3
    copy = folded_copy(CodecModel(ARCH), lambda: CodecModel(ARCH))
    elus = [m for m in copy.modules() if isinstance(m, nn.ELU)]
    assert elus and all(type(m) is FastELU for m in elus)


def test_without_a_compiler_fast_elu_is_torch_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("TOKENIZE_MM_NATIVE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(kernels, "_compiler", lambda: None)
    kernels.clear_caches()
    try:
        x = torch.randn(2, 3, 40)
        with pytest.warns(RuntimeWarning, match="no C compiler found"):
            assert torch.equal(FastELU()(x), nn.ELU()(x))
    finally:
        kernels.clear_caches()
