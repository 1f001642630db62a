"""Recipe parsing and validation (rlcal.training.config): YAML sections, CLI overrides, unknown keys, bad values, round trip.

Nothing here loads a model or data; every failure must be one RlcalError naming the problem.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.common.errors import RlcalError
from rlcal.training.config import GRPOConfig, RLOOConfig, load_recipe, parse_recipe

BASE = {
    "model": {"model_name_or_path": "some/model", "lora_r": 4, "lora_alpha": 8},
    "data": {"source": "qa.jsonl", "split_filter": "rl_train"},
    "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}},
    "training": {
        "output_dir": "out",
        "num_generations": 4,
        "per_device_train_batch_size": 8,
        "scale_rewards": "batch",
        "max_completion_length": 8,
    },
}


def recipe(overrides=(), **sections):
    raw = copy.deepcopy(BASE)
    for name, values in sections.items():
        if values is None:
            raw.pop(name, None)
        elif isinstance(values, dict):
            raw.setdefault(name, {}).update(values)
        else:
            raw[name] = values
    return parse_recipe(raw, list(overrides))


def test_sections_become_dataclasses_with_trl_training_args():
    r = recipe()
    assert isinstance(r.training, GRPOConfig)
    assert r.training.num_generations == 4 and r.training.scale_rewards == "batch"
    assert r.model.use_peft is True and r.model.lora_r == 4
    assert r.reward.sampler().values == [0.5, 0.75]
    assert r.data.prompt_template().render("Q?", 0.5).endswith("Question: Q?\nAnswer:")
    assert r.calibration.data is None and r.warmup.steps == 0


def test_without_an_accelerator_the_recipe_is_resolved_for_cpu(monkeypatch):
    """TRL defaults to bf16, which TrainingArguments refuses without a GPU: rlcal resolves such a run for CPU in
    float32 and says so when the recipe asked for bf16. (Simulated absence: holds on a machine with a GPU too.)"""
    from rlcal.training import config

    monkeypatch.setattr(config, "has_accelerator", lambda: False)
    r = recipe()
    assert r.training.use_cpu is True and r.training.bf16 is False and r.training.fp16 is False
    assert not r.notes
    asked = recipe(["--bf16", "true"])
    assert asked.training.use_cpu is True and asked.training.bf16 is False
    assert any("no GPU found" in note for note in asked.notes)


def test_use_cpu_in_the_recipe_is_kept_on_any_machine():
    r = recipe(["--use_cpu", "true"])
    assert r.training.use_cpu is True and r.training.bf16 is False  # whether or not this machine has a GPU


VLLM_RECIPE = str(Path(__file__).resolve().parents[1] / "recipes/qwen2.5-7b/grpo/config_confidence_target_trivia_qa.yaml")


def test_the_vllm_recipe_is_validated_without_a_gpu(monkeypatch):
    """vLLM cannot run (or be installed) on a CPU machine, but its settings are still checked there."""
    from rlcal.training import config

    monkeypatch.setattr(config, "has_accelerator", lambda: False)
    r = load_recipe(VLLM_RECIPE)
    assert r.training.use_vllm is False and any("use_vllm needs a GPU" in n for n in r.notes)
    assert r.training.vllm_mode == "colocate" and r.training.vllm_gpu_memory_utilization == 0.3
    with pytest.raises(RlcalError, match="vllm_mode must be one of colocate, server"):
        load_recipe(VLLM_RECIPE, ["--vllm_mode", "colocated"])
    with pytest.raises(RlcalError, match="vllm_gpu_memory_utilization must be in"):
        load_recipe(VLLM_RECIPE, ["--vllm_gpu_memory_utilization", "30"])


@pytest.mark.gpu
def test_the_vllm_recipe_keeps_vllm_on_a_gpu():
    r = load_recipe(VLLM_RECIPE)
    assert r.training.use_vllm is True and r.training.vllm_mode == "colocate"


@pytest.mark.gpu
def test_with_a_gpu_the_recipe_keeps_trl_defaults():
    r = recipe()
    assert r.training.use_cpu is False and r.training.bf16 is True and not r.notes


def test_cli_overrides_win_over_yaml_and_are_typed():
    r = recipe(
        [
            "--training.learning_rate",
            "3e-5",
            "--max_steps",
            "7",  # bare trainer field -> training
            "--lora_r",
            "2",  # bare key unique to one section -> model
            "--reward.threshold",
            "{uniform: [0.1, 0.8]}",
            "--data.columns",
            "{answer: answer.value}",
            "--log_completions",  # a bare boolean flag means true
            "--warmup.steps=3",
        ]
    )
    assert r.training.learning_rate == pytest.approx(3e-5) and r.training.max_steps == 7
    assert r.model.lora_r == 2
    assert r.reward.sampler().kind == "uniform" and r.reward.sampler().high == 0.8
    assert r.data.columns == {"answer": "answer.value"}
    assert r.training.log_completions is True
    assert r.warmup.steps == 3


def test_null_on_the_command_line_unsets_optional_values():
    r = recipe(["--data.split_filter", "null", "--data.max_samples", "null", "--data.split", "null"])
    assert r.data.split_filter is None and r.data.max_samples is None
    assert r.data.split == "null"  # not optional: a string stays a string
    assert recipe(["--report_to", "none"]).training.report_to == []  # "none" is a value, not null


def test_trainer_and_resume_are_top_level_overrides():
    raw = copy.deepcopy(BASE)
    del raw["training"]["scale_rewards"]  # a GRPO-only key: RLOOConfig would reject it by name
    r = parse_recipe(raw, ["--trainer", "rloo", "--resume", "never", "--normalize_advantages", "false"])
    assert isinstance(r.training, RLOOConfig) and r.resume == "never"
    assert r.training.normalize_advantages is False
    with pytest.raises(RlcalError, match="unknown key in training section: 'scale_rewards'"):
        recipe(["--trainer", "rloo"])


@pytest.mark.parametrize(
    ("overrides", "sections", "message"),
    [
        (["--learning_rat", "1"], {}, "'learning_rat' (did you mean 'learning_rate'?)"),
        ([], {"training": {"max_prompt_length": 64}}, "unknown key in training section: 'max_prompt_length'"),
        ([], {"reward": {"nmae": "binary"}}, "unknown key in reward section: 'nmae' (did you mean 'name'?)"),
        ([], {"rewards": {"name": "binary"}}, "unknown key in the recipe (top level): 'rewards'"),
        (["--modle.lora_r", "2"], {}, "unknown section 'modle'"),
        (["--split", "x"], {}, "--split is ambiguous"),
        (["--reward.threshold", "1.0"], {}, "threshold must be in [0, 1)"),
        ([], {"reward": {"threshold": {"choice": [0.5, 1.5]}}}, "threshold must be in [0, 1)"),
        ([], {"reward": {"threshold": {"uniform": [0.1, 0.99]}}}, "low <= high <= cap"),
        (["--num_generations", "3"], {}, "num_generations (3) must divide the generation batch"),
        (["--num_generations", "1"], {}, "num_generations must be >= 2"),
        (["--reward.name", "accuracy"], {}, "unknown reward 'accuracy'"),
        (["--reward.grader", "fuzzy"], {}, "unknown grader 'fuzzy'"),
        (["--data.template", "no question here"], {}, "must contain {question}"),
        (["--data.template", "{question} {bogus}"], {}, "bad placeholder"),
        (["--data.columns", "{answr: x}"], {}, "columns can map question, answer and aliases only"),
        (["--max_steps", "many"], {}, "invalid int value: 'many'"),
        (["--trainer", "dpo"], {}, "trainer must be one of grpo, rloo, ppo"),
        (["--resume", "/no/such/checkpoint"], {}, "resume must be auto, never or an existing checkpoint"),
        (["--warmup.abstain_fraction", "1.5"], {}, "abstain_fraction must be in [0, 1]"),
        (["--wandb.mode", "sometimes"], {}, "mode must be one of online, offline, disabled"),
        (["--calibration.confidence", "vibes"], {}, "calibration.confidence must be one of"),
        (["--temperature", "0"], {}, "temperature must be > 0"),
        ([], {"model": {"model_name_or_path": None}}, "model_name_or_path is required"),
        ([], {"data": {"source": None}}, "source is required"),
        (["oops"], {}, "expected --key value overrides"),
    ],
)
def test_bad_input_is_one_clear_error(overrides, sections, message):
    with pytest.raises(RlcalError) as info:
        recipe(overrides, **sections)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_advantage_scaling_must_be_explicit():
    raw = copy.deepcopy(BASE)
    del raw["training"]["scale_rewards"]
    with pytest.raises(RlcalError, match="training.scale_rewards must be set explicitly"):
        parse_recipe(raw)
    assert parse_recipe(raw, ["--scale_rewards", "none"]).training.scale_rewards == "none"
    with pytest.raises(RlcalError, match="training.normalize_advantages must be set explicitly"):
        parse_recipe(raw, ["--trainer", "rloo"])


def test_group_scaling_with_confidence_targets_is_allowed_but_flagged():
    r = recipe(["--scale_rewards", "group"])
    assert any("flips the sign" in note for note in r.notes)
    assert not any("flips the sign" in note for note in recipe().notes)


def test_resolved_recipe_round_trips(tmp_path):
    r = recipe(["--learning_rate", "2e-5", "--reward.threshold", "{beta: [2, 5]}", "--warmup.steps", "4"])
    path = tmp_path / "resolved.yaml"
    path.write_text(r.to_yaml())
    again = load_recipe(path)
    assert again.to_dict() == r.to_dict()
    assert again.training.learning_rate == pytest.approx(2e-5)
    assert "# derived: generation_batch_size=8" in r.to_yaml()


def test_recipe_file_errors(tmp_path):
    with pytest.raises(RlcalError, match="recipe not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(RlcalError, match="invalid YAML"):
        load_recipe(bad)
    bad.write_text("- a list\n")
    with pytest.raises(RlcalError, match="must be a YAML mapping"):
        load_recipe(bad)
    bad.write_text(yaml.safe_dump({**BASE, "model": ["not", "a", "mapping"]}))
    with pytest.raises(RlcalError, match="section 'model' must be a mapping"):
        load_recipe(bad)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(min_value=0.0, max_value=0.95, allow_nan=False), min_size=1, max_size=5))
def test_any_valid_threshold_choice_parses(values):
    r = recipe(reward={"threshold": {"choice": values}})
    assert r.reward.sampler().sample(10, seed=1) == r.reward.sampler().sample(10, seed=1)
    assert all(0.0 <= t <= 0.95 for t in r.reward.sampler().sample(20, seed=0))


@settings(max_examples=25, deadline=None)
@given(st.floats(min_value=1.0, max_value=1e6, allow_nan=False) | st.floats(max_value=-1e-9, allow_nan=False))
def test_any_threshold_outside_0_1_fails(t):
    with pytest.raises(RlcalError, match="threshold"):
        recipe(reward={"threshold": t})


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 8), st.integers(1, 4), st.integers(2, 16))
def test_generation_batch_divisibility_matches_trl(per_device, accumulation, generations):
    batch = per_device * accumulation
    overrides = [
        "--per_device_train_batch_size",
        str(per_device),
        "--gradient_accumulation_steps",
        str(accumulation),
        "--num_generations",
        str(generations),
    ]
    if batch % generations:
        with pytest.raises(RlcalError, match="must divide the generation batch"):
            recipe(overrides)
    else:
        assert recipe(overrides).training.generation_batch_size == batch


# ---- the QA task: one declaration shared by data:, reward:, calibration: and `rlcal eval` ---------------------------


def test_sections_share_the_task_field_declarations():
    """DataArguments, RewardArguments and CalibrationEvalConfig inherit the QATask fields (same type, default and
    help text) instead of redeclaring them; the calibration section differs only in its own default size."""
    from dataclasses import fields

    from rlcal.data.task import GRADING_FIELDS, PROMPT_FIELDS, ROW_FIELDS, SOURCE_FIELDS, QATask
    from rlcal.training.callbacks import CalibrationEvalConfig
    from rlcal.training.config import DataArguments, RewardArguments

    def spec(cls, names):
        by_name = {f.name: f for f in fields(cls)}
        return {n: (by_name[n].type, by_name[n].default, by_name[n].metadata["help"]) for n in names}

    task = spec(QATask, SOURCE_FIELDS + PROMPT_FIELDS + GRADING_FIELDS)
    assert [f.name for f in fields(DataArguments)] == list(SOURCE_FIELDS + PROMPT_FIELDS)
    assert spec(DataArguments, SOURCE_FIELDS + PROMPT_FIELDS) == {n: task[n] for n in SOURCE_FIELDS + PROMPT_FIELDS}
    order = ["name", "threshold", "threshold_draws", "form", *GRADING_FIELDS]
    assert [f.name for f in fields(RewardArguments)] == order  # order kept
    assert spec(RewardArguments, GRADING_FIELDS) == {n: task[n] for n in GRADING_FIELDS}
    held = spec(CalibrationEvalConfig, ROW_FIELDS)
    assert held.pop("max_samples")[1] == 256 and task.pop("max_samples")[1] is None
    assert held == {n: task[n] for n in ROW_FIELDS if n != "max_samples"}


_plain_text = st.text(st.characters(blacklist_characters="{}", blacklist_categories=("Cs",)), max_size=25)


@settings(max_examples=30, deadline=None)
@given(
    instruction=_plain_text,
    instruction_t0=_plain_text,
    around=st.tuples(_plain_text, _plain_text),
    system=st.none() | _plain_text,
    fmt=st.sampled_from(["plain", "chat"]),
    grader=st.sampled_from(["exact", "numeric", "contains"]),
    phrases=st.none() | st.lists(_plain_text.filter(str.strip), max_size=3),
)
def test_the_training_parse_and_the_data_layer_read_give_the_same_task(
    instruction, instruction_t0, around, system, fmt, grader, phrases
):
    """`rlcal train` parses sections with TRL's parser; `rlcal eval --recipe` reads the YAML with
    QATask.from_recipe. Both must give the same task, so eval prompts and grading are training's."""
    from rlcal.data.task import QATask

    data = {
        "prompt_format": fmt,
        "instruction": instruction,
        "instruction_t0": instruction_t0,
        "template": around[0] + "{question}" + around[1],
        "system_prompt": system,
        "columns": "{answer: answer.value}",
    }
    raw = copy.deepcopy(BASE)
    raw["data"].update(data)
    raw["reward"].update(grader=grader, abstain_phrases=phrases)
    raw["calibration"] = {"data": "held.jsonl", "split_filter": "eval", "max_samples": 7, "every_n_steps": 3}
    parsed = parse_recipe(raw)
    assert parsed.task() == QATask.from_recipe(raw, "data")
    assert parsed.task("calibration") == QATask.from_recipe(raw, "calibration")
    assert parsed.task("calibration").max_samples == 7 and parsed.task().columns == {"answer": "answer.value"}


