"""Tests for rlcal.core.thresholds: the penalty t/(1−t) and the seeded threshold samplers."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core.thresholds import DEFAULT_CAP, ThresholdSampler, check_threshold, penalty

PROPS = settings(max_examples=150, deadline=None)


def test_penalty_values():
    assert penalty(0.0) == 0.0
    assert penalty(0.5) == 1.0
    assert penalty(0.75) == 3.0  # the paper prints 2; t/(1-t) is 3
    assert penalty(0.9) == pytest.approx(9.0)


@PROPS
@given(st.floats(0.0, 0.999), st.floats(0.0, 0.999))
def test_penalty_is_t_over_one_minus_t_and_increasing(a, b):
    assert penalty(a) * (1 - a) == pytest.approx(a, abs=1e-12)
    if a < b:
        assert penalty(a) < penalty(b)


@pytest.mark.parametrize("bad", [1.0, 1.5, -0.1, float("nan"), float("inf"), "x", None, True, [0.5]])
def test_bad_thresholds_raise(bad):
    with pytest.raises(ValueError, match="threshold"):
        check_threshold(bad)
    with pytest.raises(ValueError):
        penalty(bad)


def test_check_threshold_cap_and_strings():
    assert check_threshold("0.5") == 0.5
    assert check_threshold(0.9, cap=0.9) == 0.9
    with pytest.raises(ValueError, match="above the cap"):
        check_threshold(0.96, cap=DEFAULT_CAP)


SPECS = [
    0.75,
    "0.5",
    {"fixed": 0.9},
    {"choice": [0.5, 0.75, 0.9]},
    {"choice": [0.0, 0.5, 0.9], "weights": [1, 0, 3]},
    {"uniform": [0.0, 0.9]},
    {"uniform": [0.2, 0.95], "decimals": 3},
    {"beta": [2.0, 2.0]},
    {"beta": [0.3, 0.3], "cap": 0.8},
    {"beta": [5.0, 1.0], "cap": 0.9, "decimals": 1},
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_samplers_are_seeded_bounded_and_rounded(spec):
    sampler = ThresholdSampler.from_spec(spec)
    draws = sampler.sample(500, seed=3)
    assert draws == sampler.sample(500, seed=3) == ThresholdSampler.from_spec(spec).sample(500, seed=3)
    assert all(0.0 <= t <= sampler.cap for t in draws)
    assert all(round(t, sampler.decimals) == t for t in draws)
    assert all(math.isfinite(penalty(t)) for t in draws)
    if sampler.kind in ("uniform", "beta", "choice"):
        assert draws != sampler.sample(500, seed=4)  # the seed matters
    if sampler.kind == "choice":
        weights = sampler.weights or [1.0] * len(sampler.values)
        assert {t for t in draws} == {v for v, w in zip(sampler.values, weights, strict=True) if w > 0}
    if sampler.kind == "uniform":
        assert min(draws) >= sampler.low and max(draws) <= sampler.high


def test_sampler_distributions_roughly_right():
    beta = ThresholdSampler.from_spec({"beta": [2.0, 6.0]}).sample(4000, seed=0)
    assert sum(beta) / len(beta) == pytest.approx(0.25, abs=0.02)
    choice = ThresholdSampler.from_spec({"choice": [0.5, 0.9], "weights": [1, 3]}).sample(4000, seed=0)
    assert choice.count(0.9) / len(choice) == pytest.approx(0.75, abs=0.03)
    beta_above_cap = ThresholdSampler.from_spec({"beta": [8.0, 1.0], "cap": 0.7}).sample(200, seed=0)
    assert max(beta_above_cap) == 0.7  # draws above the cap are clipped to it


@PROPS
@given(low=st.floats(0.0, 0.95), width=st.floats(0.0, 0.95), n=st.integers(0, 50), seed=st.integers(0, 2**32))
def test_uniform_sampler_property(low, width, n, seed):
    high = min(low + width, DEFAULT_CAP)
    sampler = ThresholdSampler.from_spec({"uniform": [low, high], "decimals": 4})
    draws = sampler.sample(n, seed)
    assert len(draws) == n and draws == sampler.sample(n, seed)
    assert all(round(low, 4) - 1e-12 <= t <= round(high, 4) + 1e-12 for t in draws)


@pytest.mark.parametrize(
    "spec",
    [
        1.0,
        -0.5,
        True,
        "abc",
        [0.5],
        {"fixed": 0.99},  # above the default cap
        {"fixed": 0.5, "cap": 1.0},
        {"choice": []},
        {"choice": [0.5, 1.2]},
        {"choice": 0.5},
        {"choice": [0.5, 0.9], "weights": [1]},
        {"choice": [0.5, 0.9], "weights": [0, 0]},
        {"choice": [0.5, 0.9], "weights": [1, -1]},
        {"choice": [0.5], "weights": ["a"]},
        {"uniform": [0.5, 0.2]},
        {"uniform": [0.0, 0.99]},
        {"uniform": [0.1]},
        {"uniform": [0.0, 0.9], "weights": [1, 2]},
        {"beta": [0.0, 1.0]},
        {"beta": [1.0, float("inf")]},
        {"beta": ["a", 1.0]},
        {"fixed": 0.5, "decimals": -1},
        {"fixed": 0.5, "uniform": [0, 0.5]},
        {"fixed": 0.5, "extra": 1},
        {},
    ],
    ids=str,
)
def test_bad_specs_raise(spec):
    with pytest.raises(ValueError, match="threshold"):
        ThresholdSampler.from_spec(spec)


def test_sample_count_must_be_non_negative():
    sampler = ThresholdSampler.from_spec(0.5)
    assert sampler.sample(0) == []
    with pytest.raises(ValueError, match="non-negative"):
        sampler.sample(-1)
    assert ThresholdSampler.from_spec(sampler) is sampler
