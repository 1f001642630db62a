"""The prepared GPU check: rlcal's GRPO throughput next to vanilla TRL's, under DeepSpeed ZeRO-2/3, and `rlcal eval`
throughput, on one CUDA GPU with no network, in under 8 minutes. Writes check.json and check.md into --out.

    python benchmarks/gpu/collect_wheels.py                  # here, beforehand: trl, datasets, deepspeed as wheels
    python benchmarks/gpu/check.py --out "$OUT"              # on the GPU machine (installs the wheels offline)
    python benchmarks/gpu/check.py --dry-run --out /tmp/chk  # CPU, nano model, ~30 s: tests/test_gpu_check.py runs it

Stages (each one is timed and recorded; one that fails is recorded as an error and the others still run):
1. install: `pip install --no-index --find-links benchmarks/gpu/wheels` for whichever of trl, datasets, deepspeed
   is missing (the GPU image has torch, transformers, accelerate and peft);
2. model: a randomly initialised toy-world Llama (~85M parameters: hidden 768, 12 layers) with rlcal's toy
   tokenizer, and toy-world confidence-target prompts (docs/world.md);
3. ab: GRPO + LoRA in bf16, rlcal's trainer (`rlcal.training.trainers.build_trainer`, calibrated reward, rlcal's
   callbacks) and vanilla `trl.GRPOTrainer` (an inline exact-match reward) on the same model, batch, generation
   settings and seed, alternating in one process; learning rate 0, so both generate the same tokens and the ratio
   of tokens/s isolates what rlcal adds per step (goal >= 0.95). Peak GPU memory of each;
4. zero2, zero3: `accelerate launch --config_file launch/zero{2,3}.yaml --num_processes 1` of `rlcal.train` (through
   this script's `--child` mode, which adds a step timer) with the calibration callback on: step time, tokens/s
   and peak GPU memory (the ZeRO-3 run also exercises the callback's gathered-parameter generation);
5. eval: `evaluate_model` (the engine of `rlcal eval`) with the answer-probability confidence: questions/s.

`--dry-run` shrinks every stage (nano model, CPU, float32, a few steps) and launches the child without DeepSpeed
(`accelerate launch --cpu`; DeepSpeed needs a GPU), so the whole path is known to work before a GPU is at hand.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
WHEELS = Path(__file__).resolve().parent / "wheels"
sys.path.insert(0, str(ROOT))  # the tree's rlcal, without installing it
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL = 0.95  # rlcal tokens/s / vanilla TRL tokens/s


@dataclass
class Settings:
    hidden: int = 768
    layers: int = 12
    heads: int = 12
    intermediate: int = 2048
    batch: int = 64  # completions per step (per device)
    generations: int = 8
    completion_length: int = 32
    skip_steps: int = 2  # untimed (CUDA warm-up)
    steps: int = 8  # timed steps per A/B run
    rounds: int = 2  # A/B rounds
    zero_steps: int = 6
    eval_questions: int = 256
    budget_s: float = 450.0  # stages that would start after this are skipped
    device: str = "cuda"

    @classmethod
    def dry_run(cls) -> Settings:
        return cls(64, 2, 2, 128, 8, 4, 6, 1, 2, 1, 3, 16, 300.0, "cpu")


# ---- stages -------------------------------------------------------------------------------------------------------


def install() -> dict[str, Any]:
    """Install the missing packages from the wheel folder, offline."""
    missing = [m for m in ("trl", "datasets", "deepspeed") if importlib.util.find_spec(m) is None]
    if not missing:
        return {"installed": [], "note": "trl, datasets and deepspeed already importable"}
    if not WHEELS.is_dir():
        raise RuntimeError(f"{', '.join(missing)} missing and no {WHEELS}: run benchmarks/gpu/collect_wheels.py")
    # --isolated: no pip config or PIP_* variables (an index or extra find-links there would hide a missing wheel)
    cmd = [sys.executable, "-m", "pip", "install", "--isolated", "--no-index", "--find-links", str(WHEELS), *missing]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"offline install failed: {(proc.stdout + proc.stderr)[-2000:]}")
    importlib.invalidate_caches()
    return {"installed": missing}


def build_model(s: Settings, work: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from rlcal.core.prompts import PromptTemplate
    from rlcal.world.toymodel import build_tokenizer, count_parameters, save_tiny_model, tiny_config

    template = PromptTemplate()
    corpus = [
        f"{template.render(f'When was Person {i} born?', t)} {i % 28 + 1:02d}-{i % 12 + 1:02d}"
        for i in range(300)
        for t in (0.0, 0.5, 0.75, 0.9)
    ] + ["I don't know."] * 50
    tokenizer = build_tokenizer(corpus, vocab_size=1024)
    config = tiny_config(tokenizer, "nano", "llama")
    config.hidden_size, config.num_hidden_layers, config.intermediate_size = s.hidden, s.layers, s.intermediate
    config.num_attention_heads = config.num_key_value_heads = s.heads
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        setattr(model.generation_config, key, getattr(tokenizer, key))
    save_tiny_model(model, tokenizer, work / "model")
    with (work / "qa.jsonl").open("w") as fh:
        for i in range(max(512, s.eval_questions)):
            row = {"question": f"When was Person {i} born?", "answer": f"{i % 28 + 1:02d}-{i % 12 + 1:02d}"}
            fh.write(json.dumps({**row, "aliases": [], "split": "eval" if i < s.eval_questions else "rl_train"}))
            fh.write("\n")
    return {"parameters": count_parameters(model), "path": str(work / "model")}


def recipe_dict(s: Settings, work: Path, out: Path, lr: float, steps: int, calibration: bool) -> dict[str, Any]:
    gpu = s.device == "cuda"
    recipe: dict[str, Any] = {
        "model": {
            "model_name_or_path": str(work / "model"),
            "dtype": "bfloat16" if gpu else "float32",
            "lora_r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "lora_target_modules": ["all-linear"],
        },
        "data": {"source": str(work / "qa.jsonl"), "split_filter": "rl_train"},
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.0, 0.5, 0.75, 0.9]}},
        "training": {
            "output_dir": str(out),
            "seed": 0,
            "max_steps": steps,
            "learning_rate": lr,
            "per_device_train_batch_size": s.batch,
            "num_generations": s.generations,
            "max_completion_length": s.completion_length,
            "temperature": 1.0,
            "scale_rewards": "batch",
            "beta": 0.0,
            "bf16": gpu,
            "use_cpu": not gpu,
            "activation_checkpointing": False,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": [],
            "disable_tqdm": True,
        },
    }
    if calibration:  # small: it runs at the base and the end, outside the timed steps
        recipe["calibration"] = {"data": str(work / "qa.jsonl"), "split_filter": "eval", "max_samples": 32}
    return recipe


def step_timer():
    """A TrainerCallback timing each optimizer step (CUDA-synchronised) and counting the tokens TRL has seen."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.wall: list[float] = []
            self.tokens: list[float] = []
            self.start = 0.0

        @staticmethod
        def _sync() -> None:
            import torch

            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_train_begin(self, args, state, control, **kwargs):
            import torch

            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            self._sync()
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self._sync()
            self.wall.append(time.perf_counter() - self.start)
            self.tokens.append(float(state.num_input_tokens_seen))

        def summary(self, skip: int) -> dict[str, Any]:
            import torch

            timed = self.wall[skip:]
            tokens = self.tokens[-1] - (self.tokens[skip - 1] if skip else 0.0)
            peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
            return {
                "steps": len(timed),
                "step_s": statistics.median(timed) if timed else None,
                "tokens_per_s": tokens / sum(timed) if timed and sum(timed) > 0 else None,
                "tokens": tokens,
                "peak_gpu_gib": peak,
            }

    return StepTimer()


