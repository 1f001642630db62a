"""rlcal.data.qa: loading, column mapping, split filtering and the popularity-weighted draw."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from datasets import Dataset
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.common.errors import RlcalError
from rlcal.data.qa import load_qa_dataset, sample_by_weight


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def qa_rows():
    return [
        {"question": f"q{i}", "answer": f"a{i}", "aliases": [], "split": "eval" if i % 2 else "rl_train", "w": w}
        for i, w in enumerate([0.0, 1.0, 0.0, 3.0, 0.5, 0.0])
    ]


def test_split_filter_and_max_samples_keep_the_first_rows(tmp_path, qa_rows):
    ds = load_qa_dataset(_write(tmp_path / "qa.jsonl", qa_rows), split_filter="eval", max_samples=2)
    assert ds["question"] == ["q1", "q3"]
    assert "w" in ds.column_names  # extra columns are kept for reward kwargs and weighting


def test_weighted_load_draws_only_rows_with_weight(tmp_path, qa_rows):
    path = _write(tmp_path / "qa.jsonl", qa_rows)
    ds = load_qa_dataset(path, split_filter="eval", weight_column="w", max_samples=400, seed=3)
    counts = Counter(ds["question"])
    assert set(counts) == {"q1", "q3"}  # q5 has weight 0
    assert len(ds) == 400
    assert 2.2 < counts["q3"] / counts["q1"] < 4.2  # 3:1 in expectation; ±5 sd at n = 400 is wider than this
    again = load_qa_dataset(path, split_filter="eval", weight_column="w", max_samples=400, seed=3)
    assert again["question"] == ds["question"]
    other = load_qa_dataset(path, split_filter="eval", weight_column="w", max_samples=400, seed=4)
    assert other["question"] != ds["question"]


def test_weighted_load_defaults_to_as_many_rows_as_the_split_has(tmp_path, qa_rows):
    ds = load_qa_dataset(_write(tmp_path / "qa.jsonl", qa_rows), split_filter="eval", weight_column="w")
    assert len(ds) == 3


@pytest.mark.parametrize(
    ("weights", "message"),
    [([0.0, 0.0], "not all zero"), ([1.0, -1.0], ">= 0"), ([1.0, float("nan")], "finite"), (["a", "b"], "numeric")],
)
def test_bad_weights_are_one_clear_error(weights, message):
    ds = Dataset.from_dict({"question": ["x", "y"], "w": weights})
    with pytest.raises(RlcalError, match=message):
        sample_by_weight(ds, "w")


def test_missing_weight_column_names_the_file(tmp_path, qa_rows):
    with pytest.raises(RlcalError, match=r"qa\.jsonl: no weight column 'popularity'"):
        load_qa_dataset(_write(tmp_path / "qa.jsonl", qa_rows), weight_column="popularity")


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=12).filter(lambda w: sum(w) > 0),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_draws_have_the_requested_size_and_never_a_zero_weight_row(weights, n, seed):
    ds = Dataset.from_dict({"i": list(range(len(weights))), "w": weights})
    drawn = sample_by_weight(ds, "w", n, seed=seed)
    assert len(drawn) == n
    assert all(weights[i] > 0 for i in drawn["i"])
    assert sample_by_weight(ds, "w", n, seed=seed)["i"] == drawn["i"]
