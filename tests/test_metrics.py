"""Tests for rlcal.core.metrics: hand-worked cases, torchmetrics cross-checks and hypothesis properties."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core import metrics as M

REPO = Path(__file__).resolve().parents[1]
FAST = settings(max_examples=60, deadline=None)


# ---------------------------------------------------------------------------
# Hand-computed cases
# ---------------------------------------------------------------------------

# conf    0.1  0.4  0.6  0.9  1.0
# correct  0    0    1    1    0
CONF = [0.1, 0.4, 0.6, 0.9, 1.0]
CORR = [0, 0, 1, 1, 0]


def test_ece_mce_uniform_by_hand():
    # 2 bins: [0, .5) holds .1,.4 -> conf .25, acc 0, gap .25, weight 2/5 -> .10
    #         [.5, 1) holds .6,.9 -> conf .75, acc 1, gap .25, weight 2/5 -> .10
    #         [1, 1]  holds 1.0   -> conf 1,   acc 0, gap 1,   weight 1/5 -> .20
    assert M.ece(CONF, CORR, n_bins=2) == pytest.approx(0.4)
    assert M.mce(CONF, CORR, n_bins=2) == pytest.approx(1.0)


def test_ece_mce_quantile_by_hand():
    # array_split of 5 sorted items into 2 -> sizes 3, 2
    # {.1,.4,.6}: conf 11/30, acc 1/3 -> gap 1/30, weight 3/5 -> 1/50
    # {.9,1.0}:   conf .95,   acc 1/2 -> gap .45,  weight 2/5 -> .18
    assert M.ece(CONF, CORR, n_bins=2, strategy="quantile") == pytest.approx(0.02 + 0.18)
    assert M.mce(CONF, CORR, n_bins=2, strategy="quantile") == pytest.approx(0.45)


def test_ece_torchmetrics_docstring_example():
    # [0,.5): .25,.25 acc 0 -> .25 * 2/5 = .10;  [.5,1): mean .68333 acc 1 -> .31667 * 3/5 = .19
    conf, corr = [0.25, 0.25, 0.55, 0.75, 0.75], [0, 0, 1, 1, 1]
    assert M.ece(conf, corr, n_bins=2) == pytest.approx(0.29)
    assert M.mce(conf, corr, n_bins=2) == pytest.approx(1 - 0.55 / 3 - 0.5)


def test_zero_confidence_lands_in_first_bin_and_boundaries_go_right():
    bins = M.reliability_bins([0.0, 0.3, 0.3, 1.0], [0, 1, 0, 1], n_bins=10)
    assert len(bins) == 11
    assert bins[0]["count"] == 1 and bins[0]["mean_confidence"] == 0.0
    # 0.3 is a boundary: it belongs to [0.3, 0.4), not [0.2, 0.3)
    assert bins[2]["count"] == 0 and bins[2]["mean_confidence"] is None and bins[2]["accuracy"] is None
    assert bins[3] == {"lo": 0.3, "hi": 0.4, "count": 2, "mean_confidence": 0.3, "accuracy": 0.5}
    assert bins[10] == {"lo": 1.0, "hi": 1.0, "count": 1, "mean_confidence": 1.0, "accuracy": 1.0}
    assert sum(b["count"] for b in bins) == 4


def test_reliability_bins_quantile_with_fewer_items_than_bins():
    bins = M.reliability_bins([0.2, 0.8], [1, 0], n_bins=3, strategy="quantile")
    assert [b["count"] for b in bins] == [1, 1, 0]
    assert bins[0]["lo"] == bins[0]["hi"] == 0.2 and bins[0]["accuracy"] == 1.0
    assert bins[2] == {"lo": None, "hi": None, "count": 0, "mean_confidence": None, "accuracy": None}


def test_brier_by_hand():
    # (.1-0)^2 + (.4-0)^2 + (.6-1)^2 + (.9-1)^2 + (1-0)^2 = .01+.16+.16+.01+1 = 1.34; /5
    assert M.brier(CONF, CORR) == pytest.approx(0.268)


def test_auroc_by_hand():
    # positives {.6,.9}, negatives {.1,.4,1.0}: each positive beats 2 of 3 negatives -> 4/6
    assert M.auroc(CONF, CORR) == pytest.approx(2 / 3)
    # ties count 1/2: pos {.5,.8}, neg {.5,.5} -> (.5 + .5) + (1 + 1) = 3 of 4 pairs
    assert M.auroc([0.5, 0.5, 0.5, 0.8], [1, 0, 0, 1]) == pytest.approx(0.75)
    assert M.auroc([0.5, 0.5], [1, 0]) == pytest.approx(0.5)


def test_auroc_single_class_is_nan():
    assert math.isnan(M.auroc([0.2, 0.9], [1, 1]))
    assert math.isnan(M.auroc([0.2, 0.9], [False, False]))


def test_abstention_metrics_by_hand():
    # correct/answered: (T,T) (T,T) (F,T) (F,F) (T,F) (F,F) -> 2 correct, 1 wrong, 3 abstain.
    # t = .75 -> penalty .75/.25 = 3; score = (2 - 1*3) / 6 = -1/6
    out = M.abstention_metrics(
        [True, True, False, False, True, False], [True, True, True, False, False, False], threshold=0.75
    )
    assert out["n"] == 6
    assert (out["n_correct"], out["n_wrong"], out["n_abstain"]) == (2, 1, 3)
    assert out["answer_rate"] == pytest.approx(0.5)
    assert out["accuracy_answered"] == pytest.approx(2 / 3)
    assert out["hallucination_rate"] == pytest.approx(1 / 6)
    assert out["score"] == pytest.approx(-1 / 6)
    json.dumps(out)


def test_abstention_metrics_nothing_answered():
    out = M.abstention_metrics([1, 0], [0, 0], threshold=0.5)
    assert out["accuracy_answered"] is None
    assert out["answer_rate"] == 0 and out["hallucination_rate"] == 0 and out["score"] == 0


def test_abstention_metrics_threshold_zero_has_no_penalty():
    # t = 0: wrong answers cost nothing, score = accuracy over all items
    assert M.abstention_metrics([1, 0, 0, 1], [1, 1, 1, 1], 0.0)["score"] == pytest.approx(0.5)


def test_outcome_rates_on_numbers_and_arrays():
    # 10 decisions, 4 right, 2 wrong at t = 0.75 (penalty 3 each): score (4 - 6) / 10
    assert M.outcome_rates(10, 4, 2, 6.0) == {
        "answer_rate": 0.6, "accuracy_answered": 4 / 6, "hallucination_rate": 0.2, "score": -0.2,
    }  # fmt: skip
    assert M.outcome_rates(3, 0, 0, 0.0)["accuracy_answered"] is None
    # arrays (bootstrap resamples): elementwise the same numbers, NaN where undefined
    n, c, w = np.array([10.0, 3.0, 0.0]), np.array([4.0, 0.0, 0.0]), np.array([2.0, 0.0, 0.0])
    out = M.outcome_rates(n, c, w, 3 * w)
    np.testing.assert_array_equal(out["answer_rate"], [0.6, 0.0, np.nan])
    np.testing.assert_array_equal(out["accuracy_answered"], [4 / 6, np.nan, np.nan])
    np.testing.assert_array_equal(out["score"], [-0.2, 0.0, np.nan])


@FAST
@given(st.lists(st.floats(0, 1), min_size=1, max_size=50), st.integers(1, 20))
def test_uniform_bin_index_is_the_reliability_binning(conf, n_bins):
    idx = M.uniform_bin_index(np.array(conf), n_bins)
    bins = M.reliability_bins(conf, [0] * len(conf), n_bins)
    assert np.bincount(idx, minlength=n_bins + 1).tolist() == [b["count"] for b in bins]
    for x, k in zip(conf, idx, strict=True):
        assert bins[k]["lo"] <= x and (x < bins[k]["hi"] or k == n_bins)


def test_ideal_policy_by_hand():
    conf, corr = [0.9, 0.8, 0.7, 0.3], [1, 0, 1, 0]
    # t=.75: answers .9,.8 -> 1 correct, 1 wrong; penalty 3 -> (1 - 3)/4 = -.5
    out = M.ideal_policy(conf, corr, 0.75)
    assert (out["n_correct"], out["n_wrong"]) == (1, 1)
    assert out["accuracy_answered"] == pytest.approx(0.5)
    assert out["score"] == pytest.approx(-0.5)
    # t=.5: answers .9,.8,.7 -> 2 correct, 1 wrong; penalty 1 -> (2 - 1)/4
    assert M.ideal_policy(conf, corr, 0.5)["score"] == pytest.approx(0.25)
    # strict inequality: confidence equal to t abstains
    assert M.ideal_policy(conf, corr, 0.7)["n_abstain"] == 2


def test_risk_coverage_by_hand():
    # descending conf .9 .8 .7 .6 with correct 1 0 1 0 -> risks 0, 1/2, 1/3, 2/4
    out = M.risk_coverage([0.7, 0.9, 0.6, 0.8], [1, 1, 0, 0])
    np.testing.assert_allclose(out["coverage"], [0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(out["risk"], [0, 1 / 2, 1 / 3, 1 / 2])
    assert out["aurc"] == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 2) / 4)


def test_risk_coverage_ties_are_order_independent():
    # one tied block with 1 error in 2 -> expected cumulative errors .5, 1 -> flat risk .5
    a = M.risk_coverage([0.5, 0.5], [1, 0])
    b = M.risk_coverage([0.5, 0.5], [0, 1])
    np.testing.assert_allclose(a["risk"], [0.5, 0.5])
    np.testing.assert_allclose(b["risk"], a["risk"])


def test_summarize_is_json_friendly():
    out = M.summarize([0.2, 0.9, 0.6], [1, 1, 1], n_bins=5)
    assert set(out) == {"n", "ece", "ece_equal_mass", "mce", "brier", "auroc"}
    assert out["n"] == 3 and out["auroc"] is None
    assert all(isinstance(v, float) for k, v in out.items() if k not in ("n", "auroc"))
    json.dumps(out, allow_nan=False)


# ---------------------------------------------------------------------------
# Input validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "conf, corr, match",
    [
        ([], [], "empty"),
        ([0.5, 0.5], [1], "length"),
        ([[0.5]], [[1]], "1-D"),
        ([0.5, float("nan")], [1, 0], "NaN"),
        ([0.5, float("inf")], [1, 0], "NaN or infinite"),
        ([0.5, 1.2], [1, 0], r"\[0, 1\]"),
        ([-0.1, 0.5], [1, 0], r"\[0, 1\]"),
        ([0.5, 0.5], [1, 2], "0/1"),
        ([0.5, 0.5], [0.3, 1.0], "0/1"),
        (["a", "b"], [1, 0], "real numbers"),
    ],
)
def test_invalid_inputs_raise(conf, corr, match):
    for fn in (M.ece, M.mce, M.brier, M.auroc, M.reliability_bins, M.risk_coverage, M.summarize):
        with pytest.raises(ValueError, match=match):
            fn(conf, corr)


@pytest.mark.parametrize("kwargs", [{"n_bins": 0}, {"n_bins": 2.5}, {"n_bins": True}, {"strategy": "equal"}])
def test_invalid_binning_raises(kwargs):
    with pytest.raises(ValueError):
        M.ece(CONF, CORR, **kwargs)


@pytest.mark.parametrize("t", [-0.1, 1.0, 1.5, float("nan")])
def test_invalid_threshold_raises(t):
    with pytest.raises(ValueError, match="threshold"):
        M.abstention_metrics([1, 0], [1, 1], t)
    with pytest.raises(ValueError, match="threshold"):
        M.ideal_policy([0.5, 0.5], [1, 0], t)


def test_abstention_length_mismatch_raises():
    with pytest.raises(ValueError, match="length"):
        M.abstention_metrics([1, 0], [1], 0.5)


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@st.composite
def random_data(draw, min_size=1, max_size=300):
    """Random (confidence, correct) with some exact 0s/1s and, sometimes, heavy ties."""
    seed = draw(st.integers(0, 2**32 - 1))
    n = draw(st.integers(min_size, max_size))
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    edge = rng.random(n) < draw(st.sampled_from([0.0, 0.05, 0.3]))
    conf[edge] = rng.integers(0, 2, edge.sum())  # exact 0.0 / 1.0 exercise the edge bins
    if draw(st.booleans()):
        conf = np.round(conf, 1)  # ties (round() may also hit bin boundaries, so not used against torchmetrics)
    correct = rng.random(n) < draw(st.floats(0.0, 1.0))
    return conf, correct


@st.composite
def calibrated_data(draw):
    """Levels j/d for j = 0..d, each repeated m*d times with exactly m*j correct, shuffled."""
    d = draw(st.integers(1, 12))
    m = draw(st.integers(1, 3))
    conf, corr = [], []
    for j in range(d + 1):
        conf += [j / d] * (m * d)
        corr += [True] * (m * j) + [False] * (m * (d - j))
    perm = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(len(conf))
    return np.array(conf)[perm], np.array(corr)[perm], d


@FAST
@given(calibrated_data(), st.integers(1, 30))
def test_ece_zero_on_perfectly_calibrated_data(data, n_bins):
    conf, corr, d = data
    # Uniform bins never split a level, so each bin's accuracy is its mean confidence.
    assert M.ece(conf, corr, n_bins=n_bins) == pytest.approx(0.0, abs=1e-12)
    assert M.mce(conf, corr, n_bins=n_bins) == pytest.approx(0.0, abs=1e-12)
    # d + 1 equal-mass bins are exactly the levels.
    assert M.ece(conf, corr, n_bins=d + 1, strategy="quantile") == pytest.approx(0.0, abs=1e-12)


@FAST
@given(random_data(), st.integers(1, 25), st.sampled_from(["uniform", "quantile"]))
def test_ece_bounds_and_mce_dominates(data, n_bins, strategy):
    conf, corr = data
    e = M.ece(conf, corr, n_bins=n_bins, strategy=strategy)
    m = M.mce(conf, corr, n_bins=n_bins, strategy=strategy)
    assert 0.0 <= e <= 1.0
    assert e <= m + 1e-12 and m <= 1.0
    bins = M.reliability_bins(conf, corr, n_bins=n_bins, strategy=strategy)
    assert len(bins) == n_bins + (strategy == "uniform")
    assert sum(b["count"] for b in bins) == len(conf)


@FAST
@given(random_data(), st.integers(1, 25))
def test_ece_mce_match_torchmetrics(data, n_bins):
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    conf, corr = data
    if np.any((conf > 0) & (conf < 1) & (conf == np.round(conf, 1))):
        # Rounded data can sit exactly on a bin edge, where torchmetrics' linspace edges differ by an ulp.
        conf = np.clip(conf + 1e-4, 0.0, 1.0) * (conf != 0)
    p, y = torch.tensor(conf, dtype=torch.float64), torch.tensor(corr.astype(np.int64))
    ref = tmf.binary_calibration_error(p, y, n_bins=n_bins, norm="l1").item()
    assert M.ece(conf, corr, n_bins=n_bins) == pytest.approx(ref, abs=1e-6)
    ref_max = tmf.binary_calibration_error(p, y, n_bins=n_bins, norm="max").item()
    assert M.mce(conf, corr, n_bins=n_bins) == pytest.approx(ref_max, abs=1e-6)


@FAST
@given(random_data())
def test_brier_matches_direct_reference(data):
    conf, corr = data
    ref = sum((float(c) - float(y)) ** 2 for c, y in zip(conf, corr, strict=True)) / len(conf)
    assert M.brier(conf, corr) == pytest.approx(ref, abs=1e-12)


@FAST
@given(random_data(min_size=2, max_size=120))
def test_auroc_matches_pairwise_and_torchmetrics(data):
    conf, corr = data
    if corr.all() or not corr.any():
        assert math.isnan(M.auroc(conf, corr))
        return
    pos, neg = conf[corr], conf[~corr]
    pairwise = ((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])).mean()
    got = M.auroc(conf, corr)
    assert got == pytest.approx(pairwise, abs=1e-12)
    torch = pytest.importorskip("torch")
    tmf = pytest.importorskip("torchmetrics.functional.classification")
    ref = tmf.binary_auroc(torch.tensor(conf, dtype=torch.float64), torch.tensor(corr.astype(np.int64))).item()
    assert got == pytest.approx(ref, abs=1e-6)


@FAST
@given(st.integers(1, 50), st.integers(1, 50), st.integers(0, 2**32 - 1))
def test_auroc_perfect_separation_is_one(n_pos, n_neg, seed):
    rng = np.random.default_rng(seed)
    conf = np.r_[0.5 + 0.5 * rng.random(n_pos), 0.5 * rng.random(n_neg)]  # positives in [.5,1), negatives [0,.5)
    corr = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    perm = rng.permutation(conf.size)
    assert M.auroc(conf[perm], corr[perm]) == 1.0
    assert M.auroc(conf[perm], ~corr[perm]) == 0.0


@FAST
@given(random_data(), st.floats(0.0, 0.99))
def test_ideal_policy_counts_and_score(data, t):
    conf, corr = data
    out = M.ideal_policy(conf, corr, t)
    answered = conf > t
    n_correct, n_wrong = int((corr & answered).sum()), int((~corr & answered).sum())
    assert (out["n_correct"], out["n_wrong"], out["n_abstain"]) == (n_correct, n_wrong, int((~answered).sum()))
    if answered.any():
        assert out["accuracy_answered"] == pytest.approx(corr[answered].mean())
    else:
        assert out["accuracy_answered"] is None
    assert out["answer_rate"] == pytest.approx(answered.mean())
    assert out["hallucination_rate"] == pytest.approx(n_wrong / len(conf))
    assert out["score"] == pytest.approx((n_correct - n_wrong * t / (1 - t)) / len(conf))


@FAST
@given(random_data())
def test_risk_coverage_properties(data):
    conf, corr = data
    out = M.risk_coverage(conf, corr)
    n = len(conf)
    assert out["coverage"].shape == out["risk"].shape == (n,)
    assert out["risk"][-1] == pytest.approx(1 - corr.mean())  # full coverage = overall error rate
    assert np.all((out["risk"] >= -1e-12) & (out["risk"] <= 1 + 1e-12))
    assert out["aurc"] == pytest.approx(out["risk"].mean())
    perm = np.random.default_rng(0).permutation(n)
    np.testing.assert_allclose(M.risk_coverage(conf[perm], corr[perm])["risk"], out["risk"], atol=1e-12)


# ---------------------------------------------------------------------------
# Dependency hygiene
# ---------------------------------------------------------------------------


def test_import_does_not_pull_heavy_deps():
    code = (
        "import sys, rlcal.core.metrics; "
        "bad = [m for m in ('torch', 'trl', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
