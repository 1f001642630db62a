"""Tests for rlcal.core.rewards: the reward table, expected-reward optimality, TRL's calling convention, pickling."""

from __future__ import annotations

import math
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core.rewards import (
    REWARDS,
    BinaryReward,
    BrierReward,
    ConfidenceTargetReward,
    LogScoreReward,
    build_reward,
    completion_text,
    outcome_stats,
    parse_confidence,
)
from rlcal.core.thresholds import penalty

PROPS = settings(max_examples=150, deadline=None)


def call(reward, completions, answers, thresholds=None, **extra):
    columns = {"answer": answers, **extra}
    if thresholds is not None:
        columns["threshold"] = thresholds
    return reward(prompts=["Q?"] * len(completions), completions=completions, **columns)


# ---- the reward table -----------------------------------------------------------------------------------------


def test_confidence_target_table():
    reward = ConfidenceTargetReward()
    got = call(reward, ["Paris", "I don't know", "Lyon", "Lyon", "Lyon"], ["Paris"] * 5, [0.75, 0.75, 0.75, 0.5, 0.0])
    assert got == [1.0, 0.0, -3.0, -1.0, 0.0]  # t = 0.75 costs 3 points (the paper's "2" is a misprint)


def test_binary_table():
    got = call(BinaryReward(), ["Paris", "I don't know", "Lyon"], ["Paris"] * 3)  # needs no threshold column
    assert got == [1.0, 0.0, 0.0]


def test_brier_and_log_score_with_and_without_confidence():
    completions = [
        "Paris <confidence>0.8</confidence>",
        "Lyon <confidence>0.8</confidence>",
        "Paris",  # missing confidence: scored as the worst confidence for the outcome (q = 1 - c)
        "Lyon",
        "I don't know <confidence>0.9</confidence>",  # abstention: 0, like under confidence_target
        "Paris\nConfidence: 60%",
    ]
    brier = call(BrierReward(), completions, ["Paris"] * 6)
    assert brier == pytest.approx([1 - 0.04, -0.64, 0.0, -1.0, 0.0, 1 - 0.16])
    log = call(LogScoreReward(), completions, ["Paris"] * 6)
    assert log == pytest.approx([1 + math.log(0.8), math.log(0.2), 1 + math.log(0.01), math.log(0.01), 0.0,
                                 1 + math.log(0.6)])  # fmt: skip
    # leaving the confidence out never pays: it scores below every stated confidence
    for reward in (BrierReward(), LogScoreReward()):
        for answer in ("Paris", "Lyon"):
            missing = call(reward, [answer], ["Paris"])[0]
            stated = [
                call(reward, [f"{answer} <confidence>{q}</confidence>"], ["Paris"])[0] for q in (0.01, 0.5, 0.99)
            ]
            assert all(missing <= s + 1e-12 for s in stated)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<confidence>0.8</confidence>", 0.8),
        ("<confidence> 80 % </confidence>", 0.8),
        ("Confidence: 0.25", 0.25),
        ("CONFIDENCE = 70%", 0.7),
        ("confidence: 80", 0.8),  # above 1 without a sign: a percentage
        ("<confidence>150</confidence>", None),
        ("no confidence stated", None),
        ("", None),
        ("Confidence: 0.3 <confidence>0.9</confidence>", 0.9),  # the tag wins
        ("rainy, 80% confident", 0.8),  # the warm-up's stated-confidence format
        ("12-03 (5 % confident)", 0.05),
        ("I am not confident", None),  # no number
        ("80 confident", None),  # the phrase needs the % sign
        ("Confidence: 0.3, 90% confident", 0.3),  # the "Confidence:" phrase wins
    ],
)
def test_parse_confidence(text, expected):
    assert parse_confidence(text) == (pytest.approx(expected) if expected is not None else None)


