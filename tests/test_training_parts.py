"""The training modules one at a time, without a training run: the warm-up cache key, the guard on TRL's private
hook, the ZeRO-3 check, the progress/JSONL callbacks and the shared sampled generation.

    pytest -q tests/test_training_parts.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from rlcal.common.errors import RlcalError
from rlcal.core.prompts import CONFIDENCE_TARGET_INSTRUCTION
from rlcal.training.config import parse_recipe
from rlcal.training.warmup import warmup_inputs, warmup_key

ROOT = Path(__file__).resolve().parents[1]


def base_raw(tmp_path: Path) -> dict:
    return {
        "model": {"model_name_or_path": "some/model", "lora_r": 4},
        "data": {"source": "qa.jsonl", "split_filter": "rl_train"},
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}, "grader": "exact"},
        "warmup": {"steps": 10, "probe_prompts": 8},
        "training": {"output_dir": str(tmp_path / "out"), "seed": 0, "scale_rewards": "batch", "logging_steps": 1},
    }


def key_of(raw: dict) -> str:
    return warmup_key(parse_recipe(raw), raw["model"]["model_name_or_path"])


def changed(raw: dict, section: str, key: str, value) -> dict:
    return {**raw, section: {**raw.get(section, {}), key: value}}


# (section, key, new value): each of these changes what the warm-up learns, so a cached warm-up must not be reused.
SHAPING = [
    ("data", "template", "{instruction}\nQ: {question}\nA:"),
    ("data", "instruction", CONFIDENCE_TARGET_INSTRUCTION + " Be brief."),
    ("data", "split_filter", "eval"),
    ("data", "weight_column", "popularity"),
    ("data", "columns", {"answer": "gold"}),
    ("data", "source", "other.jsonl"),
    ("data", "prompt_format", "chat"),
    ("reward", "threshold", {"choice": [0.5, 0.9]}),
    ("reward", "grader", "numeric"),
    ("reward", "abstain_phrases", ["pass"]),
    ("warmup", "abstain_fraction", 0.25),
    ("warmup", "max_new_tokens", 8),
    ("model", "lora_r", 8),
    ("model", "dtype", "bfloat16"),
    ("training", "seed", 1),
    ("training", "activation_checkpointing", False),  # (TRL default: true; bf16 resolves to false on a CPU)
]
# Settings of the RL stage (or of the probe, which measures the warm-up): changing them keeps the warm-up.
NOT_SHAPING = [
    ("training", "logging_steps", 5),
    ("training", "max_steps", 7),
    ("training", "learning_rate", 0.5),
    ("training", "report_to", ["wandb"]),
    ("warmup", "probe_prompts", 64),
    ("reward", "name", "binary"),
]


@pytest.mark.parametrize(("section", "key", "value"), SHAPING, ids=[f"{s}.{k}" for s, k, _ in SHAPING])
def test_warmup_key_changes_with_every_shaping_setting(tmp_path, section, key, value):
    raw = base_raw(tmp_path)
    assert key_of(changed(raw, section, key, value)) != key_of(raw)


@pytest.mark.parametrize(("section", "key", "value"), NOT_SHAPING, ids=[f"{s}.{k}" for s, k, _ in NOT_SHAPING])
def test_warmup_key_ignores_rl_only_settings(tmp_path, section, key, value):
    raw = base_raw(tmp_path)
    assert key_of(changed(raw, section, key, value)) == key_of(raw)


def test_warmup_key_is_sha256_of_the_inputs_and_sees_a_rebuilt_base_model(tmp_path):
    raw = base_raw(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    (model / "model.safetensors").write_bytes(b"x" * 10)
    raw["model"]["model_name_or_path"] = str(model)
    key = key_of(raw)
    assert len(key) == 64 and int(key, 16) >= 0
    assert key_of(raw) == key  # deterministic
    inputs = warmup_inputs(parse_recipe(raw), str(model))
    json.dumps(inputs)  # plain data
    assert inputs["data"]["weight_column"] is None and inputs["reward"]["threshold"] == {"choice": [0.5, 0.75]}
    (model / "model.safetensors").write_bytes(b"y" * 11)  # same path, other weights
    assert key_of(raw) != key


def test_cached_warmup_with_other_settings_names_them(tmp_path):
    from rlcal.training.warmup import _reuse

    raw = base_raw(tmp_path)
    old_recipe = parse_recipe(raw)
    new_recipe = parse_recipe(changed(changed(raw, "data", "weight_column", "popularity"), "reward", "grader", "numeric"))
    model_dir, summary = tmp_path / "model", tmp_path / "warmup.json"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    old_inputs = warmup_inputs(old_recipe, "some/model")
    summary.write_text(json.dumps({"key": warmup_key(old_recipe, "some/model"), "inputs": old_inputs}))
    assert _reuse(model_dir, summary, warmup_key(old_recipe, "some/model"), old_inputs)["inputs"] == old_inputs
    new_key, new_inputs = warmup_key(new_recipe, "some/model"), warmup_inputs(new_recipe, "some/model")
    with pytest.raises(RlcalError, match=r"other warm-up settings \(data.weight_column, reward.grader\)"):
        _reuse(model_dir, summary, new_key, new_inputs)
    summary.write_text(json.dumps({"signature": {"version": 2}}))  # written by an older rlcal
    with pytest.raises(RlcalError, match="settings from an older rlcal"):
        _reuse(model_dir, summary, new_key, new_inputs)


# ---- the guard on TRL's private _calculate_rewards ----------------------------------------------------------------


def test_rewards_hook_guard_accepts_the_installed_trl():
    from trl import GRPOTrainer, RLOOTrainer

    from rlcal.training.trainers import trainer_class

    assert issubclass(trainer_class("grpo"), GRPOTrainer) and issubclass(trainer_class("rloo"), RLOOTrainer)


def test_rewards_hook_guard_rejects_another_signature():
    import trl

    from rlcal.training.trainers import with_group_metric

    class Renamed:
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids):
            return None

    class ExtraRequired:
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list, images):
            return None

    class Missing:
        pass

    for base, what in ((Renamed, "completion_ids"), (ExtraRequired, "images"), (Missing, "has no _calculate_rewards")):
        with pytest.raises(RlcalError, match=f"TRL {trl.__version__}") as info:
            with_group_metric(base)
        assert what in str(info.value) and base.__name__ in str(info.value)

    class ExtraOptional:  # a new keyword with a default does not break the positional call
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list, images=None):
            return None

    assert with_group_metric(ExtraOptional).__name__ == "RlcalExtraOptional"


# ---- ZeRO-3 -------------------------------------------------------------------------------------------------------

ZERO3_SCRIPT = """
import json, sys
from pathlib import Path
from rlcal.common.errors import RlcalError
from rlcal.training.config import parse_recipe
from rlcal.training.warmup import run_warmup, warmup_inputs, warmup_key
out, steps, cached = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "cached"
raw = {"model": {"model_name_or_path": "m"}, "data": {"source": "qa.jsonl"},
       "training": {"output_dir": out, "scale_rewards": "none"}, "warmup": {"steps": steps}}
