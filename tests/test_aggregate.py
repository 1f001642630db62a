"""Tests for rlcal.core.aggregate: the metrics schema, its bootstrap intervals, and that `rlcal eval`, `rlcal score`
and the logged reward metrics all go through it.

    pytest -q tests/test_aggregate.py
"""

from __future__ import annotations

import json
import random
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core import behavioral, metrics
from rlcal.core.aggregate import (
    PER_THRESHOLD_KEYS,
    RATE_KEYS,
    Record,
    aggregate,
    bootstrap_weights,
    threshold_block,
)
from rlcal.core.grading import ABSTAIN, CORRECT, WRONG

GRID = [0.0, 0.5, 0.75, 0.9]


def policy_records(n: int, seed: int = 0, overconfidence: float = 0.0, grid=GRID) -> list[Record]:
    """n questions with true probability p ~ U(0, 1), each decided at every t of the grid: answer iff
    p + overconfidence > t (always at t = 0), right with probability p (the same answer at every t)."""
    rng = random.Random(seed)
    out = []
    for q in range(n):
        p = rng.random()
        right = rng.random() < p
        for t in grid:
            answered = t == 0.0 or p + overconfidence > t
            outcome = ABSTAIN if not answered else CORRECT if right else WRONG
            out.append(Record(outcome, t, min(p + overconfidence, 1.0) if t == 0.0 else None, q))
    return out


def width(interval: list[float]) -> float:
    return interval[1] - interval[0]


# ---- schema ------------------------------------------------------------------------------------------------------


def test_schema():
    result = aggregate(policy_records(50), n_bins=10, calibration_threshold=0.0)
    assert set(result) == {"calibration", "per_threshold", "behavioral", "ci", "bootstrap"}
    assert set(result["calibration"]) == {"n", "ece", "ece_equal_mass", "mce", "brier", "auroc", "reliability"}
    assert result["calibration"]["n"] == 50 and len(result["calibration"]["reliability"]) == 11
    assert list(result["per_threshold"]) == ["0", "0.5", "0.75", "0.9"]
    for block in result["per_threshold"].values():
        assert set(block) == {*PER_THRESHOLD_KEYS, "ci"} and set(block["ci"]) == set(RATE_KEYS)
    assert set(result["ci"]) == {"ece", "behavioral_ece", "behavioral_monotone_share"}
    assert result["bootstrap"] == {
        "method": "percentile", "unit": "question", "n_units": 50, "n_questions": 50, "n_resamples": 1000, "seed": 0,
        "level": 0.95,
    }  # fmt: skip
    assert result["behavioral"]["behavioral_n"] == 50
    json.dumps(result, allow_nan=False)
    assert "ci" not in aggregate(policy_records(5), n_resamples=0)


def test_per_threshold_block_by_hand():
    block = threshold_block([CORRECT, WRONG, WRONG, ABSTAIN], [0.75] * 4)
    assert block == {
        "n": 4, "n_correct": 1, "n_wrong": 2, "n_abstain": 1,
        "answer_rate": 0.75, "accuracy_answered": 1 / 3, "hallucination_rate": 0.5, "score": (1 - 2 * 3) / 4,
    }  # fmt: skip
    # each wrong answer costs t/(1-t) at its own t: 1 at 0.5, 9 at 0.9
    assert threshold_block([WRONG, WRONG, CORRECT], [0.5, 0.9, 0.0])["score"] == pytest.approx((1 - 1 - 9) / 3)
    assert threshold_block([ABSTAIN], [0.5])["accuracy_answered"] is None
    with pytest.raises(ValueError, match="unknown outcomes"):
        threshold_block(["maybe"], [0.0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([CORRECT, WRONG, ABSTAIN]), st.sampled_from(GRID)), min_size=1))
def test_threshold_block_agrees_with_abstention_metrics(pairs):
    for t in {t for _, t in pairs}:
        outcomes = [o for o, u in pairs if u == t]
        ours = threshold_block(outcomes, [t] * len(outcomes))
        theirs = metrics.abstention_metrics([o == CORRECT for o in outcomes], [o != ABSTAIN for o in outcomes], t)
        assert ours == theirs  # exactly: one formula (metrics.outcome_rates)


