"""`rlcal eval`: the command line of an evaluation (flags derived from the QA-task spec, `--recipe`, model choice).

    rlcal eval --model outputs/pretrain --data world/qa.jsonl --split-filter eval --out outputs/eval/base
    rlcal eval --recipe recipes/toy/grpo/config_confidence_target.yaml --out outputs/eval/ct
    rlcal eval --help

What it computes and writes is in `rlcal.evaluation.evaluate` (predictions) and `rlcal.evaluation.sweep` (metrics,
files); docs/evaluation.md describes every flag.
"""

from __future__ import annotations

import argparse
import json
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import check_model_ref, check_out_dir
from rlcal.core.aggregate import DEFAULT_RESAMPLES, MAX_BINS, MAX_RESAMPLES
from rlcal.core.grading import GRADERS
from rlcal.core.prompts import FORMATS
from rlcal.core.thresholds import DEFAULT_THRESHOLDS
from rlcal.data.qa import check_columns
from rlcal.data.task import GRADING_FIELDS, PROMPT_FIELDS, SOURCE_FIELDS, TASK_FIELDS, QATask, read_recipe_file
from rlcal.evaluation import CONFIDENCE_METHODS, POLICIES
from rlcal.evaluation.evaluate import evaluate_model
from rlcal.evaluation.models import check_adapter_ref, check_device, load_model
from rlcal.evaluation.sweep import EVAL_FILES, format_summary, parse_thresholds, write_eval

# ---- CLI ---------------------------------------------------------------------------------------------------------


# `rlcal eval`'s spelling of each QATask field: `--field-name` unless listed here (every spelling README and docs
# ever used keeps working; the first is the one help shows).
TASK_FLAGS: dict[str, tuple[str, ...]] = {
    "source": ("--data", "--source"),
    "prompt_format": ("--format", "--prompt-format"),
}
# Shorthands that set one entry of `columns` each (the flags rlcal eval always had).
COLUMN_FLAGS = {"question": "--question-column", "answer": "--answer-column", "aliases": "--aliases-column"}
TASK_CHOICES: dict[str, Sequence[str]] = {"prompt_format": FORMATS, "grader": sorted(GRADERS)}


def task_flags(name: str) -> tuple[str, ...]:
    """The command-line spellings of QATask field `name`."""
    return TASK_FLAGS.get(name, ("--" + name.replace("_", "-"),))


