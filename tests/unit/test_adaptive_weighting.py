"""FAMO and OGM-GE: each one's defining rule, absent objectives, state in checkpoints, and
exact resume inside BalancedLM (with GradNorm's, and the odm sampler's resume)."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from test_training import _assert_same_steps, fit
from test_weighting import MODS, losses_counts, toy_problem, toy_step

from tokenize_mm.balance import FAMOWeighting, GradModulation, GradNormWeighting, LossWeighting


def test_famo_combination_is_the_z_weighted_log_loss_gradient():
    """d total / d L_m = z_m / (c L_m), c = sum_j z_j / L_j: the gradient of sum z log L over c."""
    w = FAMOWeighting()
    w.logits.copy_(torch.tensor([0.5, -0.2, 0.1], dtype=torch.float64))
    losses, counts = losses_counts(values=(2.0, 1.0, 4.0))
    w.combine(losses, counts).backward()
    z = torch.softmax(w.logits, 0)
    inv = z / torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64)
    for i, m in enumerate(MODS):
        assert float(losses[m].grad) == pytest.approx(float(inv[i] / inv.sum()), rel=1e-6)
    assert sum(w.weights().values()) == pytest.approx(1.0)


def test_famo_weighs_by_the_global_mean_losses_when_given():
    """Under DDP each rank's loss tensors are its own share (a modality absent from its batch
    has a zero); set_mean_losses gives the next combine the global means, once."""
    w = FAMOWeighting()
    losses, counts = losses_counts(values=(2.0, 0.0, 4.0))  # image absent from this rank's batch
    w.set_mean_losses({"text": 2.0, "image": 1.0, "audio": 4.0})
    w.combine(losses, counts)
    inv = torch.tensor([1 / 2.0, 1 / 1.0, 1 / 4.0])  # z equal at the start
    expected = dict(zip(MODS, (inv / inv.sum()).tolist(), strict=True))
    assert w.weights() == pytest.approx(expected, rel=1e-6)
    w.combine(losses, counts)  # used once: now this rank's values, the zero taking nearly all
    assert w.weights()["image"] > 0.99


def test_famo_update_is_adam_on_the_softmax_jacobian_of_the_improvements():
    """With no smoothing, one observe after the first is one Adam step (first step: lr times the
    sign) along d(z . delta)/d xi: the objective that improved most loses weight."""
    w = FAMOWeighting(smoothing=0.0, weight_decay=0.0, learning_rate=0.1)
    w.observe({"text": 2.0, "image": 2.0, "audio": 2.0}, {})
    assert torch.equal(w.logits, torch.zeros(3, dtype=torch.float64))  # nothing to difference yet
    after = {"text": 1.0, "image": 1.9, "audio": 2.0}
    w.observe(after, {})
    delta = torch.tensor([math.log(2.0 / v) for v in after.values()], dtype=torch.float64)
    xi = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    (torch.softmax(xi, 0) * delta).sum().backward()
    expected = -0.1 * torch.sign(xi.grad)  # Adam's first step: m/sqrt(v) = sign(g)
    torch.testing.assert_close(w.logits, expected, atol=1e-6, rtol=0)
    weights = w.task_weights(MODS)
    assert weights["text"] < weights["image"] < weights["audio"]


def test_famo_steps_along_log_losses_so_the_scale_of_a_loss_does_not_matter():
    """Multiplying an objective's loss by a constant leaves FAMO's update direction unchanged
    (it descends z-weighted log losses), where the token mean's turns towards the larger loss."""

    def direction(weighting, scale):
        torch.manual_seed(0)  # the same initial model each time
        model, x, mod, targets, _ = toy_problem(2)
        h = model(x)
        losses = {m: scale[i] * ((h[mod == i] - targets[mod == i]) ** 2).mean()
                  for i, m in enumerate(MODS)}  # fmt: skip
        counts = {m: (mod == i).sum().float() for i, m in enumerate(MODS)}
        weighting.combine(losses, counts).backward()
        g = torch.cat([p.grad.flatten() for p in model.parameters()])
        return g / g.norm()

    even, skewed = torch.ones(3), torch.tensor([100.0, 1.0, 3.0])
    famo = torch.dot(direction(FAMOWeighting(), even), direction(FAMOWeighting(), skewed))
    plain = torch.dot(direction(LossWeighting(), even), direction(LossWeighting(), skewed))
    assert float(famo) == pytest.approx(1.0, abs=1e-5)
    assert float(plain) < 0.9


