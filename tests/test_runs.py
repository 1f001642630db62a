"""`rlcal.training.runs` without training: which recipe changes refuse a resume, what counts as a damaged
checkpoint, and the whole-run train_loss after a resume (the end-to-end cases are in tests/test_train.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from rlcal.common.errors import RlcalError
from rlcal.training.config import parse_recipe
from rlcal.training.runs import (
    changed_keys,
    checkpoint_problem,
    newest_intact_checkpoint,
    saved_values,
    whole_run_train_loss,
)


def raw(tmp_path: Path) -> dict:
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "q?", "answer": "a", "split": "rl_train"}) + "\n")
    return {
        "model": {"model_name_or_path": str(tmp_path)},
        "data": {"source": str(qa), "split_filter": "rl_train"},
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}},
        "training": {"output_dir": str(tmp_path / "out"), "use_cpu": True, "max_steps": 3, "learning_rate": 1e-2,
                     "per_device_train_batch_size": 4, "num_generations": 4, "scale_rewards": "batch",
                     "logging_steps": 1},
    }


@pytest.mark.parametrize(
    ("override", "changed"),
    [
        ([], []),
        (["--training.learning_rate", "0.001"], ["training.learning_rate"]),
        (["--training.learning_rate", "1e-2"], []),  # the same value written another way
        (["--training.weight_decay", "0.0"], []),  # set explicitly to TRL's default: not a change
        (["--training.weight_decay", "0.1"], ["training.weight_decay"]),  # unset in the saved run: TRL's default
        (["--reward.name", "binary"], ["reward.name"]),
        (["--training.logging_steps", "5", "--training.save_steps", "7", "--wandb.mode", "offline"], []),
        (["--calibration.every_n_steps", "10"], []),
        (["--model.lora_r", "8", "--seed", "3"], ["model.lora_r", "training.seed"]),
    ],
)
def test_changed_keys_names_the_result_changing_differences(tmp_path, override, changed):
    saved = saved_values(parse_recipe(raw(tmp_path)).to_yaml())
    assert changed_keys(parse_recipe(raw(tmp_path), override), saved) == changed


def test_the_process_count_is_part_of_the_run(tmp_path, monkeypatch):
    text = parse_recipe(raw(tmp_path)).to_yaml()
    import rlcal.training.runs as runs

    monkeypatch.setattr(runs, "_world_size", lambda: 2)  # 2 processes x 4 per device: another generation batch
    assert changed_keys(parse_recipe(raw(tmp_path)), saved_values(text)) == ["derived.world_size"]


def make_checkpoint(path: Path, step: int) -> Path:
    path.mkdir(parents=True)
    (path / "trainer_state.json").write_text(json.dumps({"global_step": step, "max_steps": 10, "log_history": []}))
    save_file({"w": torch.arange(64.0)}, str(path / "adapter_model.safetensors"))
    torch.save({"state": torch.ones(32)}, path / "optimizer.pt")
    torch.save({"last_epoch": step}, path / "scheduler.pt")
    torch.save({"python": list(range(20))}, path / "rng_state.pth")
    return path


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth",
                                  "trainer_state.json"])
@pytest.mark.parametrize("how", ["truncated", "missing", "empty"])
def test_checkpoint_problem_finds_truncated_and_missing_files(tmp_path, name, how):
    ckpt = make_checkpoint(tmp_path / "checkpoint-4", 4)
    assert checkpoint_problem(ckpt) is None
    data = (ckpt / name).read_bytes()
    if how == "missing":
        (ckpt / name).unlink()
    else:
        (ckpt / name).write_bytes(data[: len(data) - 7] if how == "truncated" else b"")
    problem = checkpoint_problem(ckpt)
    if name == "rng_state.pth" and how == "missing":
        assert problem is None  # transformers resumes without it (with a warning of its own)
    else:
        assert problem is not None and (name in problem or "weights" in problem), problem


def test_newest_intact_checkpoint_sets_damaged_ones_aside(tmp_path):
    for step in (2, 4, 6):
        make_checkpoint(tmp_path / f"checkpoint-{step}", step)
    (tmp_path / "checkpoint-6" / "optimizer.pt").write_bytes(b"PK\x03\x04 cut")
    assert newest_intact_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert (tmp_path / "checkpoint-6.damaged").is_dir() and not (tmp_path / "checkpoint-6").exists()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text("{")
    (tmp_path / "checkpoint-2" / "adapter_model.safetensors").unlink()
    with pytest.raises(RlcalError, match="no intact checkpoint.*checkpoint-4: trainer_state.json is unreadable"):
        newest_intact_checkpoint(tmp_path)


def test_whole_run_train_loss_by_hand():
    # logs at steps 2 and 4 (means over 2 steps each); resumed at 4; 3 more steps of mean 0.5 -> ends at 7
    history = [{"loss": 2.0, "step": 2}, {"loss": 1.0, "step": 4}, {"loss": 0.6, "step": 6}]
    assert whole_run_train_loss(history, 4, 0.5, 7) == pytest.approx((2 * 2 + 1 * 2 + 0.5 * 3) / 7)
    # resumed at 5 (a checkpoint between logs): step 5 was never logged, so the mean is over the 6 known steps
    assert whole_run_train_loss(history, 5, 0.5, 7) == pytest.approx((2 * 2 + 1 * 2 + 0.5 * 2) / 6)


def test_a_start_that_saved_nothing_may_be_redone_with_other_settings(tmp_path):
    from rlcal.training.runs import prepare_run

    first = parse_recipe(raw(tmp_path))
    first.output_dir.mkdir()
    (first.output_dir / "rlcal_recipe.yaml").write_text(first.to_yaml())  # e.g. the warm-up ran out of memory
    again = parse_recipe(raw(tmp_path), ["--training.learning_rate", "0.001"])
    assert prepare_run(again).checkpoint is None
    make_checkpoint(first.output_dir / "checkpoint-1", 1)  # now there is something to resume: refused
    with pytest.raises(RlcalError, match=r"training\.learning_rate differ"):
        prepare_run(again)
