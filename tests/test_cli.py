"""End-to-end tests of `rlcal score` through `rlcal.cli.main`: output, table, JSON schema, and every bad input."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlcal.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "predictions.jsonl"
TOP_KEYS = {"n", "ece", "ece_equal_mass", "mce", "brier", "auroc", "per_threshold"}
PER_T_KEYS = {"n", "n_correct", "n_wrong", "n_abstain", "answer_rate", "accuracy_answered", "hallucination_rate", "score",
              "ci"}


def test_score_example_end_to_end(tmp_path, capsys):
    out = tmp_path / "deep" / "dir" / "metrics.json"
    assert main(["score", str(EXAMPLE), "--bins", "10", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert TOP_KEYS <= set(data)
    assert data["n"] == sum(1 for line in EXAMPLE.read_text().splitlines() if line.strip())
    assert data["n_bins"] == 10 and 0 <= data["ece"] <= 1 and 0 <= data["brier"] <= 1
    assert set(data["per_threshold"]) == {"0", "0.5", "0.75", "0.9"}
    for m in data["per_threshold"].values():
        assert set(m) == PER_T_KEYS
    assert not [p for p in out.parent.iterdir() if p.name != "metrics.json"]  # no temp files left behind

    printed = capsys.readouterr().out
    lines = printed.splitlines()
    header = next(line for line in lines if line.startswith("t "))
    rows = [line for line in lines if line.split() and line.split()[0] in ("0", "0.5", "0.75", "0.9", "all")]
    assert len(rows) == 5
    # aligned: every row ends where the header ends, and the score column is right-aligned under "score"
    assert {len(r) for r in rows} == {len(header)}
    assert f"wrote {out}" in printed and "ECE" in printed


def test_score_pregraded_file_plot_and_stdin(tmp_path, capsys, monkeypatch):
    plot = tmp_path / "rel.png"
    path = REPO / "examples" / "confidences.jsonl"
    assert main(["score", str(path), "--plot", str(plot), "--quiet"]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes())))
    out = tmp_path / "stdin.json"
    assert main(["score", "-", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["source"] == "<stdin>"


def test_graders_option(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"response": "It is Paris.", "answer": "Paris", "confidence": 0.9}) + "\n")
    for grader, accuracy in (("exact", 0.0), ("contains", 1.0)):
        out = tmp_path / f"{grader}.json"
        assert main(["score", str(path), "--grader", grader, "--out", str(out), "--quiet"]) == 0
        assert json.loads(out.read_text())["per_threshold"]["0"]["accuracy_answered"] == accuracy


GOOD = '{"response": "Paris", "answer": "Paris", "confidence": 0.9, "threshold": 0.5}'
BAD_INPUTS = [
    ("missing-answer", [GOOD, '{"response": "Paris", "confidence": 0.9}'], "line 2", "'answer'"),
    ("missing-correct", ['{"confidence": 0.9}'], "line 1", "'correct'"),
    ("missing-both", [GOOD, GOOD, '{"question": "q"}'], "line 3", "'response' or 'correct'"),
    ("confidence-nan", [GOOD, '{"confidence": NaN, "correct": true}'], "line 2", "'confidence'"),
    ("confidence-high", ['{"response": "x", "answer": "x", "confidence": 1.01}'], "line 1", "'confidence'"),
    ("confidence-negative", ['{"confidence": -0.5, "correct": false}'], "line 1", "'confidence'"),
    ("confidence-infinite", ['{"confidence": Infinity, "correct": false}'], "line 1", "'confidence'"),
    ("threshold-one", [GOOD, '{"confidence": 0.5, "correct": true, "threshold": 1}'], "line 2", "'threshold'"),
    ("threshold-negative", ['{"confidence": 0.5, "correct": true, "threshold": -0.1}'], "line 1", "'threshold'"),
    ("threshold-text", ['{"confidence": 0.5, "correct": true, "threshold": "0.5"}'], "line 1", "'threshold'"),
    ("invalid-json", [GOOD, '{"response": "x", "answer": }'], "line 2", "invalid JSON"),
    ("truncated-json", [GOOD, GOOD, '{"response": "x"'], "line 3", "invalid JSON"),
    ("not-an-object", ['["x", "y"]'], "line 1", "JSON object"),
    ("empty-file", [], "", "no records"),
    ("blank-lines-only", ["", "   ", ""], "", "no records"),
]


@pytest.mark.parametrize("lines, where, field", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_one_clear_error_and_no_output(tmp_path, capsys, lines, where, field):
    path = tmp_path / "preds.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    out = tmp_path / "out" / "metrics.json"
    plot = tmp_path / "out" / "plot.png"
    assert main(["score", str(path), "--out", str(out), "--plot", str(plot)]) == 2
    captured = capsys.readouterr()
    error = captured.err.strip()
    assert len(error.splitlines()) == 1, error
    assert error.startswith("rlcal score: error: ") and str(path) in error and where in error and field in error
    assert "Traceback" not in captured.err and captured.out == ""
    assert not out.exists() and not plot.exists() and not out.parent.exists()


def test_bad_input_leaves_existing_output_untouched(tmp_path, capsys):
    path = tmp_path / "preds.jsonl"
    path.write_text(GOOD + "\n" + '{"confidence": 2, "correct": true}\n')
    out = tmp_path / "metrics.json"
    out.write_text("previous results")
    assert main(["score", str(path), "--out", str(out)]) == 2
    assert out.read_text() == "previous results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "preds.jsonl"]


def test_other_user_errors(tmp_path, capsys):
    good = tmp_path / "p.jsonl"
    good.write_text(GOOD + "\n")
    binary = tmp_path / "b.jsonl"
    binary.write_bytes(GOOD.encode() + b"\n\xff\xfe{}\n")
    cases = [
        (["score", str(tmp_path / "missing.jsonl")], "not found"),
        (["score", str(tmp_path)], "directory"),
        (["score", str(good), "--bins", "0"], "--bins"),
        (["score", str(good), "--out", str(tmp_path)], "directory"),
        (["score", str(binary)], "line 2"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err


def test_console_script_exit_code(tmp_path):
    """The installed `rlcal` entry point: exit 2 and one line on stderr for bad input."""
    path = tmp_path / "preds.jsonl"
    path.write_text('{"confidence": NaN, "correct": true}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "rlcal.cli", "score", str(path)], capture_output=True, text=True,
                          env=env, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"rlcal score: error: {path} line 1: field 'confidence' must be a number in [0, 1] or null, got NaN"
    ]


# ---- the top-level command line: help, version, usage errors ----------------------------------------------------


def test_help_lists_every_command_once(capsys):
    from rlcal.cli import COMMANDS

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: rlcal ")
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ") and not line.strip().startswith("-")]
    assert listed == list(COMMANDS)  # each once, in order: no argparse `{a,b,...}` choices line besides
    assert "{" not in out
    assert main(["-h"]) == 0 and capsys.readouterr().out == out


def test_no_command_is_usage_and_exit_2(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("usage: rlcal ") and "score" in captured.err


@pytest.mark.parametrize("argv, what", [(["nope"], "command 'nope'"), (["--nope", "score"], "option '--nope'")])
def test_an_unknown_command_is_one_line_and_exit_2(capsys, argv, what):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [f"rlcal: error: unknown {what}; choose from score, world, pretrain, singleton-rate, "
                                "train, eval, compare, demo"]  # fmt: skip


def test_version_comes_from_pyproject(capsys):
    tomllib = pytest.importorskip("tomllib")
    import rlcal

    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"rlcal {expected}\n"
    assert rlcal.__version__ == expected
    with pytest.raises(AttributeError):
        rlcal.no_such_thing  # noqa: B018


def test_train_help_names_the_sections_and_where_keys_are_documented(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps the epilog to the terminal width
    for section in ("model", "data", "reward", "warmup", "training", "wandb", "calibration", "trainer", "resume"):
        assert section in out
    assert "docs/training.md" in out and "--dry-run" in out