# ---- optimality: answer iff p > t ------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(p=st.floats(0.0, 1.0), t=st.floats(0.0, 0.95))
def test_answering_pays_exactly_when_p_exceeds_t(p, t):
    """Expected reward of answering with P(correct) = p, from the real reward on real completions."""
    right, wrong, idk = call(ConfidenceTargetReward(), ["03-07", "04-11", "I don't know"], ["03-07"] * 3, [t] * 3)
    expected = p * right + (1 - p) * wrong
    assert expected == pytest.approx(p - (1 - p) * t / (1 - t), abs=1e-9)
    assert idk == 0.0
    if abs(p - t) > 1e-9:
        assert (expected > idk) == (p > t)


@PROPS
@given(t=st.floats(0.0, 0.99))
def test_penalty_is_t_over_one_minus_t(t):
    assert penalty(t) * (1 - t) == pytest.approx(t, abs=1e-12)
    assert call(ConfidenceTargetReward(), ["x"], ["y"], [t]) == [pytest.approx(-penalty(t))]


def test_penalty_at_three_quarters_is_computed_as_three():
    assert penalty(0.75) == 3.0
    assert 0.75 / (1 - 0.75) == penalty(0.75)


# ---- TRL's calling convention ----------------------------------------------------------------------------------


class _State:
    global_step = 7


def test_called_like_trl():
    """TRL's GRPOTrainer calls reward(prompts=, completions=, completion_ids=, **dataset columns, trainer_state=,
    log_extra=, log_metric=); chat completions are lists of messages."""
    logged: dict[str, float] = {}
    extra: list = []
    completions = [
        [{"role": "assistant", "content": "Paris"}],
        [{"role": "assistant", "content": "I don't know."}],
        [{"role": "assistant", "content": "Lyon"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "Paris"}]}],  # multimodal content parts
    ]
    reward = build_reward("confidence_target")
    out = reward(
        prompts=[[{"role": "user", "content": "Capital of France?"}]] * 4,
        completions=completions,
        completion_ids=[[1, 2]] * 4,
        answer=["Paris"] * 4,
        aliases=[["Paname"], [], None, []],
        question=["Capital of France?"] * 4,
        threshold=[0.75] * 4,
        split=["rl_train"] * 4,  # unrelated dataset columns are ignored
        id=[1, 2, 3, 4],
        trainer_state=_State(),
        log_extra=lambda column, values: extra.append(column),
        log_metric=logged.__setitem__,
    )
    assert out == [1.0, 0.0, -3.0, 1.0]
    assert all(isinstance(r, float) for r in out)
    assert logged == {
        "outcomes/accuracy": 0.5,
        "outcomes/abstain_rate": 0.25,
        "outcomes/hallucination_rate": 0.25,
        "outcomes/mean_threshold": 0.75,
    }
    assert reward.__name__ == "confidence_target"  # TRL logs rewards/<__name__>/mean


def test_bad_columns_raise_clearly():
    reward = ConfidenceTargetReward()
    with pytest.raises(ValueError, match="'threshold' column"):
        call(reward, ["x"], ["x"])
    with pytest.raises(ValueError, match="'answer' column"):
        reward(prompts=["q"], completions=["x"], threshold=[0.5])
    with pytest.raises(ValueError, match="has 2 values for 1"):
        call(reward, ["x"], ["x", "y"], [0.5])
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        call(reward, ["x"], ["x"], [1.0])
    assert call(ConfidenceTargetReward(default_threshold=0.5), ["y"], ["x"]) == [-1.0]
    with pytest.raises(ValueError, match="unknown reward"):
        build_reward("nope")


def test_custom_columns_and_phrases():
    reward = ConfidenceTargetReward(answer_column="gold", threshold_column="t", abstain_phrases=["pass"])
    out = reward(prompts=None, completions=["pass", "I don't know", "x"], gold=["x"] * 3, t=[0.5] * 3)
    assert out == [0.0, -1.0, 1.0]


