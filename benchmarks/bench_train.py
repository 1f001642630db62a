"""rlcal's GRPO step time / vanilla TRL GRPOTrainer step time, measured side by side in one run (goal <= 1.05).

    python benchmarks/bench_train.py                    # tiny Llama, CPU, ~4 minutes (7 rounds)
    python benchmarks/bench_train.py --size nano --rounds 5 --steps 8

Both trainers get the same locally built model, LoRA config, dataset (confidence-target prompts), batch and
generation settings and seed:
- vanilla: `trl.GRPOTrainer` with a minimal exact-match reward function written inline;
- rlcal: the trainer `rlcal train` builds (`rlcal.training.trainers.build_trainer`) with rlcal's confidence-target reward
  (full grading: answer extraction, normalisation, abstention detection, `outcomes/*` metrics) and rlcal's callbacks.
The learning rate is 0 so both runs generate the same tokens from the same seed: the ratio isolates what rlcal adds
per step (reward grading, logging, callbacks), not differences in completion length. Steps are timed in process
CPU time with one torch thread (wall time is printed too); rounds alternate the two trainers (A B A B ...) and the
reported ratio is the median over rounds. Because both runs do identical work step for step, each run's fastest
step (the one least disturbed by other processes, as `timeit` does) gives the primary ratio; medians are printed
next to it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

GOAL = 1.05


def build_model(size: str, out: Path) -> str:
    from rlcal.core.prompts import PromptTemplate
    from rlcal.world.toymodel import build_tiny_model, build_tokenizer, save_tiny_model

    template = PromptTemplate()
    corpus = [
        f"{template.render(f'When was Person {i} born?', t)} {i % 28 + 1:02d}-{i % 12 + 1:02d}"
        for i in range(300)
        for t in (0.0, 0.5, 0.75, 0.9)
    ] + ["I don't know."] * 50
    tokenizer = build_tokenizer(corpus, vocab_size=1024)
    return str(save_tiny_model(build_tiny_model(tokenizer, size=size, seed=0), tokenizer, out))


def write_data(path: Path, n: int = 256) -> Path:
    with path.open("w") as fh:
        for i in range(n):
            row = {"question": f"When was Person {i} born?", "answer": f"{i % 28 + 1:02d}-{i % 12 + 1:02d}"}
            fh.write(json.dumps({**row, "aliases": [], "split": "rl_train"}) + "\n")
    return path


def make_recipe(model_dir: str, data: Path, out: Path, args: argparse.Namespace):
    from rlcal.training.config import parse_recipe

    return parse_recipe(
        {
            "model": {"model_name_or_path": model_dir, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
            "data": {"source": str(data)},
            "reward": {"name": "confidence_target", "threshold": {"choice": [0.0, 0.5, 0.75, 0.9]}},
            "training": {
                "output_dir": str(out),
                "seed": 0,
                "max_steps": args.warmup_steps + args.steps,
                "learning_rate": 0.0,
                "per_device_train_batch_size": args.batch,
                "num_generations": args.generations,
                "max_completion_length": args.completion_length,
                "temperature": 1.0,
                "scale_rewards": "batch",
                "activation_checkpointing": False,
                "logging_steps": 10_000,  # no log printing in the timed loop (metrics are still computed)
                "save_strategy": "no",
                "report_to": [],
                "disable_tqdm": True,
            },
        }
    )


class StepTimer:
    """CPU and wall time of each optimizer step (generation + reward + loss + update), as a TrainerCallback."""

    def __init__(self) -> None:
        self.cpu: list[float] = []
        self.wall: list[float] = []
        self._start = (0.0, 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = (time.process_time(), time.perf_counter())

    def on_step_end(self, args, state, control, **kwargs):
        self.cpu.append(time.process_time() - self._start[0])
        self.wall.append(time.perf_counter() - self._start[1])

    def summary(self, skip: int) -> tuple[float, float, float]:
        """(fastest CPU time, median CPU time, median wall time) over the steps after the first `skip`."""
        cpu = self.cpu[skip:]
        return min(cpu), statistics.median(cpu), statistics.median(self.wall[skip:])


def timer_callback() -> StepTimer:
    from transformers import TrainerCallback

    return type("StepTimerCallback", (StepTimer, TrainerCallback), {})()


def exact_match_reward(completions, answer, **kwargs):
    """The kind of reward a vanilla TRL user writes: 1 if the first line is the answer, else 0."""
    return [1.0 if c.strip().split("\n")[0].strip() == a else 0.0 for c, a in zip(completions, answer, strict=True)]


def run_vanilla(recipe, model_dir: str, dataset, skip: int) -> tuple[float, float, float]:
    from trl import GRPOTrainer, get_peft_config

    timer = timer_callback()
    args = recipe.training
    args.model_init_kwargs = {"dtype": "float32"}
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=exact_match_reward,
        args=args,
        train_dataset=dataset.select_columns(["prompt", "answer"]),
        callbacks=[timer],
        peft_config=get_peft_config(recipe.model),
    )
    trainer.train()
    return timer.summary(skip)


def run_rlcal(recipe, model_dir: str, dataset, skip: int) -> tuple[float, float, float]:
    from rlcal.training.train import build_reward_funcs
    from rlcal.training.trainers import build_trainer, zero_std_monitor

    timer = timer_callback()
    trainer = build_trainer(recipe, model_dir, dataset, build_reward_funcs(recipe), [zero_std_monitor(), timer])
    trainer.train()
    return timer.summary(skip)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", help="toy model size (rlcal.world.toymodel.SIZES)")
    parser.add_argument("--rounds", type=int, default=7, help="A/B rounds (the median ratio is reported)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--batch", type=int, default=32, help="completions per step")
    parser.add_argument("--generations", type=int, default=8, help="num_generations")
    parser.add_argument("--completion-length", type=int, default=12, help="max_completion_length")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from rlcal.training.train import load_train_dataset

    torch.set_num_threads(1)  # CPU time is then a stable measure of work, whatever else runs on the machine
    transformers.logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(args.size, root / "model")
        data = write_data(root / "qa.jsonl")

        def recipe_factory(name: str):
            return make_recipe(model_dir, data, root / name, args)

        dataset = load_train_dataset(recipe_factory("probe"))
        for r in range(args.rounds):
            vanilla = run_vanilla(recipe_factory(f"vanilla{r}"), model_dir, dataset, args.warmup_steps)
            ours = run_rlcal(recipe_factory(f"rlcal{r}"), model_dir, dataset, args.warmup_steps)
            rows.append((vanilla, ours))
            print(
                f"round {r + 1}: CPU ms/step (fastest / median)  vanilla TRL {vanilla[0] * 1e3:6.1f} / "
                f"{vanilla[1] * 1e3:6.1f}   rlcal {ours[0] * 1e3:6.1f} / {ours[1] * 1e3:6.1f}   "
                f"ratio {ours[0] / vanilla[0]:.3f} / {ours[1] / vanilla[1]:.3f}",
                flush=True,
            )

    def median_ratio(i: int) -> float:
        return statistics.median(ours[i] / vanilla[i] for vanilla, ours in rows)

    ratio = median_ratio(0)
    print(
        f"\nGRPO step time ({args.size} model, {args.batch} completions/step = "
        f"{args.batch // args.generations} prompts x {args.generations}, <= {args.completion_length} tokens, "
        f"LoRA r=16, CPU, 1 thread, {args.rounds} alternating rounds):"
    )
    print(f"  vanilla TRL GRPOTrainer  : {statistics.median(v[0] for v, _ in rows) * 1e3:.1f} ms/step CPU (fastest)")
    print(f"  rlcal (calibrated reward): {statistics.median(o[0] for _, o in rows) * 1e3:.1f} ms/step CPU (fastest)")
    print(
        f"  ratio rlcal / vanilla    : {ratio:.3f} (fastest step), {median_ratio(1):.3f} (median step CPU), "
        f"{median_ratio(2):.3f} (median step wall)   goal <= {GOAL}: {'met' if ratio <= GOAL else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
