"""benchmarks/bench_claims.py: the per-seed claims table on hand-made demo summaries (the demo itself is tested by
tests/test_demo.py; running it per seed is the benchmark's job, not the suite's)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_claims.py"
_spec = importlib.util.spec_from_file_location("bench_claims", _PATH)
bench_claims = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_claims)


def _summary(ece: float, met: bool, per_t: bool) -> dict:
    claims = [
        {"claim": "base model is calibrated", "target": "base ECE ≤ 0.05", "measured": ece, "met": met},
        {"claim": "answer rate falls", "target": "non-increasing", "measured": [1.0, 0.5], "met": True},
    ]
    if per_t:
        claims.append({"claim": "at t = 0.9", "target": "≥ 0.85", "measured": 0.9, "met": True})
    return {"claims": claims}


def test_claims_table_mean_sd_and_held_counts():
    rows, table = bench_claims.claims_table(
        {0: _summary(0.02, True, True), 1: _summary(0.06, False, False), 2: _summary(0.04, True, True)}
    )
    by_name = {r["claim"]: r for r in rows}
    ece = by_name["base model is calibrated"]
    assert ece["mean"] == pytest.approx(0.04) and ece["sd"] == pytest.approx(0.02)
    assert (ece["held"], ece["tested"]) == (2, 3)
    per_t = by_name["at t = 0.9"]
    assert (per_t["held"], per_t["tested"]) == (2, 2) and per_t["per_seed"]["1"] is None
    assert by_name["answer rate falls"]["mean"] is None  # a list of rates has no mean
    lines = table.splitlines()
    assert lines[0].count("seed") == 3 and len(lines) == 2 + 3
    assert "0.060 ✗" in table and "| 2/3 |" in table and "–" in table


def test_claims_table_escapes_bars_in_targets():
    summary = {"claims": [{"claim": "drift", "target": "|ECE drift| smaller", "measured": 0.01, "met": True}]}
    _, table = bench_claims.claims_table({0: summary})
    row = table.splitlines()[2]
    assert "\\|ECE drift\\| smaller" in row and row.count(" | ") == 4  # 5 cells: claim, target, seed 0, mean, held
