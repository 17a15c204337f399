"""Loss weightings: each one's defining behaviour, absent modalities, state in state_dict."""

from __future__ import annotations

import pytest
import torch

from tokenize_mm.balance import WEIGHTINGS
from tokenize_mm.balance.weighting import (
    DynamicWeightAverage,
    FixedWeighting,
    GradNormWeighting,
    GradShareWeighting,
    LossWeighting,
    ModalityMean,
    UncertaintyWeighting,
)

MODS = ("text", "image", "audio")


def losses_counts(values=(2.0, 1.0, 4.0), counts=(10, 30, 60)):
    losses = {m: torch.tensor(v, requires_grad=True) for m, v in zip(MODS, values, strict=True)}
    return losses, {m: torch.tensor(float(n)) for m, n in zip(MODS, counts, strict=True)}


def test_token_mean_is_the_mean_over_all_tokens():
    losses, counts = losses_counts()
    total = LossWeighting().combine(losses, counts)
    assert float(total.detach()) == pytest.approx((2 * 10 + 1 * 30 + 4 * 60) / 100)


def test_modality_mean_and_absent_modalities():
    losses, counts = losses_counts(counts=(10, 0, 60))
    w = ModalityMean()
    assert float(w.combine(losses, counts)) == pytest.approx((2.0 + 4.0) / 2)
    assert w.weights() == {"text": 0.5, "image": 0.0, "audio": 0.5}
    for cls in WEIGHTINGS.values():  # nothing divides by an absent modality's zero count
        inst = cls({"text": 1, "image": 1, "audio": 1}) if cls is FixedWeighting else cls()
        total = inst.combine(losses, {m: torch.tensor(0.0) for m in MODS})
        assert torch.isfinite(total)


def test_fixed_weights():
    losses, counts = losses_counts()
    w = FixedWeighting({"text": 2, "image": 1, "audio": 1})
    assert float(w.combine(losses, counts)) == pytest.approx(0.5 * 2 + 0.25 * 1 + 0.25 * 4)
    with pytest.raises(ValueError, match="missing"):
        FixedWeighting({"text": 1})


def test_uncertainty_parameters_reach_the_optimizer_and_the_state():
    w = UncertaintyWeighting()
    opt = torch.optim.SGD(w.parameters(), lr=0.1)
    losses, counts = losses_counts()
    before = w.log_var.detach().clone()
    w.combine(losses, counts).backward()
    opt.step()
    assert not torch.equal(before, w.log_var.detach())
    # d/ds (exp(-s) L + s) = 1 - L at s = 0: the largest loss gets the largest log variance
    assert int(torch.argmax(w.log_var)) == MODS.index("audio")
    fresh = UncertaintyWeighting()
    fresh.load_state_dict(w.state_dict())
    assert torch.equal(fresh.log_var, w.log_var)


def test_dwa_follows_the_loss_ratios():
    w = DynamicWeightAverage(temperature=1.0, window=2)
    for loss in ({"text": 1.0, "image": 1.0, "audio": 1.0},) * 2 + (
        {"text": 1.0, "image": 0.5, "audio": 1.0},
    ) * 2:
        w.observe(loss, {})
    ratio = torch.tensor([1.0, 0.5, 1.0])
    expected = 3 * torch.softmax(ratio, 0)
    torch.testing.assert_close(w.dwa_weights, expected)
    losses, counts = losses_counts()
    w.combine(losses, counts)
    assert sum(w.weights().values()) == pytest.approx(1.0)
    assert w.weights()["image"] < w.weights()["text"]  # image learns fastest: less weight
    fresh = DynamicWeightAverage(temperature=1.0, window=2)
    fresh.load_state_dict(w.state_dict())
    torch.testing.assert_close(fresh.dwa_weights, w.dwa_weights)


def toy_step(weighting, model, x, mod, targets, scale, opt):
    """One step of a toy problem where modality gradients differ by ``scale`` (per modality)."""
    h = model(x)  # (N, D): the "final hidden states"
    norms = {}

    def hook(grad):
        grad = weighting.rescale_grad(grad, mod)
        for i, m in enumerate(MODS):
            norms[m] = float(grad[mod == i].pow(2).sum())
        return grad

    h.register_hook(hook)
    losses = {
        m: scale[i] * ((h[mod == i] - targets[mod == i]) ** 2).mean() for i, m in enumerate(MODS)
    }
    counts = {m: (mod == i).sum().float() for i, m in enumerate(MODS)}
    total = weighting.combine(losses, counts, shared=[model.weight])
    opt.zero_grad()
    total.backward()
    opt.step()
    weighting.observe({m: float(v.detach()) for m, v in losses.items()}, norms)
    return norms


def toy_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(8, 8)
    x = torch.randn(300, 8, generator=g)
    mod = torch.tensor([0] * 20 + [1] * 80 + [2] * 200)  # token counts 20 : 80 : 200
    targets = torch.randn(300, 8, generator=g)
    return model, x, mod, targets, torch.tensor([1.0, 3.0, 10.0])


