"""GRPO / RLOO training with calibrated rewards on TRL, with LoRA, resumable checkpoints and W&B logging.

    rlcal train recipes/toy/grpo/config_confidence_target.yaml             # CPU, embedded world
    rlcal train RECIPE.yaml --training.learning_rate 5e-5 --max_steps 50    # CLI overrides the YAML
    rlcal train RECIPE.yaml --dry-run                                       # print resolved recipe + first prompt
    accelerate launch --config_file launch/zero2.yaml -m rlcal.train --config RECIPE.yaml

What a run does, in order (everything that can fail on bad input fails before a model is loaded):
1. parse + validate the recipe (`rlcal.training.config`);
2. build the toy world and model when the recipe points at a `pretrain_recipe` and they are missing;
3. load the QA data, sample one confidence target t per row (seeded) and render it into the prompt;
4. optionally run the SFT warm-up (`warmup.steps > 0`): the base model's own greedy answers, with a share of
   "I don't know" targets, so RL starts from a policy that sometimes abstains; the LoRA is merged and cached in
   `output_dir/warmup/model`, and the fraction of GRPO groups with zero reward variance is probed before/after;
5. TRL `GRPOTrainer` (or `RLOOTrainer`) with a PEFT LoRA adapter and the reward from `rlcal.core.rewards`, which logs
   `rewards/<name>/mean` and `outcomes/{accuracy,abstain_rate,hallucination_rate,mean_threshold}`; rlcal adds
   `groups/frac_reward_zero_std`, the share of prompt groups whose completions all got the same reward (no
   learning signal; see `trainer_class` for why TRL's own `frac_reward_zero_std` is not enough);
6. resume from the newest `checkpoint-*` in `output_dir` (`resume: auto`), save the adapter, the tokenizer, the
   resolved recipe (`rlcal_recipe.yaml`) and `train_summary.json` into `output_dir`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_text, check_model_ref
from rlcal.training.config import Recipe, load_recipe

logger = logging.getLogger("rlcal.training.train")

WARMUP_VERSION = 2  # bump when the warm-up targets change, so cached warm-up models are rebuilt
ZERO_STD_WARN = 0.9  # warn when at least this share of groups has identical rewards in the first logs


# ---- command line ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "Recipe sections: model (trl ModelConfig + pretrain_recipe), data, reward, warmup, training (trl "
        "GRPOConfig/RLOOConfig fields), wandb, calibration; top-level keys trainer and resume. Override any key with "
        "--section.key value (bare --key: a trainer field, else the one section that has it). See docs/training.md."
    )
    parser.add_argument("recipe", nargs="?", help="Recipe YAML.")
    # REMAINDER on --config keeps `--config RECIPE.yaml --key value ...` (the `accelerate launch -m` spelling)
    # parseable: the override keys are free-form, so argparse must not try to recognise them.
    parser.add_argument(
        "--config", nargs=argparse.REMAINDER, metavar="RECIPE.yaml [--key value ...]", help="Recipe YAML + overrides."
    )
    parser.add_argument("--dry-run", action="store_true", help="Print the resolved recipe and first prompt; exit.")
    parser.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="--section.key value pairs overriding the recipe, e.g. --training.learning_rate 1e-5 --max_steps 20.",
    )


def _split_args(args: argparse.Namespace) -> tuple[str, list[str], bool]:
    """The recipe path, the override tokens and --dry-run, wherever they appeared on the command line."""
    config = list(args.config or [])
    if args.config is not None and (not config or config[0].startswith("--")):
        raise RlcalError("--config needs a recipe path: --config RECIPE.yaml [--key value ...]")
    if config and args.recipe:
        raise RlcalError(f"two recipes given: {args.recipe} and --config {config[0]}")
    path = args.recipe or (config[0] if config else None)
    if not path:
        raise RlcalError("no recipe given: rlcal train RECIPE.yaml [--key value ...]")
    dry_run = bool(args.dry_run)
    overrides: list[str] = []
    for token in config[1:] + list(args.overrides or []):  # REMAINDER also swallows our own flag after the path
        if token in ("--dry-run", "--dry_run"):
            dry_run = True
        else:
            overrides.append(token)
    return path, overrides, dry_run


def run(args: argparse.Namespace) -> int:
    path, overrides, dry_run = _split_args(args)
    recipe = load_recipe(path, overrides)
    _setup_logging()
    for note in recipe.notes:
        logger.warning(note)
    if dry_run:
        print(recipe.to_yaml(), flush=True)  # the config first: it prints even when the data cannot be loaded
        print(first_prompt_report(recipe))
        return 0
    result = train(recipe)
    from accelerate import PartialState

    if PartialState().is_main_process:  # one summary, not one per GPU
        print(json.dumps(result.summary(), indent=2, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point for `python -m rlcal.train` / `accelerate launch -m rlcal.train --config RECIPE.yaml`."""
    parser = argparse.ArgumentParser(prog="rlcal.training.train", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    try:
        return int(run(parser.parse_args(argv)) or 0)
    except RlcalError as exc:
        print(f"rlcal train: error: {exc}", file=sys.stderr)
        return 2


def _setup_logging() -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logger.setLevel(logging.INFO)


# ---- data ------------------------------------------------------------------------------------------------------


def _local_source_missing(source: str) -> bool:
    from rlcal.data.qa import LOCAL_FORMATS

    return Path(source).suffix.lower() in LOCAL_FORMATS and not Path(source).is_file()


def load_train_dataset(recipe: Recipe):
    """The RL dataset: QA rows with `threshold` (t, sampled per row with the training seed) and `prompt`."""
    from rlcal.data.qa import load_qa_dataset, prepare_prompts

    d = recipe.data
    ds = load_qa_dataset(
        d.source,
        split=d.split,
        subset=d.subset,
        columns=d.columns,
        split_filter=d.split_filter,
        split_column=d.split_column,
        max_samples=d.max_samples,
        weight_column=d.weight_column,
        seed=recipe.training.seed,
    )
    ds = prepare_prompts(ds, d.prompt_template(), recipe.reward.sampler(), seed=recipe.training.seed)
    empty = sum(1 for a in ds["answer"] if not str(a).strip())
    if empty == len(ds):
        raise RlcalError(f"{d.source}: every answer is empty; check data.columns (answer -> {d.columns})")
    return ds


def first_prompt(recipe: Recipe) -> tuple[Any, float, str]:
    """(prompt, t, where it came from) for the first training row; a placeholder when the data is not built yet."""
    d = recipe.data
    if _local_source_missing(d.source) and recipe.model.pretrain_recipe:
        t = recipe.reward.sampler().sample(1, seed=recipe.training.seed)[0]
        prompt = d.prompt_template().render("<question from the world, built on first run>", t)
        return prompt, t, f"{d.source} (not built yet: the first run builds it via {recipe.model.pretrain_recipe})"
    ds = load_train_dataset(recipe)
    return ds[0]["prompt"], ds[0]["threshold"], f"{d.source} ({len(ds)} rows)"


def first_prompt_report(recipe: Recipe) -> str:
    """The first training prompt as `--dry-run` shows it (loads the data, never a model)."""
    prompt, t, where = first_prompt(recipe)
    shown = prompt if isinstance(prompt, str) else json.dumps(prompt, indent=2, ensure_ascii=False)
    return f"# first prompt (t = {t}) from {where}:\n{shown}"


# ---- models ----------------------------------------------------------------------------------------------------


def ensure_model(recipe: Recipe) -> str:
    """The base model path; builds the toy world + model first when `model.pretrain_recipe` says how."""
    name = recipe.model.model_name_or_path
    if recipe.model.pretrain_recipe:  # cached: only a missing or stale (other settings) model is rebuilt
        try:
            from rlcal.world.pretrain import ensure_pretrained
        except ImportError as exc:
            raise RlcalError(f"model.pretrain_recipe needs rlcal.world.pretrain, which is not available: {exc}") from exc
        from accelerate import PartialState

        with PartialState().main_process_first():  # one process builds, the others then find it cached
            ensure_pretrained(recipe.model.pretrain_recipe)  # its output_dir is model_name_or_path (validated)
    check_model_ref(name)
    return name


def _model_init_kwargs(recipe: Recipe) -> dict[str, Any]:
    m = recipe.model
    kwargs: dict[str, Any] = {"dtype": m.dtype or "auto", "trust_remote_code": _trust_remote_code(recipe)}
    if m.model_revision and m.model_revision != "main":
        kwargs["revision"] = m.model_revision
    if m.attn_implementation:
        kwargs["attn_implementation"] = m.attn_implementation
    if m.load_in_4bit or m.load_in_8bit:
        from accelerate import PartialState

        kwargs["device_map"] = {"": PartialState().local_process_index}  # each process holds its own quantized copy
    kwargs.update(recipe.training.model_init_kwargs or {})  # explicit training.model_init_kwargs win
    return kwargs


def _trust_remote_code(recipe: Recipe) -> bool:
    return bool(getattr(recipe.training, "trust_remote_code", False))  # a trl trainer-config field


def load_tokenizer(path: str, recipe: Recipe):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        path, padding_side="left", truncation_side="left", trust_remote_code=_trust_remote_code(recipe)
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if recipe.data.prompt_format == "chat" and not tok.chat_template:
        raise RlcalError(f"data.prompt_format is chat but the tokenizer of {path} has no chat template")
    return tok


def _check_runtime(recipe: Recipe) -> None:
    """Environment checks that need no model: quantization backends, calibration hook, ZeRO-3 + warm-up."""
    if recipe.model.load_in_4bit or recipe.model.load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise RlcalError("model.load_in_4bit/8bit needs bitsandbytes: pip install bitsandbytes") from exc
    if recipe.warmup.steps and os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE") == "3":
        raise RlcalError("warmup cannot merge its adapter under ZeRO-3; run it once without ZeRO-3 or set steps 0")
    if recipe.calibration.data is not None:
        try:
            from rlcal.training.callbacks import CalibrationCallback  # noqa: F401
        except ImportError as exc:
            raise RlcalError(
                "calibration.data is set but this rlcal has no CalibrationCallback; set calibration.data: null"
            ) from exc


# ---- probing the learning signal -------------------------------------------------------------------------------


def _render_for_generation(prompts: Sequence[Any], tokenizer) -> list[str]:
    if prompts and not isinstance(prompts[0], str):
        return [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    return list(prompts)


def generate(
    model,
    tokenizer,
    prompts: Sequence[Any],
    max_new_tokens: int,
    batch_size: int = 32,
    desc: str = "generate",
    **sampling,
):
    """Completions for `prompts` (strings or chat messages), `num_return_sequences` per prompt, in order."""
    import torch
    from tqdm.auto import tqdm

    texts = _render_for_generation(prompts, tokenizer)
    n_ret = sampling.get("num_return_sequences", 1)
    out: list[str] = []
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    special = tokenizer.bos_token is not None and all(t.startswith(tokenizer.bos_token) for t in texts)
    try:
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=desc, leave=False, disable=len(starts) < 2):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=not special).to(device)
            with torch.no_grad():
                ids = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id,
                    **sampling,
                )
            completions = tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
            assert len(completions) == len(chunk) * n_ret
            out.extend(completions)
    finally:
        model.train(was_training)
    return out


