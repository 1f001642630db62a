"""`trainer: ppo` end to end on the tiny local model (CPU): KL to the reference is 0 at the first rollout, PPO steps
move both the LoRA adapter and the value head, the value head is saved beside the adapter and in checkpoints and is
loaded back on resume, and an incompatible TRL is refused. The PPO arithmetic itself is tested in tests/test_ppo.py.

One module-scoped run (4 PPO steps, no warm-up) serves most assertions, so the file stays well under a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlcal.common.errors import RlcalError
from rlcal.training import train as train_mod
from rlcal.training.config import parse_recipe


def write_qa(path: Path, n: int = 40) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            answer = f"{i % 28 + 1:02d}-{i % 12 + 1:02d}"
            row = {"question": f"When was Person {i} born?", "answer": answer, "aliases": [], "split": "rl_train"}
            fh.write(json.dumps(row) + "\n")
    return path


def ppo_raw(model_dir: str, qa: Path, out: Path, **training) -> dict:
    return {
        "trainer": "ppo",
        "model": {"model_name_or_path": model_dir, "lora_r": 4, "lora_alpha": 16, "lora_dropout": 0.0},
        "data": {"source": str(qa), "split_filter": "rl_train"},
        # bounded confidence targets give the (always wrong) random nano model -1 per answer: a target for the critic
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.5, 0.75]}, "form": "bounded"},
        "training": {
            "output_dir": str(out),
            "seed": 0,
            "max_steps": 4,
            "learning_rate": 1e-2,
            "per_device_train_batch_size": 8,
            "num_generations": 1,
            "ppo_epochs": 2,
            "kl_coef": 0.1,
            "max_completion_length": 6,
            "temperature": 1.0,
            "activation_checkpointing": False,
            "logging_steps": 1,
            "save_steps": 2,
            "report_to": [],
            **training,
        },
        "wandb": {"mode": "disabled"},
    }


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.fixture(scope="module")
def run(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ppo")
    raw = ppo_raw(tiny_model_dir, write_qa(root / "qa.jsonl"), root / "out")
    result = train_mod.train(parse_recipe(raw))
    return {"result": result, "raw": raw, "out": Path(result.output_dir)}


def logged(out: Path) -> list[dict]:
    summary = json.loads((out / "train_summary.json").read_text())
    return [row for row in summary["log_history"] if "loss" in row]


def test_kl_to_the_reference_is_zero_at_the_first_rollout(run):
    rows = logged(run["out"])
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    # step 1 scores the first rollout: the fresh adapter (B = 0) is exactly the adapter-disabled reference
    assert rows[0]["kl"] == 0.0
    # ppo_epochs 2: step 3 scores the second rollout, sampled after two updates: now the policy has moved
    assert rows[2]["kl"] != 0.0
    for key in ("ppo/policy_loss", "ppo/value_loss", "ppo/clipfrac", "ppo/value_clipfrac", "entropy"):
        assert all(key in r for r in rows), key  # every optimizer step
    for key in ("kl", "ppo/values_mean", "ppo/returns_mean", "reward", "outcomes/abstain_rate"):
        assert [key in r for r in rows] == [True, False, True, False], key  # once per rollout
    assert rows[0]["ppo/values_mean"] == 0.0 and rows[2]["ppo/values_mean"] < 0  # the head starts at 0, learns -1s


def test_ppo_steps_change_the_adapter_and_the_value_head(run):
    out = run["out"]
    final = tensors(out / "adapter_model.safetensors")
    mid = tensors(out / "checkpoint-2" / "adapter_model.safetensors")
    b_keys = [k for k in final if "lora_B" in k]
    assert b_keys and any(final[k].abs().max().item() > 0 for k in b_keys)  # PEFT starts B at 0
    assert any(not final[k].equal(mid[k]) for k in final)
    head, head_mid = tensors(out / "value_head.safetensors"), tensors(out / "checkpoint-2" / "value_head.safetensors")
    assert set(head) == {"weight", "bias"} and head["weight"].shape[0] == 1
    assert head["weight"].abs().max().item() > 0  # the head starts at 0: PPO's value loss moved it
    assert not head["weight"].equal(head_mid["weight"])  # and kept moving between steps 2 and 4


def test_value_head_is_saved_and_loaded_back(run, tiny_model_dir):
    import torch

    from rlcal.training.ppo import load_value_head, save_value_head

    saved = tensors(run["out"] / "value_head.safetensors")
    head = torch.nn.Linear(saved["weight"].shape[1], 1)
    load_value_head(head, run["out"])
    assert head.weight.equal(saved["weight"]) and head.bias.equal(saved["bias"])
    with torch.no_grad():
        head.bias.add_(1.0)
    again = torch.nn.Linear(saved["weight"].shape[1], 1)
    load_value_head(again, save_value_head(head, run["out"] / "copy").parent)
    assert again.bias.equal(saved["bias"] + 1.0)
    with pytest.raises(RlcalError, match="no value head"):
        load_value_head(head, tiny_model_dir)


def test_eval_confidence_critic_reads_the_value_at_the_end_of_the_t0_prompt(run, tiny_model_dir, tmp_path, capsys):
    import torch

    from rlcal.cli import main as cli_main
    from rlcal.core.prompts import PromptTemplate
    from rlcal.evaluation.critic import critic_values, load_critic
    from rlcal.evaluation.models import load_model

    out, qa = run["out"], run["raw"]["data"]["source"]
    meta = json.loads((out / "value_head.json").read_text())
    assert (meta["value_correct"], meta["value_wrong"]) == (1.0, -1.0)  # bounded confidence targets at t = 0
    common = ["--adapter", str(out), "--data", qa, "--confidence", "critic", "--thresholds", "0,0.5", "--bootstrap", "0"]
    common += ["--max-new-tokens", "6", "--device", "cpu"]
    assert cli_main(["eval", *common, "--out", str(tmp_path / "prompt")]) == 0
    assert cli_main(["eval", *common, "--policy", "posthoc", "--out", str(tmp_path / "posthoc")]) == 0
    metrics = json.loads((tmp_path / "prompt" / "metrics.json").read_text())
    assert metrics["confidence_method"] == "critic"
    preds = [json.loads(line) for line in (tmp_path / "prompt" / "predictions.jsonl").read_text().splitlines()]
    t0 = [p for p in preds if p["threshold"] == 0.0]
    assert len(t0) == 40 and all("critic_value" not in p for p in preds if p["threshold"] != 0.0)
    for p in t0:  # confidence = (V - value_wrong) / (value_correct - value_wrong), clipped
        assert p["confidence"] == pytest.approx(min(1.0, max(0.0, (p["critic_value"] + 1.0) / 2.0)))
    # the batched, left-padded values are the head on one unpadded prompt's last hidden state
    model, tokenizer = load_model(tiny_model_dir, str(out), "cpu")
    critic = load_critic(out)
    prompt = PromptTemplate().render(t0[3]["question"], 0.0)
    ids = tokenizer(prompt)["input_ids"]
    with torch.no_grad():
        hidden = model.get_base_model().model(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
        alone = critic.head(hidden).item()
    assert alone == pytest.approx(t0[3]["critic_value"], abs=1e-5)
    assert critic_values(model, critic, [ids]) == [pytest.approx(alone, abs=1e-6)]
    # posthoc: one reply at t = 0, withheld at t = 0.5 iff the critic's confidence is <= 0.5
    posthoc = [json.loads(line) for line in (tmp_path / "posthoc" / "predictions.jsonl").read_text().splitlines()]
    at_half = [p for p in posthoc if p["threshold"] == 0.5]
    assert at_half and all(p["withheld"] == (p["confidence"] <= 0.5) for p in at_half if p["response"])
    capsys.readouterr()
    assert cli_main(["eval", "--model", tiny_model_dir, *common[2:], "--out", str(tmp_path / "none")]) == 2
    assert "--confidence critic needs a value head" in capsys.readouterr().err


def test_resume_restores_the_value_head_from_the_checkpoint(run, monkeypatch, tmp_path):
    """A copy of the run made to look killed after checkpoint-2 (rlcal resumes only a run with the same settings)."""
    import shutil

    from rlcal.training import ppo

    out = tmp_path / "out"
    shutil.copytree(run["out"], out)
    shutil.rmtree(out / "checkpoint-4")
    for name in ("train_summary.json", "adapter_model.safetensors", "value_head.safetensors"):
        (out / name).unlink()
    raw = dict(run["raw"], training=dict(run["raw"]["training"], output_dir=str(out)))
    loaded = []
    real = ppo.load_value_head
    monkeypatch.setattr(ppo, "load_value_head", lambda head, d: (loaded.append(Path(d).name), real(head, d))[1])
    result = train_mod.train(parse_recipe(raw))
    assert result.resumed_from.endswith("checkpoint-2") and loaded == ["checkpoint-2"]
    assert (out / "checkpoint-4" / "value_head.safetensors").is_file() and (out / "value_head.safetensors").is_file()


class Killed(Exception):
    pass


def test_kill_and_resume_reproduce_the_uninterrupted_run(run, monkeypatch):
    """Killed when step 4 begins (step 3 ran, checkpoint-2 is the newest, at a rollout boundary), then resumed:
    the adapter and the value head at step 4 are bit for bit those of the uninterrupted run."""
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise Killed

    real = train_mod.build_callbacks
    out = run["out"].parent / "killed"
    raw = dict(run["raw"], training=dict(run["raw"]["training"], output_dir=str(out)))
    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "build_callbacks", lambda recipe: [*real(recipe), Kill()])
        with pytest.raises(Killed):
            train_mod.train(parse_recipe(raw))
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2"]
    result = train_mod.train(parse_recipe(raw))
    assert result.resumed_from.endswith("checkpoint-2")
    want = run["out"] / "checkpoint-4"  # written by the uninterrupted run (the resume test above only adds to it)
    for name in ("adapter_model.safetensors", "value_head.safetensors"):
        a, b = tensors(want / name), tensors(out / name)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), name


@pytest.mark.slow
def test_two_processes_under_accelerate_launch(run, tmp_path):
    """`accelerate launch --num_processes 2` (CPU, DDP): the value head trains inside DDP's forward, whose search
    for unused parameters would otherwise fail the first backward ("mark a variable ready only once")."""
    import os
    import socket
    import subprocess
    import sys

    import yaml

    root = Path(__file__).resolve().parents[1]
    raw = dict(run["raw"], training=dict(run["raw"]["training"], per_device_train_batch_size=4, use_cpu=True))
    raw["training"]["output_dir"] = str(tmp_path / "out")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(raw))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = [sys.executable, "-c", "from accelerate.commands.accelerate_cli import main; main()", "launch"]
    flags = ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    flags += ["--dynamo_backend", "no", "--main_process_port", str(port)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env["PYTHONPATH"] = os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
    command = [*accelerate, *flags, "-m", "rlcal.train", "--config", str(recipe)]
    proc = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    rows = logged(tmp_path / "out")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[0]["kl"] == 0.0
    head = tensors(tmp_path / "out" / "value_head.safetensors")
    assert head["weight"].abs().max().item() > 0


def test_an_incompatible_trl_is_refused():
    from trl import GRPOTrainer

    from rlcal.training.ppo import check_hooks
    from rlcal.training.trainers import trainer_class

    assert issubclass(trainer_class("ppo"), GRPOTrainer)  # the installed TRL passes the check

    class Changed:
        def _generate_and_score_completions(self, batch):  # renamed parameter
            return batch

        def _get_per_token_logps_and_entropies(
            self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False
        ):
            return None

    with pytest.raises(RlcalError, match=r"_generate_and_score_completions\(batch\).*install trl"):
        check_hooks(Changed)
    del Changed._generate_and_score_completions
    with pytest.raises(RlcalError, match="has no _generate_and_score_completions"):
        check_hooks(Changed)