def test_calibration_at_one_threshold_or_all():
    records = [Record(CORRECT, 0.0, 0.9, 1), Record(WRONG, 0.5, 0.2, 1), Record(ABSTAIN, 0.0, 0.4, 2)]
    at_0 = aggregate(records, n_resamples=0, calibration_threshold=0.0)["calibration"]
    assert at_0["n"] == 1 and at_0["ece"] == pytest.approx(0.1)
    everywhere = aggregate(records, n_resamples=0)["calibration"]
    assert everywhere["n"] == 2 and everywhere["ece"] == pytest.approx(metrics.ece([0.9, 0.2], [1, 0]))


# ---- bootstrap ---------------------------------------------------------------------------------------------------


def test_all_correct_gives_degenerate_intervals():
    records = [Record(CORRECT, t, 1.0, q) for q in range(20) for t in (0.0, 0.5)]
    result = aggregate(records, calibration_threshold=0.0)
    for block in result["per_threshold"].values():
        assert block["ci"] == {
            "answer_rate": [1.0, 1.0], "accuracy_answered": [1.0, 1.0], "hallucination_rate": [0.0, 0.0],
            "score": [1.0, 1.0],
        }  # fmt: skip
    assert result["ci"]["ece"] == [0.0, 0.0]  # confidence 1, always right
    # answers everything at [0.5, 1] with accuracy 1: behavioral ECE 0, and monotone
    assert result["ci"]["behavioral_ece"] == [0.0, 0.0] and result["ci"]["behavioral_monotone_share"] == [1.0, 1.0]


def test_all_abstain_has_no_accuracy_interval():
    result = aggregate([Record(ABSTAIN, 0.5, None, q) for q in range(10)])
    ci = result["per_threshold"]["0.5"]["ci"]
    assert ci["accuracy_answered"] is None and ci["answer_rate"] == [0.0, 0.0] and ci["score"] == [0.0, 0.0]
    assert result["ci"] == {"ece": None, "behavioral_ece": None, "behavioral_monotone_share": None}