def test_grad_share_reaches_its_target_shares():
    model, x, mod, targets, scale = toy_problem()
    w = GradShareWeighting(targets={"text": 0.5, "image": 0.25, "audio": 0.25}, ema=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    for _ in range(40):
        norms = toy_step(w, model, x, mod, targets, scale, opt)
    root = {m: norms[m] ** 0.5 for m in MODS}
    shares = {m: root[m] / sum(root.values()) for m in MODS}
    assert shares == pytest.approx({"text": 0.5, "image": 0.25, "audio": 0.25}, abs=0.03)
    plain = toy_step(LossWeighting(), model, x, mod, targets, scale, opt)
    assert plain["audio"] ** 0.5 / sum(v**0.5 for v in plain.values()) > 0.8  # dominated


@pytest.mark.parametrize("measure_at", ["hidden", "weights"])
def test_gradnorm_learns_weights_that_sum_to_m(measure_at):
    """At the shared weights (the paper) or at the hidden rows (free: the backward's own
    gradient), the small-gradient modality is up-weighted."""
    model, x, mod, targets, scale = toy_problem(1)
    w = GradNormWeighting(measure_at=measure_at)
    assert w.needs_shared is (measure_at == "weights")
    opt = torch.optim.SGD(model.parameters(), lr=1e-5)
    for _ in range(30):
        toy_step(w, model, x, mod, targets, scale, opt)
    weights = w.task_weights
    assert float(weights.sum()) == pytest.approx(3.0)
    assert float(weights[0]) > float(weights[2])  # the small-gradient modality is up-weighted
    fresh = GradNormWeighting()
    fresh.load_state_dict(w.state_dict())
    assert torch.equal(fresh.task_weights, w.task_weights)


def test_gradnorm_at_hidden_reads_the_unweighted_norm_and_runs_no_extra_backward(monkeypatch):
    """The hook's norms are of w_m ∇_h L_m: G_m is that norm itself, so equal unweighted norms
    under unequal weights pull the weights together; ``combine`` never calls autograd.grad."""
    w = GradNormWeighting(modalities=("text", "image"), learning_rate=0.1)
    w.task_weights.copy_(torch.tensor([1.5, 0.5]))
    w.initial_losses.copy_(torch.tensor([1.0, 1.0]))
    w.has_initial.fill_(True)
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: pytest.fail("extra backward"))
    losses = {m: torch.tensor(1.0, requires_grad=True) for m in ("text", "image")}
    w.combine(losses, {"text": torch.tensor(5.0), "image": torch.tensor(5.0)}, shared=[])
    # ||∇_h L|| = 2 for both: the hook saw 1.5 * 2 and 0.5 * 2
    w.observe({"text": 1.0, "image": 1.0}, {"text": 3.0**2, "image": 1.0**2})
    assert float(w.task_weights[0]) < 1.5 and float(w.task_weights[1]) > 0.5
    assert float(w.task_weights.sum()) == pytest.approx(2.0)


def test_gradnorm_refuses_an_unknown_measure():
    with pytest.raises(ValueError, match="measure_at"):
        GradNormWeighting(measure_at="params")


def test_every_weighting_is_registered_by_name():
    assert set(WEIGHTINGS) == {
        "token_mean", "modality_mean", "fixed", "uncertainty", "dwa", "grad_share", "gradnorm",
        "famo", "ogm",
    }  # fmt: skip


def _build(cls):
    return cls({"text": 1, "image": 1, "audio": 1}) if cls is FixedWeighting else cls()


@pytest.mark.parametrize("name", sorted(WEIGHTINGS))
def test_state_stays_on_the_host_when_the_model_moves(name):
    """The training module's ``.to(device)`` and casts reach a weighting's parameters, never its
    state buffers: those stay float on the CPU, where reading them is no device sync. "meta"
    stands in for a GPU: a step whose losses and gradients live there combines, rescales and
    observes without mixing devices, and its outputs live on the losses' device."""
    w = _build(WEIGHTINGS[name])
    before = {n: (b.device, b.dtype) for n, b in w.named_buffers()}
    w.to("meta").to(torch.float16)
    assert {n: (b.device, b.dtype) for n, b in w.named_buffers()} == before
    assert all(b.device.type == "cpu" for b in w.buffers())
    assert all(p.device.type == "meta" for p in w.parameters())
    if list(w.parameters()):  # uncertainty: its s_m are device parameters, read as such
        return
    for step in range(12):  # past every warm-up and window of the defaults (dwa: 20 is not)
        losses = {m: torch.tensor(1.0 + step + i, device="meta") for i, m in enumerate(MODS)}
        counts = {m: torch.tensor(10.0 * (i + 1)) for i, m in enumerate(MODS)}
        w.set_mean_losses({m: 1.0 + step + i for i, m in enumerate(MODS)})  # as BalancedLM does
        total = w.combine(losses, counts)
        assert total.device.type == "meta"
        grad = torch.ones(2, 3, 4, device="meta")
        assert w.rescale_grad(grad, torch.zeros(2, 3, dtype=torch.long, device="meta")).is_meta
        w.observe({m: 1.0 + step / (i + 1) for i, m in enumerate(MODS)},
                  {m: 1.0 + i for i, m in enumerate(MODS)})  # fmt: skip
        assert set(w.weights()) == set(MODS)
    assert all(b.device.type == "cpu" for b in w.buffers())
