"""Fuzzing the two loaders of user files: `rlcal score`'s predictions reader and the QA loader behind `rlcal train`
and `rlcal eval`. Random bytes and random JSON lines give either a clear `RlcalError` or a correct result, never
another exception (a traceback).

    pytest tests/test_fuzz_loaders.py        # ~15 s: hypothesis, a few dozen examples per test

"Correct" is checked against what the input says: well-formed graded records are counted independently of
rlcal, and the QA loader's rows are the file's rows, in order, as text.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcal.cli import one_line
from rlcal.common.errors import RlcalError

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)
record_keys = st.sampled_from(
    ["response", "answer", "aliases", "question", "id", "threshold", "confidence", "correct", "abstained"]
)
# Objects made mostly of the fields the loaders read, with values of any type: the paths most likely to break.
records = st.dictionaries(record_keys | st.text(max_size=4), json_values, max_size=5)
lines = st.lists(
    st.one_of(records.map(lambda r: json.dumps(r)), json_values.map(json.dumps), st.text(max_size=20)), max_size=6
)


def _write(data: bytes, suffix: str = ".jsonl") -> Path:
    handle = tempfile.NamedTemporaryFile(suffix=suffix, delete=False, dir=_DIR.name)
    with handle:
        handle.write(data)
    return Path(handle.name)


_DIR = tempfile.TemporaryDirectory(prefix="rlcal-fuzz-")


# ---- rlcal score -----------------------------------------------------------------------------------------------


def _score(data: bytes):
    from rlcal.evaluation.score import load_predictions, score_predictions

    path = _write(data)
    try:
        return score_predictions(load_predictions(path), n_resamples=0)
    except RlcalError as exc:
        assert str(exc) and "\n" not in one_line(exc)  # what `rlcal` prints: one line, not empty
        return None
    finally:
        path.unlink()


@FUZZ
@given(st.binary(max_size=200))
def test_score_random_bytes(data):
    _score(data)


@FUZZ
@given(lines)
def test_score_random_json_lines(rows):
    result = _score("\n".join(rows).encode("utf-8", "surrogatepass"))
    if result is not None:
        assert result["n"] == result["n_answered"] + result["n_abstained"]
        assert result["n_answered"] == result["n_correct"] + result["n_wrong"]
        assert result["ece"] is None or 0 <= result["ece"] <= 1


graded = st.fixed_dictionaries(
    {"confidence": st.floats(0, 1), "correct": st.booleans()},
    optional={"abstained": st.booleans(), "threshold": st.sampled_from([0, 0.5, 0.75]), "id": st.integers(0, 5)},
)


@FUZZ
@given(st.lists(graded, min_size=1, max_size=12))
def test_score_well_formed_records_are_counted_exactly(rows):
    result = _score("".join(json.dumps(r) + "\n" for r in rows).encode())
    assert result is not None
    abstained = [r for r in rows if r.get("abstained")]
    answered = [r for r in rows if not r.get("abstained")]
    assert result["n"] == len(rows)
    assert result["n_abstained"] == len(abstained)
    assert result["n_correct"] == sum(r["correct"] for r in answered)
    brier = sum((r["confidence"] - r["correct"]) ** 2 for r in answered) / len(answered) if answered else None
    assert (result["brier"] is None) == (brier is None)
    if brier is not None:
        assert math.isclose(result["brier"], brier, abs_tol=1e-9)


# ---- the QA loader (rlcal train / rlcal eval) -------------------------------------------------------------------


def _load_qa(data: bytes, suffix: str = ".jsonl"):
    from rlcal.data.qa import load_qa_dataset

    path = _write(data, suffix)
    try:
        return load_qa_dataset(str(path))
    except RlcalError as exc:
        assert str(exc) and "\n" not in one_line(exc)
        return None
    finally:
        path.unlink()


@FUZZ
@given(st.binary(max_size=200))
def test_qa_loader_random_bytes(data):
    _load_qa(data)


@FUZZ
@given(st.binary(max_size=120))
def test_qa_loader_random_bytes_as_csv(data):
    _load_qa(data, ".csv")


qa_rows = st.dictionaries(st.sampled_from(["question", "answer", "aliases", "split"]), json_values, max_size=4)


@FUZZ
@given(st.lists(st.one_of(qa_rows.map(json.dumps), json_values.map(json.dumps)), max_size=5))
def test_qa_loader_random_json_lines(rows):
    ds = _load_qa("".join(r + "\n" for r in rows).encode())
    if ds is None:
        return
    parsed = [json.loads(r) for r in rows if r.strip()]
    assert len(ds) == len(parsed)
    for row, original in zip(ds, parsed, strict=True):
        for name in ("question", "answer"):  # text, never empty: a null or blank gold was refused
            assert isinstance(row[name], str) and row[name].strip()
            if isinstance(original[name], str):
                assert row[name] == original[name]
        assert all(isinstance(a, str) for a in row["aliases"])


@pytest.mark.parametrize("answer", ["12-03", 7, 0.5])
def test_qa_loader_good_rows_come_back_as_text(answer):
    ds = _load_qa(json.dumps({"question": "When?", "answer": answer, "aliases": ["x", 3]}).encode() + b"\n")
    assert ds is not None and ds[0]["question"] == "When?" and ds[0]["answer"] == str(answer)
    assert ds[0]["aliases"] == ["x", "3"]