@pytest.mark.parametrize("name", sorted(REWARDS))
def test_rewards_pickle_round_trip(name):
    reward = build_reward(name, grader="contains", abstain_phrases=["pass", "i don't know"])
    clone = pickle.loads(pickle.dumps(reward))
    completions = ["It is Paris <confidence>0.7</confidence>", "pass", "Lyon", "IDK", [{"content": "Paris"}]]
    columns = {"answer": ["Paris"] * 5, "threshold": [0.9] * 5}
    assert clone(prompts=None, completions=completions, **columns) == reward(None, completions, **columns)
    assert clone.__name__ == name and repr(clone) == repr(reward)


completion_strategy = st.one_of(
    st.text(),
    st.lists(st.fixed_dictionaries({"role": st.just("assistant"), "content": st.text()}), max_size=2),
    st.none(),
    st.integers(),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)


@PROPS
@given(completions=st.lists(completion_strategy, min_size=1, max_size=4), gold=st.text(), t=st.floats(0.0, 0.95),
       question=st.text())  # fmt: skip
def test_rewards_never_raise_on_arbitrary_unicode(completions, gold, t, question):
    n = len(completions)
    for name in REWARDS:
        out = build_reward(name)(
            prompts=[""] * n, completions=completions, answer=[gold] * n, aliases=[[question]] * n,
            question=[question] * n, threshold=[t] * n, log_metric=lambda k, v: None,
        )  # fmt: skip
        assert len(out) == n and all(math.isfinite(r) for r in out)
    for c in completions:
        assert isinstance(completion_text(c), str)
        assert parse_confidence(completion_text(c)) is None or 0 <= parse_confidence(completion_text(c)) <= 1


def test_outcome_stats():
    assert outcome_stats([]) == {}
    stats = outcome_stats(["correct", "wrong", "abstain", "abstain"], [0.5, 0.5, 0.9, 0.9])
    assert stats == {"accuracy": 0.25, "abstain_rate": 0.5, "hallucination_rate": 0.25, "mean_threshold": 0.7}


# ---- the bounded form: +1 / 2t - 1 / -1 --------------------------------------------------------------------------


def test_bounded_form_table():
    reward = ConfidenceTargetReward(form="bounded")
    got = call(reward, ["03-07", "04-11", "I don't know"] * 2, ["03-07"] * 6, [0.75] * 3 + [0.0] * 3)
    assert got == [1.0, -1.0, 0.5, 1.0, -1.0, -1.0]
    with pytest.raises(ValueError, match="form"):
        ConfidenceTargetReward(form="scaled")


@settings(max_examples=300, deadline=None)
@given(p=st.floats(0.0, 1.0), t=st.floats(0.0, 0.99))
def test_bounded_form_has_the_papers_optimal_policy_on_a_bounded_scale(p, t):
    """The bounded form ranks answering against abstaining exactly as the paper's form does (answer iff p > t),
    while every reward stays in [-1, 1] at every t (the paper's wrong answer costs t/(1-t), unbounded)."""
    bounded = call(ConfidenceTargetReward(form="bounded"), ["03-07", "04-11", "I don't know"], ["03-07"] * 3, [t] * 3)
    paper = call(ConfidenceTargetReward(), ["03-07", "04-11", "I don't know"], ["03-07"] * 3, [t] * 3)
    assert all(-1.0 <= r <= 1.0 for r in bounded)
    gain_bounded = p * bounded[0] + (1 - p) * bounded[1] - bounded[2]
    gain_paper = p * paper[0] + (1 - p) * paper[1] - paper[2]
    if abs(p - t) > 1e-6:
        assert (gain_bounded > 0) == (gain_paper > 0) == (p > t)
    # The bounded gain is the paper's gain scaled by 2(1 - t) > 0: same decisions, equal scale across t.
    assert gain_bounded == pytest.approx(2 * (1 - t) * gain_paper, abs=1e-9)


def test_bounded_form_pickles_and_reports_itself():
    reward = pickle.loads(pickle.dumps(ConfidenceTargetReward(form="bounded")))
    assert reward.form == "bounded" and "bounded" in repr(reward)
