"""Real signals against real processes: SIGKILL during the warm-up then a re-run ends where an uninterrupted run
ends; SIGINT during `rlcal eval` and `rlcal score` exits 130 and leaves no partial output. (SIGKILL during GRPO
and the resume after it: tests/test_distributed.py; damaged checkpoints: tests/test_train.py and test_runs.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


def qa_file(path: Path, n: int = 48) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"question": f"When was Person {i} born?", "answer": f"{i % 28 + 1:02d}-{i % 12 + 1:02d}",
         "split": "rl_train" if i < n - 8 else "eval"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def recipe(path: Path, model: str, qa: Path, out: Path) -> Path:
    raw = {
        "model": {"model_name_or_path": model, "lora_r": 4, "lora_alpha": 16, "lora_dropout": 0.0},
        "data": {"source": str(qa), "split_filter": "rl_train"},
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}},
        "warmup": {"steps": 240, "num_examples": 40, "abstain_on": "wrong", "abstain_fraction": 0.5,
                   "answer_target": "gold", "use_peft": False, "learning_rate": 1e-2, "batch_size": 8,
                   "max_new_tokens": 6, "probe_prompts": 0},
        "training": {"output_dir": str(out), "seed": 0, "max_steps": 2, "learning_rate": 1e-2,
                     "per_device_train_batch_size": 8, "num_generations": 4, "max_completion_length": 6,
                     "scale_rewards": "batch", "logging_steps": 1, "save_steps": 1, "report_to": []},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def _default_sigint() -> None:
    # A test runner started in the background of a shell without job control inherits SIGINT *ignored*, and so
    # would the child: Python then never raises KeyboardInterrupt. A user's terminal delivers it; so must we.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*argv: str, stderr=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlcal.cli", *argv], env=ENV, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=_default_sigint)


def wait_for(condition, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the process ended (rc {proc.returncode}) before the signal could be sent")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the process to reach the point to interrupt")
        time.sleep(0.05)


def sft_rows(out: Path) -> int:
    log = out / "warmup" / "train_log.jsonl"
    return len(log.read_text().splitlines()) if log.is_file() else 0


@pytest.mark.slow
def test_sigkill_during_the_warmup_then_rerun_ends_as_an_uninterrupted_run(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    qa = qa_file(tmp_path / "qa.jsonl")
    plain = recipe(tmp_path / "plain.yaml", tiny_model_dir, qa, tmp_path / "plain")
    killed = recipe(tmp_path / "killed.yaml", tiny_model_dir, qa, tmp_path / "killed")
    out = tmp_path / "killed"
    proc = start("train", str(killed), stderr=subprocess.DEVNULL)
    wait_for(lambda: sft_rows(out) >= 1, proc)  # the warm-up has logged its first steps
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "warmup" / "model").exists() and not list(out.glob("checkpoint-*"))  # killed mid-warm-up
    for path in (killed, plain):
        done = subprocess.run([sys.executable, "-m", "rlcal.cli", "train", str(path)], env=ENV,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
    want, got = load_file(str(tmp_path / "plain" / "adapter_model.safetensors")), load_file(
        str(out / "adapter_model.safetensors"))
    assert want.keys() == got.keys() and all(want[k].equal(got[k]) for k in want)
    assert not list(out.rglob(".*.tmp")) and not [p for p in (out / "warmup").iterdir() if p.name.startswith(".")]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc): how far it got, whatever the machine's load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def big_predictions(path: Path, n: int = 1_200_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"question": f"q{i // 4}", "threshold": (i % 4) / 4, "confidence": 0.5,
                                 "correct": i % 3 == 0}) + "\n")
    return path


def interrupt(proc: subprocess.Popen, ready, err_file: Path) -> tuple[int, str]:
    wait_for(ready, proc)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    return proc.returncode, err_file.read_text(errors="replace")


@pytest.mark.slow
def test_sigint_during_score_exits_130_and_writes_nothing(tmp_path):
    preds = big_predictions(tmp_path / "data" / "preds.jsonl")
    err_file = tmp_path / "data" / "stderr.txt"
    with err_file.open("w") as err:
        proc = start("score", str(preds), "--out", str(tmp_path / "m.json"), "--plot", str(tmp_path / "m.png"),
                     stderr=err)
        # past its imports (well under a second of CPU) and into the file, which takes several seconds of CPU
        rc, text = interrupt(proc, lambda: cpu_seconds(proc.pid) > 2.0, err_file)
    assert rc == 130, text
    lines = [line for line in text.replace("\r", "\n").splitlines() if line.strip() and "scoring" not in line]
    assert lines == ["rlcal score: interrupted"], text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no metrics, plot or temp file


@pytest.mark.slow
def test_sigint_during_eval_exits_130_and_leaves_no_output_folder(tiny_model_dir, tmp_path):
    qa = qa_file(tmp_path / "data" / "qa.jsonl", n=1500)  # 15000 prompts: many seconds, even on a fast machine
    out, err_file = tmp_path / "eval", tmp_path / "data" / "stderr.txt"
    with err_file.open("w") as err:
        proc = start("eval", "--model", tiny_model_dir, "--data", str(qa), "--out", str(out), "--thresholds",
                     "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "--max-new-tokens", "12", stderr=err)
        # the progress bar on stderr shows the evaluation itself has started
        rc, text = interrupt(proc, lambda: "eval:" in err_file.read_text(errors="replace"), err_file)
    assert rc == 130, text
    assert "rlcal eval: interrupted" in text and "Traceback" not in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no folder, no staged hidden folder