def test_famo_moves_weight_to_the_objective_that_falls_slowest():
    """On a toy problem whose objectives differ in scale, training with FAMO leaves the largest
    weight on the objective whose loss fell least, in log terms."""
    model, x, mod, targets, scale = toy_problem(2)
    w = FAMOWeighting(smoothing=0.0, learning_rate=0.1)
    opt = torch.optim.SGD(model.parameters(), lr=3e-2)
    first = last = None
    for _ in range(60):
        with torch.no_grad():
            h = model(x)
            losses = {m: float(scale[i] * ((h[mod == i] - targets[mod == i]) ** 2).mean())
                      for i, m in enumerate(MODS)}  # fmt: skip
        first, last = first or losses, losses
        toy_step(w, model, x, mod, targets, scale, opt)
    fell = {m: math.log(first[m] / last[m]) for m in MODS}
    z = w.task_weights(MODS)
    assert max(z, key=z.get) == min(fell, key=fell.get)


def test_famo_skips_absent_objectives_and_round_trips_its_state():
    w = FAMOWeighting(smoothing=0.5)
    for losses in ({"text": 3.0, "image": 2.0}, {"text": 2.0, "image": 1.9, "audio": 5.0},
                   {"text": 1.5, "image": 1.8, "audio": 4.0}, {"text": 1.2, "audio": 3.9}):  # fmt: skip
        w.observe(losses, {})
    assert w.adam_steps.tolist() == [3, 2, 2]  # one difference per objective seen again
    fresh = FAMOWeighting(smoothing=0.5)
    fresh.load_state_dict(w.state_dict())
    for name, value in w.state_dict().items():
        assert torch.equal(value, fresh.state_dict()[name]), name
    losses, counts = losses_counts(counts=(10, 0, 60))
    total = fresh.combine(losses, counts)
    assert torch.isfinite(total) and fresh.weights()["image"] == 0.0


def test_ogm_slows_the_objective_ahead_by_the_papers_coefficient():
    w = GradModulation(alpha=0.5, ema=0.0, noise=False, warmup_steps=0)
    w.observe({"text": 4.0, "image": 4.0, "audio": 4.0}, {})
    w.observe({"text": 1.0, "image": 3.0, "audio": 3.0}, {})  # progress 0.75, 0.25, 0.25
    rho = 0.75 / 0.25
    assert float(w.coeffs[0]) == pytest.approx(1 - math.tanh(0.5 * (rho - 1)))
    assert w.coeffs[1:].tolist() == [1.0, 1.0]  # behind the mean of the others: untouched
    grad = torch.ones(1, 4, 2)
    rows = torch.tensor([[0, 1, 2, 3]])  # text, image, audio, a special row
    out = w.rescale_grad(grad, rows)
    assert out[0, :, 0].tolist() == pytest.approx([float(w.coeffs[0]), 1.0, 1.0, 1.0])
    assert w.weights() == {"text": 0.0, "image": 0.0, "audio": 0.0}  # no combine yet
    losses, counts = losses_counts()
    w.combine(losses, counts)
    assert w.weights()["text"] == pytest.approx(float(w.coeffs[0]) / 3)


def test_ogm_grad_share_signal_and_ge_noise():
    w = GradModulation(alpha=0.2, ema=0.0, signal="grad_share", noise=True, seed=3, warmup_steps=0)
    w.observe({m: 1.0 for m in MODS}, {"text": 1.0, "image": 1.0, "audio": 16.0})  # norms 1, 1, 4
    assert float(w.coeffs[2]) == pytest.approx(1 - math.tanh(0.2 * (4.0 - 1.0)))
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(2, 6, 4, generator=g)
    rows = torch.tensor([[0, 1, 2, 2, 2, 3], [2, 2, 0, 1, 3, 3]])
    out = w.rescale_grad(grad, rows)
    keep = rows != 2
    assert torch.equal(out[keep], grad[keep])  # only the slowed objective's rows change
    noise = out[rows == 2] - float(w.coeffs[2]) * grad[rows == 2]
    assert float(noise.abs().sum()) > 0
    assert torch.equal(w.rescale_grad(grad, rows), out)  # the same step draws the same noise
    w.observe({m: 1.0 for m in MODS}, {"text": 1.0, "image": 1.0, "audio": 16.0})
    assert not torch.equal(w.rescale_grad(grad, rows), out)  # the next step draws afresh
    fresh = GradModulation(alpha=0.2, ema=0.0, signal="grad_share", noise=True, seed=3,
                           warmup_steps=0)  # fmt: skip
    fresh.load_state_dict(w.state_dict())
    assert torch.equal(fresh.rescale_grad(grad, rows), w.rescale_grad(grad, rows))


