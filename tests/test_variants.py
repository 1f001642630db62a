"""benchmarks/variants.py: the table row and the warm-up reuse check on hand-made inputs (the variant runs themselves
are the benchmark's job, not the suite's)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "variants.py"
_spec = importlib.util.spec_from_file_location("variants", _PATH)
variants = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(variants)


def _summary(rates: list[float], changes: list[dict]) -> dict:
    grid = ["0.0", "0.5", "0.9"][: len(rates)]
    return {
        "ece": 0.05,
        "behavioral_ece": 0.01,
        "behavioral_monotone_share": 0.9,
        "behavioral_rate_changes": changes,
        "per_threshold": {t: {"answer_rate": r, "accuracy_answered": None} for t, r in zip(grid, rates, strict=True)},
    }


def test_row_lists_only_rises_whose_interval_is_above_zero():
    changes = [
        {"from": 0.0, "to": 0.5, "change": 0.02, "ci": [0.005, 0.04]},  # beyond noise
        {"from": 0.5, "to": 0.9, "change": 0.01, "ci": [-0.01, 0.03]},  # a rise, within noise
    ]
    row = variants._row("v", _summary([0.3, 0.32, 0.33], changes))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "no"  # strict non-increasing fails on any rise
    assert cells[5] == "0→0.5"
    assert cells[6] == "0.300 0.320 0.330" and cells[7] == "– – –"  # no accuracy where none are given


def test_row_says_none_without_rises_and_for_files_without_the_paired_test():
    falling = [{"from": 0.0, "to": 0.5, "change": -0.2, "ci": [-0.3, -0.1]}]
    assert "| yes | none |" in variants._row("v", _summary([0.5, 0.3], falling))
    assert "| yes | none |" in variants._row("v", _summary([0.5, 0.3], []))


def test_warmup_is_reused_only_under_the_same_key(tmp_path):
    cached, used, empty = tmp_path / "cached", tmp_path / "used", tmp_path / "empty"
    for folder, key in ((cached, "abc"), (used, "abc")):
        folder.mkdir()
        (folder / "warmup.json").write_text(json.dumps({"key": key}))
    empty.mkdir()
    assert variants._cached_key(cached) == "abc"
    assert variants._same_warmup(cached, used)
    (used / "warmup.json").write_text(json.dumps({"key": "other"}))
    assert not variants._same_warmup(cached, used)
    assert variants._cached_key(empty) is None and not variants._same_warmup(empty, empty)


def test_run_dir_starts_empty_and_gets_the_warmup_only_under_its_key(tmp_path):
    cached, run_dir = tmp_path / "demo" / "warmup", tmp_path / "var" / "seed_0" / "v"
    cached.mkdir(parents=True)
    (cached / "warmup.json").write_text(json.dumps({"key": "abc"}))
    (run_dir / "warmup").mkdir(parents=True)
    (run_dir / "warmup" / "warmup.json").write_text(json.dumps({"key": "stale"}))  # an earlier try's warm-up
    assert not variants._prepare_run_dir(run_dir, cached, "other", reuse=True)
    assert not run_dir.exists()  # the stale warm-up is gone, so train() builds this variant's own
    assert not variants._prepare_run_dir(run_dir, cached, "abc", reuse=False)
    assert not run_dir.exists()
    assert variants._prepare_run_dir(run_dir, cached, "abc", reuse=True)
    assert variants._cached_key(run_dir / "warmup") == "abc"
    assert not variants._prepare_run_dir(run_dir, tmp_path / "missing", "abc", reuse=True)
