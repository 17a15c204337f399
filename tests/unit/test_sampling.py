"""Mixture samplers: each one's defining behaviour, all-reduced statistics, state round trip."""

from __future__ import annotations

import io
import math
import threading

import pytest
import torch

from tokenize_mm.balance import (
    SAMPLERS,
    AdaptiveSampler,
    FixedSampler,
    MixtureSampler,
    OnlineMixingSampler,
    ProportionalSampler,
    SamplingError,
    TemperatureSampler,
    UniMaxSampler,
    build_sampler,
)

SIZES = {"trimodal": 6000, "image_text": 3000, "audio_text": 2000, "text_only": 500}
SHARES = {
    "trimodal": {"audio": 0.66, "image": 0.28, "text": 0.06},
    "image_text": {"image": 0.8, "text": 0.2},
    "audio_text": {"audio": 0.9, "text": 0.1},
    "text_only": {"text": 1.0},
}
OPTIONS = {
    "proportional": {},
    "temperature": {"tau": 2.0},
    "unimax": {"budget_tokens": 20000, "max_epochs": 2.0},
    "fixed": {"weights": {"trimodal": 1, "image_text": 2, "audio_text": 3, "text_only": 4}},
    "adaptive": {"step_size": 0.5, "smoothing": 0.5, "min_prob": 0.02},
    "odm": {"step_size": 1.0, "smoothing": 0.5, "loss_smoothing": 0.5},
}


def adaptive(**options) -> AdaptiveSampler:
    return AdaptiveSampler(SIZES, SHARES, **{**OPTIONS["adaptive"], **options})


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_is_a_distribution_over_the_sources(name):
    sampler = build_sampler(name, SIZES, SHARES, **OPTIONS[name])
    assert isinstance(sampler, MixtureSampler) and sampler.name == name
    p = sampler.probabilities()
    assert list(p) == list(SIZES)
    assert math.isclose(sum(p.values()), 1.0) and all(v >= 0 for v in p.values())


def test_proportional_is_the_token_share():
    p = ProportionalSampler(SIZES).probabilities()
    total = sum(SIZES.values())
    assert p == pytest.approx({s: n / total for s, n in SIZES.items()}, rel=1e-12)


def test_temperature_one_equals_proportional_exactly():
    assert TemperatureSampler(SIZES, tau=1.0).probabilities() == (
        ProportionalSampler(SIZES).probabilities()
    )


def test_temperature_flattens_towards_uniform():
    spreads = [
        max(p.values()) - min(p.values())
        for p in (TemperatureSampler(SIZES, tau=t).probabilities() for t in (1, 2, 5, 1e6))
    ]
    assert spreads == sorted(spreads, reverse=True)
    far = TemperatureSampler(SIZES, tau=1e6).probabilities()
    assert far == pytest.approx(dict.fromkeys(SIZES, 0.25), abs=1e-5)


def test_unimax_spreads_the_budget_uniformly_under_epoch_caps():
    sizes = {"a": 100, "b": 1000, "c": 10000, "d": 100000}
    sampler = UniMaxSampler(sizes, budget_tokens=40000, max_epochs=4)
    # Uniform would be 10000 each; a and b are capped at 4 epochs (400, 4000) and the 35600 they
    # leave is split between c and d.
    assert sampler.allocation == pytest.approx({"a": 400, "b": 4000, "c": 17800, "d": 17800})
    assert all(sampler.allocation[s] <= 4 * n + 1e-9 for s, n in sizes.items())
    p = sampler.probabilities()
    assert p == pytest.approx({s: a / 40000 for s, a in sampler.allocation.items()})
    # A budget above every cap: all capped, so proportional to the sizes.
    over = UniMaxSampler(sizes, budget_tokens=10**9, max_epochs=4).probabilities()
    assert over == pytest.approx(ProportionalSampler(sizes).probabilities())


