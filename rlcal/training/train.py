"""`rlcal train`: GRPO / RLOO training with calibrated rewards on TRL, from a recipe YAML.

    rlcal train recipes/toy/grpo/config_confidence_target.yaml             # CPU, embedded world
    rlcal train RECIPE.yaml --training.learning_rate 5e-5 --max_steps 50    # CLI overrides the YAML
    rlcal train RECIPE.yaml --dry-run                                       # print resolved recipe + first prompt
    rlcal train RECIPE.yaml --verbose                                       # also print every log dict
    accelerate launch --config_file launch/zero2.yaml -m rlcal.train --config RECIPE.yaml

What `train(recipe)` does, in order (everything that can fail on bad input fails before a model is loaded):
1. seed; build the toy world and model when the recipe points at a `pretrain_recipe` (`rlcal.training.models`);
2. load the QA data, sample one confidence target t per row (seeded), render it into the prompt (`.data`);
3. the reward from `rlcal.core.rewards`, which logs `rewards/<name>/mean` and
   `outcomes/{accuracy,abstain_rate,hallucination_rate,mean_threshold}`;
4. the optional SFT warm-up (`warmup.steps > 0`, `.warmup`), cached in `output_dir/warmup/model`, with the share
   of GRPO groups with zero reward variance probed before/after (`.probe`);
5. TRL `GRPOTrainer` (or `RLOOTrainer`) with a PEFT LoRA adapter, rlcal's `groups/frac_reward_zero_std` metric
   and callbacks (`.trainers`, `.callbacks`), W&B when `report_to` has it (`.tracking`);
6. train, resuming from the newest intact `checkpoint-*` in `output_dir` (`resume: auto`) — but only a run made
   with the same settings, and a run that already ended is not trained again (`.runs`, decided before step 1);
7. save the adapter, the tokenizer, the resolved recipe (`rlcal_recipe.yaml`) and `train_summary.json`.

The terminal shows one progress bar per stage (reward, abstain and hallucination rates, ECE); every log event goes
to `output_dir/train_log.jsonl` (`.progress`). In multi-process runs only the main process prints.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_text
from rlcal.training.config import Recipe, load_recipe
from rlcal.training.data import first_prompt_report, load_train_dataset
from rlcal.training.runs import RECIPE_FILE, SUMMARY_FILE, RunPlan, prepare_run
from rlcal.training.trainers import build_trainer

logger = logging.getLogger("rlcal.training.train")


# ---- command line ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Recipe sections: model (trl ModelConfig + pretrain_recipe), data, reward, warmup, training (trl "
        "GRPOConfig/RLOOConfig fields), wandb, calibration; top-level keys trainer and resume. Every key is "
        "described in docs/training.md, section 'Recipe sections'. Override any key with --section.key value (bare "
        "--key: a trainer field, else the one section that has it). `rlcal train RECIPE.yaml --dry-run` prints the "
        "resolved recipe and the first prompt without loading a model. A recipe path that is not a file here is "
        "looked up among the recipes shipped with rlcal (docs/training.md, 'Where recipe paths point')."
    )
    parser.add_argument("recipe", nargs="?", help="Recipe YAML.")
    # REMAINDER on --config keeps `--config RECIPE.yaml --key value ...` (the `accelerate launch -m` spelling)
    # parseable: the override keys are free-form, so argparse must not try to recognise them.
    parser.add_argument(
        "--config", nargs=argparse.REMAINDER, metavar="RECIPE.yaml [--key value ...]", help="Recipe YAML + overrides."
    )
    parser.add_argument("--dry-run", action="store_true", help="Print the resolved recipe and first prompt; exit.")
    parser.add_argument(
        "--verbose", action="store_true", help="Also print every log dict and the libraries' progress bars."
    )
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="--section.key value pairs overriding the recipe, e.g. --training.learning_rate 1e-5 --max_steps 20.",
    )


def _split_args(args: argparse.Namespace) -> tuple[str, list[str], bool, bool]:
    """The recipe path, the override tokens, --dry-run and --verbose, wherever they appeared on the command line."""
    config = list(args.config or [])
    if args.config is not None and (not config or config[0].startswith("--")):
        raise RlcalError("--config needs a recipe path: --config RECIPE.yaml [--key value ...]")
    if config and args.recipe:
        raise RlcalError(f"two recipes given: {args.recipe} and --config {config[0]}")
    path = args.recipe or (config[0] if config else None)
    if not path:
        raise RlcalError("no recipe given: rlcal train RECIPE.yaml [--key value ...]")
    dry_run, verbose = bool(args.dry_run), bool(getattr(args, "verbose", False))
    overrides: list[str] = []
    for token in config[1:] + list(args.overrides or []):  # REMAINDER also swallows our own flags after the path
        if token in ("--dry-run", "--dry_run"):
            dry_run = True
        elif token == "--verbose":
            verbose = True
        else:
            overrides.append(token)
    return path, overrides, dry_run, verbose


def run(args: argparse.Namespace) -> int:
    path, overrides, dry_run, verbose = _split_args(args)
    recipe = load_recipe(path, overrides)
    _setup_logging()
    for note in recipe.notes:
        logger.warning(note)
    if dry_run:
        print(recipe.to_yaml(), flush=True)  # the config first: it prints even when the data cannot be loaded
        print(first_prompt_report(recipe))
        return 0
    result = train(recipe, verbose=verbose)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one summary, not one per GPU
        if verbose:
            print(json.dumps(result.summary(), indent=2, default=str))
        else:
            print("\n".join(result_lines(result)))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m rlcal.train` / `accelerate launch -m rlcal.train --config RECIPE.yaml`."""
    parser = argparse.ArgumentParser(prog="rlcal.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        return int(run(parser.parse_args(argv)) or 0)
    except RlcalError as exc:
        print(f"rlcal train: error: {exc}", file=sys.stderr)
        return 2


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    rlcal = logging.getLogger("rlcal")
    if rlcal.level == logging.NOTSET:  # info from rlcal by default; train() sets per-process levels
        rlcal.setLevel(logging.INFO)


# ---- the run ---------------------------------------------------------------------------------------------------


def build_reward_funcs(recipe: Recipe) -> list[Any]:
    from rlcal.core.rewards import build_reward

    return [build_reward(recipe.reward.name, **recipe.reward.reward_kwargs())]


def build_callbacks(recipe: Recipe) -> list[Any]:
    """rlcal's callbacks for the RL trainer: the zero-variance monitor and, when configured, calibration evals."""
    from rlcal.training.trainers import zero_std_monitor

    callbacks: list[Any] = [zero_std_monitor()]
    if recipe.calibration.data is not None:
        from rlcal.training.callbacks import CalibrationCallback

        cal_dir = str(recipe.output_dir / "calibration")
        grader = recipe.reward.answer_grader()  # the QA-task spec's grading, as the reward and rlcal eval use it
        callbacks.append(CalibrationCallback(recipe.calibration, recipe.data.prompt_template(), grader, cal_dir))
    return callbacks


def probe_start(recipe: Recipe, base: str, dataset, reward) -> dict[str, float] | None:
    """Without a warm-up: the learning signal of the base policy (main process), when `warmup.probe_prompts`."""
    from accelerate import PartialState

    from rlcal.training.models import load_model, load_tokenizer
    from rlcal.training.probe import format_stats, probe_group_variance, probe_settings

    if not recipe.warmup.probe_prompts or not PartialState().is_main_process:
        return None
    model = load_model(base, recipe)
    probe = probe_group_variance(model, load_tokenizer(base, recipe), dataset, reward, **probe_settings(recipe))
    logger.info("learning signal of the starting policy: %s", format_stats(probe))
    return probe


@dataclass
class TrainResult:
    output_dir: str
    model_path: str
    resumed_from: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    warmup: dict[str, Any] | None = None
    probe: dict[str, float] | None = None
    already_finished: bool = False  # the run in output_dir had ended: nothing was done
    finished_from: str | None = None  # a checkpoint at max_steps whose model was copied out, without training

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {})}


