"""`rlcal demo`: the summary/claims logic on hand-made numbers, and the --quick pipeline end to end."""

from __future__ import annotations

import json

import pytest

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.demo import (
    MODELS,
    TARGET_THRESHOLDS,
    answer_rate_by_confidence,
    check_claims,
    error_drawn_like_mentions,
    hallucination_by_count,
    model_summary,
    rescore_demo,
)


def _per_t(rates: dict[str, tuple[float, float | None, float]]) -> dict[str, dict[str, float | None]]:
    return {
        t: {"n": 10, "answer_rate": a, "accuracy_answered": acc, "hallucination_rate": h, "score": 0.0}
        for t, (a, acc, h) in rates.items()
    }


GRID = ("0", *TARGET_THRESHOLDS)


def test_model_summary_averages_over_the_confidence_targets():
    rates = {t: (1.0 - float(t), 0.5 + float(t) / 2, float(t) / 10) for t in GRID}
    metrics = {
        "ece": 0.04,
        "accuracy": 0.3,
        "hallucination_rate": 0.7,
        "behavioral_ece": 0.02,
        "ci": {"ece": [0.03, 0.05], "behavioral_ece": [0.01, 0.04]},
        "per_threshold": _per_t(rates),
    }
    s = model_summary(metrics)
    targets = [float(t) for t in TARGET_THRESHOLDS]
    assert s["abstain_rate"] == pytest.approx(sum(targets) / len(targets))  # 1 - answer_rate = t
    assert s["hallucination_rate"] == pytest.approx(sum(t / 10 for t in targets) / len(targets))
    assert s["ece"] == 0.04 and s["ece_ci"] == [0.03, 0.05] and s["behavioral_ece"] == 0.02
    assert set(s["per_threshold"]) == set(GRID)


def _summary(ct_rates):
    def entry(ece, abstain, halluc, per_t=None, behavioral=None):
        return {
            "ece": ece, "ece_drift": ece - 0.02, "abstain_rate": abstain, "hallucination_rate": halluc,
            "behavioral_ece": behavioral, "per_threshold": per_t or {},
        }  # fmt: skip

    return {
        "base": entry(0.02, 0.0, 0.6),
        "binary": entry(0.08, 0.0, 0.6),
        "confidence_target": entry(0.025, 0.7, 0.0867, _per_t(ct_rates), behavioral=0.03),
        "singleton_rate": 0.18,
        "base_error_arbitrary_facts": 0.6,
    }


def test_claims_pass_and_fail_on_the_numbers_they_name():
    # n = 10 per t in _per_t: scale n so that every t has >= 30 answers, except t = 0.95 (3 answers).
    good = {t: (1.0 - 0.9 * float(t), min(1.0, float(t) + 0.02), 0.01) for t in GRID}
    summary = _summary(good)
    for t, m in summary["confidence_target"]["per_threshold"].items():
        m["n"] = 300 if t != "0.95" else 30
    claims = {c["claim"]: c for c in check_claims(summary)}
    assert all(c["met"] for c in claims.values()), [c for c in claims.values() if not c["met"]]
    assert "answers only when P(correct) > t, at t = 0.95" not in claims  # 3 answers: no claim made
    assert "answers only when P(correct) > t, at t = 0.9" in claims
    assert claims["0-1 RL makes the model overconfident"]["measured"] == pytest.approx(4.0)
    assert claims["confidence targets keep calibration"]["measured"] == pytest.approx(0.005)
    summary["confidence_target"]["hallucination_rate"] = 0.0  # no hallucination at all: a ratio of 0 is met
    assert {c["claim"]: c for c in check_claims(summary)}["confidence targets cut hallucinations"]["met"]
    summary["binary"]["ece"] = 0.05  # only 2.5x base: overconfidence claim must now fail
    summary["confidence_target"]["per_threshold"]["0.9"]["answer_rate"] = 0.6  # rate rises with t: must fail
    summary["confidence_target"]["per_threshold"]["0.5"]["accuracy_answered"] = 0.44  # below t - 0.05
    summary["confidence_target"]["behavioral_ece"] = 0.051
    summary["confidence_target"]["ece_drift"] = -0.07  # |drift| larger than the 0-1 run's 0.06
    claims = {c["claim"]: c for c in check_claims(summary)}
    for name in (
        "0-1 RL makes the model overconfident", "answer rate falls as t rises", "behavioral calibration",
        "answers only when P(correct) > t, at t = 0.5", "confidence targets keep calibration",
    ):  # fmt: skip
        assert not claims[name]["met"], name
    assert claims["base model is calibrated"]["met"] and claims["answers only when P(correct) > t, at t = 0.6"]["met"]


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