def test_fixed_normalises_and_names_missing_and_unknown_sources():
    p = FixedSampler(SIZES, OPTIONS["fixed"]["weights"]).probabilities()
    assert p == pytest.approx({"trimodal": 0.1, "image_text": 0.2, "audio_text": 0.3,
                               "text_only": 0.4})  # fmt: skip
    with pytest.raises(SamplingError, match=r"missing \['text_only'\], unknown \['speech'\]"):
        FixedSampler(SIZES, {"trimodal": 1, "image_text": 1, "audio_text": 1, "speech": 1})
    with pytest.raises(SamplingError, match="not all zero"):
        FixedSampler(SIZES, dict.fromkeys(SIZES, 0))


@pytest.mark.parametrize(
    "make",
    [
        lambda: ProportionalSampler({}),
        lambda: ProportionalSampler({"a": 0}),
        lambda: TemperatureSampler(SIZES, tau=0),
        lambda: UniMaxSampler(SIZES, budget_tokens=-1),
        lambda: adaptive(min_prob=0.3),  # 4 sources × 0.3 > 1
        lambda: adaptive(smoothing=1.0),
        lambda: adaptive(reference_losses={"text": 1.0}),  # image and audio missing
        lambda: AdaptiveSampler(SIZES, {**SHARES, "text_only": {"text": 0}}),
        lambda: build_sampler("doremi", SIZES),
        lambda: build_sampler("adaptive", SIZES),  # no source_modalities
    ],
)
def test_bad_arguments_raise_typed_errors(make):
    with pytest.raises(SamplingError):
        make()


def test_adaptive_starts_proportional_and_favours_the_modality_with_most_excess_loss():
    sampler = adaptive(reference_losses={"text": 1.0, "image": 1.0, "audio": 1.0})
    start = sampler.probabilities()
    floor = sampler.min_prob
    proportional = ProportionalSampler(SIZES).probabilities()
    assert start == pytest.approx({s: (1 - 4 * floor) * p + floor for s, p in proportional.items()})
    for _ in range(5):
        sampler.update({"text": 3.0, "image": 1.2, "audio": 1.1})
    p = sampler.probabilities()
    gain = {s: p[s] - start[s] for s in SIZES}
    assert max(gain, key=gain.get) == "text_only"  # the source richest in text
    assert gain["text_only"] > 0.1 and gain["trimodal"] < 0
    weights = sampler.modality_weights()
    assert max(weights, key=weights.get) == "text"


def test_adaptive_reference_is_each_modality_own_best_when_not_given():
    sampler = adaptive()
    start = sampler.probabilities()
    for _ in range(5):  # steady losses: no excess, nothing moves
        sampler.update({"text": 2.0, "image": 2.0, "audio": 2.0})
    assert sampler.probabilities() == pytest.approx(start, abs=1e-12)
    for _ in range(5):  # audio gets worse than its best: audio-rich sources gain
        sampler.update({"text": 2.0, "image": 2.0, "audio": 3.0})
    p = sampler.probabilities()
    assert p["audio_text"] > start["audio_text"] and p["text_only"] < start["text_only"]


def test_adaptive_keeps_every_probability_and_weight_above_min_prob():
    sampler = adaptive(step_size=5.0, reference_losses={"text": 0.0, "image": 0.0, "audio": 0.0})
    for _ in range(50):
        sampler.update({"text": 10.0, "image": 0.0, "audio": 0.0})
    assert min(sampler.probabilities().values()) >= sampler.min_prob
    assert min(sampler.modality_weights().values()) >= sampler.min_prob - 1e-15
    # Text's weight at its ceiling 1 - 2 × floor; text_only holds 500 of the 1660 text tokens.
    text_only = (1 - 4 * 0.02) * (1 - 2 * 0.02) * 500 / 1660 + 0.02
    assert sampler.probabilities()["text_only"] == pytest.approx(text_only, rel=1e-9)


def test_adaptive_is_deterministic_and_skips_modalities_without_a_finite_loss():
    a, b = adaptive(), adaptive()
    for losses in ({"text": 2.0, "audio": 1.0}, {"text": 2.5, "image": math.nan, "audio": 1.0}):
        a.update(losses)
        b.update({**losses, "video": 7.0})  # a modality no source holds is ignored
    assert a.probabilities() == b.probabilities()
    assert math.isnan(a.state_dict()["ema"][a.modalities.index("image")])


