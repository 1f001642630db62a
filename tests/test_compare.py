"""`rlcal compare`: every number is the difference / ratio of its inputs, the table and files, bad input."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.cli import main
from rlcal.evaluation.compare import compare_metrics, flatten_metrics, format_table

values = st.one_of(st.none(), st.integers(0, 1000), st.floats(-10, 10, allow_nan=False))
per_t_values = st.fixed_dictionaries(
    {k: values for k in ("n", "answer_rate", "accuracy_answered", "hallucination_rate", "score")}
)


@st.composite
def metrics_dicts(draw, t_style: str = "short"):
    keys = draw(st.lists(st.sampled_from(["ece", "mce", "brier", "auroc", "n", "abstain_rate", "extra"]), unique=True))
    out = {k: draw(values) for k in keys}
    thresholds = draw(st.lists(st.sampled_from([0.0, 0.5, 0.75, 0.9]), unique=True, max_size=3))
    fmt = (lambda t: f"{t:g}") if t_style == "short" else (lambda t: f"{t:.1f}" if t in (0.0, 0.5) else str(t))
    out["per_threshold"] = {fmt(t): draw(per_t_values) for t in thresholds}
    out["sweep"] = {fmt(t): {"ideal": draw(per_t_values), "gap": draw(per_t_values)} for t in thresholds}
    out["confidence_method"] = "answer_prob"  # non-numbers are not compared
    return out


@given(metrics_dicts(), metrics_dicts(t_style="long"))
@settings(max_examples=80, deadline=None)
def test_rows_are_differences_and_ratios_of_the_inputs(a, b):
    fa, fb = flatten_metrics(a), flatten_metrics(b)
    if not any(fa.get(k) is not None and fb.get(k) is not None for k in fa):
        return  # nothing in common: an error, tested below
    rows = compare_metrics(a, b)
    assert [r.metric for r in rows] == list(fa) + [k for k in fb if k not in fa]
    for r in rows:
        assert r.a == fa.get(r.metric) and r.b == fb.get(r.metric)
        if r.a is None or r.b is None:
            assert r.diff is None and r.ratio is None
            continue
        assert r.diff == r.b - r.a
        assert r.ratio == (None if r.a == 0 else r.b / r.a)


def test_flatten_names_and_threshold_keys():
    m = {
        "ece": 0.1,
        "n": 10,
        "auroc": None,
        "step": 3,
        "per_threshold": {"0.0": {"score": 0.5}, "0.75": {"answer_rate": 0.25}},
        "sweep": {"0.75": {"measured": {"score": 1.0}, "ideal": {"score": 0.2}, "gap": {"score": -0.1}}},
        "reliability": [{"count": 3}],
        "settings": {"seed": 0},
        "overall": {"score": 0.3, "name": "x"},  # rlcal score's section of plain numbers
    }
    assert flatten_metrics(m) == {
        "ece": 0.1,
        "auroc": None,
        "n": 10,
        "overall.score": 0.3,
        "per_threshold[0].score": 0.5,
        "per_threshold[0.75].answer_rate": 0.25,
        "sweep[0.75].ideal.score": 0.2,
        "sweep[0.75].gap.score": -0.1,
    }


def eval_like(ece: float, answer_rates: dict[str, float]) -> dict:
    bins = [{"lo": 0.4, "hi": 0.5, "count": 5, "mean_confidence": 0.45, "accuracy": 0.45 + ece}]
    per_t = {
        t: {"n": 10, "answer_rate": r, "accuracy_answered": 0.6, "hallucination_rate": 0.4 * r, "score": 0.1}
        for t, r in answer_rates.items()
    }
    return {
        "n": 10,
        "ece": ece,
        "brier": 0.2,
        "auroc": 0.5,
        "per_threshold": per_t,
        "sweep": {t: {"measured": v, "ideal": v, "gap": {k: 0.0 for k in v}} for t, v in per_t.items()},
        "reliability": bins,
    }


def test_cli_compare_writes_table_and_plots(tmp_path, capsys):
    (tmp_path / "base").mkdir()
    (tmp_path / "rl").mkdir()
    (tmp_path / "base" / "metrics.json").write_text(json.dumps(eval_like(0.02, {"0": 1.0, "0.75": 0.9})))
    (tmp_path / "rl" / "metrics.json").write_text(json.dumps(eval_like(0.08, {"0": 1.0, "0.75": 0.5})))
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "base" / "metrics.json"), str(tmp_path / "rl"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ECE drift base → rl: 0.0200 → 0.0800, +0.0600 (×4.00)" in printed
    assert "per_threshold[0.75].answer_rate" in printed
    saved = json.loads((out / "compare.json").read_text())
    rows = {r["metric"]: r for r in saved["rows"]}
    assert rows["ece"]["diff"] == pytest.approx(0.06) and rows["ece"]["ratio"] == pytest.approx(4.0)
    assert rows["per_threshold[0.75].answer_rate"]["diff"] == pytest.approx(-0.4)
    assert rows["brier"]["diff"] == 0.0 and rows["brier"]["ratio"] == 1.0
    md = (out / "compare.md").read_text()
    assert "| ece | 0.0200 | 0.0800 | +0.0600 | ×4.000 |" in md
    for png in ("reliability.png", "answer_rate.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in out.iterdir()) == [
        "answer_rate.png",
        "compare.json",
        "compare.md",
        "reliability.png",
    ]


def test_score_style_metrics_without_bins_still_compare(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"n": 5, "ece": 0.0, "per_threshold": {"0.5": {"score": 0.1}}}))
    b.write_text(json.dumps({"n": 5, "ece": 0.1, "per_threshold": {"0.5": {"score": -0.2}}}))
    assert main(["compare", str(a), str(b), "--labels", "x,y", "--out", str(tmp_path / "o")]) == 0
    rows = {r["metric"]: r for r in json.loads((tmp_path / "o" / "compare.json").read_text())["rows"]}
    assert rows["ece"]["ratio"] is None and rows["ece"]["diff"] == 0.1  # ratio undefined against 0
    assert not (tmp_path / "o" / "reliability.png").exists()  # no bins, no diagram
    table = format_table(compare_metrics(json.loads(a.read_text()), json.loads(b.read_text())), ("x", "y"))
    assert table.splitlines()[0].split() == ["metric", "x", "y", "y", "−", "x", "y", "/", "x"]


@pytest.mark.parametrize(
    "content, match",
    [(None, "not found"), ("{oops", "not valid JSON"), ("[1, 2]", "JSON object"), ('{"name": "x"}', "no numeric")],
)
def test_cli_compare_bad_input(tmp_path, capsys, content, match):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"ece": 0.1}))
    bad = tmp_path / "bad.json"
    if content is not None:
        bad.write_text(content)
    out = tmp_path / "out"
    assert main(["compare", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlcal compare: error:") and match in err and err.count("\n") == 1
    assert not out.exists()


def test_old_reliability_bins_files_still_draw_the_diagram(tmp_path):
    # metrics.json from `rlcal score` before the schema was unified kept its bins under `reliability_bins`
    old = eval_like(0.02, {"0": 1.0})
    old["reliability_bins"] = old.pop("reliability")
    new = eval_like(0.05, {"0": 0.9})
    (tmp_path / "old.json").write_text(json.dumps(old))
    (tmp_path / "new.json").write_text(json.dumps(new))
    out = tmp_path / "o"
    assert main(["compare", str(tmp_path / "old.json"), str(tmp_path / "new.json"), "--out", str(out)]) == 0
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"


def test_intervals_and_bootstrap_settings_are_not_diffed_as_metrics():
    m = {
        "ece": 0.1,
        "mce": 0.3,
        "behavioral_ece": 0.04,
        "ci": {"ece": [0.05, 0.15], "behavioral_ece": [0.01, 0.07]},
        "bootstrap": {"n_resamples": 1000, "seed": 0, "level": 0.95, "n_units": 50},
        "per_threshold": {"0.5": {"answer_rate": 0.5, "ci": {"answer_rate": [0.4, 0.6]}}},
    }
    assert flatten_metrics(m) == {
        "ece": 0.1,
        "mce": 0.3,
        "behavioral_ece": 0.04,
        "per_threshold[0.5].answer_rate": 0.5,
    }


def test_compares_two_real_score_outputs(tmp_path):
    from rlcal.evaluation.score import Prediction, score_predictions

    def scored(p_correct: int) -> dict:
        preds = [Prediction("correct" if i < p_correct else "wrong", 0.0, 0.8, i) for i in range(10)]
        preds += [Prediction("abstain" if i % 2 else "correct", 0.5, None, i) for i in range(10)]
        return score_predictions(preds)

    rows = {r.metric: r for r in compare_metrics(scored(8), scored(5))}
    assert rows["ece"].a == pytest.approx(0.0) and rows["ece"].b == pytest.approx(0.3)
    assert rows["per_threshold[0].accuracy_answered"].diff == pytest.approx(-0.3)
    assert "behavioral_ece" in rows and not any(name.startswith(("ci", "bootstrap")) for name in rows)


def write_preds(path, questions, thresholds=(0.0, 0.5), correct_every=2):
    rows = [
        {"question": q, "threshold": t, "confidence": 0.7, "correct": i % correct_every == 0}
        for i, q in enumerate(questions)
        for t in thresholds
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("b_args", "differ"),
    [
        ({"questions": [f"q{i}" for i in range(1, 21)]}, "eval_set"),  # one question swapped
        ({"thresholds": (0.0, 0.75)}, "thresholds"),
        ({"bins": 10}, "n_bins"),
        ({"grader": "contains"}, "grader"),
    ],
)
def test_compare_refuses_metrics_of_different_eval_sets(tmp_path, capsys, b_args, differ):
    questions = [f"q{i}" for i in range(20)]
    write_preds(tmp_path / "a.jsonl", questions)
    write_preds(tmp_path / "b.jsonl", b_args.get("questions", questions), b_args.get("thresholds", (0.0, 0.5)), 3)
    assert main(["score", str(tmp_path / "a.jsonl"), "--out", str(tmp_path / "a.json"), "--quiet"]) == 0
    extra = ["--bins", str(b_args["bins"])] if "bins" in b_args else []
    extra += ["--grader", b_args["grader"]] if "grader" in b_args else []
    assert main(["score", str(tmp_path / "b.jsonl"), "--out", str(tmp_path / "b.json"), "--quiet", *extra]) == 0
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not measured on the same eval set" in err[0] and differ in err[0], err
    assert not (tmp_path / "c").exists()
    argv = ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "c"),
            "--allow-mismatch"]
    assert main(argv) == 0
    assert "differ in their eval set" in capsys.readouterr().out
    report = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert differ in report["note"] and differ in (tmp_path / "c" / "compare.md").read_text()


def test_compare_of_the_same_eval_set_passes_and_reorders_nothing(tmp_path, capsys):
    questions = [f"q{i}" for i in range(20)]
    write_preds(tmp_path / "a.jsonl", questions)
    write_preds(tmp_path / "b.jsonl", list(reversed(questions)), correct_every=3)  # another order, another model
    for name in ("a", "b"):
        assert main(["score", str(tmp_path / f"{name}.jsonl"), "--out", str(tmp_path / f"{name}.json"), "--quiet"]) == 0
    a, b = (json.loads((tmp_path / f"{n}.json").read_text())["fingerprint"] for n in "ab")
    assert a == b and a["thresholds"] == [0.0, 0.5] and a["n_items"] == 40 and a["calibration_at"] == "all"
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "ECE drift" in capsys.readouterr().out


def test_files_without_a_fingerprint_compare_with_a_note(tmp_path, capsys):
    (tmp_path / "a.json").write_text(json.dumps(eval_like(0.1, {"0.5": 0.4})))
    (tmp_path / "b.json").write_text(json.dumps(eval_like(0.2, {"0.5": 0.3})))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 0
    assert "carries no eval-set fingerprint" in capsys.readouterr().out
