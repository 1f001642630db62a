"""PPO step time / GRPO step time at the same completions per step, measured side by side in one run.

    python benchmarks/bench_ppo.py                      # tiny Llama, CPU, 1 thread, ~1 minute (3 rounds)
    python benchmarks/bench_ppo.py --size nano --rounds 5 --steps 8

Both are the trainers `rlcal train` builds (`rlcal.training.trainers.build_trainer`) on the same locally built
model, LoRA config, dataset, reward (confidence targets), sampling settings and seed, with `--batch` completions
per optimizer step:
- grpo: `--batch / --generations` prompts x `--generations` completions, scale_rewards batch;
- ppo: `--batch` prompts x 1 completion, ppo_epochs 1 and num_mini_batches 1, so that every step, like GRPO's,
  samples a fresh rollout and takes one optimizer step on it. PPO then adds two scoring passes without gradients
  (the policy with its value head, the adapter-disabled reference) and GAE, and its loss pass runs the value head.
  With `--ppo-epochs k` > 1, k - 1 of every k steps sample nothing, and PPO's time per step falls (its rollouts
  then cost k optimizer steps each: fewer completions per step on average).
The learning rate is 0, so neither policy moves and the step times compare equal work. The timing (CPU time, one
torch thread, fastest step per run, median over alternating rounds) is benchmarks/bench_train.py's; with
`--ppo-epochs` > 1 read the mean-step ratio instead (the fastest PPO steps are then those that sample nothing).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import build_model, timer_callback, write_data  # noqa: E402 - the sibling benchmark's helpers


def make_recipe(trainer: str, model_dir: str, data: Path, out: Path, args: argparse.Namespace):
    from rlcal.training.config import parse_recipe

    training = {
        "output_dir": str(out),
        "seed": 0,
        "max_steps": args.warmup_steps + args.steps,
        "learning_rate": 0.0,
        "per_device_train_batch_size": args.batch,
        "max_completion_length": args.completion_length,
        "temperature": 1.0,
        "activation_checkpointing": False,
        "logging_steps": 10_000,
        "save_strategy": "no",
        "report_to": [],
        "disable_tqdm": True,
    }
    if trainer == "grpo":
        training.update(num_generations=args.generations, scale_rewards="batch")
    else:
        training.update(num_generations=1, ppo_epochs=args.ppo_epochs, num_mini_batches=1)
    return parse_recipe(
        {
            "trainer": trainer,
            "model": {"model_name_or_path": model_dir, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
            "data": {"source": str(data)},
            "reward": {"name": "confidence_target", "threshold": {"choice": [0.0, 0.5, 0.75, 0.9]}},
            "training": training,
        }
    )


def run(recipe, model_dir: str, dataset, skip: int) -> tuple[float, float, float, float]:
    from rlcal.training.train import build_reward_funcs
    from rlcal.training.trainers import build_trainer

    timer = timer_callback()
    trainer = build_trainer(recipe, model_dir, dataset, build_reward_funcs(recipe), [timer])
    trainer.train()
    return (*timer.summary(skip), statistics.mean(timer.cpu[skip:]))  # + the mean: with ppo_epochs > 1 steps differ


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", help="toy model size (rlcal.world.toymodel.SIZES)")
    parser.add_argument("--rounds", type=int, default=3, help="A/B rounds (the median ratio is reported)")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per run")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per run")
    parser.add_argument("--batch", type=int, default=32, help="completions per optimizer step")
    parser.add_argument("--generations", type=int, default=8, help="GRPO's num_generations")
    parser.add_argument("--completion-length", type=int, default=12, help="max_completion_length")
    parser.add_argument("--ppo-epochs", type=int, default=1, help="PPO's ppo_epochs (> 1: steps without sampling)")
    args = parser.parse_args(argv)

    import torch
    import transformers

    from rlcal.training.train import load_train_dataset

    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model_dir = build_model(args.size, root / "model")
        data = write_data(root / "qa.jsonl")
        dataset = load_train_dataset(make_recipe("grpo", model_dir, data, root / "probe", args))
        for r in range(args.rounds):
            grpo = run(make_recipe("grpo", model_dir, data, root / f"grpo{r}", args), model_dir, dataset, args.warmup_steps)
            ppo = run(make_recipe("ppo", model_dir, data, root / f"ppo{r}", args), model_dir, dataset, args.warmup_steps)
            rows.append((grpo, ppo))
            print(
                f"round {r + 1}: CPU ms/step (fastest / median)  GRPO {grpo[0] * 1e3:6.1f} / {grpo[1] * 1e3:6.1f}   "
                f"PPO {ppo[0] * 1e3:6.1f} / {ppo[1] * 1e3:6.1f}   ratio {ppo[0] / grpo[0]:.3f} / {ppo[1] / grpo[1]:.3f}",
                flush=True,
            )

    def median_ratio(i: int) -> float:
        return statistics.median(ppo[i] / grpo[i] for grpo, ppo in rows)

    print(
        f"\nstep time ({args.size} model, {args.batch} completions/step: GRPO {args.batch // args.generations} "
        f"prompts x {args.generations}, PPO {args.batch} prompts x 1, ppo_epochs {args.ppo_epochs}; <= {args.completion_length} "
        f"tokens, LoRA r=16, CPU, 1 thread, {args.rounds} alternating rounds):"
    )
    print(f"  GRPO : {statistics.median(g[0] for g, _ in rows) * 1e3:.1f} ms/step CPU (fastest)")
    print(f"  PPO  : {statistics.median(p[0] for _, p in rows) * 1e3:.1f} ms/step CPU (fastest)")
    print(
        f"  ratio PPO / GRPO: {median_ratio(0):.3f} (fastest step), {median_ratio(1):.3f} (median step CPU), "
        f"{median_ratio(2):.3f} (median step wall), {median_ratio(3):.3f} (mean step CPU: the one to read with "
        "--ppo-epochs > 1, where the fastest steps are those that sample nothing)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
