"""benchmarks/gpu/check.py, the prepared GPU check, in its CPU dry run: every stage runs and reports (so the check is
known to work before a GPU is at hand), and the wheel collector's package list leaves out what the image has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECK = ROOT / "benchmarks" / "gpu" / "check.py"


@pytest.mark.slow
def test_dry_run_runs_every_stage_and_writes_the_report(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, str(CHECK), "--dry-run", "--out", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    report = json.loads((tmp_path / "check.json").read_text())
    stages = report["stages"]
    assert set(stages) == {"install", "model", "ab", "launch", "eval"}
    assert all(stage["ok"] for stage in stages.values()), {k: v.get("error") for k, v in stages.items()}
    ab = stages["ab"]["result"]
    for row in ab["rounds"]:
        vanilla, ours = row["vanilla"], row["rlcal"]
        assert vanilla["steps"] == ours["steps"] == report["settings"]["steps"]
        # learning rate 0 and one seed: both trainers process the same tokens, so the ratio compares speed alone
        assert vanilla["tokens"] == ours["tokens"] > 0
        assert row["ratio"] == pytest.approx(ours["tokens_per_s"] / vanilla["tokens_per_s"])
    launched = stages["launch"]["result"]
    assert launched["steps"] == report["settings"]["zero_steps"] and launched["tokens_per_s"] > 0
    assert [e["label"] for e in launched["calibration_evals"]] == ["base", "final"]
    assert all(e["error"] is None for e in launched["calibration_evals"])
    ev = stages["eval"]["result"]
    assert ev["questions"] == report["settings"]["eval_questions"] and ev["prompts"] == 4 * ev["questions"]
    table = (tmp_path / "check.md").read_text()
    assert "| vanilla TRL GRPOTrainer |" in table and "**rlcal / vanilla tokens/s**" in table
    assert "questions/s" in table and "python benchmarks/gpu/check.py --dry-run" in table


def test_wheel_list_leaves_out_what_the_gpu_image_has():
    sys.path.insert(0, str(ROOT / "benchmarks" / "gpu"))
    try:
        from collect_wheels import closure, needed
    finally:
        sys.path.pop(0)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    packages = needed(version)
    assert {"trl", "datasets", "deepspeed"} <= set(packages)
    assert not set(packages) & set(closure(("torch", "transformers", "accelerate", "peft"), version))
    assert "wandb" not in packages and "wandb" in needed(version, ("trl", "wandb"))