def probe_group_variance(
    model,
    tokenizer,
    dataset,
    reward,
    num_prompts: int,
    num_generations: int,
    temperature: float,
    max_new_tokens: int,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> dict[str, float]:
    """Sample `num_generations` completions for `num_prompts` rows as GRPO would and measure the learning signal:
    `frac_reward_zero_std` (groups whose rewards are all equal: zero advantage everywhere) plus outcome rates."""
    import torch

    from rlcal.core.rewards import outcome_stats

    rows = dataset.shuffle(seed=seed).select(range(min(num_prompts, len(dataset))))
    torch.manual_seed(seed)
    completions = generate(
        model,
        tokenizer,
        rows["prompt"],
        max_new_tokens,
        desc="probe",
        do_sample=True,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k or None,
        num_return_sequences=num_generations,
    )
    columns = {name: [v for v in rows[name] for _ in range(num_generations)] for name in rows.column_names}
    prompts = columns.pop("prompt")
    rewards = reward(prompts=prompts, completions=completions, **columns)
    groups = [rewards[i : i + num_generations] for i in range(0, len(rewards), num_generations)]
    zero = sum(1 for g in groups if max(g) - min(g) <= 1e-6)
    grade = getattr(reward, "outcomes", None)  # rlcal rewards expose their grading; other callables may not
    stats = outcome_stats(grade(completions, **columns), columns.get("threshold")) if grade else {}
    return {
        "prompts": len(groups),
        "num_generations": num_generations,
        "frac_reward_zero_std": zero / len(groups),
        "reward_mean": sum(rewards) / len(rewards),
        **{k: v for k, v in stats.items()},
    }


def expected_answer_gradient(
    p: float, t: float, answer_rate: float, num_generations: int, scale_rewards: str
) -> float:
    """Exact expected GRPO policy gradient on the logit of "answer" (vs "I don't know") for one prompt.

    Each completion answers with probability `answer_rate` and, when it answers, is correct with probability `p`;
    rewards are +1 / 0 / -t/(1-t). The advantage is r - mean(group), divided by the group std for
    `scale_rewards="group"` (TRL's default; `batch` divides by one positive batch-wide number and has the sign of
    `none`). The score-optimal direction is sign(p - t); per-group std scaling can point the other way, which is
    why the recipes set `scale_rewards` explicitly (docs/training.md).
    """
    from rlcal.core.thresholds import penalty

    g, q, pen = num_generations, answer_rate, penalty(t)
    probs = (q * p, q * (1 - p), 1 - q)  # correct, wrong, abstain
    values = (1.0, -pen, 0.0)
    answered = (1.0, 1.0, 0.0)
    total = 0.0
    for c in range(g + 1):  # the advantage depends only on the counts, so sum over multinomial counts: O(G^2)
        for w in range(g + 1 - c):
            counts = (c, w, g - c - w)
            prob = math.factorial(g) / math.prod(math.factorial(k) for k in counts)
            prob *= math.prod(pk**k for pk, k in zip(probs, counts, strict=True))
            if prob == 0.0:
                continue
            mean = sum(k * v for k, v in zip(counts, values, strict=True)) / g
            scale = 1.0
            if scale_rewards == "group":
                var = sum(k * (v - mean) ** 2 for k, v in zip(counts, values, strict=True)) / (g - 1)
                scale = 1.0 / (math.sqrt(var) + 1e-4)
            total += (
                prob * scale * sum(k * (v - mean) * (a - q) for k, v, a in zip(counts, values, answered, strict=True))
            )
    return total


# ---- SFT warm-up -----------------------------------------------------------------------------------------------


def _warmup_signature(recipe: Recipe, base: str) -> dict[str, Any]:
    from dataclasses import asdict

    w = asdict(recipe.warmup)
    w.pop("probe_prompts")
    return {
        "version": WARMUP_VERSION,
        "base_model": str(base),
        "warmup": w,
        "data": recipe.data.source,
        "seed": recipe.training.seed,
    }


def build_warmup_examples(recipe: Recipe, dataset, model, tokenizer) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Prompt/completion pairs for the warm-up: the model's own greedy answer (or the gold one), and "I don't
    know" on the rows chosen by `abstain_on`. Self-answers teach the format without teaching new facts."""
    from rlcal.core.grading import AnswerGrader

    w = recipe.warmup
    rows = dataset.shuffle(seed=recipe.training.seed).select(range(min(w.num_examples, len(dataset))))
    grader = AnswerGrader(recipe.reward.grader, recipe.reward.abstain_phrases)
    if w.abstain_on == "wrong" or w.answer_target == "self":
        greedy = generate(model, tokenizer, rows["prompt"], w.max_new_tokens, desc="warm-up targets", do_sample=False)
        greedy = [g.strip().splitlines()[0].strip() if g.strip() else "" for g in greedy]
    else:  # random abstentions with gold answers: the base model's own answers are not needed
        greedy = [""] * len(rows)
    rng = random.Random(recipe.training.seed)
    examples, n_abstain, n_correct = [], 0, 0
    for row, answer in zip(rows, greedy, strict=True):
        outcome = grader(answer, row["answer"], row["aliases"], row["question"])
        n_correct += outcome == "correct"
        if w.abstain_on == "random":
            abstain = rng.random() < w.abstain_fraction
        else:
            abstain = outcome != "correct" and rng.random() < w.abstain_fraction
        # At t = 0 the prompt asks for a best guess (0-1 grading: abstaining never pays), so never teach an
        # abstention there; otherwise "I don't know" spreads to t = 0 and RL has nothing that pulls it back.
        abstain = abstain and row["threshold"] > 0
        if abstain:
            target = w.abstain_text
        elif w.answer_target == "gold" or not answer:
            target = row["answer"]
        else:
            target = answer
        n_abstain += abstain
        prompt = row["prompt"]
        completion = [{"role": "assistant", "content": target}] if not isinstance(prompt, str) else " " + target
        examples.append({"prompt": prompt, "completion": completion})
    stats = {
        "examples": len(examples),
        "base_greedy_accuracy": n_correct / len(examples) if any(greedy) else None,
        "abstain_targets": n_abstain / len(examples),
    }
    return examples, stats


def run_warmup(recipe: Recipe, base: str, dataset, reward) -> tuple[str, dict[str, Any]]:
    """SFT warm-up (LoRA, merged afterwards) -> path of the warmed-up model. Cached by its settings."""
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer, get_peft_config

    state = PartialState()
    out = recipe.output_dir / "warmup"
    model_dir = out / "model"
    summary_path = out / "warmup.json"
    signature = _warmup_signature(recipe, base)
    if (model_dir / "config.json").is_file() and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if summary.get("signature") == signature:
            logger.info("warm-up: reusing %s", model_dir)
            return str(model_dir), summary
        raise RlcalError(f"{model_dir} was built with other warm-up settings; remove it or use another output_dir")

    args = recipe.training
    tokenizer = load_tokenizer(base, recipe)
    model = AutoModelForCausalLM.from_pretrained(base, **_model_init_kwargs(recipe))
    if args.use_cpu:
        model.to("cpu")
    elif torch.cuda.is_available():
        model.to(state.device)
    summary: dict[str, Any] = {"signature": signature}
    examples_path = out / "sft_targets.jsonl"
    with state.main_process_first():
        if state.is_main_process:
            examples, summary["targets"] = build_warmup_examples(recipe, dataset, model, tokenizer)
            atomic_write_text(examples_path, "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in examples))
            atomic_write_text(out / "targets.json", json.dumps(summary["targets"]))
        else:
            summary["targets"] = json.loads((out / "targets.json").read_text())
    examples = [json.loads(line) for line in examples_path.read_text(encoding="utf-8").splitlines()]
    probe = _probe_settings(recipe)
    if recipe.warmup.probe_prompts and state.is_main_process:
        summary["probe_before"] = probe_group_variance(model, tokenizer, dataset, reward, **probe)
        logger.info("warm-up: learning signal before: %s", _fmt(summary["probe_before"]))

    sft_args = SFTConfig(
        output_dir=str(out / "sft"),
        max_steps=recipe.warmup.steps,
        learning_rate=recipe.warmup.learning_rate,
        per_device_train_batch_size=recipe.warmup.batch_size,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=max(1, recipe.warmup.steps // 10),
        logging_steps=max(1, recipe.warmup.steps // 5),
        save_strategy="no",
        report_to=[],
        seed=args.seed,
        use_cpu=args.use_cpu,
        bf16=bool(args.bf16),
        fp16=bool(args.fp16),
        activation_checkpointing=bool(args.activation_checkpointing),
        completion_only_loss=True,
        dataset_num_proc=None,
    )
    trainer = SFTTrainer(
        model=model,
        args=sft_args,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        peft_config=get_peft_config(recipe.model) if recipe.warmup.use_peft else None,
    )
    logger.info("warm-up: %d SFT steps on %d examples", recipe.warmup.steps, len(examples))
    result = trainer.train()
    summary["train_loss"] = result.training_loss
    merged = trainer.model
    if hasattr(merged, "merge_and_unload"):
        merged = merged.merge_and_unload()
    if state.is_main_process:
        tmp = Path(tempfile.mkdtemp(prefix=".model-", dir=out))
        merged.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if recipe.warmup.probe_prompts:
            summary["probe_after"] = probe_group_variance(merged, tokenizer, dataset, reward, **probe)
            logger.info("warm-up: learning signal after: %s", _fmt(summary["probe_after"]))
        if model_dir.exists():
            import shutil

            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
        atomic_write_text(summary_path, json.dumps(summary, indent=2))
    state.wait_for_everyone()
    del trainer, merged, model
    return str(model_dir), summary


def _probe_settings(recipe: Recipe) -> dict[str, Any]:
    a = recipe.training
    return {
        "num_prompts": recipe.warmup.probe_prompts,
        "num_generations": a.num_generations,
        "temperature": a.temperature,
        "max_new_tokens": a.max_completion_length or 32,
        "top_p": a.top_p,
        "top_k": a.top_k or 0,
        "seed": a.seed,
    }


def _fmt(stats: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())


# ---- W&B -------------------------------------------------------------------------------------------------------


def _wandb_credentials() -> bool:
    """Whether a W&B API key is available (env or ~/.netrc). Only its presence is checked; it is never read out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def setup_wandb(recipe: Recipe) -> bool:
    """Start the W&B run (main process) with the recipe as its config. Returns whether a run was started.

    Offline works without network; online without credentials falls back to offline, and an online start that
    fails (no network) retries offline instead of crashing the training. transformers' WandbCallback then reuses
    this run and adds the TrainingArguments to its config.
    """
    args = recipe.training
    if "wandb" not in (args.report_to or []):
        return False
    cfg = recipe.wandb
    mode = cfg.mode or os.environ.get("WANDB_MODE") or ("online" if _wandb_credentials() else "offline")
    if mode == "online" and not _wandb_credentials():
        logger.warning("wandb: no API key found (WANDB_API_KEY or `wandb login`); logging offline")
        mode = "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_PROJECT"] = cfg.project
    if cfg.entity:
        os.environ["WANDB_ENTITY"] = cfg.entity
    from accelerate import PartialState

    if not PartialState().is_main_process or mode == "disabled":
        return False
    import wandb

    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    id_file = recipe.output_dir / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() and recipe.resume != "never" else None
    init = dict(
        project=cfg.project,
        entity=cfg.entity,
        name=cfg.name or args.run_name,
        tags=cfg.tags,
        group=cfg.group,
        config={"rlcal": recipe.to_dict()},
        dir=str(recipe.output_dir),
        id=run_id,
        resume="allow" if run_id else None,
    )
    try:
        run = wandb.init(mode=mode, **init)
    except Exception as exc:  # noqa: BLE001 - any network/auth failure must not end the training
        if mode != "online":
            raise RlcalError(f"wandb could not start ({mode}): {exc}") from exc
        logger.warning("wandb: online start failed (%s); logging offline instead", type(exc).__name__)
        os.environ["WANDB_MODE"] = "offline"
        run = wandb.init(mode="offline", **init)
    atomic_write_text(id_file, run.id)
    return True


# ---- training --------------------------------------------------------------------------------------------------


def _zero_std_monitor():
    from transformers import TrainerCallback

    class ZeroVarianceMonitor(TrainerCallback):
        """Warns when the run starts without a learning signal: the first `patience` logs all show at least 90 %
        of prompt groups with identical rewards. (Late in a run a high value is normal: a converged policy gives
        the same answer every time.)"""

        def __init__(self, patience: int = 3) -> None:
            self.patience, self.seen = patience, 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            frac = (logs or {}).get(GROUP_ZERO_STD)
            if frac is None or self.seen >= self.patience or not state.is_world_process_zero:
                return
            self.seen = self.seen + 1 if frac >= ZERO_STD_WARN else self.patience  # one good log: stop watching
            if self.seen == self.patience and frac >= ZERO_STD_WARN:
                logger.warning(
                    "%.0f%% of prompt groups have identical rewards (groups/frac_reward_zero_std) since the start: "
                    "almost no learning signal. Use warmup.steps or more num_generations (docs/training.md).",
                    100 * frac,
                )

    return ZeroVarianceMonitor()


def resolve_checkpoint(recipe: Recipe) -> str | None:
    """The checkpoint to resume from: `resume: auto` -> newest checkpoint-* in output_dir (or None)."""
    from transformers.trainer_utils import get_last_checkpoint

    if recipe.resume == "never":
        return None
    if recipe.resume != "auto":
        return recipe.resume
    if not recipe.output_dir.is_dir():
        return None
    return get_last_checkpoint(str(recipe.output_dir))


def build_reward_funcs(recipe: Recipe) -> list[Any]:
    from rlcal.core.rewards import build_reward

    return [build_reward(recipe.reward.name, **recipe.reward.reward_kwargs())]


GROUP_ZERO_STD = "groups/frac_reward_zero_std"


def trainer_class(name: str) -> type:
    """TRL's GRPOTrainer / RLOOTrainer, logging one more number: `groups/frac_reward_zero_std`.

    That is the share of prompt groups whose completions all got the same reward, so every advantage in the group
    is zero and the prompt teaches nothing. TRL's own `frac_reward_zero_std` is this number for
    scale_rewards group/none and for RLOO, but under `scale_rewards: batch` it tests the std of the whole batch
    (almost never zero), which would hide a dead learning signal; this one is per group whatever the scaling.
    """
    from trl import GRPOTrainer, RLOOTrainer

    base = GRPOTrainer if name == "grpo" else RLOOTrainer

    class Trainer(base):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            weights = self.reward_weights.to(rewards_per_func.device)
            rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # gathered over processes, in groups
            if g > 1 and rewards.numel() % g == 0:
                grouped = rewards.view(-1, g)
                spread = grouped.max(dim=1).values - grouped.min(dim=1).values
                self._metrics[mode][GROUP_ZERO_STD].append((spread <= 1e-6).float().mean().item())
            return rewards_per_func

    Trainer.__name__ = Trainer.__qualname__ = f"Rlcal{base.__name__}"
    return Trainer


def build_trainer(recipe: Recipe, model_path: str, dataset, reward_funcs: list[Any], callbacks: list[Any] = ()):
    """The TRL trainer for the recipe (GRPOTrainer or RLOOTrainer) with LoRA and the calibrated reward."""
    from trl import get_peft_config, get_quantization_config

    args = recipe.training
    args.model_init_kwargs = _model_init_kwargs(recipe)
    return trainer_class(recipe.trainer)(
        model=model_path,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(model_path, recipe),
        callbacks=list(callbacks),
        peft_config=get_peft_config(recipe.model),
        quantization_config=get_quantization_config(recipe.model),
    )


@dataclass
class TrainResult:
    output_dir: str
    model_path: str
    resumed_from: str | None
    metrics: dict[str, Any] = field(default_factory=dict)
    warmup: dict[str, Any] | None = None
    probe: dict[str, float] | None = None

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (None, {})}


def train(recipe: Recipe) -> TrainResult:
    """Run the whole training described by `recipe` (see the module docstring)."""
    from accelerate import PartialState
    from transformers import set_seed

    _setup_logging()
    _check_runtime(recipe)
    set_seed(recipe.training.seed)
    state = PartialState()
    base = ensure_model(recipe)
    dataset = load_train_dataset(recipe)  # column errors surface here, before any model is loaded
    reward_funcs = build_reward_funcs(recipe)
    callbacks: list[Any] = [_zero_std_monitor()]
    if recipe.calibration.data is not None:
        from rlcal.core.grading import AnswerGrader
        from rlcal.training.callbacks import CalibrationCallback

        grader = AnswerGrader(recipe.reward.grader, recipe.reward.abstain_phrases)
        cal_dir = str(recipe.output_dir / "calibration")
        callbacks.append(CalibrationCallback(recipe.calibration, recipe.data.prompt_template(), grader, cal_dir))

    model_path, warmup, probe = base, None, None
    if recipe.warmup.steps > 0:
        model_path, warmup = run_warmup(recipe, base, dataset, reward_funcs[0])
    elif recipe.warmup.probe_prompts and state.is_main_process:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(base, **_model_init_kwargs(recipe))
        probe = probe_group_variance(
            model, load_tokenizer(base, recipe), dataset, reward_funcs[0], **_probe_settings(recipe)
        )
        logger.info("learning signal of the starting policy: %s", _fmt(probe))
        del model

    checkpoint = resolve_checkpoint(recipe)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)
    started_wandb = setup_wandb(recipe)
    trainer = build_trainer(recipe, model_path, dataset, reward_funcs, callbacks)
    for callback in callbacks:
        if hasattr(callback, "bind"):  # the calibration hook generates faster under ZeRO-3 when it has the trainer
            callback.bind(trainer)
    try:
        result = trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model(str(recipe.output_dir))  # the LoRA adapter (or full weights) + tokenizer
        metrics = dict(result.metrics)
        if state.is_main_process:
            atomic_write_text(recipe.output_dir / "rlcal_recipe.yaml", recipe.to_yaml())
            summary = TrainResult(str(recipe.output_dir), model_path, checkpoint, metrics, warmup, probe).summary()
            summary["log_history"] = trainer.state.log_history
            atomic_write_text(recipe.output_dir / "train_summary.json", json.dumps(summary, indent=2, default=str))
    finally:
        if started_wandb:
            import wandb

            wandb.finish()
    return TrainResult(str(recipe.output_dir), model_path, checkpoint, metrics, warmup, probe)


if __name__ == "__main__":
    sys.exit(main())