recipe = parse_recipe(raw)
if cached:  # a warm-up built earlier without ZeRO-3, with these settings
    (Path(out) / "warmup" / "model").mkdir(parents=True)
    (Path(out) / "warmup" / "model" / "config.json").write_text("{}")
    key, inputs = warmup_key(recipe, "m"), warmup_inputs(recipe, "m")
    (Path(out) / "warmup" / "warmup.json").write_text(json.dumps({"key": key, "inputs": inputs}))
try:
    if steps:
        run_warmup(recipe, "m", dataset=None, reward=None)  # a cache miss checks ZeRO-3 before loading anything
    print("ok")
except RlcalError as exc:
    print("error:", exc)
except OSError as exc:  # past the guard: loading the (absent) model "m" is what fails next
    print("loading:", type(exc).__name__)
"""


@pytest.mark.parametrize(("config", "steps", "cache", "expected"), [
    ("zero3.json", 2, "none", "error: warmup cannot merge its adapter under ZeRO-3"),
    ("zero3.json", 2, "cached", "ok"),  # docs/scaling.md: warm up once without ZeRO-3, then launch RL under it
    ("zero3.json", 0, "none", "ok"),
    ("zero2.json", 2, "none", "no-zero3"),
    (None, 2, "none", "no-zero3"),
])
def test_zero3_guard_fires_under_accelerates_deepspeed_config_file(tmp_path, config, steps, cache, expected):
    # What `accelerate launch --config_file launch/zero3.yaml` exports: the JSON path, no ZERO_STAGE variable.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ACCELERATE_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if config:
        env.update(ACCELERATE_USE_DEEPSPEED="true", ACCELERATE_DEEPSPEED_CONFIG_FILE=str(ROOT / "ds_configs" / config))
    out = subprocess.run(
        [sys.executable, "-c", ZERO3_SCRIPT, str(tmp_path / "out"), str(steps), cache],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    if expected == "no-zero3":  # past the guard: the (absent) model is what fails next, not ZeRO-3
        assert last.startswith("loading:"), out.stdout
    else:
        assert last.startswith(expected), out.stdout


# ---- progress and JSONL callbacks ---------------------------------------------------------------------------------


def test_postfix_shows_the_numbers_that_matter():
    from rlcal.common.progress import postfix

    logs = {"loss": 0.1, "rewards/confidence_target/mean": -0.25, "outcomes/abstain_rate": 0.5,
            "outcomes/hallucination_rate": 0.125, "reward": -0.25, "grad_norm": 3.0}
    assert postfix(logs) == {"reward": "-0.250", "abstain": "0.500", "halluc": "0.125"}
    assert postfix({"loss": 4.9646, "grad_norm": 1.0}) == {"loss": "4.965"}  # SFT logs
    assert postfix({"train_runtime": 1.0}) == {}


def state(step: int, main: bool = True, history=None):
    return SimpleNamespace(global_step=step, max_steps=4, is_world_process_zero=main, log_history=[] if history is None else history)


def test_jsonl_log_writes_one_row_per_event_on_the_main_process_only(tmp_path):
    from rlcal.common.progress import JsonlLog

    path = tmp_path / "run" / "train_log.jsonl"
    main, other = JsonlLog(path), JsonlLog(path)
    main.on_train_begin(None, state(0), None)
    for step in (1, 2):
        main.on_log(None, state(step), None, logs={"loss": 0.5 / step, "reward": float("nan")})
        other.on_log(None, state(step, main=False), None, logs={"loss": 9.0})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 0.5, "reward": None}, {"step": 2, "loss": 0.25, "reward": None}]
    resumed = JsonlLog(path, append=True)
    resumed.on_train_begin(None, state(2), None)
    resumed.on_log(None, state(3), None, logs={"loss": 0.1})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3]
    JsonlLog(path).on_train_begin(None, state(0), None)  # a fresh run starts a new file
    assert path.read_text() == ""


def test_jsonl_log_resumed_drops_the_rows_logged_after_the_checkpoint(tmp_path):
    """A run killed after logging step 3 but saved at step 2 trains step 3 again: its first row must go."""
    from rlcal.common.progress import JsonlLog

    path = tmp_path / "train_log.jsonl"
    killed = JsonlLog(path)
    killed.on_train_begin(None, state(0), None)
    for step in (1, 2, 3):
        killed.on_log(None, state(step), None, logs={"loss": float(step)})
    JsonlLog(path, append=True).on_train_begin(None, state(2, main=False), None)  # not the main process: untouched
    assert len(path.read_text().splitlines()) == 3
    resumed = JsonlLog(path, append=True)
    resumed.on_train_begin(None, state(2), None)
    resumed.on_log(None, state(3), None, logs={"loss": 30.0})
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 2.0}, {"step": 3, "loss": 30.0}]


def test_stage_progress_prints_a_bar_not_dicts(capsys):
    from rlcal.common.progress import StageProgress

    bar = StageProgress("RL training")
    history: list[dict] = []
    s = state(0, history=history)
    bar.on_train_begin(None, s, None)
    for step in (1, 2):
        s.global_step = step
        bar.on_step_end(None, s, None)
        logs = {"loss": 0.0, "rewards/binary/mean": 0.5, "outcomes/abstain_rate": 0.25, "epoch": 0.1}
        history.append(logs)
        bar.on_log(None, s, None, logs=logs)
    history.append({"calib/ece": 0.0625, "step": 2})  # what the calibration callback appends
    bar.on_train_end(None, s, None)
    err = capsys.readouterr().err
    final = err.split("\r")[-1]
    assert "RL training" in final and "2/4" in final and "ece=0.062" in final and "reward=0.500" in final
    assert "{" not in err and "'loss'" not in err


def test_quiet_trainer_swaps_transformers_printers():
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from rlcal.common.progress import JsonlLog, StageProgress, quiet_trainer

    class FakeTrainer:
        def __init__(self):
            self.callbacks = [ProgressCallback, PrinterCallback]

        def add_callback(self, cb):
            self.callbacks.append(cb)

        def remove_callback(self, cb):
            self.callbacks = [c for c in self.callbacks if c is not cb]

    quiet, loud = FakeTrainer(), FakeTrainer()
    quiet_trainer(quiet, "s", "log.jsonl")
    quiet_trainer(loud, "s", "log.jsonl", verbose=True)
    assert [type(c) for c in quiet.callbacks] == [JsonlLog, StageProgress]
    assert loud.callbacks[:2] == [ProgressCallback, PrinterCallback] and isinstance(loud.callbacks[2], JsonlLog)


# ---- the shared sampled generation --------------------------------------------------------------------------------


def test_sample_generate_gives_n_completions_per_prompt_in_order(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcal.core.prompts import PromptTemplate
    from rlcal.evaluation.confidence import encode_prompts, greedy_generate, sample_generate

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain, chat = PromptTemplate(), PromptTemplate(format="chat")
    prompts = [plain.render("When was Person 1 born?", 0.5), chat.render("When was Person 22 born?", 0.9),
               plain.render("Who?", 0.0)]
    ids = encode_prompts(tok, prompts)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    out = sample_generate(model, tok, ids, num_samples=3, max_new_tokens=5, batch_size=2, seed=7)
    assert torch.rand(1).equal(before)  # the caller's random stream is untouched
    assert [len(group) for group in out] == [3, 3, 3]
    # the same seed gives the same samples; per-prompt results do not depend on where the prompt sits in the list
    assert sample_generate(model, tok, ids, num_samples=3, max_new_tokens=5, batch_size=2, seed=7) == out
    single = sample_generate(model, tok, ids[:1], num_samples=3, max_new_tokens=5, batch_size=8, seed=7)
    assert len(single) == 1 and len(single[0]) == 3
    # a near-zero temperature is greedy: every sample equals the greedy answer
    cold = sample_generate(model, tok, ids, num_samples=2, max_new_tokens=5, seed=1, temperature=1e-4)
    greedy = [g.response for g in greedy_generate(model, tok, ids, max_new_tokens=5)]
    assert cold == [[g, g] for g in greedy]
    with pytest.raises(ValueError, match="num_samples"):
        sample_generate(model, tok, ids, num_samples=0)
    assert sample_generate(model, tok, [], num_samples=2) == []


def test_log_levels_per_process_and_restored():
    import logging

    from transformers.utils import logging as hf_logging

    from rlcal.common.progress import process_log_levels

    rlcal_logger = logging.getLogger("rlcal")
    before = (rlcal_logger.level, hf_logging.get_verbosity())
    replica = SimpleNamespace(get_process_log_level=lambda: logging.WARNING, should_log=False, log_level="passive")
    main = SimpleNamespace(get_process_log_level=lambda: logging.WARNING, should_log=True, log_level="passive")
    with process_log_levels(replica):
        assert not rlcal_logger.isEnabledFor(logging.INFO)  # other processes: warnings only
        assert hf_logging.get_verbosity() == logging.WARNING
    with process_log_levels(main):
        assert rlcal_logger.isEnabledFor(logging.INFO)  # the main process keeps rlcal's info lines
    assert (rlcal_logger.level, hf_logging.get_verbosity()) == before


def test_stage_progress_is_silent_off_the_main_process(capsys):
    from rlcal.common.progress import StageProgress

    bar = StageProgress("RL training")
    s = state(0, main=False)
    bar.on_train_begin(None, s, None)
    s.global_step = 1
    bar.on_step_end(None, s, None)
    bar.on_log(None, s, None, logs={"loss": 1.0})
    bar.on_train_end(None, s, None)
    assert capsys.readouterr().err == ""
