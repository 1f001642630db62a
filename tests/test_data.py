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


# ---- rlcal.data.task: the QA task spec -----------------------------------------------------------------------------

from rlcal.data.task import (  # noqa: E402
    GRADING_FIELDS,
    HELD_OUT_FIELDS,
    PROMPT_FIELDS,
    ROW_FIELDS,
    SOURCE_FIELDS,
    TASK_FIELDS,
    QATask,
    read_recipe_file,
)


def test_task_fields_are_source_then_prompt_then_grading():
    assert TASK_FIELDS == SOURCE_FIELDS + PROMPT_FIELDS + GRADING_FIELDS
    assert SOURCE_FIELDS == ("source", *ROW_FIELDS) and HELD_OUT_FIELDS == ("data", *ROW_FIELDS)
    assert set(TASK_FIELDS) == {
        "source", "split", "subset", "split_filter", "split_column", "columns", "max_samples", "weight_column",
        "prompt_format", "instruction", "instruction_t0", "template", "system_prompt", "grader", "abstain_phrases",
    }  # fmt: skip


def test_task_renders_grades_and_loads(tmp_path, qa_rows):
    path = _write(tmp_path / "qa.jsonl", qa_rows)
    task = QATask(
        source=path,
        split_filter="eval",
        max_samples=2,
        instruction="Stake: {penalty_points} if wrong.",
        template="{instruction} | {question} =>",
        abstain_phrases=["keine Ahnung"],
    )
    assert task.prompt_template().render("q1", 0.75) == "Stake: 3 points if wrong. | q1 =>"
    assert task.prompt_template().render("q1", 0.5) == "Stake: 1 point if wrong. | q1 =>"
    assert task.prompt_template().render("q1", 0.0).startswith("Give your best guess")  # instruction_t0 default
    grade = task.answer_grader()
    assert grade("Keine Ahnung.", "Paris") == "abstain"
    assert grade("I don't know", "Paris") == "wrong"  # only the task's phrases abstain
    assert QATask(source=path).answer_grader()("I don't know", "Paris") == "abstain"
    assert task.load()["question"] == ["q1", "q3"]
    assert task.load()["question"] == load_qa_dataset(path, split_filter="eval", max_samples=2)["question"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": None}, "source is required"),
        ({"columns": {"context": "c"}}, "columns can map question, answer and aliases only"),
        ({"columns": "{answer: [unclosed"}, "cannot parse"),
        ({"max_samples": 0}, "max_samples must be > 0"),
        ({"prompt_format": "html"}, "prompt format must be one of"),
        ({"template": "no question"}, "must contain {question}"),
        ({"instruction": "{bogus}"}, "bad placeholder"),
        ({"grader": "fuzzy"}, "unknown grader 'fuzzy'"),
        ({"abstain_phrases": "pass"}, "abstain_phrases must be a list of strings"),
        ({"abstain_phrases": ["pass", False]}, "abstain_phrases must be a list of strings"),  # YAML `no` is False
    ],
)
def test_bad_task_values_are_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        QATask(**{"source": "qa.jsonl", **kwargs})


RECIPE = {
    "model": {"model_name_or_path": "m"},
    "data": {
        "source": "train.jsonl",
        "split_filter": "rl_train",
        "weight_column": "popularity",
        "prompt_format": "chat",
        "system_prompt": "Be careful.",
        "instruction": "Answer only above {t_percent}.",
    },
    "reward": {"name": "binary", "threshold": 0.5, "grader": "contains", "abstain_phrases": ["pass"]},
    "calibration": {"data": "held_out.jsonl", "split": "validation", "split_filter": "eval", "every_n_steps": 5},
}


