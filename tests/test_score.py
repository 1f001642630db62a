"""Tests for rlcal.evaluation.score's Python API: record parsing, per-threshold metrics, calibration on answered records."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.common.errors import RlcalError
from rlcal.core import metrics
from rlcal.core.grading import ABSTAIN, CORRECT, WRONG, AnswerGrader
from rlcal.evaluation.score import (
    PER_THRESHOLD_KEYS,
    Prediction,
    format_table,
    load_predictions,
    parse_record,
    score_file,
    score_predictions,
    threshold_key,
)

REPO = Path(__file__).resolve().parents[1]
GRADER = AnswerGrader()


def parse(record):
    return parse_record(record, GRADER, "test line 1")


def test_graded_records():
    assert parse({"response": "Paris", "answer": "Paris"}) == Prediction(CORRECT, 0.0, None)
    assert parse({"response": "I don't know", "answer": "Paris", "threshold": 0.75}) == Prediction(ABSTAIN, 0.75)
    assert parse({"response": "Paname", "answer": "Paris", "aliases": ["Paname"], "confidence": 0.6}) == Prediction(
        CORRECT, 0.0, 0.6
    )
    assert parse({"response": [{"role": "assistant", "content": "Lyon"}], "answer": "Paris"}).outcome == WRONG
    assert parse({"response": "3.0", "answer": 3}).outcome == CORRECT
    assert parse({"response": "NYC", "answer": ["New York", "NYC"]}).outcome == CORRECT
    # the question's words are filler in an abstention
    record = {"response": "I don't know when Ada was born", "answer": "03-07", "question": "When was Ada born?"}
    assert parse(record).outcome == ABSTAIN
    # a verbalised confidence is used when there is no confidence field; an explicit null means "none"
    assert parse({"response": "Paris <confidence>0.7</confidence>", "answer": "Paris"}).confidence == 0.7
    assert (
        parse({"response": "Paris <confidence>0.7</confidence>", "answer": "Paris", "confidence": None}).confidence
        is None
    )
    # 'response' wins: the record is graded by rlcal even if it carries a 'correct' field
    assert parse({"response": "Lyon", "answer": "Paris", "correct": True}).outcome == WRONG


def test_pregraded_records():
    assert parse({"confidence": 0.9, "correct": True}) == Prediction(CORRECT, 0.0, 0.9)
    assert parse({"confidence": 0.2, "correct": 0, "threshold": 0.5}) == Prediction(WRONG, 0.5, 0.2)
    assert parse({"confidence": 0.2, "abstained": True, "threshold": 0.5}) == Prediction(ABSTAIN, 0.5, 0.2)
    assert parse({"correct": False, "abstained": False, "threshold": None}) == Prediction(WRONG, 0.0, None)


@pytest.mark.parametrize(
    "record, field",
    [
        ({"response": "x"}, "'answer'"),
        ({"response": "x", "answer": None}, "'answer'"),
        ({"response": "x", "answer": ""}, "'answer'"),
        ({"response": "x", "answer": []}, "'answer'"),
        ({"response": "x", "answer": {"a": 1}}, "'answer'"),
        ({"response": 3, "answer": "x"}, "'response'"),
        ({"response": "x", "answer": "x", "aliases": "y"}, "'aliases'"),
        ({"response": "x", "answer": "x", "question": 5}, "'question'"),
        ({"response": "x", "answer": "x", "confidence": 1.5}, "'confidence'"),
        ({"confidence": 0.5}, "'correct'"),
        ({"confidence": float("nan"), "correct": True}, "'confidence'"),
        ({"confidence": -0.1, "correct": True}, "'confidence'"),
        ({"confidence": "0.5", "correct": True}, "'confidence'"),
        ({"confidence": True, "correct": True}, "'confidence'"),
        ({"confidence": 0.5, "correct": "yes"}, "'correct'"),
        ({"confidence": 0.5, "correct": 0.5}, "'correct'"),
        ({"confidence": 0.5, "correct": True, "abstained": "no"}, "'abstained'"),
        ({"confidence": 0.5, "correct": True, "threshold": 1.0}, "'threshold'"),
        ({"confidence": 0.5, "correct": True, "threshold": -0.25}, "'threshold'"),
        ({"confidence": 0.5, "correct": True, "threshold": float("nan")}, "'threshold'"),
        ({"id": 3}, "'response' or 'correct'"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_records_name_the_line_and_field(record, field):
    with pytest.raises(RlcalError) as info:
        parse(record)
    assert str(info.value).startswith("test line 1: ")
    assert field in str(info.value)


def test_score_predictions_by_hand():
    preds = [
        Prediction(CORRECT, 0.0, 0.9),
        Prediction(WRONG, 0.0, 0.6),
        Prediction(CORRECT, 0.75, 0.8),
        Prediction(WRONG, 0.75, 0.7),
        Prediction(ABSTAIN, 0.75, 0.1),  # abstentions are left out of calibration
        Prediction(ABSTAIN, 0.75, None),
        Prediction(CORRECT, 0.75, None),  # no confidence: counts per threshold, not in calibration
    ]
    result = score_predictions(preds, n_bins=10, n_resamples=0)
    assert "ci" not in result and "ci" not in result["per_threshold"]["0"]  # --bootstrap 0: no intervals
    assert (result["n"], result["n_answered"], result["n_abstained"], result["n_confidence"]) == (7, 5, 2, 4)
    conf, corr = [0.9, 0.6, 0.8, 0.7], [True, False, True, False]
    assert result["ece"] == pytest.approx(metrics.ece(conf, corr, 10))
    assert result["ece_equal_mass"] == pytest.approx(metrics.ece(conf, corr, 10, "quantile"))
    assert result["brier"] == pytest.approx(metrics.brier(conf, corr))
    assert result["auroc"] == pytest.approx(1.0)
    assert list(result["per_threshold"]) == ["0", "0.75"]
    assert result["per_threshold"]["0"] == {
        "n": 2, "n_correct": 1, "n_wrong": 1, "n_abstain": 0,
        "answer_rate": 1.0, "accuracy_answered": 0.5, "hallucination_rate": 0.5, "score": 0.5,
    }  # fmt: skip
    at = result["per_threshold"]["0.75"]
    assert at == pytest.approx({"n": 5, "n_correct": 2, "n_wrong": 1, "n_abstain": 2, "answer_rate": 0.6,
                                "accuracy_answered": 2 / 3, "hallucination_rate": 0.2,
                                "score": (2 - 3) / 5})  # fmt: skip
    assert result["overall"]["score"] == pytest.approx((1 + 0 + 1 - 3 + 0 + 0 + 1) / 7)
    json.dumps(result, allow_nan=False)


def test_no_confidences_gives_nulls():
    result = score_predictions([Prediction(CORRECT, 0.5), Prediction(ABSTAIN, 0.5, 0.3)])
    assert all(result[k] is None for k in ("ece", "ece_equal_mass", "mce", "brier", "auroc"))
    assert result["n_confidence"] == 0 and result["reliability"] == [] and "reliability_bins" not in result
    assert result["ci"]["ece"] is None  # no calibration records: no interval either
    assert "no answered record carries a confidence" in format_table(result)


def test_single_class_auroc_is_null():
    result = score_predictions([Prediction(CORRECT, 0.0, 0.9), Prediction(CORRECT, 0.0, 0.4)])
    assert result["auroc"] is None and result["ece"] == pytest.approx(0.35)


outcome = st.sampled_from([CORRECT, WRONG, ABSTAIN])
prediction = st.builds(Prediction, outcome, st.sampled_from([0.0, 0.5, 0.75, 0.9]),
                       st.one_of(st.none(), st.floats(0, 1)))  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.lists(prediction, min_size=1, max_size=60))
def test_per_threshold_agrees_with_metrics_module(preds):
    result = score_predictions(preds)
    assert sum(m["n"] for m in result["per_threshold"].values()) == len(preds)
    for key, got in result["per_threshold"].items():
        group = [p for p in preds if threshold_key(p.threshold) == key]
        expected = metrics.abstention_metrics(
            [p.outcome == CORRECT for p in group], [p.outcome != ABSTAIN for p in group], float(key)
        )
        assert set(got) == {*PER_THRESHOLD_KEYS, "ci"}
        for k in PER_THRESHOLD_KEYS:
            assert got[k] == pytest.approx(expected[k]) if expected[k] is not None else got[k] is None
    json.dumps(result, allow_nan=False)


def test_threshold_keys():
    assert [threshold_key(t) for t in (0.0, 0.5, 0.75, 0.9, 0.333333)] == ["0", "0.5", "0.75", "0.9", "0.33"]
    assert threshold_key(0.999) == "0.999" and threshold_key(0.99999) == "0.99999"
    assert not any(threshold_key(t) == "1" for t in (0.995, 0.99995, 0.9999999))


def test_load_skips_blank_lines_and_bom(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('\ufeff{"confidence": 0.5, "correct": true}\n\n   \n{"response": "x", "answer": "x"}\n')
    assert [p.outcome for p in load_predictions(path)] == [CORRECT, CORRECT]


def test_example_files_score_sensibly():
    result = score_file(REPO / "examples" / "predictions.jsonl")
    assert result["n"] >= 60 and result["n_abstained"] > 0 and result["n_confidence"] > 30
    assert set(result["per_threshold"]) >= {"0", "0.5", "0.75", "0.9"}
    rates = [m["answer_rate"] for m in result["per_threshold"].values()]
    assert rates == sorted(rates, reverse=True)  # the shipped model abstains more as t rises
    pregraded = score_file(REPO / "examples" / "confidences.jsonl")
    assert pregraded["n"] >= 60 and not math.isnan(pregraded["ece"])