def train(recipe: Recipe, verbose: bool = False) -> TrainResult:
    """Run the whole training described by `recipe` (see the module docstring). `verbose` prints every log dict
    and the libraries' progress bars, as transformers does by default."""
    from rlcal.common.progress import process_log_levels, quiet_libraries

    _setup_logging()
    with process_log_levels(recipe.training), quiet_libraries(verbose):
        return _train(recipe, verbose)


def _train(recipe: Recipe, verbose: bool) -> TrainResult:
    from transformers import set_seed

    from rlcal.common.progress import quiet_trainer
    from rlcal.training.models import check_runtime, ensure_model
    from rlcal.training.tracking import finish_wandb, setup_wandb
    from rlcal.training.warmup import run_warmup

    check_runtime(recipe)
    plan = plan_run(recipe)  # before anything loads: a finished run, other settings, damaged checkpoints
    if plan.finished or plan.final_checkpoint:
        return finish_done_run(recipe, plan)
    set_seed(recipe.training.seed)
    base = ensure_model(recipe)
    dataset = load_train_dataset(recipe)  # column errors surface here, before any model is loaded
    reward_funcs = build_reward_funcs(recipe)
    callbacks = build_callbacks(recipe)  # loads the calibration eval set: a bad one fails before the warm-up
    save_recipe(recipe)  # the run's identity, from its start: a re-run with other settings is refused

    model_path, warmup, probe = base, None, None
    if recipe.warmup.steps > 0:
        model_path, warmup = run_warmup(recipe, base, dataset, reward_funcs[0], verbose=verbose)
    else:
        probe = probe_start(recipe, base, dataset, reward_funcs[0])

    checkpoint = plan.checkpoint
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    started_wandb = setup_wandb(recipe)
    trainer = build_trainer(recipe, model_path, dataset, reward_funcs, callbacks)
    quiet_trainer(trainer, "RL training", recipe.output_dir / "train_log.jsonl", verbose, append=bool(checkpoint))
    try:
        metrics = dict(trainer.train(resume_from_checkpoint=checkpoint).metrics)
        result = TrainResult(str(recipe.output_dir), model_path, checkpoint, metrics, warmup, probe)
        save_outputs(recipe, trainer, result)
    finally:
        finish_wandb(started_wandb)
    return result