def test_from_recipe_reads_the_training_task_and_the_held_out_one():
    train = QATask.from_recipe(RECIPE, "data")
    assert (train.source, train.split_filter, train.weight_column) == ("train.jsonl", "rl_train", "popularity")
    held = QATask.from_recipe(RECIPE, "calibration")
    assert (held.source, held.split, held.split_filter, held.weight_column) == (
        "held_out.jsonl",
        "validation",
        "eval",
        None,
    )
    assert held.max_samples == 256  # the calibration section's default, as the callback uses it
    for task in (train, held):  # prompt from data:, grading from reward:
        user = "Answer only above 90%.\n\nQuestion: Q?\nReply with only the answer, or \"I don't know\"."
        assert task.prompt_template().render("Q?", 0.9) == [
            {"role": "system", "content": "Be careful."},
            {"role": "user", "content": user},
        ]
        assert (task.grader, task.abstain_phrases) == ("contains", ["pass"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"source": "x", "instrution": "?"}}, "unknown key in data section: 'instrution' (did you mean"),
        ({"data": {"source": "x", "max_samples": -1}}, "data: max_samples must be > 0"),
        ({"data": {"source": "x", "template": "{question} {nope}"}}, "data: prompt template has a bad placeholder"),
        ({"data": {"split_filter": "x"}}, "data: source is required"),
        ({"reward": {"grader": "fuzzy"}}, "reward: unknown grader 'fuzzy'"),
        ({"reward": {"abstain_phrases": "pass"}}, "reward: abstain_phrases must be a list"),
        ({"calibration": {"data": "y", "columns": {"ctx": "c"}}}, "calibration: columns can map"),
        ({"calibration": {"data": None}}, "calibration.data is not set"),
        ({"data": ["not", "a", "mapping"]}, "section 'data' must be a mapping"),
    ],
)
def test_bad_recipe_sections_are_one_line_errors(change, message):
    raw = {**RECIPE, **change}
    section = "calibration" if "calibration" in change else "data"
    with pytest.raises(RlcalError) as info:
        QATask.from_recipe(raw, section, path="r.yaml")
    assert str(info.value).startswith("r.yaml: ") and message in str(info.value) and "\n" not in str(info.value)


def test_recipe_file_errors_are_one_line(tmp_path):
    with pytest.raises(RlcalError, match="recipe not found"):
        QATask.from_recipe_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    for text, message in (("data: [unclosed\n", "invalid YAML"), ("- a list\n", "must be a YAML mapping")):
        bad.write_text(text)
        with pytest.raises(RlcalError, match=message) as info:
            read_recipe_file(bad)
        assert "\n" not in str(info.value)
    import yaml

    bad.write_text(yaml.safe_dump(RECIPE))
    assert QATask.from_recipe_file(bad, "calibration") == QATask.from_recipe(RECIPE, "calibration")


_text = st.text(st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=30)


@settings(max_examples=40, deadline=None)
@given(
    instruction=_text,
    before=_text,
    after=_text,
    system=st.none() | _text,
    phrases=st.none() | st.lists(_text.filter(str.strip), max_size=3),
    fmt=st.sampled_from(["plain", "chat"]),
)
def test_the_held_out_task_differs_from_the_training_task_only_in_its_source(
    instruction, before, after, system, phrases, fmt
):
    data = {"source": "t.jsonl", "prompt_format": fmt, "instruction": instruction, "system_prompt": system}
    data["template"] = before + "{question}" + after
    raw = {"data": data, "reward": {"abstain_phrases": phrases}, "calibration": {"data": "e"}}
    train, held = QATask.from_recipe(raw, "data"), QATask.from_recipe(raw, "calibration")
    assert [getattr(held, k) for k in PROMPT_FIELDS + GRADING_FIELDS] == [
        getattr(train, k) for k in PROMPT_FIELDS + GRADING_FIELDS
    ]
    assert held.prompt_template().render("Q", 0.75) == train.prompt_template().render("Q", 0.75)
    assert held.source == "e" and train.source == "t.jsonl"


def test_docs_list_every_task_field_with_its_help_text():
    from dataclasses import fields
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    for f in fields(QATask):
        assert f"| `{f.name}` |" in docs and f.metadata["help"].replace("|", "\\|") in docs, f.name