def exact_match_reward(completions, answer, **kwargs):
    """The kind of reward a vanilla TRL user writes: 1 if the first line is the answer, else 0."""
    return [1.0 if c.strip().split("\n")[0].strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]


def ab(s: Settings, work: Path) -> dict[str, Any]:
    import torch
    from trl import GRPOTrainer, get_peft_config

    from rlcal.common.progress import quiet_trainer
    from rlcal.training.config import parse_recipe
    from rlcal.training.data import load_train_dataset
    from rlcal.training.models import model_init_kwargs
    from rlcal.training.train import build_reward_funcs
    from rlcal.training.trainers import build_trainer, zero_std_monitor

    rounds = []
    for r in range(s.rounds):
        row = {}
        for name in ("vanilla", "rlcal"):
            recipe = parse_recipe(recipe_dict(s, work, work / f"{name}{r}", 0.0, s.skip_steps + s.steps, False))
            dataset = load_train_dataset(recipe)
            timer = step_timer()
            if name == "vanilla":
                args = recipe.training
                args.model_init_kwargs = model_init_kwargs(recipe)
                trainer = GRPOTrainer(
                    model=recipe.model.model_name_or_path,
                    reward_funcs=exact_match_reward,
                    args=args,
                    train_dataset=dataset.select_columns(["prompt", "answer"]),
                    callbacks=[timer],
                    peft_config=get_peft_config(recipe.model),
                )
            else:
                callbacks = [zero_std_monitor(), timer]
                model = recipe.model.model_name_or_path
                trainer = build_trainer(recipe, model, dataset, build_reward_funcs(recipe), callbacks)
            quiet_trainer(trainer, name, None, bar=False)  # the same (no) printing for both
            trainer.train()
            row[name] = timer.summary(s.skip_steps)
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        row["ratio"] = row["rlcal"]["tokens_per_s"] / row["vanilla"]["tokens_per_s"]
        rounds.append(row)
        print(f"ab round {r + 1}: rlcal / vanilla tokens/s = {row['ratio']:.3f}", flush=True)
    ratio = statistics.median(row["ratio"] for row in rounds)
    return {"rounds": rounds, "ratio": ratio, "goal": GOAL, "met": ratio >= GOAL}