def test_same_seed_same_intervals_other_seed_other_intervals():
    records = policy_records(200, overconfidence=0.2)
    a = aggregate(records, seed=0, calibration_threshold=0.0)
    b = aggregate(records, seed=0, calibration_threshold=0.0)
    c = aggregate(records, seed=1, calibration_threshold=0.0)
    assert a == b
    assert a["per_threshold"]["0.5"]["ci"] != c["per_threshold"]["0.5"]["ci"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_contain_the_point_estimate(seed):
    # Overconfident on purpose: binned ECE is biased upwards under resampling, so a well-calibrated model's ECE can
    # fall below its own percentile interval (docs/metrics.md); a clearly miscalibrated one's does not.
    result = aggregate(policy_records(400, seed, overconfidence=0.25), calibration_threshold=0.0, seed=seed)
    for block in result["per_threshold"].values():
        for key in RATE_KEYS:
            lo, hi = block["ci"][key]
            assert lo <= block[key] <= hi, key
    lo, hi = result["ci"]["ece"]
    assert lo <= result["calibration"]["ece"] <= hi
    lo, hi = result["ci"]["behavioral_ece"]
    assert lo <= result["behavioral"]["behavioral_ece"] <= hi


def test_intervals_shrink_with_more_questions():
    small = aggregate(policy_records(100, overconfidence=0.2), calibration_threshold=0.0)
    large = aggregate(policy_records(1600, overconfidence=0.2), calibration_threshold=0.0)
    for key in RATE_KEYS:
        # 16 times the questions: about a quarter of the width (sqrt n); at least half as wide is a safe bound
        assert width(large["per_threshold"]["0.5"]["ci"][key]) < 0.5 * width(small["per_threshold"]["0.5"]["ci"][key])
    assert width(large["ci"]["ece"]) < 0.5 * width(small["ci"]["ece"])
    assert width(large["ci"]["behavioral_ece"]) < 0.5 * width(small["ci"]["behavioral_ece"])


def test_thresholds_of_one_question_are_resampled_together():
    # Kind A: right at t = 0 and at t = 0.5; kind B: wrong at t = 0, abstains at 0.5. In every resample of questions
    # accuracy at t = 0 and the answer rate at t = 0.5 are both the share of kind A: identical distributions.
    records = []
    for q in range(30):
        a = q % 3 == 0
        records += [Record(CORRECT if a else WRONG, 0.0, None, q), Record(CORRECT if a else ABSTAIN, 0.5, None, q)]
    paired = aggregate(records)["per_threshold"]
    assert paired["0"]["ci"]["accuracy_answered"] == paired["0.5"]["ci"]["answer_rate"]
    assert paired["0"]["ci"]["hallucination_rate"] == [1 - x for x in reversed(paired["0.5"]["ci"]["answer_rate"])]
    # Without question ids each record is resampled on its own and the two intervals come apart.
    unpaired = aggregate([Record(r.outcome, r.threshold) for r in records])["per_threshold"]
    assert unpaired["0"]["ci"]["accuracy_answered"] != unpaired["0.5"]["ci"]["answer_rate"]


def test_bootstrap_weights_resample_each_unit_count():
    w = bootstrap_weights(7, 500, np.random.default_rng(3))
    assert w.shape == (500, 7) and np.all(w.sum(axis=1) == 7) and np.all(w >= 0)
    assert abs(w.mean() - 1.0) < 0.05  # each unit drawn once per resample on average


def naive_intervals(records: list[Record], n_resamples: int, seed: int, level: float = 0.95) -> dict:
    """The reference: rebuild each resample's records (a question drawn twice appears twice, as a new question)
    and score it with the point-estimate path (metrics.ece, behavioral.behavioral_ece, threshold_block)."""
    questions = sorted({r.question for r in records})
    by_q = {q: [r for r in records if r.question == q] for q in questions}
    weights = bootstrap_weights(len(questions), n_resamples, np.random.default_rng(seed))
    values: dict[str, list[float]] = {}
    for row in weights:
        sample = []
        for q, count in zip(questions, row.astype(int), strict=True):
            for copy in range(count):
                sample += [Record(r.outcome, r.threshold, r.confidence, (q, copy)) for r in by_q[q]]
        point = aggregate(sample, n_bins=5, calibration_threshold=0.0, n_resamples=0)
        for key, block in point["per_threshold"].items():
            for name in RATE_KEYS:
                values.setdefault(f"{key}.{name}", []).append(block[name])
        values.setdefault("ece", []).append(point["calibration"]["ece"])
        values.setdefault("behavioral_ece", []).append(point["behavioral"]["behavioral_ece"])
        values.setdefault("behavioral_monotone_share", []).append(point["behavioral"]["behavioral_monotone_share"])
    tail = 100 * (1 - level) / 2
    out = {}
    for name, vs in values.items():
        defined = [v for v in vs if v is not None]
        out[name] = [float(x) for x in np.percentile(defined, [tail, 100 - tail])] if defined else None
    return out


def test_vectorised_bootstrap_equals_the_naive_loop():
    rng = random.Random(5)
    records = []
    for q in range(25):
        for t in (0.0, 0.5, 0.75):
            outcome = rng.choice([CORRECT, WRONG, ABSTAIN])
            records.append(Record(outcome, t, round(rng.random(), 2) if t == 0.0 else None, q))
    fast = aggregate(records, n_bins=5, calibration_threshold=0.0, n_resamples=200, seed=4)
    slow = naive_intervals(records, 200, seed=4)
    for key, block in fast["per_threshold"].items():
        for name in RATE_KEYS:
            assert block["ci"][name] == pytest.approx(slow[f"{key}.{name}"]), (key, name)
    for name in ("ece", "behavioral_ece", "behavioral_monotone_share"):
        assert fast["ci"][name] == pytest.approx(slow[name]), name


def test_fast_enough_for_a_large_eval():
    import time

    records = policy_records(1000, grid=[0.0, *np.linspace(0.1, 0.95, 11).round(2)], overconfidence=0.1)
    start = time.perf_counter()
    aggregate(records, calibration_threshold=0.0)
    # 1000 questions x 12 thresholds x 1000 resamples: ~0.2 s here; generous bound for a loaded CI machine
    assert time.perf_counter() - start < 5.0


# ---- one schema for eval, score and the logged reward metrics ------------------------------------------------


def eval_predictions(records: list[Record]) -> list[dict]:
    return [
        {"index": r.question, "threshold": r.threshold, "outcome": r.outcome, "correct": r.outcome == CORRECT,
         "answered": r.outcome != ABSTAIN, "confidence": r.confidence}
        for r in records
    ]  # fmt: skip


def test_eval_and_score_give_the_same_per_threshold_numbers_and_intervals():
    from rlcal.evaluation.score import score_predictions
    from rlcal.evaluation.sweep import compute_metrics

    records = policy_records(120, overconfidence=0.15)
    ev = compute_metrics(eval_predictions(records), GRID, n_bins=10)
    sc = score_predictions(records, n_bins=10)
    assert ev["per_threshold"] == sc["per_threshold"]
    for key in ("behavioral_ece", "behavioral_monotone_share", "behavioral_n", "behavioral_bins"):
        assert ev[key] == sc[key], key
    assert ev["ci"]["behavioral_ece"] == sc["ci"]["behavioral_ece"]
    # every confidence is at t = 0 here, so calibration over all t (score) and at t = 0 (eval) agree too
    assert ev["ece"] == sc["ece"] and ev["reliability"] == sc["reliability"] and ev["ci"]["ece"] == sc["ci"]["ece"]
    assert "reliability_bins" not in ev and "reliability_bins" not in sc


def test_top_level_accuracy_answered_is_the_t0_row_under_verbal_confidence():
    from rlcal.evaluation.sweep import compute_metrics

    # verbal confidence: question 1 states one, questions 2 and 3 answer without stating any, question 4 abstains.
    records = [
        Record(CORRECT, 0.0, 0.9, 1),
        Record(CORRECT, 0.0, None, 2),
        Record(WRONG, 0.0, None, 3),
        Record(ABSTAIN, 0.0, None, 4),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # there is a confidence to calibrate on: no warning
        m = compute_metrics(eval_predictions(records), [0.0], confidence_method="verbal")
    # 2 right of the 3 answered, whether or not they stated a confidence (calibration sees only question 1)
    assert m["accuracy_answered"] == m["per_threshold"]["0"]["accuracy_answered"] == pytest.approx(2 / 3)
    assert m["n"] == 1 and m["n_no_confidence"] == 2 and m["mean_confidence"] == pytest.approx(0.9)
    assert m["behavioral_ece"] is None  # one threshold only


def test_reward_outcome_stats_are_the_per_threshold_block():
    from rlcal.core.rewards import outcome_stats

    outcomes = [CORRECT, WRONG, ABSTAIN, WRONG, CORRECT]
    thresholds = [0.5, 0.5, 0.5, 0.75, 0.75]
    block = threshold_block(outcomes, thresholds)
    stats = outcome_stats(outcomes, thresholds)
    assert stats["hallucination_rate"] == block["hallucination_rate"] == 2 / 5
    assert stats["accuracy"] == block["n_correct"] / block["n"] and stats["abstain_rate"] == block["n_abstain"] / 5


def test_behavioral_needs_the_same_questions_at_t0_and_another_threshold():
    no_ids = [Record(CORRECT, t) for t in (0.0, 0.5)]
    assert aggregate(no_ids)["behavioral"]["behavioral_ece"] is None
    no_t0 = [Record(CORRECT, t, None, 1) for t in (0.5, 0.75)]
    assert aggregate(no_t0)["behavioral"]["behavioral_ece"] is None
    # question 2 lacks t = 0.5: only the complete question 1 counts
    partial = [Record(CORRECT, 0.0, None, 1), Record(ABSTAIN, 0.5, None, 1), Record(WRONG, 0.0, None, 2)]
    beh = aggregate(partial)["behavioral"]
    assert beh["behavioral_n"] == 1
    assert beh["behavioral_ece"] == behavioral.behavioral_ece([0.0, 0.5], [[1, 0]], [1]) == pytest.approx(0.5)


def test_eval_metrics_do_not_depend_on_the_order_predictions_were_gathered_in():
    from rlcal.evaluation.sweep import compute_metrics

    preds = eval_predictions(policy_records(60, overconfidence=0.2))
    shuffled = list(preds)
    random.Random(1).shuffle(shuffled)
    assert compute_metrics(shuffled, GRID) == compute_metrics(preds, GRID)  # intervals included, exactly


def test_clustered_bootstrap_draws_whole_clusters():
    """Questions sharing a cluster (one prompt, several gold draws) move together: with two clusters of identical
    questions, every resample's accuracy is one of the three mixtures 0, 1/2 or 1 of the two clusters' accuracies."""
    records = []
    for q in range(20):
        outcome = CORRECT if q < 10 else WRONG
        records.append(Record(outcome, 0.0, 0.7, question=q, cluster="a" if q < 10 else "b"))
    result = aggregate(records, n_resamples=200)
    assert result["bootstrap"]["unit"] == "cluster"
    assert result["bootstrap"]["n_units"] == 2 and result["bootstrap"]["n_questions"] == 20
    lo, hi = result["per_threshold"]["0"]["ci"]["accuracy_answered"]
    assert {lo, hi} <= {0.0, 0.5, 1.0} and lo < hi
    # The same records without clusters: 20 independent questions give intermediate resampled accuracies.
    free = aggregate([Record(r.outcome, r.threshold, r.confidence, r.question) for r in records], n_resamples=200)
    lo_free, hi_free = free["per_threshold"]["0"]["ci"]["accuracy_answered"]
    assert 0.0 < lo_free < 0.5 < hi_free < 1.0


def test_rate_changes_have_paired_intervals():
    # 40 questions, 3 thresholds. Kind A (10) answers everywhere; kind B (30) answers at t = 0 only, except that
    # 3 of them answer again at 0.75. Rates 1, 0.25, 0.325: changes -0.75 and +0.075. The second rise is 3
    # questions out of 40: paired, every resample's change is (#B' drawn)/40 >= 0, so the interval stays >= 0 and
    # its upper end is positive; the first change is surely negative.
    records = []
    for q in range(40):
        a, again = q < 10, q in (10, 11, 12)
        records += [
            Record(CORRECT, 0.0, None, q),
            Record(CORRECT if a else ABSTAIN, 0.5, None, q),
            Record(CORRECT if a or again else ABSTAIN, 0.75, None, q),
        ]
    changes = aggregate(records)["behavioral"]["behavioral_rate_changes"]
    assert [(c["from"], c["to"]) for c in changes] == [(0.0, 0.5), (0.5, 0.75)]
    assert changes[0]["change"] == pytest.approx(-0.75) and changes[1]["change"] == pytest.approx(0.075)
    assert changes[0]["ci"][1] < 0
    assert changes[1]["ci"][0] >= 0 and changes[1]["ci"][1] > 0.075
    assert changes[1]["ci"][0] <= 0.075
    assert aggregate(records, n_resamples=0)["behavioral"]["behavioral_rate_changes"][1].get("ci") is None


def test_rises_beyond_noise_keeps_only_rises_whose_interval_lies_above_zero():
    from rlcal.core.aggregate import rises_beyond_noise

    above = {"from": 0.1, "to": 0.2, "change": 0.03, "ci": [0.01, 0.05]}
    within = {"from": 0.2, "to": 0.3, "change": 0.02, "ci": [-0.01, 0.05]}
    fall = {"from": 0.3, "to": 0.4, "change": -0.1, "ci": [-0.2, -0.05]}
    no_ci = {"from": 0.4, "to": 0.5, "change": 0.01}  # a metrics file without intervals: the point change decides
    assert rises_beyond_noise([above, within, fall, no_ci]) == [above, no_ci]
    assert rises_beyond_noise(None) == [] and rises_beyond_noise([fall]) == []