def plan_run(recipe: Recipe) -> RunPlan:
    """What output_dir holds (`rlcal.training.runs`), decided by every process; the main one alone renames or
    removes files, and the others wait for it."""
    from accelerate import PartialState

    state = PartialState()
    plan = prepare_run(recipe, main_process=state.is_main_process)
    state.wait_for_everyone()
    return plan


def save_recipe(recipe: Recipe) -> None:
    from accelerate import PartialState

    if PartialState().is_main_process:
        atomic_write_text(recipe.output_dir / RECIPE_FILE, recipe.to_yaml())


def finish_done_run(recipe: Recipe, plan: RunPlan) -> TrainResult:
    """A run that had ended does nothing; one whose newest checkpoint reached max_steps (killed while saving) gets
    that checkpoint's model copied out and its summary written, without training a step past max_steps."""
    from accelerate import PartialState

    from rlcal.training.runs import checkpoint_state, finish_from_checkpoint

    out = recipe.output_dir
    if plan.finished:
        summary = json.loads((out / SUMMARY_FILE).read_text(encoding="utf-8"))
        return TrainResult(str(out), str(summary.get("model_path", out)), None, already_finished=True)
    checkpoint = str(plan.checkpoint)
    result = TrainResult(str(out), str(out), checkpoint, finished_from=checkpoint)
    if PartialState().is_main_process:
        finish_from_checkpoint(checkpoint, out)
        state = checkpoint_state(checkpoint)
        summary = {**result.summary(), "global_step": state["global_step"], "log_history": state["log_history"]}
        atomic_write_text(out / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))
    PartialState().wait_for_everyone()
    return result


def save_outputs(recipe: Recipe, trainer, result: TrainResult) -> None:
    """The adapter (or full weights) and tokenizer (every process: ZeRO-3 gathers), then, on the main process, the
    resolved recipe and train_summary.json (with the trainer's log history). train_summary.json comes last: its
    presence marks the run finished."""
    from accelerate import PartialState

    from rlcal.training.runs import checkpoint_state, whole_run_train_loss

    state = trainer.state
    if result.resumed_from and "train_loss" in result.metrics:  # transformers' covers the resumed steps only
        resumed_at = int(checkpoint_state(result.resumed_from)["global_step"])
        since = result.metrics["train_loss"]
        result.metrics["train_loss"] = whole_run_train_loss(state.log_history, resumed_at, since, state.global_step)
        result.metrics["train_loss_since_resume"] = since
    trainer.save_model(str(recipe.output_dir))
    if PartialState().is_main_process:
        atomic_write_text(recipe.output_dir / RECIPE_FILE, recipe.to_yaml())
        summary = {**result.summary(), "global_step": state.global_step, "log_history": state.log_history}
        atomic_write_text(recipe.output_dir / SUMMARY_FILE, json.dumps(summary, indent=2, default=str))


def result_lines(result: TrainResult) -> list[str]:
    """The few lines `rlcal train` ends with: where the model is, the last logged rates, where the logs are (the
    whole summary is in train_summary.json; --verbose prints it)."""
    from pathlib import Path

    from rlcal.common.progress import postfix

    if result.already_finished:
        return [
            f"rlcal train: {result.output_dir} already holds this run, finished; nothing to do "
            "(resume: never trains it again from scratch)"
        ]
    log = Path(result.output_dir) / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
    last = next((postfix(r) for r in reversed(rows) if any(k.startswith("rewards/") for k in r)), {})
    resumed = f" (resumed from {result.resumed_from})" if result.resumed_from else ""
    if result.finished_from:
        resumed = f" (finished from {result.finished_from}, which had reached max_steps)"
    numbers = [f"{k} {v}" for k, v in last.items()]
    if "train_runtime" in result.metrics:
        numbers.append(f"{result.metrics['train_runtime']:.0f}s")
    lines = [f"rlcal train: trained from {result.model_path}{resumed}; saved to {result.output_dir}"]
    if numbers:
        lines.append("  last log: " + ", ".join(numbers))
    lines.append(f"  logs: {log}; summary: {Path(result.output_dir) / 'train_summary.json'}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
