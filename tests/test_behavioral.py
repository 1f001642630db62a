"""Tests for rlcal.core.behavioral: behavioral ECE and monotone share, hand-worked and as properties.

    pytest -q tests/test_behavioral.py
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core import behavioral as B


def test_answering_everything_costs_the_gap_to_the_last_threshold():
    # A 0-1 model answers at every t, so L = k for all: one bin [t_k, 1] holding every question. Its accuracy 0.5
    # lies 0.75 - 0.5 = 0.25 below that interval: behavioral ECE = max(0, t_k - accuracy).
    grid = [0.0, 0.5, 0.75]
    answered = np.ones((4, 3), dtype=bool)
    correct = [1, 0, 1, 0]
    assert B.behavioral_ece(grid, answered, correct) == pytest.approx(0.25)
    # With a fine grid (t_k near 1) this tends to 1 - accuracy: 0.99 - 0.5.
    assert B.behavioral_ece([0.0, 0.5, 0.99], answered, correct) == pytest.approx(0.49)
    # accuracy above t_k: inside [t_k, 1], no error
    assert B.behavioral_ece(grid, answered, [1, 1, 1, 1]) == 0.0
    assert B.monotone_share(answered) == 1.0


def test_small_mixed_example_by_hand():
    # grid [0, 0.5]: bins -1 [0, 0], 0 [0, 0.5], 1 [0.5, 1]
    grid = [0.0, 0.5]
    answered = [[1, 1], [1, 1], [1, 0], [1, 0], [0, 0]]
    correct = [1, 0, 1, 1, 0]
    # bin 1: questions 1-2, accuracy 0.5, inside [0.5, 1] -> 0
    # bin 0: questions 3-4, accuracy 1.0, 0.5 above [0, 0.5] -> 2/5 * 0.5 = 0.2
    # bin -1: question 5, accuracy 0, inside [0, 0] -> 0
    assert B.behavioral_ece(grid, answered, correct) == pytest.approx(0.2)
    bins = B.behavioral_bins(grid, answered, correct)
    assert [(b["level"], b["lo"], b["hi"], b["count"]) for b in bins] == [
        (-1, 0.0, 0.0, 1),
        (0, 0.0, 0.5, 2),
        (1, 0.5, 1.0, 2),
    ]
    assert [b["accuracy"] for b in bins] == [0.0, 1.0, 0.5]
    assert [b["distance"] for b in bins] == pytest.approx([0.0, 0.5, 0.0])


def test_non_monotone_answers_by_hand():
    grid = [0.0, 0.5, 0.75]
    # question 1 answers at 0, abstains at 0.5, answers again at 0.75: L = 0 (the answer after the abstention is
    # ignored), bin [0, 0.5] with accuracy 1 -> distance 0.5; question 2 answers everywhere, right: bin [0.75, 1].
    answered = [[1, 0, 1], [1, 1, 1]]
    correct = [1, 1]
    assert B.stop_levels(answered).tolist() == [0, 2]
    assert B.behavioral_ece(grid, answered, correct) == pytest.approx(0.5 * 0.5)
    assert B.is_monotone(answered).tolist() == [False, True]
    assert B.monotone_share(answered) == 0.5


def test_abstaining_at_t0_is_bin_minus_one():
    grid = [0.0, 0.5]
    # question 1 abstains at t = 0 (its `correct` flag is ignored: an abstention is never a right answer) and
    # answers at 0.5 (non-monotone); question 2 answers everywhere and is wrong.
    answered = [[0, 1], [1, 1]]
    correct = [1, 0]
    assert B.stop_levels(answered).tolist() == [-1, 1]
    bins = B.behavioral_bins(grid, answered, correct)
    assert bins[0] == {"level": -1, "lo": 0.0, "hi": 0.0, "count": 1, "accuracy": 0.0, "distance": 0.0}
    # only question 2 contributes: accuracy 0 is 0.5 below [0.5, 1], weight 1/2
    assert B.behavioral_ece(grid, answered, correct) == pytest.approx(0.25)
    assert B.monotone_share(answered) == 0.5
    # everyone abstains at t = 0: all in bin -1, nothing to miss
    assert B.behavioral_ece(grid, [[0, 0], [0, 0]], [0, 0]) == 0.0


def test_ideal_policy_scores_about_zero_and_overconfidence_does_not():
    rng = np.random.default_rng(0)
    grid = np.array([0.0, 0.25, 0.5, 0.75, 0.9])
    p = rng.uniform(0.01, 1.0, size=40_000)  # true probability of being right
    correct = rng.random(p.size) < p
    ideal = p[:, None] > grid[None, :]  # answer iff P(correct) > t
    assert B.behavioral_ece(grid, ideal, correct) < 0.01
    assert B.monotone_share(ideal) == 1.0
    overconfident = np.minimum(p + 0.3, 0.999)[:, None] > grid[None, :]
    assert B.behavioral_ece(grid, overconfident, correct) > 0.05


@pytest.mark.parametrize(
    "grid, answered, correct, match",
    [
        ([0.5, 0.75], [[1, 1]], [1], "0 = t_0"),
        ([0.0, 0.5, 0.5], [[1, 1, 1]], [1], "0 = t_0"),
        ([0.0, 1.0], [[1, 1]], [1], "0 = t_0"),
        ([0.0], [[1]], [1], "at least 2"),
        ([0.0, 0.5], [[1, 1, 1]], [1], "shape"),
        ([0.0, 0.5], [[1, 1]], [1, 0], "shape"),
        ([0.0, 0.5], [[1, 2]], [1], "0/1"),
        ([0.0, 0.5], np.zeros((0, 2)), [], "empty"),
    ],
)
def test_bad_input_is_a_value_error(grid, answered, correct, match):
    with pytest.raises(ValueError, match=match):
        B.behavioral_ece(grid, answered, correct)


@st.composite
def decisions(draw):
    k = draw(st.integers(1, 4))
    grid = [0.0, *sorted(draw(st.sets(st.sampled_from([0.1, 0.25, 0.5, 0.6, 0.75, 0.9]), min_size=k, max_size=k)))]
    n = draw(st.integers(1, 30))
    answered = draw(st.lists(st.lists(st.booleans(), min_size=len(grid), max_size=len(grid)), min_size=n, max_size=n))
    correct = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return grid, np.array(answered), np.array(correct)


@settings(max_examples=150, deadline=None)
@given(decisions(), st.randoms())
def test_properties(case, rnd):
    grid, answered, correct = case
    value = B.behavioral_ece(grid, answered, correct)
    assert 0.0 <= value <= 1.0
    order = list(range(len(correct)))
    rnd.shuffle(order)  # questions are a set: order does not matter
    assert B.behavioral_ece(grid, answered[order], correct[order]) == pytest.approx(value)
    bins = B.behavioral_bins(grid, answered, correct)
    assert sum(b["count"] for b in bins) == len(correct)
    # the total is the count-weighted mean of the per-bin distances
    weighted = sum(b["count"] * b["distance"] for b in bins if b["count"]) / len(correct)
    assert weighted == pytest.approx(value)
    share = B.monotone_share(answered)
    assert share == pytest.approx(np.mean([all(a >= b for a, b in pairwise(row)) for row in answered.tolist()]))


def test_answer_rate_changes_by_hand():
    # Rates over [0, 0.5, 0.75]: 3/3, 1/3, 2/3 -> changes -2/3, +1/3 (question 1 answers again at 0.75).
    answered = [[1, 0, 1], [1, 1, 1], [1, 0, 0]]
    assert B.answer_rate_changes(answered) == pytest.approx([-2 / 3, 1 / 3])
    with pytest.raises(ValueError, match="shape"):
        B.answer_rate_changes([[1], [0]])
