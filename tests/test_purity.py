"""The pure core (grading, rewards, metrics, prompts, thresholds, score) must import neither torch nor TRL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PURE = [
    "rlcal.core.grading",
    "rlcal.core.rewards",
    "rlcal.core.metrics",
    "rlcal.core.aggregate",
    "rlcal.core.behavioral",
    "rlcal.core.prompts",
    "rlcal.core.thresholds",
    "rlcal.evaluation.score",
]
HEAVY = ["torch", "trl", "transformers", "peft", "accelerate", "datasets", "deepspeed", "matplotlib"]


def _loaded_after(code: str) -> dict:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pure_modules_import_no_heavy_dependencies():
    assert _loaded_after("\n".join(f"import {m}" for m in PURE)) == []


def test_rlcal_score_runs_without_heavy_dependencies():
    example = REPO / "examples" / "predictions.jsonl"
    code = f"from rlcal.cli import main\nassert main(['score', {str(example)!r}, '--quiet']) == 0"
    assert _loaded_after(code) == []