def test_rescore_of_a_folder_without_a_demo_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["demo", "--rescore", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no finished demo" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # nothing written


@pytest.mark.slow
def test_quick_demo_writes_a_complete_report(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    for name in MODELS:
        entry = summary[name]
        assert {"ece", "behavioral_ece", "abstain_rate", "hallucination_rate", "per_threshold"} <= set(entry)
        assert set(entry["per_threshold"]) == set(GRID)
        assert set(entry["by_family"]) == {"birthday", "forecast"}
        for m in entry["per_threshold"].values():
            assert {"n", "answer_rate", "accuracy_answered", "hallucination_rate", "score"} <= set(m)
            assert 0.0 <= m["answer_rate"] <= 1.0
    assert 0.0 <= summary["singleton_rate"] <= 1.0
    assert 0.0 <= summary["base_error_arbitrary_facts"] <= 1.0
    routes = {"base", "reference", "binary", "confidence_target", "stated_confidence"}
    assert routes | {f"{r}_warmup" for r in ("binary", "confidence_target", "stated_confidence")} <= set(summary)
    assert 9 <= len(summary["claims"]) <= 9 + len(TARGET_THRESHOLDS)
    # The reference applies t after generation: its answers are monotone in t by construction.
    assert summary["reference"]["behavioral_monotone_share"] == 1.0
    # So does the stated-confidence route (t applied to the stated number): its predictions say so.
    assert summary["stated_confidence"]["behavioral_monotone_share"] == 1.0
    stated = [json.loads(line) for line in (out / "eval" / "stated_confidence" / "predictions.jsonl").open()]
    assert {p["policy"] for p in stated} == {"posthoc"}
    report = (out / "report.md").read_text()
    assert set(summary["by_base_confidence"]["confidence_target"]) == {"0.5", "0.7", "0.9"}
    for png in ("reliability.png", "answer_rate.png", "hallucination_by_count.png", "answer_rate_by_confidence.png"):
        assert (out / png).stat().st_size > 1000 and f"]({png})" in report
    assert "## The paper's claims, measured" in report and "Singleton-rate check" in report
    for name in MODELS:
        assert (out / "eval" / name / "metrics.json").is_file()
    # Rescoring from the saved predictions rebuilds the same summary (the timing is the run's own).
    before = {name: (out / "eval" / name / "metrics.json").read_text() for name in MODELS}
    (out / "summary.json").write_text(json.dumps({**summary, "claims": [], "base": {}}))  # stale: must be rebuilt
    rescored = rescore_demo(out)
    assert json.loads(json.dumps(rescored)) == summary
    assert json.loads((out / "summary.json").read_text()) == summary
    for name in MODELS:
        assert json.loads((out / "eval" / name / "metrics.json").read_text()) == json.loads(before[name])
    with pytest.raises(RlcalError, match="no finished demo"):
        rescore_demo(tmp_path / "nothing")


def test_rise_claim_asks_for_a_rise_beyond_noise():
    good = {t: (1.0 - 0.9 * float(t), min(1.0, float(t) + 0.02), 0.01) for t in GRID}
    summary = _summary(good)
    ct = summary["confidence_target"]
    ct["behavioral_rate_changes"] = [
        {"from": 0.0, "to": 0.5, "change": -0.4, "ci": [-0.5, -0.3]},
        {"from": 0.5, "to": 0.9, "change": 0.01, "ci": [-0.004, 0.02]},  # a rise of a few questions: noise
    ]
    claim = {c["claim"]: c for c in check_claims(summary)}["no answer-rate rise beyond noise"]
    assert claim["met"] and claim["measured"] == pytest.approx(0.01)
    ct["behavioral_rate_changes"][1]["ci"] = [0.003, 0.02]  # the whole interval above 0: a real rise
    assert not {c["claim"]: c for c in check_claims(summary)}["no answer-rate rise beyond noise"]["met"]
    del ct["behavioral_rate_changes"][1]["ci"]  # no intervals (quick runs): the point estimate decides
    assert not {c["claim"]: c for c in check_claims(summary)}["no answer-rate rise beyond noise"]["met"]
    ct["behavioral_rate_changes"] = None  # older summaries carry no changes: no claim
    assert "no answer-rate rise beyond noise" not in {c["claim"] for c in check_claims(summary)}