def launched(s: Settings, work: Path, name: str, launch_config: str | None) -> dict[str, Any]:
    """rlcal.train through `accelerate launch` (one process) with this script's timer, from a recipe file."""
    import yaml

    out = work / name
    recipe = work / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump(recipe_dict(s, work, out, 1e-5, s.skip_steps + s.zero_steps, True)))
    result = work / f"{name}.json"
    accelerate = [sys.executable, "-c", "from accelerate.commands.accelerate_cli import main; main()", "launch"]
    flags = ["--num_processes", "1", "--num_machines", "1", "--dynamo_backend", "no"]
    flags += ["--config_file", str(ROOT / launch_config)] if launch_config else ["--cpu", "--mixed_precision", "no"]
    cmd = [*accelerate, *flags, __file__, "--child", str(result), "--skip", str(s.skip_steps), "--config", str(recipe)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=s.budget_s, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"accelerate launch ended with {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}")
    data = json.loads(result.read_text())
    history = out / "calibration" / "history.jsonl"
    evals = [json.loads(line) for line in history.read_text().splitlines()] if history.is_file() else []
    data["calibration_evals"] = [{k: e.get(k) for k in ("step", "label", "ece", "error")} for e in evals]
    data["launch_config"] = (
        f"accelerate launch --config_file {launch_config}"
        if launch_config
        else "accelerate launch --cpu (dry run: no DeepSpeed)"
    )
    data["wall_s"] = round(time.perf_counter() - started, 1)
    return data


def child(result: Path, skip: int, argv: list[str]) -> int:
    """Inside `accelerate launch`: `python -m rlcal.train` with a step timer; the main process writes `result`."""
    from accelerate import PartialState

    from rlcal.training import train as train_mod

    timer = step_timer()
    real = train_mod.build_callbacks
    train_mod.build_callbacks = lambda recipe: [*real(recipe), timer]
    code = train_mod.main(argv)
    if code == 0 and PartialState().is_main_process:
        result.write_text(json.dumps(timer.summary(skip)))
    return code


def eval_throughput(s: Settings, work: Path) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcal.data.qa import load_qa_dataset
    from rlcal.evaluation.evaluate import evaluate_model

    gpu = s.device == "cuda"
    model = AutoModelForCausalLM.from_pretrained(work / "model", dtype=torch.bfloat16 if gpu else torch.float32)
    model.to(s.device)
    tokenizer = AutoTokenizer.from_pretrained(work / "model", padding_side="left")
    data = load_qa_dataset(str(work / "qa.jsonl"), split_filter="eval")
    if gpu:
        torch.cuda.synchronize()
    started = time.perf_counter()
    metrics, predictions = evaluate_model(model, tokenizer, data, confidence_method="answer_prob", batch_size=64,
                                          progress=False, n_resamples=0)  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "questions": metrics["n_questions"],
        "prompts": len(predictions),
        "seconds": round(seconds, 2),
        "questions_per_s": metrics["n_questions"] / seconds,
        "confidence": "answer_prob",
    }


# ---- report -------------------------------------------------------------------------------------------------------


