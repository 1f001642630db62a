"""`rlcal demo`: the summary/claims logic on hand-made numbers, and the --quick pipeline end to end."""

from __future__ import annotations

import json

import pytest

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.demo import (
    MODELS,
    answer_rate_by_confidence,
    check_claims,
    error_drawn_like_mentions,
    hallucination_by_count,
    model_summary,
)


def _per_t(rates: dict[str, tuple[float, float | None, float]]) -> dict[str, dict[str, float | None]]:
    return {
        t: {"n": 10, "answer_rate": a, "accuracy_answered": acc, "hallucination_rate": h, "score": 0.0}
        for t, (a, acc, h) in rates.items()
    }


def test_model_summary_averages_over_the_confidence_targets():
    metrics = {
        "ece": 0.04,
        "accuracy": 0.3,
        "hallucination_rate": 0.7,
        "per_threshold": _per_t(
            {"0": (1.0, 0.3, 0.7), "0.5": (0.6, 0.5, 0.3), "0.75": (0.4, 0.75, 0.1), "0.9": (0.2, 1.0, 0.0)}
        ),
    }
    s = model_summary(metrics)
    assert s["abstain_rate"] == pytest.approx(((1 - 0.6) + (1 - 0.4) + (1 - 0.2)) / 3)
    assert s["hallucination_rate"] == pytest.approx((0.3 + 0.1 + 0.0) / 3)
    assert s["ece"] == 0.04 and set(s["per_threshold"]) == {"0", "0.5", "0.75", "0.9"}


def test_claims_pass_and_fail_on_the_numbers_they_name():
    good_ct = _per_t({"0": (1.0, 0.4, 0.6), "0.5": (0.5, 0.6, 0.2), "0.75": (0.3, 0.8, 0.06), "0.9": (0.1, 0.9, 0.0)})
    summary = {
        "base": {"ece": 0.02, "abstain_rate": 0.0, "hallucination_rate": 0.6, "per_threshold": {}},
        "binary": {"ece": 0.08, "abstain_rate": 0.0, "hallucination_rate": 0.6, "per_threshold": {}},
        "confidence_target": {
            "ece": 0.025,
            "abstain_rate": 0.7,
            "hallucination_rate": 0.0867,
            "per_threshold": good_ct,
        },
        "singleton_rate": 0.18,
        "base_error_arbitrary_facts": 0.6,
    }
    claims = {c["claim"]: c for c in check_claims(summary)}
    assert all(c["met"] for c in claims.values()), [c for c in claims.values() if not c["met"]]
    assert claims["0-1 RL makes the model overconfident"]["measured"] == pytest.approx(4.0)
    summary["confidence_target"]["hallucination_rate"] = 0.0  # no hallucination at all: a ratio of 0 is met
    assert {c["claim"]: c for c in check_claims(summary)}["confidence targets cut hallucinations"]["met"]
    summary["binary"]["ece"] = 0.05  # only 2.5x base: overconfidence claim must now fail
    summary["confidence_target"]["per_threshold"]["0.9"]["answer_rate"] = 0.6  # rate rises with t: must fail
    claims = {c["claim"]: c for c in check_claims(summary)}
    assert not claims["0-1 RL makes the model overconfident"]["met"]
    assert not claims["answer rate falls as t rises"]["met"]
    assert claims["base model is calibrated"]["met"]


def test_hallucination_by_count_buckets_and_rates():
    preds = [
        {"index": 0, "threshold": 0.5, "outcome": "wrong"},
        {"index": 1, "threshold": 0.5, "outcome": "correct"},
        {"index": 2, "threshold": 0.5, "outcome": "abstain"},
        {"index": 3, "threshold": 0.5, "outcome": "wrong"},
        {"index": 3, "threshold": 0.0, "outcome": "correct"},  # other t: ignored
    ]
    counts = [0, 1, 1, 25]
    out = hallucination_by_count(preds, counts, 0.5)
    assert list(out) == ["unseen", "1", "20+"]
    assert out["unseen"]["hallucination_rate"] == 1.0
    assert out["1"] == {"n": 2, "accuracy": 0.5, "hallucination_rate": 0.0, "abstain_rate": 0.5}


def test_error_drawn_like_mentions_weights_each_question_by_popularity():
    preds = [
        {"index": 0, "threshold": 0.0, "outcome": "correct"},
        {"index": 1, "threshold": 0.0, "outcome": "wrong"},
        {"index": 2, "threshold": 0.0, "outcome": "abstain"},  # not a correct answer: counts as an error
        {"index": 1, "threshold": 0.9, "outcome": "correct"},  # other t: ignored
    ]
    # by hand: (3 + 1) / (6 + 3 + 1)
    assert error_drawn_like_mentions(preds, [6.0, 3.0, 1.0]) == pytest.approx(0.4)
    assert error_drawn_like_mentions(preds, [1.0, 1.0, 1.0]) == pytest.approx(2 / 3)
    with pytest.raises(RlcalError, match="positive weight"):
        error_drawn_like_mentions(preds[3:], [1.0, 1.0, 1.0])


def test_answer_rate_by_confidence_against_hand_counts():
    preds = [
        {"index": 0, "threshold": 0.75, "outcome": "abstain"},
        {"index": 1, "threshold": 0.75, "outcome": "wrong"},  # answered
        {"index": 2, "threshold": 0.75, "outcome": "correct"},
        {"index": 3, "threshold": 0.75, "outcome": "abstain"},
        {"index": 4, "threshold": 0.75, "outcome": "correct"},
        {"index": 4, "threshold": 0.5, "outcome": "abstain"},  # other t: ignored
    ]
    base_confidence = [0.05, 0.08, 0.8, 0.7, 1.0]
    out = answer_rate_by_confidence(preds, base_confidence, 0.75)
    assert list(out) == ["0-0.1", "0.5-0.75", "0.75-0.9", "0.9-1"]  # sorted by band; confidence 1.0 in the top band
    assert out["0-0.1"] == {"n": 2, "answer_rate": 0.5, "ideal": 0.0}
    assert out["0.5-0.75"] == {"n": 1, "answer_rate": 0.0, "ideal": 0.0}  # 0.7 < t: the ideal policy abstains
    assert out["0.75-0.9"] == {"n": 1, "answer_rate": 1.0, "ideal": 1.0}
    assert out["0.9-1"]["ideal"] == 1.0


def test_demo_bad_output_dir_is_one_clear_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["demo", "--quick", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_quick_demo_writes_a_complete_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in MODELS:
        entry = summary[name]
        assert {"ece", "abstain_rate", "hallucination_rate", "per_threshold"} <= set(entry)
        assert set(entry["per_threshold"]) == {"0", "0.5", "0.75", "0.9"}
        for m in entry["per_threshold"].values():
            assert {"n", "answer_rate", "accuracy_answered", "hallucination_rate", "score"} <= set(m)
            assert 0.0 <= m["answer_rate"] <= 1.0
    assert 0.0 <= summary["singleton_rate"] <= 1.0
    assert 0.0 <= summary["base_error_arbitrary_facts"] <= 1.0
    assert len(summary["claims"]) == 10
    report = (out / "report.md").read_text()
    assert set(summary["by_base_confidence"]["confidence_target"]) == {"0.5", "0.75", "0.9"}
    for png in ("reliability.png", "answer_rate.png", "hallucination_by_count.png", "answer_rate_by_confidence.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report
    assert "## The paper's claims, measured" in report and "Singleton-rate check" in report
    for name in MODELS:
        assert (out / "eval" / name / "metrics.json").is_file()
