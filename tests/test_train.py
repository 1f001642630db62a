"""Training end to end on the tiny local model (CPU): warm-up, GRPO steps, reward columns, checkpoints, resume,
W&B offline, and the guarantee that bad input fails before any model is loaded.

One module-scoped run (SFT warm-up + 3 GRPO steps) serves most assertions, so the file stays well under a minute.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from rlcal.cli import main as cli_main
from rlcal.common.errors import RlcalError
from rlcal.core.rewards import parse_confidence
from rlcal.training import data as data_mod
from rlcal.training import models, tracking, trainers, warmup
from rlcal.training import train as train_mod
from rlcal.training.config import load_recipe, parse_recipe

SECRET = "wandb-test-key-0123456789abcdef0123456789abcdef"


def write_qa(path: Path, n: int = 48) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            row = {
                "question": f"When was Person {i} born?",
                "answer": f"{i % 28 + 1:02d}-{i % 12 + 1:02d}",
                "aliases": [],
                "count": i % 5,
                "family": "birthday",
                "split": "rl_train" if i < n - 8 else "eval",
            }
            fh.write(json.dumps(row) + "\n")
    return path


def raw_recipe(model_dir: str, qa: Path, out: Path) -> dict:
    return {
        "model": {"model_name_or_path": model_dir, "lora_r": 4, "lora_alpha": 16, "lora_dropout": 0.0},
        "data": {"source": str(qa), "split_filter": "rl_train"},
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}},
        "warmup": {
            "steps": 80,
            "num_examples": 40,
            "abstain_on": "wrong",  # the random nano model is always wrong: ~half the targets are abstentions
            "abstain_fraction": 0.5,
            "answer_target": "gold",
            "use_peft": False,  # a random nano model learns a new phrase far faster with all weights
            "learning_rate": 1e-2,
            "batch_size": 8,
            "max_new_tokens": 6,
            "probe_prompts": 8,
        },
        "training": {
            "output_dir": str(out),
            "seed": 0,
            "max_steps": 3,
            "learning_rate": 1e-2,
            "per_device_train_batch_size": 8,
            "num_generations": 4,
            "max_completion_length": 6,
            "temperature": 1.0,
            "scale_rewards": "batch",
            "activation_checkpointing": False,
            "logging_steps": 1,
            "save_steps": 2,
            "report_to": ["wandb"],
        },
        "wandb": {"project": "rlcal-tests", "mode": "offline", "tags": ["test"]},
    }


class SpyReward:
    """Wraps the real rlcal reward and records the keyword columns TRL passes to it."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []
        self.__name__ = inner.__name__

    def __getattr__(self, name):  # grading helpers (`outcomes`) come from the wrapped reward
        return getattr(self.inner, name)

    def __call__(self, prompts=None, completions=(), **kwargs):
        self.calls.append({"prompts": list(prompts), "completions": list(completions), **kwargs})
        return self.inner(prompts=prompts, completions=completions, **kwargs)


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    """One real training: SFT warm-up, then 3 GRPO steps with LoRA, W&B offline, a spy on the reward."""
    root = tmp_path_factory.mktemp("train")
    qa = write_qa(root / "qa.jsonl")
    raw = raw_recipe(tiny_model_dir, qa, root / "out")
    spies = []

    def spied(recipe):
        spies[:] = [SpyReward(r) for r in real(recipe)]
        return spies

    import wandb

    real = train_mod.build_reward_funcs
    real_finish = wandb.finish
    wandb_config = {}

    def finish(*args, **kwargs):  # read the run's config just before it closes (offline runs keep it in a binary log)
        wandb_config.update(wandb.run.config.as_dict())
        return real_finish(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "build_reward_funcs", spied)
        mp.setattr(wandb, "finish", finish)
        mp.setenv("WANDB_API_KEY", SECRET)
        result = train_mod.train(parse_recipe(raw))
    return {"result": result, "spy": spies[0], "raw": raw, "root": root, "qa": qa, "wandb_config": wandb_config}


