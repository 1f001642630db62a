"""Launch configs: the DeepSpeed JSONs validate with DeepSpeed's own config classes once their "auto" values are
filled the way transformers fills them; the accelerate YAMLs pass `accelerate launch`'s own validation; the SLURM
script runs `accelerate launch` on every node with the right machine rank and main address."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DS_CONFIGS = sorted((ROOT / "ds_configs").glob("*.json"))
LAUNCH = sorted((ROOT / "launch").glob("*.yaml"))


def test_expected_files_exist():
    assert {p.name for p in DS_CONFIGS} >= {"zero2.json", "zero3.json", "zero3_offload.json"}
    assert {p.name for p in LAUNCH} >= {"single_gpu.yaml", "multi_gpu.yaml", "zero2.yaml", "zero3.yaml"}
    assert (ROOT / "launch" / "slurm_multinode.sh").is_file()


def hf_filled(path: Path, world_size: int = 8) -> dict:
    """The DeepSpeed config after transformers' Trainer replaced every "auto" (batch sizes, clipping, optimizer,
    precision from TrainingArguments; bucket sizes from the model's hidden size), as on `world_size` GPUs."""
    from transformers import TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig, unset_hf_deepspeed_config

    real = TrainingArguments(
        output_dir="unused", per_device_train_batch_size=4, gradient_accumulation_steps=8, learning_rate=1e-5,
        max_grad_norm=1.0, use_cpu=True, bf16=False, report_to=[],
    )  # fmt: skip
    used = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_grad_norm", "learning_rate",
            "adam_beta1", "adam_beta2", "adam_epsilon", "weight_decay", "save_on_each_node", "fp16",
            "fp16_full_eval", "bf16", "bf16_full_eval")  # fmt: skip
    args = SimpleNamespace(**{k: getattr(real, k) for k in used})
    args.world_size = world_size  # the real one is 1 on this machine
    args.get_warmup_steps = real.get_warmup_steps
    hf = HfTrainerDeepSpeedConfig(str(path))
    try:
        hf.trainer_config_process(args)
        hf.trainer_config_finalize(args, SimpleNamespace(config=SimpleNamespace(hidden_size=4096)), 1000)
        return hf.config
    finally:
        unset_hf_deepspeed_config()  # HfDeepSpeedConfig registers itself globally; later tests must not see ZeRO-3


def find_auto(value, path="") -> list[str]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in find_auto(v, f"{path}.{k}")]
    return [path] if value == "auto" else []


@pytest.mark.parametrize("path", DS_CONFIGS, ids=lambda p: p.name)
def test_deepspeed_config_validates_after_hf_auto_fill(path):
    pytest.importorskip("deepspeed")
    from deepspeed.runtime.config import DeepSpeedConfig
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    raw = json.loads(path.read_text())
    assert find_auto(raw), "the configs should defer batch sizes and precision to the recipe via 'auto'"
    on_8_gpus = hf_filled(path, world_size=8)
    assert not find_auto(on_8_gpus), f"auto values left after filling: {find_auto(on_8_gpus)}"
    assert on_8_gpus["train_batch_size"] == 4 * 8 * 8 and on_8_gpus["gradient_clipping"] == 1.0
    # DeepSpeed's own parser and sanity checks; without torch.distributed it assumes one process, so fill for one
    filled = hf_filled(path, world_size=1)
    ds = DeepSpeedConfig(json.loads(json.dumps(filled)))
    zero = DeepSpeedZeroConfig(**filled["zero_optimization"])
    expected_stage = 2 if "zero2" in path.name else 3
    assert ds.zero_optimization_stage == expected_stage == zero.stage
    if "offload" in path.name:
        assert zero.offload_optimizer.device == "cpu" and zero.offload_param.device == "cpu"
    if expected_stage == 3:
        assert zero.gather_16bit_weights_on_model_save  # the final LoRA/full save is a usable checkpoint
        assert filled["zero_optimization"]["stage3_prefetch_bucket_size"] == int(0.9 * 4096 * 4096)


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_accelerate_config_passes_accelerate_validation(path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    monkeypatch.chdir(ROOT)
    text = path.read_text()
    assert "accelerate launch --config_file launch/" + path.name in text  # documented at the top
    config = load_config_from_file(str(path))
    args = launch_command_parser().parse_args(
        ["--config_file", str(path), "-m", "rlcal.train", "--config", "recipes/toy/grpo/config_binary.yaml"]
    )
    args, defaults, mixed_precision_from_config = _validate_launch_command(args)
    raw = yaml.safe_load(text)
    if raw["distributed_type"] == "DEEPSPEED":
        ds_file = raw["deepspeed_config"]["deepspeed_config_file"]
        assert (ROOT / ds_file).is_file()
        assert args.use_deepspeed
        # accelerate refuses these next to a deepspeed_config_file (they belong in the JSON, as "auto")
        ambiguous = {"gradient_accumulation_steps", "gradient_clipping", "zero_stage", "offload_optimizer_device",
                     "offload_param_device", "zero3_save_16bit_model", "mixed_precision"}  # fmt: skip
        assert not ambiguous & set(config.deepspeed_config)
        assert not mixed_precision_from_config
        assert raw["deepspeed_config"]["zero3_init_flag"] == ("zero3" in path.name)
    elif path.name == "multi_gpu.yaml":
        assert args.multi_gpu and args.num_processes > 1
    else:
        assert args.num_processes == 1 and not args.multi_gpu


def fake_bin(directory: Path, name: str, body: str) -> None:
    script = directory / name
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_slurm_script_launches_every_node_with_its_rank(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    fake_bin(bin_dir, "scontrol", 'printf "gpu-node-a\\ngpu-node-b\\n"\n')
    fake_bin(bin_dir, "nvidia-smi", 'for i in 0 1 2 3; do echo "GPU $i: fake"; done\n')
    # srun: run the per-node command once per node with that node's SLURM_NODEID, as SLURM would
    fake_bin(
        bin_dir,
        "srun",
        'while [[ $1 == --* ]]; do shift; done\nfor node in 0 1; do SLURM_NODEID=$node "$@"; done\n',
    )
    fake_bin(bin_dir, "accelerate", f'echo "$*" >> {log}\n')
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "SLURM_NNODES": "2",
        "SLURM_JOB_NODELIST": "gpu-node-[a-b]",
    }
    recipe = "recipes/llama3.1-8b/grpo/config_confidence_target_trivia_qa_zero3.yaml"
    result = subprocess.run(
        ["bash", "launch/slurm_multinode.sh", recipe, "--max_steps", "10"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert len(calls) == 2
    for rank, call in enumerate(calls):
        assert call.startswith("launch --config_file launch/zero3.yaml --num_machines 2 --num_processes 8 ")
        assert f"--machine_rank {rank} " in call
        assert "--main_process_ip gpu-node-a --main_process_port 29500" in call
        assert call.endswith(f"-m rlcal.train --config {recipe} --max_steps 10")
    missing = subprocess.run(["bash", "launch/slurm_multinode.sh", "nope.yaml"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "recipe not found" in missing.stderr