def test_ogm_waits_for_its_warmup_and_never_stops_an_objective():
    """Before warmup_steps nothing is modulated; an objective that alone made progress (rho
    infinite) is slowed to min_coeff, not to 0, and its norm is still tracked."""
    w = GradModulation(alpha=0.5, ema=0.0, noise=False, warmup_steps=2, min_coeff=0.1)
    w.observe({"text": 4.0, "image": 4.0, "audio": 4.0}, {m: 1.0 for m in MODS})
    w.observe({"text": 1.0, "image": 4.0, "audio": 4.0}, {m: 1.0 for m in MODS})
    assert w.coeffs.tolist() == [1.0, 1.0, 1.0]  # still warming up
    w.observe({"text": 1.0, "image": 4.0, "audio": 4.0}, {m: 1.0 for m in MODS})
    assert w.coeffs.tolist() == pytest.approx([0.1, 1.0, 1.0])
    w.observe({"text": 1.0, "image": 4.0, "audio": 4.0}, {m: 0.01 for m in MODS})
    assert float(w.norm_ema[0]) == pytest.approx(0.1 / 0.1)  # the unmodulated norm
    with pytest.raises(ValueError, match="min_coeff"):
        GradModulation(min_coeff=0.0)


@pytest.mark.parametrize(
    "make",
    [
        FAMOWeighting,
        partial(GradModulation, warmup_steps=1),
        partial(GradNormWeighting, learning_rate=0.2),
        partial(GradNormWeighting, learning_rate=0.2, measure_at="weights"),
    ],
    ids=["famo", "ogm", "gradnorm", "gradnorm_weights"],
)
def test_resume_reproduces_the_uninterrupted_run(store, tmp_path, make):
    """Stop after step 3 of 6 and resume: the weighting's state (logits and Adam moments; OGM's
    EMAs, coefficients and noise step) comes back from the checkpoint exactly."""
    store_dir, layout = store
    _, full, _ = fit(store_dir, layout, make(), steps=6)
    fit(store_dir, layout, make(), steps=3, ckpt_dir=tmp_path / "ck", schedule_steps=6)
    _, resumed, _ = fit(store_dir, layout, make(), steps=6,
                        ckpt_path=str(tmp_path / "ck" / "last.ckpt"))  # fmt: skip
    _assert_same_steps(full[3:], resumed)
    weights = [k for k in full[-1] if k.startswith("train/weight/")]
    assert [full[-1][k] for k in weights] == [resumed[-1][k] for k in weights]
    assert len({round(full[-1][k], 6) for k in weights}) > 1  # the weighting did act


def test_odm_sampler_resumes_exactly(store, tmp_path):
    """The odm sampler's rewards, loss EMAs and step (its exploration) come back exactly."""
    store_dir, layout = store
    _, full, _ = fit(store_dir, layout, LossWeighting(), steps=8, sampler="odm")
    fit(store_dir, layout, LossWeighting(), steps=4, sampler="odm", ckpt_dir=tmp_path / "ck",
        schedule_steps=8)  # fmt: skip
    _, resumed, _ = fit(store_dir, layout, LossWeighting(), steps=8, sampler="odm",
                        ckpt_path=str(tmp_path / "ck" / "last.ckpt"))  # fmt: skip
    _assert_same_steps(full[4:], resumed)
    probs = [k for k in full[-1] if k.startswith("sampling/prob/")]
    assert len({round(full[-1][k], 6) for k in probs}) > 1  # past uniform exploration


def test_ogm_noise_is_a_draw_times_the_rows_own_spread():
    """GE noise on a slowed objective's rows: k g + ε σ, with ε the (seed, step, objective) draw
    and σ the population std of those rows' gradient, computed as masked moments (no read of
    the device, no boolean indexing); rows of other objectives are only scaled."""
    w = GradModulation(alpha=0.2, ema=0.0, signal="grad_share", noise=True, seed=3, warmup_steps=0)
    w.coeffs.copy_(torch.tensor([1.0, 0.5, 0.25]))
    grad = torch.randn(2, 6, 4, generator=torch.Generator().manual_seed(0))
    rows = torch.tensor([[0, 1, 2, 2, 1, 0], [2, 2, 2, 0, 1, 3]])
    out = w.rescale_grad(grad, rows)
    for i in (1, 2):
        chosen = rows == i
        seed = (3 * 1_000_003 + int(w.steps)) * 16 + i
        draw = torch.randn(grad.shape, generator=torch.Generator().manual_seed(seed))
        want = w.coeffs[i] * grad[chosen] + draw[chosen] * grad[chosen].std(unbiased=False)
        torch.testing.assert_close(out[chosen], want, rtol=1e-5, atol=1e-6)
    assert torch.equal(out[rows == 0], grad[rows == 0]) and torch.equal(
        out[rows == 3], grad[rows == 3]
    )