def _num(value: Any, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def markdown(report: dict[str, Any]) -> str:
    env, st = report["environment"], report["stages"]
    lines = [
        f"GPU check ({'dry run, CPU' if report['dry_run'] else env.get('gpu') or 'no GPU'}; torch {env['torch']}, "
        f"trl {env.get('trl')}, deepspeed {env.get('deepspeed')}; model {report.get('parameters') or '?'} "
        f"parameters; {report['settings']['batch']} completions/step = "
        f"{report['settings']['batch'] // report['settings']['generations']} prompts x "
        f"{report['settings']['generations']}, <= {report['settings']['completion_length']} tokens, LoRA r=16)",
        "",
        "| run | step (s) | tokens/s | peak GPU memory (GiB) | note |",
        "|---|---|---|---|---|",
    ]
    ab_stage = st.get("ab", {})
    if ab_stage.get("ok"):
        last = ab_stage["result"]["rounds"][-1]
        for name in ("vanilla", "rlcal"):
            r = last[name]
            label = "vanilla TRL GRPOTrainer" if name == "vanilla" else "rlcal (calibrated reward + callbacks)"
            lines.append(f"| {label} | {_num(r['step_s'], '.3f')} | {_num(r['tokens_per_s'], '.0f')} | "
                         f"{_num(r['peak_gpu_gib'], '.2f')} | last A/B round |")  # fmt: skip
        res = ab_stage["result"]
        lines.append(f"| **rlcal / vanilla tokens/s** | | **{res['ratio']:.3f}** | | median of "
                     f"{len(res['rounds'])} rounds; goal >= {GOAL}: {'met' if res['met'] else 'NOT met'} |")  # fmt: skip
    for name in ("zero2", "zero3", "launch"):
        stage = st.get(name, {})
        if stage.get("ok"):
            r = stage["result"]
            lines.append(f"| {r['launch_config']} | {_num(r['step_s'], '.3f')} | "
                         f"{_num(r['tokens_per_s'], '.0f')} | {_num(r['peak_gpu_gib'], '.2f')} | "
                         f"{len(r['calibration_evals'])} calibration evals |")  # fmt: skip
    ev = st.get("eval", {})
    if ev.get("ok"):
        r = ev["result"]
        lines += ["", f"`rlcal eval` (evaluate_model, answer_prob): {r['questions_per_s']:.1f} questions/s "
                      f"({r['questions']} questions x 4 t = {r['prompts']} prompts in {r['seconds']} s)"]  # fmt: skip
    failed = [f"- {name}: {stage.get('error', 'skipped')}" for name, stage in st.items() if not stage.get("ok")]
    if failed:
        lines += ["", "Not measured:", *(line.splitlines()[0][:300] for line in failed)]
    lines += ["", f"Command: `{report['command']}` ({report['wall_s']:.0f} s)."]
    return "\n".join(lines) + "\n"


def environment() -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__}
    env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    for name in ("transformers", "accelerate", "peft", "trl", "datasets", "deepspeed"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # noqa: BLE001 - reported as missing
            env[name] = None
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu_check", help="check.json + check.md")
    parser.add_argument("--dry-run", action="store_true", help="tiny CPU run of every stage (seconds)")
    parser.add_argument("--only", nargs="*", help="run only these stages (ab zero2 zero3 launch eval)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # inside accelerate launch
    parser.add_argument("--skip", type=int, default=0, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if args.child:
        return child(args.child, args.skip, rest)

    began = time.perf_counter()
    s = Settings.dry_run() if args.dry_run else Settings()
    work = args.out / "work"
    work.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/gpu/check.py" + (" --dry-run" if args.dry_run else "")
    report: dict[str, Any] = {"dry_run": args.dry_run, "settings": asdict(s), "command": command, "stages": {}}

    def stage(name: str, fn, *fargs) -> Any:
        if args.only and name not in args.only and name not in ("install", "model"):
            return None
        if time.perf_counter() - began > s.budget_s:
            report["stages"][name] = {"ok": False, "error": "skipped: time budget spent"}
            return None
        started = time.perf_counter()
        try:
            result = fn(*fargs)
            report["stages"][name] = {"ok": True, "result": result}
        except Exception as exc:  # noqa: BLE001 - recorded; the other stages still run
            traceback.print_exc()
            report["stages"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            result = None
        report["stages"][name]["seconds"] = round(time.perf_counter() - started, 1)
        print(f"stage {name}: {'ok' if report['stages'][name]['ok'] else 'FAILED'} "
              f"({report['stages'][name]['seconds']} s)", flush=True)  # fmt: skip
        return result

    import torch

    if not args.dry_run and not torch.cuda.is_available():
        print("check.py: no CUDA GPU here; use --dry-run for the CPU version", file=sys.stderr)
        return 2
    stage("install", install)
    report["environment"] = environment()
    model = stage("model", build_model, s, work)
    report["parameters"] = (model or {}).get("parameters")
    if model:
        stage("ab", ab, s, work)
        if args.dry_run:
            stage("launch", launched, s, work, "launch", None)  # the launch path, without DeepSpeed
        else:
            stage("zero2", launched, s, work, "zero2", "launch/zero2.yaml")
            stage("zero3", launched, s, work, "zero3", "launch/zero3.yaml")
        stage("eval", eval_throughput, s, work)
    report["wall_s"] = time.perf_counter() - began
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "check.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "check.md").write_text(markdown(report))
    print(markdown(report))
    return 0 if all(v.get("ok") for v in report["stages"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