def test_calibration_keys_are_checked_like_every_section():
    with pytest.raises(RlcalError, match=r"unknown key in calibration section: 'split_filtr' \(did you mean"):
        recipe(calibration={"data": "qa.jsonl", "split_filtr": "eval"})
    with pytest.raises(RlcalError, match="calibration: columns can map question, answer and aliases only"):
        recipe(calibration={"data": "qa.jsonl", "columns": {"context": "c"}})
    with pytest.raises(RlcalError, match="reward: abstain_phrases must be a list of strings"):
        recipe(reward={"abstain_phrases": "pass"})
    assert recipe(["--calibration.split_column", "part"], calibration={"data": "x"}).calibration.split_column == "part"
    with pytest.raises(RlcalError, match="calibration.data is not set"):
        recipe().task("calibration")


def test_reward_form_and_threshold_draws_are_validated():
    from rlcal.training.config import RewardArguments

    assert RewardArguments(name="confidence_target", form="bounded").reward_kwargs()["form"] == "bounded"
    assert "form" not in RewardArguments(name="binary").reward_kwargs()  # the 0-1 reward has no form
    for bad in ({"name": "binary", "form": "bounded"}, {"form": "scaled"}, {"threshold_draws": 0},
                {"threshold_draws": 2.5}, {"threshold_draws": True}):  # fmt: skip
        with pytest.raises(ValueError):
            RewardArguments(**bad)