def _all_reduce_over_threads(world_size: int):
    """A sum all-reduce between threads that stand for ranks."""
    barrier, slots = threading.Barrier(world_size), [None] * world_size

    def make(rank: int):
        def reduce(t: torch.Tensor) -> torch.Tensor:
            slots[rank] = t.clone()
            barrier.wait()
            total = sum(slots)
            barrier.wait()  # nobody overwrites a slot before everyone has summed
            return total

        return reduce

    return make


def test_reduce_gives_every_rank_the_same_probabilities():
    # Rank 0 saw no audio this step; rank 1 saw every modality.
    local = [
        [{"text": 2.0, "image": 1.0}, {"text": 2.2, "image": 1.2}],
        [{"text": 4.0, "image": 3.0, "audio": 3.0}, {"text": 4.2, "image": 3.0, "audio": 3.5}],
    ]
    ranks = [adaptive(), adaptive()]
    make_reduce = _all_reduce_over_threads(2)

    def run(rank):
        for losses in local[rank]:
            ranks[rank].update(losses, reduce=make_reduce(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ranks[0].probabilities() == ranks[1].probabilities()
    assert ranks[0].state_dict() == ranks[1].state_dict()
    # The same as one process fed the mean over the ranks that saw each modality.
    single = adaptive()
    for step in range(2):
        a, b = local[0][step], local[1][step]
        single.update({m: (a[m] + b[m]) / 2 if m in a else b[m] for m in b})
    assert single.probabilities() == pytest.approx(ranks[0].probabilities(), rel=1e-12)
    # Without the reduce, the ranks would drift apart.
    alone = [adaptive(), adaptive()]
    for rank in range(2):
        for losses in local[rank]:
            alone[rank].update(losses)
    assert alone[0].probabilities() != alone[1].probabilities()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_state_round_trip_through_a_weights_only_checkpoint(name):
    sampler = build_sampler(name, SIZES, SHARES, **OPTIONS[name])
    for step in range(3):
        sampler.update({"text": 3.0 - step, "image": 1.0 + step, "audio": 2.0})
    buffer = io.BytesIO()
    torch.save(sampler.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain values only, no pickled objects
    restored = build_sampler(name, SIZES, SHARES, **OPTIONS[name])
    restored.load_state_dict(state)
    assert restored.probabilities() == sampler.probabilities()
    for s in (sampler, restored):
        s.update({"text": 0.5, "image": 4.0, "audio": 2.0})
    assert restored.probabilities() == sampler.probabilities()


def test_loading_the_state_of_another_sampler_or_sources_raises():
    with pytest.raises(SamplingError, match="same sampler and sources"):
        ProportionalSampler(SIZES).load_state_dict(TemperatureSampler(SIZES).state_dict())
    with pytest.raises(SamplingError, match="same sampler and sources"):
        other = AdaptiveSampler({"text_only": 1}, {"text_only": {"text": 1.0}})
        adaptive().load_state_dict(other.state_dict())


def test_odm_explores_uniformly_first_then_rewards_the_source_whose_tokens_lower_the_loss():
    """ODM starts uniform (exploration 1/S), its exploration decays as sqrt(ln S / (S t)), and a
    source that carries the modality whose loss keeps falling gains probability over sources that
    carry modalities whose loss stalls."""
    odm = OnlineMixingSampler(SIZES, SHARES, **OPTIONS["odm"])
    assert odm.probabilities() == pytest.approx({s: 0.25 for s in SIZES}, rel=1e-12)
    assert OnlineMixingSampler.exploration(4, 100) == pytest.approx(math.sqrt(math.log(4) / 400))
    loss = {"text": 3.0, "image": 3.0, "audio": 3.0}
    for _ in range(200):
        loss = {**loss, "image": loss["image"] * 0.98}  # only image learns
        odm.update(loss)
    p, rewards = odm.probabilities(), odm.rewards()
    assert max(rewards, key=rewards.get) == "image_text"  # image's largest share, 0.8
    assert p["image_text"] > p["audio_text"] and p["image_text"] > p["text_only"]
    eps = OnlineMixingSampler.exploration(4, 200)
    assert min(p.values()) >= eps - 1e-12 and math.isclose(sum(p.values()), 1.0)


def test_odm_rewards_the_contrastive_fall_to_the_sources_that_hold_pairs():
    """With the contrastive objective's loss among the step's losses, its fall is credited by the
    pairs a document holds (trimodal 3, image_text and audio_text 1, text_only 0): while only the
    alignment learns, the tri-modal source gains and the text-only source gets nothing. Without
    the reward, the same losses leave the policy where the modalities' losses put it."""
    with_c = OnlineMixingSampler(SIZES, SHARES, **OPTIONS["odm"])
    without = OnlineMixingSampler(SIZES, SHARES, **OPTIONS["odm"], reward_contrastive=False)
    assert with_c.objectives == ["audio", "image", "text", "contrastive"]
    assert without.objectives == ["audio", "image", "text"]
    loss = {"text": 3.0, "image": 3.0, "audio": 3.0, "contrastive": 4.0}
    for _ in range(100):
        loss = {**loss, "contrastive": loss["contrastive"] * 0.97}  # only the alignment learns
        with_c.update(loss)
        without.update(loss)
    rewards = with_c.rewards()
    assert max(rewards, key=rewards.get) == "trimodal" and rewards["text_only"] == 0.0
    r_tri = rewards["trimodal"] / 3
    assert rewards["image_text"] == pytest.approx(r_tri) == rewards["audio_text"]  # per pair
    assert set(without.rewards().values()) == {0.0}  # the LM losses did not move
    p = with_c.probabilities()
    assert p["trimodal"] > without.probabilities()["trimodal"] and p["text_only"] < p["trimodal"]
    # a source set with no pairs (every source one modality) has no contrastive objective
    single = OnlineMixingSampler({"a": 1, "b": 1}, {"a": {"text": 1.0}, "b": {"image": 1.0}})
    assert single.objectives == ["image", "text"]


def test_odm_refuses_a_state_that_rewards_other_objectives():
    """Resuming across a change of ``reward_contrastive`` names the setting to resume with; a
    state saved before the contrastive reward existed (modalities only) loads into either, its
    contrastive loss unseen."""
    with_c = OnlineMixingSampler(SIZES, SHARES)
    without = OnlineMixingSampler(SIZES, SHARES, reward_contrastive=False)
    with pytest.raises(SamplingError, match="reward_contrastive=true"):  # as the state was saved
        without.load_state_dict(with_c.state_dict())
    with pytest.raises(SamplingError, match="reward_contrastive=false"):
        with_c.load_state_dict(without.state_dict())
    without.update({"text": 2.0, "image": 3.0, "audio": 1.0})
    old = {k: v for k, v in without.state_dict().items() if k != "objectives"}
    without.load_state_dict(old)
    with_c.load_state_dict(old)
    assert with_c.state_dict()["log_loss"][:3] == old["log_loss"]
    assert math.isnan(with_c.state_dict()["log_loss"][3])
    assert with_c.probabilities() == without.probabilities()


def test_odm_reduce_gives_every_rank_the_same_probabilities():
    local = [
        [{"text": 2.0, "image": 1.0}, {"text": 1.8, "image": 0.9}, {"text": 1.7, "image": 0.7}],
        [{"text": 4.0, "image": 3.0, "audio": 3.0}, {"text": 3.9, "image": 2.0, "audio": 3.5},
         {"text": 3.0, "image": 2.0, "audio": 3.4}],
    ]  # fmt: skip
    ranks = [OnlineMixingSampler(SIZES, SHARES), OnlineMixingSampler(SIZES, SHARES)]
    make_reduce = _all_reduce_over_threads(2)

    def run(rank):
        for losses in local[rank]:
            ranks[rank].update(losses, reduce=make_reduce(rank))

    threads = [threading.Thread(target=run, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ranks[0].state_dict() == ranks[1].state_dict()
    assert ranks[0].probabilities() == ranks[1].probabilities()
    assert len(set(ranks[0].rewards().values())) > 1  # it learnt (exploration: still uniform)