def lora_tensors(directory: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def test_grpo_steps_change_the_lora_weights(run):
    out = Path(run["result"].output_dir)
    final, mid = lora_tensors(out), lora_tensors(out / "checkpoint-2")
    b_keys = [k for k in final if "lora_B" in k]
    assert b_keys, "the saved adapter has no LoRA B matrices"
    # PEFT initialises B to zero, so any non-zero B entry was put there by GRPO updates
    assert any(final[k].abs().max().item() > 0 for k in b_keys)
    assert any(not final[k].equal(mid[k]) for k in final), "step 3 did not change the adapter saved at step 2"
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"].endswith("warmup/model")


def test_reward_receives_the_threshold_and_answer_columns(run):
    from datasets import load_dataset

    calls = [c for c in run["spy"].calls if "trainer_state" in c]  # TRL's calls (the warm-up probes call it too)
    assert len(calls) == 3  # one reward call per GRPO step (generation batch = 8 completions)
    ds = load_dataset("json", data_files=str(run["qa"]), split="train")
    answers = {row["question"]: row["answer"] for row in ds}
    for call in calls:
        assert len(call["completions"]) == 8
        for key in ("threshold", "answer", "aliases", "question", "count", "family", "split"):
            assert len(call[key]) == 8, key
        for prompt, t, question, answer in zip(
            call["prompts"], call["threshold"], call["question"], call["answer"], strict=True
        ):
            assert t in (0.5, 0.75)
            assert f"more than {round(t * 100)}% confident" in prompt  # the t in the prompt is the t rewarded
            assert f"Question: {question}" in prompt
            assert answers[question] == answer
        # completions of one prompt stay together: every group of num_generations shares prompt and t
        for g in range(0, 8, 4):
            assert len(set(call["prompts"][g : g + 4])) == 1 and len(set(call["threshold"][g : g + 4])) == 1


def test_logs_outcomes_and_zero_variance_fraction(run):
    summary = json.loads((Path(run["result"].output_dir) / "train_summary.json").read_text())
    logged = [entry for entry in summary["log_history"] if "frac_reward_zero_std" in entry]
    assert len(logged) == 3
    for key in (
        "groups/frac_reward_zero_std",
        "rewards/confidence_target/mean",
        "outcomes/abstain_rate",
        "outcomes/hallucination_rate",
        "outcomes/accuracy",
        "outcomes/mean_threshold",
    ):
        assert all(key in entry for entry in logged), key
    assert all(0.5 <= entry["outcomes/mean_threshold"] <= 0.75 for entry in logged)


def test_train_log_jsonl_has_one_row_per_logged_step(run):
    out = Path(run["result"].output_dir)
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]  # logging_steps 1, max_steps 3
    for key in ("reward", "frac_reward_zero_std", "groups/frac_reward_zero_std", "rewards/confidence_target/mean",
                "outcomes/abstain_rate", "outcomes/hallucination_rate", "learning_rate", "epoch"):
        assert all(key in r for r in steps), key
    assert "train_runtime" in rows[-1]  # TRL's end-of-training log event is a row too
    summary = json.loads((out / "train_summary.json").read_text())
    assert [{k: v for k, v in r.items() if k != "step"} for r in rows] == [
        {k: v for k, v in e.items() if k != "step"} for e in summary["log_history"]
    ]
    sft = [json.loads(line) for line in (out / "warmup" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in sft if "loss" in r] == list(range(16, 81, 16))  # warm-up logs every steps // 5


def test_warmup_creates_a_learning_signal(run):
    warm = run["result"].warmup
    assert warm["targets"]["examples"] == 40
    assert 0.2 < warm["targets"]["abstain_targets"] < 0.8
    # the random base model never abstains and is never right: every group has identical rewards
    assert warm["probe_before"]["frac_reward_zero_std"] == 1.0
    assert warm["probe_before"]["abstain_rate"] == 0.0
    assert warm["probe_after"]["abstain_rate"] > 0.0
    assert warm["probe_after"]["frac_reward_zero_std"] < 1.0


def test_outputs_are_complete_and_reloadable(run):
    out = Path(run["result"].output_dir)
    for name in ("adapter_config.json", "tokenizer_config.json", "rlcal_recipe.yaml", "train_summary.json"):
        assert (out / name).is_file(), name
    assert (out / "warmup" / "model" / "config.json").is_file()
    assert not list(out.rglob(".*.tmp")) and not list((out / "warmup").glob(".*"))
    again = load_recipe(out / "rlcal_recipe.yaml")
    assert again.training.max_steps == 3 and again.warmup.steps == 80


def test_wandb_offline_run_logs_the_recipe_and_never_the_key(run, capfd):
    out = Path(run["result"].output_dir)
    run_dirs = list((out / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    assert (out / "wandb_run_id.txt").read_text() in run_dirs[0].name
    config = run["wandb_config"]
    assert config["rlcal"]["reward"]["name"] == "confidence_target"  # the recipe, logged by rlcal
    assert config["rlcal"]["training"]["num_generations"] == 4
    assert config["learning_rate"] == 1e-2  # the TrainingArguments, added by transformers' WandbCallback
    assert SECRET not in json.dumps(config, default=str)
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    for path in out.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".yaml", ".txt", ".log"):
            assert SECRET not in path.read_text(errors="ignore"), path


def clone_run(run, dest: Path, unfinished: bool = True, drop: tuple[str, ...] = ()) -> dict:
    """A copy of the module's finished run in `dest`, made to look killed: without train_summary.json and the final
    adapter (written after the last checkpoint) and without the `drop` paths. Returns its raw recipe (W&B off)."""
    import shutil

    out = dest / "out"
    shutil.copytree(run["raw"]["training"]["output_dir"], out, ignore=shutil.ignore_patterns("wandb"))
    if unfinished:
        for name in ("train_summary.json", "adapter_model.safetensors"):
            (out / name).unlink()
    for name in drop:
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    raw = dict(run["raw"], wandb={"mode": "disabled"})  # neutral keys: W&B, report_to and output_dir may differ
    raw["training"] = dict(raw["training"], output_dir=str(out), report_to=[])
    return raw


def test_rerunning_a_finished_run_does_nothing(run, capsys):
    out = Path(run["result"].output_dir)
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    path = run["root"] / "again.yaml"
    path.write_text(yaml.safe_dump(dict(run["raw"], wandb={"mode": "disabled"})))
    assert cli_main(["train", str(path)]) == 0
    assert "already holds this run, finished; nothing to do" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    assert not (out / "checkpoint-4").exists()


def test_rerun_with_changed_settings_is_refused_and_changes_nothing(run, no_model_loads):
    out = Path(run["result"].output_dir)
    saved = (out / "rlcal_recipe.yaml").read_bytes()
    for section, key, value in (("training", "learning_rate", 5e-3), ("reward", "name", "binary"),
                                ("training", "max_steps", 4), ("warmup", "abstain_fraction", 0.3)):
        raw = dict(run["raw"], **{section: dict(run["raw"][section], **{key: value})})
        with pytest.raises(RlcalError, match=rf"other settings \({section}\.{key} differ"):
            train_mod.train(parse_recipe(raw))
    assert (out / "rlcal_recipe.yaml").read_bytes() == saved


def test_resume_reproduces_the_uninterrupted_run(run, tmp_path):
    """Killed after checkpoint-2 (checkpoint-3 and the final files gone): the resumed run ends bit-identical."""
    raw = clone_run(run, tmp_path, drop=("checkpoint-3",))
    out = Path(raw["training"]["output_dir"])
    before = (out / "warmup" / "model" / "model.safetensors").stat().st_mtime_ns
    result = train_mod.train(parse_recipe(raw))
    assert result.resumed_from.endswith("checkpoint-2")
    assert (out / "warmup" / "model" / "model.safetensors").stat().st_mtime_ns == before  # warm-up reused
    final, expected = lora_tensors(out), lora_tensors(Path(run["result"].output_dir))
    assert final.keys() == expected.keys() and all(final[k].equal(expected[k]) for k in final)
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in log if '"loss"' in line] == [1, 2, 3]  # appended, no duplicate
    # train_loss covers the whole run, not only the resumed step (logged losses are rounded to 4 digits)
    assert result.metrics["train_loss"] == pytest.approx(run["result"].metrics["train_loss"], abs=1e-3)
    assert "train_loss_since_resume" in result.metrics


@pytest.mark.parametrize("damage", ["optimizer.pt", "adapter_model.safetensors", "trainer_state.json", "missing"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(run, tmp_path, damage, caplog):
    raw = clone_run(run, tmp_path)
    ckpt = Path(raw["training"]["output_dir"]) / "checkpoint-3"
    if damage == "missing":
        (ckpt / "scheduler.pt").unlink()
    else:
        data = (ckpt / damage).read_bytes()
        (ckpt / damage).write_bytes(data[: len(data) // 2])  # truncated, as a kill mid-write leaves it
    with caplog.at_level("WARNING", logger="rlcal"):
        result = train_mod.train(parse_recipe(raw))
    assert result.resumed_from.endswith("checkpoint-2")
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "checkpoint-3 is damaged" in warned and (damage if damage != "missing" else "scheduler.pt") in warned
    assert (ckpt.parent / "checkpoint-3.damaged").is_dir() and (ckpt / "trainer_state.json").is_file()
    expected = lora_tensors(Path(run["result"].output_dir))
    assert all(lora_tensors(ckpt.parent)[k].equal(v) for k, v in expected.items())


def test_a_run_killed_while_saving_is_finished_from_its_last_checkpoint(run, tmp_path, no_model_loads):
    raw = clone_run(run, tmp_path)  # checkpoint-3 is at max_steps: the final files are copied, nothing trained
    out = Path(raw["training"]["output_dir"])
    result = train_mod.train(parse_recipe(raw))
    assert result.finished_from.endswith("checkpoint-3") and not (out / "checkpoint-4").exists()
    assert lora_tensors(out).keys() == lora_tensors(out / "checkpoint-3").keys()
    assert all(v.equal(lora_tensors(out / "checkpoint-3")[k]) for k, v in lora_tensors(out).items())
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 3
    assert train_mod.train(parse_recipe(raw)).already_finished  # and now it is a finished run


def test_fresh_start_clears_the_earlier_run(run, tmp_path, no_model_loads, monkeypatch):
    from rlcal.training.runs import prepare_run

    raw = clone_run(run, tmp_path, unfinished=False)
    out = Path(raw["training"]["output_dir"])
    (out / "notes.txt").write_text("mine")
    plan = prepare_run(parse_recipe(dict(raw, resume="never", training=dict(raw["training"], learning_rate=5e-3))))
    assert plan.fresh and plan.checkpoint is None and not plan.finished
    assert not list(out.glob("checkpoint-*")) and not (out / "train_summary.json").exists()
    assert (out / "notes.txt").read_text() == "mine" and (out / "warmup" / "model").is_dir()  # not rlcal's: kept


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any attempt to load a model or build a trainer fails the test."""
    import transformers
    import trl

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(trl, "GRPOTrainer", boom)
    monkeypatch.setattr(trl, "SFTTrainer", boom)


def test_missing_column_fails_before_model_load(tiny_model_dir, tmp_path, no_model_loads):
    qa = write_qa(tmp_path / "qa.jsonl")
    raw = raw_recipe(tiny_model_dir, qa, tmp_path / "out")
    raw["data"]["columns"] = {"answer": "gold"}
    with pytest.raises(RlcalError, match="missing column 'gold' for 'answer'"):
        train_mod.train(parse_recipe(raw))
    raw["data"]["columns"] = None
    raw["data"]["split_filter"] = "test"
    with pytest.raises(RlcalError, match="no rows with split == 'test'"):
        train_mod.train(parse_recipe(raw))
    assert not (tmp_path / "out").exists()


def test_cli_errors_exit_2_with_one_line(tiny_model_dir, tmp_path, capsys, no_model_loads):
    qa = write_qa(tmp_path / "qa.jsonl")
    raw = raw_recipe(tiny_model_dir, qa, tmp_path / "out")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw))
    for args, message in (
        ([str(path), "--reward.threshold", "0.99", "--data.columns", "{answer: nope}"], "above the cap"),
        ([str(path), "--data.columns", "{answer: nope}"], "missing column 'nope'"),
        ([str(path), "--training.per_device_train_batch_size", "6"], "must divide the generation batch"),
        ([str(path), "--bogus_key", "1"], "unknown key in the command line overrides: 'bogus_key'"),
        ([], "no recipe given"),
    ):
        assert cli_main(["train", *args]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
        assert len(err) == 1 and err[0].startswith("rlcal train: error: ") and message in err[0], err
    assert train_mod.main(["--config", str(path), "--lora_r", "0"]) == 2
    assert "lora_r and lora_alpha must be > 0" in capsys.readouterr().err


def test_dry_run_prints_resolved_recipe_and_first_prompt(tiny_model_dir, tmp_path, capsys, no_model_loads):
    qa = write_qa(tmp_path / "qa.jsonl")
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw_recipe(tiny_model_dir, qa, tmp_path / "out")))
    assert cli_main(["train", str(path), "--learning_rate", "0.125", "--dry-run"]) == 0
    out = capsys.readouterr().out
    resolved, prompt = out.split("# first prompt", 1)
    assert yaml.safe_load(resolved)["training"]["learning_rate"] == 0.125
    assert "from " + str(qa) + " (40 rows)" in prompt and "Question: When was Person" in prompt
    assert not (tmp_path / "out").exists()


def test_setup_wandb_falls_back_to_offline(tmp_path, monkeypatch):
    import wandb

    calls = []

    class Run:
        id = "abc123"

    def fake_init(mode, **kwargs):
        calls.append(mode)
        if mode == "online":
            raise ConnectionError("no network")
        return Run()

    monkeypatch.setattr(wandb, "init", fake_init)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    raw = {
        "model": {"model_name_or_path": "some/model"},
        "data": {"source": "qa.jsonl"},
        "training": {"output_dir": str(tmp_path / "o"), "scale_rewards": "none", "report_to": ["wandb"]},
        "wandb": {"mode": "online"},
    }
    assert tracking.setup_wandb(parse_recipe(raw)) is True
    assert calls == ["offline"] and os.environ["WANDB_MODE"] == "offline"  # no credentials: never tries online
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    calls.clear()
    monkeypatch.setattr(tracking, "_wandb_reachable", lambda: True)
    assert tracking.setup_wandb(parse_recipe(raw)) is True
    assert calls == ["online", "offline"]  # the online start failed: retried offline instead of crashing
    assert (tmp_path / "o" / "wandb_run_id.txt").read_text() == "abc123"
    calls.clear()
    monkeypatch.setattr(tracking, "_wandb_reachable", lambda: False)
    assert tracking.setup_wandb(parse_recipe(raw)) is True
    assert calls == ["offline"]  # a key but no network: offline at once, not after wandb's 90 s init timeout


def test_wandb_reachable_is_a_short_tcp_connect(monkeypatch):
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    assert tracking._wandb_reachable(timeout=1.0)
    server.close()  # nothing listens on the port any more: refused at once
    assert not tracking._wandb_reachable(timeout=1.0)


def test_fresh_checkout_builds_the_toy_model_first(tmp_path, monkeypatch, tiny_model_dir):
    import shutil

    import rlcal.world.pretrain

    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrain.yaml").write_text("world_dir: w\noutput_dir: m\n")
    calls = []

    def fake_ensure_pretrained(path):  # stands in for world building + pretraining (minutes)
        calls.append(path)
        if not Path("m").exists():
            shutil.copytree(tiny_model_dir, "m")
            Path("w").mkdir()
            write_qa(Path("w/qa.jsonl"))
        return Path("m")

    monkeypatch.setattr(rlcal.world.pretrain, "ensure_pretrained", fake_ensure_pretrained)
    raw = raw_recipe("m", Path("w/qa.jsonl"), tmp_path / "out")
    raw["model"]["pretrain_recipe"] = "pretrain.yaml"
    recipe = parse_recipe(raw)  # validates although neither the model nor the data exist yet
    assert models.ensure_model(recipe) == "m" and calls == ["pretrain.yaml"]
    assert len(data_mod.load_train_dataset(recipe)) == 40
    raw["model"]["model_name_or_path"] = "elsewhere"
    with pytest.raises(RlcalError, match="is not what model.pretrain_recipe builds"):
        parse_recipe(raw)


def test_zero_variance_monitor_warns_only_for_a_dead_start(caplog):
    from types import SimpleNamespace

    state = SimpleNamespace(is_world_process_zero=True)
    dead, alive = trainers.zero_std_monitor(), trainers.zero_std_monitor()
    with caplog.at_level("WARNING", logger="rlcal.training.trainers"):
        for value in (0.95, 1.0, 0.97, 1.0):
            dead.on_log(None, state, None, logs={trainers.GROUP_ZERO_STD: value})
        for value in (0.4, 1.0, 1.0, 1.0, 1.0):  # converging to one answer later in a run is normal
            alive.on_log(None, state, None, logs={trainers.GROUP_ZERO_STD: value})
    warnings = [r for r in caplog.records if "identical rewards" in r.getMessage()]
    assert len(warnings) == 1 and "97%" in warnings[0].getMessage()


def test_warmup_targets_never_abstain_at_t0(tiny_model_dir, tmp_path):
    qa = write_qa(tmp_path / "qa.jsonl")
    raw = raw_recipe(tiny_model_dir, qa, tmp_path / "out")
    raw["reward"]["threshold"] = {"choice": [0.0, 0.75]}
    raw["warmup"].update(abstain_on="random", abstain_fraction=1.0, answer_target="gold", num_examples=40)
    recipe = parse_recipe(raw)
    dataset = data_mod.load_train_dataset(recipe)
    examples, stats = warmup.build_warmup_examples(recipe, dataset, model=None, tokenizer=None)
    by_prompt = {row["prompt"]: row for row in dataset}
    for example in examples:
        row = by_prompt[example["prompt"]]
        expected = " I don't know." if row["threshold"] > 0 else " " + row["answer"]
        assert example["completion"] == expected
    share_t0 = sum(row["threshold"] == 0 for row in dataset) / len(dataset)
    assert 0 < share_t0 < 1 and stats["abstain_targets"] == pytest.approx(1 - share_t0)


def test_t_aware_warmup_abstains_iff_the_base_probability_is_at_most_t(tmp_path, monkeypatch):
    """`abstain_on: below_threshold`: the reference policy's decision per row (answer iff the base model's own
    answer probability > t, never abstain at t = 0); `state_confidence` appends that probability as a tag;
    `reward.threshold_draws` puts each question into the data that many times, each with its own t."""
    qa = write_qa(tmp_path / "qa.jsonl")
    raw = raw_recipe("unused", qa, tmp_path / "out")
    raw["reward"].update(threshold={"choice": [0.0, 0.3, 0.6, 0.9]}, threshold_draws=4)
    raw["warmup"].update(abstain_on="below_threshold", abstain_fraction=1.0, answer_target="self", num_examples=10_000)
    recipe = parse_recipe(raw)
    dataset = data_mod.load_train_dataset(recipe)
    n_questions = len({row["question"] for row in dataset})
    assert len(dataset) == 4 * n_questions and len({row["threshold"] for row in dataset}) > 2
    prob = {q: (i % 10) / 10 + 0.05 for i, q in enumerate(sorted({row["question"] for row in dataset}))}

    def fake_greedy(model, tokenizer, prompts, max_new_tokens):  # the base model's answer and its probability
        questions = [next(q for q in prob if q in p) for p in prompts]
        return ["01-01"] * len(prompts), [prob[q] for q in questions]

    monkeypatch.setattr(warmup, "greedy_answers", fake_greedy)
    examples, stats = warmup.build_warmup_examples(recipe, dataset, model=None, tokenizer=None)
    assert len(examples) == len(dataset)
    by_prompt = {row["prompt"]: row for row in dataset}
    n_abstain = 0
    for example in examples:
        row = by_prompt[example["prompt"]]
        abstain = row["threshold"] > 0 and prob[row["question"]] <= row["threshold"]
        n_abstain += abstain
        assert example["completion"] == (" I don't know." if abstain else " 01-01")
    assert 0 < n_abstain < len(examples) and stats["abstain_targets"] == pytest.approx(n_abstain / len(examples))

    raw["warmup"]["state_confidence"] = True
    stated, _ = warmup.build_warmup_examples(parse_recipe(raw), dataset, model=None, tokenizer=None)
    for example in stated:
        row = by_prompt[example["prompt"]]
        if example["completion"] != " I don't know.":
            assert example["completion"] == f" 01-01, {round(100 * prob[row['question']], -1):.0f}% confident"
            assert parse_confidence(example["completion"]) == pytest.approx(round(100 * prob[row["question"]], -1) / 100)

    # `answer_target: sample`: the answer rows' targets are the base model's own samples; which rows abstain is
    # still decided by the greedy answer's probability
    raw["warmup"].update(state_confidence=False, answer_target="sample")
    seen = []

    def fake_sample(model, tokenizer, prompts, max_new_tokens, seed):
        seen.append(seed)
        return [f"{i % 28 + 1:02d}-02" for i in range(len(prompts))]

    monkeypatch.setattr(warmup, "sampled_answers", fake_sample)
    drawn, _ = warmup.build_warmup_examples(parse_recipe(raw), dataset, model=None, tokenizer=None)
    assert seen == [recipe.training.seed]
    for i, (example, plain) in enumerate(zip(drawn, examples, strict=True)):
        abstain = plain["completion"] == " I don't know."
        assert example["completion"] == (" I don't know." if abstain else f" {i % 28 + 1:02d}-02")

    # sampled answers with `state_confidence`: the stated number is the base model's probability of the sampled
    # answer (not of the greedy one): a wrong sample must not borrow the greedy answer's confidence
    raw["warmup"].update(state_confidence=True)
    asked = []

    def fake_probs(model, tokenizer, prompts, answers):
        asked.append(list(answers))
        return [0.02 * (i % 40) for i in range(len(prompts))]

    monkeypatch.setattr(warmup, "answer_probabilities", fake_probs)
    drawn, _ = warmup.build_warmup_examples(parse_recipe(raw), dataset, model=None, tokenizer=None)
    assert asked == [[f"{i % 28 + 1:02d}-02" for i in range(len(dataset))]]
    for i, (example, plain) in enumerate(zip(drawn, examples, strict=True)):
        if plain["completion"] != " I don't know.":
            assert example["completion"] == f" {i % 28 + 1:02d}-02, {round(2 * (i % 40), -1):.0f}% confident"


def test_weight_column_draws_training_questions_by_popularity(tmp_path):
    """`data.weight_column`: rows are drawn ∝ the column (seeded by training.seed); a zero weight is never drawn."""
    qa = write_qa(tmp_path / "qa.jsonl")
    rows = [json.loads(line) for line in qa.read_text().splitlines()]
    for i, row in enumerate(rows):
        row["popularity"] = 0.0 if i % 2 else float(i + 1)  # odd people are never asked about
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    raw = raw_recipe("unused", qa, tmp_path / "out")
    raw["data"].update(weight_column="popularity", max_samples=200)
    ds = data_mod.load_train_dataset(parse_recipe(raw))
    assert len(ds) == 200
    persons = [int(q.split()[3]) for q in ds["question"]]
    assert all(p % 2 == 0 and p < 40 for p in persons)  # rl_train rows with weight only
    assert len(set(persons)) > 10 and set(ds["threshold"]) == {0.5, 0.75}
    assert data_mod.load_train_dataset(parse_recipe(raw))["question"] == ds["question"]  # seeded
    raw["data"]["weight_column"] = "fame"
    with pytest.raises(RlcalError, match="no weight column 'fame'"):
        data_mod.load_train_dataset(parse_recipe(raw))


DICT_LINE = re.compile(r"\{'\w+': |\{\"\w+\": ")


def small_cli_recipe(tiny_model_dir: str, tmp_path: Path, name: str) -> Path:
    raw = raw_recipe(tiny_model_dir, write_qa(tmp_path / "qa.jsonl"), tmp_path / name)
    raw["warmup"].update(steps=2, num_examples=16, probe_prompts=0)
    raw["training"].update(max_steps=2, save_strategy="no", report_to=[])
    raw["wandb"] = {"mode": "disabled"}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_cli_train_prints_progress_bars_not_log_dicts(tiny_model_dir, tmp_path, capfd):
    assert cli_main(["train", str(small_cli_recipe(tiny_model_dir, tmp_path, "quiet"))]) == 0
    captured = capfd.readouterr()
    lines = [line for text in (captured.out, captured.err) for line in re.split(r"[\r\n]", text) if line.strip()]
    assert not [line for line in lines if DICT_LINE.search(line)], "a log dict reached the terminal"
    assert any(line.startswith("warm-up SFT:") and "2/2" in line for line in lines)
    assert any(line.startswith("RL training:") and "2/2" in line and "halluc=" in line for line in lines)
    assert captured.out.startswith("rlcal train: trained from ") and "train_log.jsonl" in captured.out
    assert len(captured.out.splitlines()) <= 3
    rows = (tmp_path / "quiet" / "train_log.jsonl").read_text().splitlines()
    assert len([r for r in rows if '"loss"' in r]) == 2  # the dicts went to the file instead


def test_cli_train_verbose_prints_the_log_dicts(tiny_model_dir, tmp_path, capfd):
    assert cli_main(["train", str(small_cli_recipe(tiny_model_dir, tmp_path, "loud")), "--verbose"]) == 0
    captured = capfd.readouterr()
    dicts = [line for line in re.split(r"[\r\n]", captured.out + captured.err) if DICT_LINE.search(line)]
    assert sum("'frac_reward_zero_std'" in line for line in dicts) == 2  # one per RL step (logging_steps 1)
    summary = captured.out[captured.out.index("\n{\n") :]  # the indented JSON summary, after the dicts
    assert json.loads(summary)["output_dir"] == str(tmp_path / "loud")


def test_probe_without_warmup_measures_the_starting_policy(tiny_model_dir, tmp_path):
    raw = raw_recipe(tiny_model_dir, write_qa(tmp_path / "qa.jsonl"), tmp_path / "out")
    raw["warmup"].update(steps=0, probe_prompts=4)
    recipe = parse_recipe(raw)
    dataset = data_mod.load_train_dataset(recipe)
    probe = train_mod.probe_start(recipe, tiny_model_dir, dataset, train_mod.build_reward_funcs(recipe)[0])
    assert probe["prompts"] == 4 and probe["num_generations"] == 4
    # the random tiny model never abstains and is never right: every group has identical rewards
    assert probe["frac_reward_zero_std"] == 1.0 and probe["abstain_rate"] == 0.0
    raw["warmup"]["probe_prompts"] = 0
    assert train_mod.probe_start(parse_recipe(raw), tiny_model_dir, dataset, None) is None


def test_sampled_answers_are_seeded_samples_of_the_model(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [f"Question: When was Person {i} born?\nAnswer:" for i in range(12)]
    first = warmup.sampled_answers(model, tok, prompts, 6, seed=0)
    assert len(first) == 12 and all(isinstance(a, str) and "\n" not in a for a in first)
    assert warmup.sampled_answers(model, tok, prompts, 6, seed=0) == first  # seeded
    greedy, _ = warmup.greedy_answers(model, tok, prompts, 6)
    draws = [warmup.sampled_answers(model, tok, prompts, 6, seed=s) for s in range(1, 4)]
    assert any(d != greedy for d in draws) and any(d != first for d in draws)  # temperature 1, not greedy