def _null_or(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """`null` unsets an optional value (as in `rlcal train` overrides); anything else is converted."""

    def parse(text: str) -> Any:
        return None if text == "null" else convert(text)

    parse.__name__ = convert.__name__  # argparse names the type in its errors: "invalid int value: 'x'"
    return parse


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per `QATask` field, derived from the dataclass (help texts, types, optionality), plus the
    --question-column/--answer-column/--aliases-column shorthands. Flags that are not given are absent from the
    namespace, so a value from --recipe is only overridden by a flag the user wrote."""
    from dataclasses import MISSING, fields

    hints = typing.get_type_hints(QATask)
    group = parser.add_argument_group(
        "QA task (rlcal.data.task.QATask)",
        "Which rows, how each becomes a prompt, how replies are graded. Each defaults to the --recipe's value, "
        "else to the default shown; `null` unsets an optional value.",
    )
    for f in fields(QATask):
        args = typing.get_args(hints[f.name]) or (hints[f.name],)
        default = "" if f.default in (MISSING, None) or len(str(f.default)) > 40 else f" (default: {f.default})"
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata["help"] + default}
        if f.name in TASK_CHOICES:
            kwargs["choices"] = TASK_CHOICES[f.name]
        elif any(typing.get_origin(a) is list for a in args):
            kwargs.update(nargs="+", metavar="PHRASE")
        else:
            convert = int if int in args else str
            kwargs["type"] = _null_or(convert) if type(None) in args else convert
        group.add_argument(*task_flags(f.name), **kwargs)
    for column, flag in COLUMN_FLAGS.items():
        group.add_argument(
            flag,
            dest=f"{column}_column",
            default=argparse.SUPPRESS,
            help=f"Column holding the {column} (shorthand for --columns '{{{column}: NAME}}').",
        )


def eval_task(args: argparse.Namespace, recipe: Mapping[str, Any] | None = None) -> QATask:
    """The QA task `rlcal eval` evaluates, from --recipe (already read: `recipe`) and the task flags.

    With a recipe: prompt and grading are the ones training used (`data:` + `reward:`), and the eval set is the
    calibration callback's held-out one (`calibration:`, its max_samples default 256 included) unless --data
    names another, in which case none of `calibration:`'s row settings apply. Every flag given overrides.
    """
    given = {name: getattr(args, name) for name in TASK_FIELDS if hasattr(args, name)}
    given = {k: None if v == ["null"] else v for k, v in given.items()}
    path = getattr(args, "recipe", None)
    kwargs: dict[str, Any] = {}
    if recipe is not None:
        task = QATask.from_recipe(recipe, "data", path=path)  # validates the data and reward sections
        kwargs = {k: getattr(task, k) for k in PROMPT_FIELDS + GRADING_FIELDS}
        if "source" not in given:
            calibration = recipe.get("calibration")
            if not (isinstance(calibration, Mapping) and calibration.get("data")):
                raise RlcalError(f"{path}: calibration.data is not set, so the recipe names no eval set; give --data")
            held = QATask.from_recipe(recipe, "calibration", path=path)
            kwargs.update({k: getattr(held, k) for k in SOURCE_FIELDS})
    kwargs.update(given)
    shorthand = {c: getattr(args, f"{c}_column") for c in COLUMN_FLAGS if hasattr(args, f"{c}_column")}
    if shorthand:
        try:
            columns = check_columns(kwargs.get("columns"))
        except ValueError as exc:
            raise RlcalError(f"--columns: {exc}") from None
        kwargs["columns"] = {**(columns or {}), **shorthand}
    if not kwargs.get("source"):
        raise RlcalError("no eval set: give --data (or --recipe with a calibration.data section)")
    try:
        return QATask(**kwargs)
    except ValueError as exc:
        raise RlcalError(str(exc)) from None


def adapter_base(adapter: str | Path) -> str | None:
    """The base model a PEFT adapter was trained on (`base_model_name_or_path` in its adapter_config.json)."""
    try:
        return json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None


def eval_model(args: argparse.Namespace, recipe: Mapping[str, Any] | None = None) -> tuple[str, str | None]:
    """(model, adapter) to evaluate: --model/--adapter as given; --adapter alone: on the base it was made for;
    neither, with --recipe: what `rlcal train` left in `training.output_dir` (its LoRA adapter on the base model
    the adapter names, which is the warmed-up model when the recipe has a warm-up, or the full weights)."""
    model, adapter = args.model, args.adapter
    if model is None and adapter is not None:
        model = adapter_base(adapter)
        if model is None:
            raise RlcalError(f"--adapter {adapter} does not name its base model (adapter_config.json); give --model")
    if model is not None:
        return model, adapter
    if recipe is None:
        raise RlcalError("give --model (or --recipe, to evaluate the model it trained)")
    training = recipe.get("training")
    out = training.get("output_dir") if isinstance(training, Mapping) else None
    if not out:
        raise RlcalError(f"{args.recipe}: training.output_dir is not set, so there is no trained model; give --model")
    if (Path(out) / "adapter_config.json").is_file():
        base = adapter_base(out) or (recipe.get("model") or {}).get("model_name_or_path")
        if base:
            return str(base), str(out)
    if (Path(out) / "config.json").is_file():
        return str(out), None
    raise RlcalError(f"{args.recipe}: no trained model in {out} yet (train first, or give --model)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipe",
        help="Training recipe YAML: evaluate with exactly its prompts (data:), grader and abstain phrases (reward:), "
        "on its held-out set (calibration:) and, without --model/--adapter, the model it trained "
        "(training.output_dir). Flags override the recipe's values.",
    )
    parser.add_argument(
        "--model",
        help="Local model folder (HF format) or a Hugging Face model id (default: see --recipe and --adapter).",
    )
    parser.add_argument("--adapter", help="LoRA adapter folder to apply on top of --model (default: its base model).")
    parser.add_argument("--tokenizer", help="Tokenizer folder (default: --model).")
    add_task_arguments(parser)
    parser.add_argument(
        "--thresholds",
        default=",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS),
        help="Comma-separated confidence targets t in [0, 1) for the sweep; 0 is always included.",
    )
    parser.add_argument("--confidence", default="answer_prob", choices=CONFIDENCE_METHODS, help="Confidence method.")
    parser.add_argument(
        "--policy",
        default="prompt",
        choices=POLICIES,
        help="How the answer/abstain decision at each t is made: prompt (t stated in the prompt, the model "
        "decides) or posthoc (one reply at the t = 0 prompt, withheld iff its --confidence is <= t).",
    )
    parser.add_argument("--num-samples", type=int, default=8, help="k sampled answers for --confidence agreement.")
    parser.add_argument("--answer-span", default="line", choices=("line", "full"), help="Tokens scored as the answer.")
    parser.add_argument("--batch-size", type=int, default=32, help="Prompts per generation batch (per process).")
    parser.add_argument("--max-new-tokens", type=int, default=16, help="Generation length.")
    parser.add_argument("--n-bins", type=int, default=15, help="Equal-width bins for ECE.")
    parser.add_argument(
        "--bootstrap", type=int, default=DEFAULT_RESAMPLES, metavar="N",
        help="Bootstrap resamples of questions for the 95%% intervals (default %(default)s; 0: no intervals).",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
    parser.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    parser.add_argument("--seed", type=int, default=0, help="Seed for sampled answers (agreement) and weighted draws.")
    parser.add_argument("--out", required=True, help="Output folder.")


def run(args: argparse.Namespace) -> int:
    # Validate everything cheap (flags, recipe, task, which model) before loading a model.
    thresholds = parse_thresholds(args.thresholds)
    for name, cap in (("batch_size", None), ("max_new_tokens", 32_768), ("n_bins", MAX_BINS), ("num_samples", 1000)):
        value, flag = getattr(args, name), f"--{name.replace('_', '-')}"
        if value < 1:
            raise RlcalError(f"{flag} must be >= 1")
        if cap is not None and value > cap:
            raise RlcalError(f"{flag} must be at most {cap}, got {value}")
    if not 0 <= args.seed < 2**32:  # torch and numpy seeds
        raise RlcalError(f"--seed must be from 0 to 2**32 - 1, got {args.seed}")
    if not 0 <= args.bootstrap <= MAX_RESAMPLES:
        raise RlcalError(f"--bootstrap must be from 0 (no intervals) to {MAX_RESAMPLES}, got {args.bootstrap}")
    out = Path(args.out)
    check_out_dir(out, EVAL_FILES, "--out")
    check_device(args.device)
    recipe = read_recipe_file(args.recipe) if args.recipe else None
    task = eval_task(args, recipe)
    model_path, adapter = eval_model(args, recipe)
    check_model_ref(model_path)
    if args.tokenizer:
        check_model_ref(args.tokenizer, "tokenizer")
    if adapter is not None:
        check_adapter_ref(adapter)

    dataset = task.load(seed=args.seed)
    critic = None
    if args.confidence == "critic":  # before the model loads: a run without a value head fails at once
        from rlcal.evaluation.critic import load_critic

        critic = load_critic(adapter or model_path)
    model, tokenizer = load_model(model_path, adapter, args.device, args.dtype, args.tokenizer)
    if critic is not None:
        critic.head.to(next(model.parameters()).device)
    metrics, predictions = evaluate_model(
        model,
        tokenizer,
        dataset,
        template=task.prompt_template(),
        thresholds=thresholds,
        confidence_method=args.confidence,
        grader=task.answer_grader(),
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        n_bins=args.n_bins,
        n_resamples=args.bootstrap,
        num_samples=args.num_samples,
        answer_span=args.answer_span,
        seed=args.seed,
        policy=args.policy,
        critic=critic,
    )
    metrics["source"] = {
        "model": model_path,
        "adapter": adapter,
        "data": task.source,
        "split_filter": task.split_filter,
        "recipe": args.recipe,
    }

    from accelerate import PartialState

    if PartialState().is_main_process:
        name = Path(adapter or model_path).name or "model"
        paths = write_eval(out, metrics, predictions, title=name)
        print(format_summary(metrics))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
