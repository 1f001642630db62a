"""Every command's output folder goes through rlcal.common.files.staged_dir: it appears, or replaces an earlier
result, in one rename, and a folder holding other files is refused rather than deleted.

    pytest tests/test_outputs.py
"""

from __future__ import annotations

import json

import pytest

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.evaluation.compare import compare_metrics, write_compare
from rlcal.evaluation.sweep import write_eval
from rlcal.world.corpus import WorldConfig, build_world

METRICS = {"n": 2, "ece": 0.1, "reliability": [], "per_threshold": {"0.5": {"answer_rate": 0.5}}}
PREDICTIONS = [{"index": 0, "answer": "01-02"}, {"index": 1, "answer": "I don't know."}]


def names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_rerunning_eval_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "eval"
    paths = write_eval(out, METRICS, PREDICTIONS)
    assert names(out) == ["metrics.json", "predictions.jsonl", "reliability.png", "sweep.png"]
    assert paths["sweep"] == out / "sweep.png" and paths["sweep"].read_bytes()[:4] == b"\x89PNG"
    write_eval(out, {**METRICS, "n": 3}, PREDICTIONS[:1], plots=False)
    assert names(out) == ["metrics.json", "predictions.jsonl"]  # no plots left over from the first run
    assert json.loads((out / "metrics.json").read_text())["n"] == 3
    assert names(tmp_path) == ["eval"]


def test_eval_refuses_a_folder_of_other_files_before_loading_anything(tmp_path, capsys):
    out = tmp_path / "train"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("weights")
    argv = ["eval", "--model", "nobody/no-such-model", "--data", str(tmp_path / "none.jsonl"), "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [
        f"rlcal eval: error: --out {out} holds files this command does not write (adapter_model.safetensors); "
        "give a new or empty folder"
    ]
    assert names(out) == ["adapter_model.safetensors"]


def test_compare_replaces_an_earlier_comparison_and_refuses_other_folders(tmp_path):
    a, b = {**METRICS, "ece": 0.1}, {**METRICS, "ece": 0.2}
    rows = compare_metrics(a, b)
    out = tmp_path / "cmp"
    write_compare(out, a, b, rows, ("A", "B"))
    first = (out / "compare.json").read_text()
    write_compare(out, a, b, rows, ("base", "rl"))
    assert (out / "compare.json").read_text() != first and "answer_rate.png" in names(out)
    (out / "notes.md").write_text("mine")
    with pytest.raises(RlcalError, match=r"--out .*cmp holds files this command does not write \(notes\.md\)"):
        write_compare(out, a, b, rows, ("A", "B"))
    assert (out / "notes.md").read_text() == "mine" and "base" in (out / "compare.md").read_text()


def test_a_world_is_rebuilt_whole_and_other_folders_are_refused(tmp_path):
    out = tmp_path / "world"
    build_world(WorldConfig(people=40, mentions=60, seed=1), out)
    stats = build_world(WorldConfig(people=40, mentions=60, seed=2), out)
    assert json.loads((out / "world.json").read_text()) == stats and stats["config"]["seed"] == 2
    assert names(tmp_path) == ["world"]
    (out / "extra.txt").write_text("")
    with pytest.raises(RlcalError, match="holds files this command does not write"):
        build_world(WorldConfig(people=40, mentions=60, seed=3), out)
    assert json.loads((out / "world.json").read_text())["config"]["seed"] == 2
