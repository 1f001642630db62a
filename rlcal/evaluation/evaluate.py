"""`rlcal eval`: calibration (ECE, Brier, AUROC, reliability) and the behavioral-calibration sweep of a checkpoint.

    rlcal eval --model outputs/pretrain --data world/qa.jsonl --split-filter eval --out outputs/eval/base
    rlcal eval --model outputs/pretrain --adapter outputs/train/adapter --data world/qa.jsonl --out outputs/eval/rl
    rlcal eval --recipe RECIPE.yaml --out outputs/eval/rl        # the model, prompts, grading and held-out set of
    rlcal eval --recipe RECIPE.yaml --model BASE --out outputs/eval/base   # a training recipe; flags override
    accelerate launch -m rlcal.cli eval ...          # questions are split across processes and gathered

The QA task (data, prompt, grading) is a `rlcal.data.task.QATask`: one flag per field, derived from the dataclass
(`add_task_arguments`). With `--recipe` it is the task training used: prompts from the recipe's `data:` section,
grader and abstain phrases from `reward:`, the eval set from `calibration:` (the callback's held-out set) unless
`--data` names another; without --model/--adapter the model is what `rlcal train` saved in `training.output_dir`.

For every question and every confidence target t (default 0, 0.5, 0.75, 0.9; t = 0 is always run) the model is
prompted with the confidence-target instruction and its greedy reply graded by `rlcal.core.grading` (the same grader
the rewards use). Writes, into --out:
- `metrics.json`: `rlcal score`'s schema (n, ece, ece_equal_mass, mce, brier, auroc from `rlcal.core.metrics.summarize`,
  and `per_threshold[t]` = answer_rate, accuracy_answered, hallucination_rate, score at the t-prompt), plus
  `confidence_method`, `reliability` (bins for the diagram), `abstain_rate` / `hallucination_rate` / `accuracy`
  at the t = 0 prompt, and `sweep[t]`: the measured behaviour next to the ideal behaviorally calibrated policy
  (answer iff the t = 0 confidence exceeds t) and their gap (measured − ideal);
- `predictions.jsonl`: one row per (question, t): response, outcome, confidence, answer probability;
- `reliability.png` and `sweep.png`.

Calibration (ECE etc.) is computed at the t = 0 ("best guess") prompt over the questions the model answered there
(an abstention has no answer whose correctness a confidence could predict); `n` is that count, `n_questions` the
total and `abstain_rate` the rest. In the sweep's ideal policy those abstentions count as confidence 0 (never
answered). The library entry point shared with the training callback is `evaluate_model`.
"""

from __future__ import annotations

import argparse
import json
import math
import typing
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import check_model_ref, check_out_dir, staged_dir
from rlcal.core import metrics as M
from rlcal.core.aggregate import CALIBRATION_KEYS, DEFAULT_RESAMPLES, Record, aggregate
from rlcal.core.grading import GRADERS, AnswerGrader
from rlcal.core.prompts import FORMATS, PromptTemplate
from rlcal.core.thresholds import DEFAULT_THRESHOLDS, check_threshold
from rlcal.data.qa import check_columns
from rlcal.data.task import GRADING_FIELDS, PROMPT_FIELDS, SOURCE_FIELDS, TASK_FIELDS, QATask, read_recipe_file
from rlcal.evaluation import CONFIDENCE_METHODS

SWEEP_KEYS = ("answer_rate", "accuracy_answered", "hallucination_rate", "score")


# ---- thresholds --------------------------------------------------------------------------------------------------


def threshold_key(t: float) -> str:
    """The JSON key of a threshold, exactly as `rlcal score` writes it: 0 -> "0", 0.75 -> "0.75"."""
    from rlcal.evaluation.score import threshold_key as score_key

    return score_key(float(t))


def parse_thresholds(spec: str | Iterable[float]) -> list[float]:
    """Thresholds from "0,0.5,0.75" or a list: sorted, unique, each checked to lie in [0, 1); t = 0 is always
    added (the t = 0 pass gives the confidences for ECE and for the ideal policy)."""
    items = [s for s in spec.replace(" ", "").split(",") if s] if isinstance(spec, str) else list(spec)
    out: set[float] = {0.0}
    for item in items:
        try:
            out.add(check_threshold(item))
        except ValueError as exc:
            raise RlcalError(f"bad threshold {item!r}: {exc}") from None
    return sorted(out)


# ---- data --------------------------------------------------------------------------------------------------------


def _rows(dataset: Any) -> list[dict[str, Any]]:
    """Question/answer/aliases rows from a datasets.Dataset or a list of mappings; clear errors for bad input."""
    column_names = getattr(dataset, "column_names", None)
    if column_names is not None:
        for name in ("question", "answer"):
            if name not in column_names:
                raise RlcalError(f"eval data has no {name!r} column (columns: {', '.join(column_names)})")
    rows = []
    for i, row in enumerate(dataset):
        if not isinstance(row, Mapping) or "question" not in row or "answer" not in row:
            raise RlcalError(f"eval row {i} needs 'question' and 'answer' fields, got {row!r:.120}")
        aliases = row.get("aliases") or []
        rows.append(
            {
                "question": str(row["question"]),
                "answer": str(row["answer"]),
                "aliases": [str(a) for a in aliases] if isinstance(aliases, list | tuple) else [],
            }
        )
    if not rows:
        raise RlcalError("the eval set is empty")
    return rows


# ---- prediction --------------------------------------------------------------------------------------------------


def predict(
    model: Any,
    tokenizer: Any,
    rows: Sequence[Mapping[str, Any]],
    template: PromptTemplate,
    thresholds: Sequence[float],
    confidence_method: str = "answer_prob",
    grader: AnswerGrader | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 16,
    num_samples: int = 8,
    answer_span: str = "line",
    seed: int = 0,
    on_batch: Callable[[int], Any] | None = None,
    index_offset: int = 0,
) -> list[dict[str, Any]]:
    """Generate, grade and score confidence for every (row, t): one prediction dict each, ordered by row then t.

    `answer_prob` (and its normalised variant) is recorded for every answer; `confidence` is the chosen method's
    value. `agreement` samples only at the t = 0 prompt (the one calibration is measured at): k extra generations
    per question, not per threshold.
    """
    from rlcal.evaluation.confidence import encode_prompts, greedy_generate, sample_agreement, verbal_confidence

    if confidence_method not in CONFIDENCE_METHODS:
        raise RlcalError(
            f"confidence method must be one of {', '.join(CONFIDENCE_METHODS)}, got {confidence_method!r}"
        )
    grader = grader or AnswerGrader()
    items = [(i, float(t)) for i in range(len(rows)) for t in thresholds]
    prompt_ids = encode_prompts(tokenizer, [template.render(rows[i]["question"], t) for i, t in items])
    generations = greedy_generate(model, tokenizer, prompt_ids, max_new_tokens, batch_size, answer_span, on_batch)
    responses = [g.response for g in generations]
    agreement: dict[int, float] = {}
    if confidence_method == "agreement":
        t0 = [k for k, (_, t) in enumerate(items) if t == 0.0]
        shares = sample_agreement(
            model,
            tokenizer,
            [prompt_ids[k] for k in t0],
            [responses[k] for k in t0],
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            on_batch=on_batch,
        )
        agreement = dict(zip(t0, shares, strict=True))
    verbal = verbal_confidence(responses) if confidence_method == "verbal" else [None] * len(items)
    out = []
    for k, ((i, t), gen) in enumerate(zip(items, generations, strict=True)):
        row = rows[i]
        outcome = grader(gen.response, row["answer"], row["aliases"], row["question"])
        confidence = {
            "answer_prob": gen.answer_prob,
            "answer_prob_norm": gen.answer_prob_norm,
            "agreement": agreement.get(k),
            "verbal": verbal[k],
        }[confidence_method]
        out.append(
            {
                "index": index_offset + i,
                "question": row["question"],
                "answer": row["answer"],
                "aliases": row["aliases"],
                "threshold": t,
                "response": gen.response,
                "outcome": outcome,
                "correct": outcome == "correct",
                "answered": outcome != "abstain",
                "confidence": confidence,
                "answer_prob": gen.answer_prob,
                "answer_prob_norm": gen.answer_prob_norm,
                "answer_logprob": gen.logprob,
                "n_answer_tokens": gen.span,
            }
        )
    return out


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int, int]:
    """Contiguous shard of n rows for process `rank`: (start, real rows, padded length). Every process gets the same
    padded length so all run the same number of batches (needed where generation holds collectives: ZeRO-3)."""
    per = -(-n // world)
    start = min(rank * per, n)
    return start, min(per, n - start), per


def _distributed_predict(rows: list[dict[str, Any]], run: Callable[..., list[dict[str, Any]]]) -> list[dict]:
    """Split rows across accelerate processes, run each shard, gather every prediction on every process.

    Shards are padded (repeating a row) to equal length and the padding dropped before gathering. A failure on one
    process is gathered too and re-raised everywhere, so no process is left waiting in a collective.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return run(rows, 0)
    start, real, per = shard_bounds(len(rows), state.process_index, state.num_processes)
    shard = rows[start : start + real]
    shard = shard + [shard[-1] if shard else rows[-1]] * (per - real)
    try:
        preds = [p for p in run(shard, start) if p["index"] < start + real]
        payload = [("ok", preds)]
    except Exception as exc:  # noqa: BLE001 - re-raised below on every process
        payload = [("error", f"process {state.process_index}: {type(exc).__name__}: {exc}")]
    gathered = gather_object(payload)
    errors = [p for status, p in gathered if status == "error"]
    if errors:
        raise RuntimeError("evaluation failed on " + "; ".join(errors))
    return [pred for _, preds in gathered for pred in preds]


# ---- metrics -----------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def compute_metrics(
    predictions: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float],
    confidence_method: str = "answer_prob",
    n_bins: int = 15,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics from predictions (pure numpy): calibration at t = 0, per-threshold behaviour, behavioral ECE, the
    ideal-policy sweep, and 95 % bootstrap intervals over questions (`n_resamples` seeded by `seed`; 0: none).
    Aggregation is `rlcal.core.aggregate`, shared with `rlcal score`; docs/metrics.md lists every key."""
    by_t: dict[float, list[Mapping[str, Any]]] = {float(t): [] for t in thresholds}
    for p in predictions:
        by_t.setdefault(float(p["threshold"]), []).append(p)
    for rows in by_t.values():
        rows.sort(key=lambda p: p["index"])
    t0 = by_t.get(0.0) or []
    if not t0:
        raise RlcalError("no predictions at t = 0: the eval set is empty")
    n_questions = len(t0)
    # In (question, t) order, whatever order the processes gathered them in: sums, bins and the bootstrap's
    # question order (hence its intervals) then do not depend on it.
    ordered = sorted(predictions, key=lambda p: (p["index"], float(p["threshold"])))
    records = [Record(p["outcome"], float(p["threshold"]), p["confidence"], p["index"]) for p in ordered]
    agg = aggregate(records, n_bins, calibration_threshold=0.0, n_resamples=n_resamples, seed=seed)
    calibration = agg["calibration"]
    scored = [p for p in t0 if p["answered"] and p["confidence"] is not None]
    conf = [float(p["confidence"]) for p in scored]
    correct = [bool(p["correct"]) for p in scored]
    out: dict[str, Any] = {k: calibration[k] for k in ("n", *CALIBRATION_KEYS)}
    if scored:
        extra = {"aurc": M.risk_coverage(conf, correct)["aurc"], "mean_confidence": sum(conf) / len(conf)}
    else:
        warnings.warn(
            "no answered question with a confidence at t = 0: calibration metrics are undefined", stacklevel=2
        )
        extra = {"aurc": None, "mean_confidence": None}
    per_threshold = agg["per_threshold"]
    # Ideal policy: answer iff the t = 0 confidence > t. No answer or no stated confidence counts as confidence 0.
    ideal_conf = [float(p["confidence"]) if p["answered"] and p["confidence"] is not None else 0.0 for p in t0]
    ideal_correct = [bool(p["correct"]) for p in t0]
    sweep = {}
    gaps = []
    for t in sorted(by_t):
        key = threshold_key(t)
        if key not in per_threshold:
            continue
        measured = {k: per_threshold[key][k] for k in SWEEP_KEYS}
        ideal = {k: v for k, v in M.ideal_policy(ideal_conf, ideal_correct, t).items() if k in SWEEP_KEYS}
        sweep[key] = {
            "measured": measured,
            "ideal": ideal,
            "gap": {k: _diff(measured[k], ideal[k]) for k in SWEEP_KEYS},
        }
        if t > 0:
            gaps.append(abs(sweep[key]["gap"]["answer_rate"]))
    t0_metrics = per_threshold[threshold_key(0.0)]
    behavior = agg["behavioral"]
    out.update(
        {
            "n_questions": n_questions,
            "n_no_confidence": sum(1 for p in t0 if p["answered"] and p["confidence"] is None),
            **extra,
            # The t = 0 row's own number: answered questions with or without a stated confidence alike.
            "accuracy_answered": t0_metrics["accuracy_answered"],
            "accuracy": t0_metrics["n_correct"] / n_questions,
            "abstain_rate": t0_metrics["n_abstain"] / n_questions,
            "hallucination_rate": t0_metrics["hallucination_rate"],
            "sweep_answer_rate_gap": sum(gaps) / len(gaps) if gaps else None,
            **{k: v for k, v in behavior.items() if k != "behavioral_bins"},
            "confidence_method": confidence_method,
            "thresholds": sorted(by_t),
            "per_threshold": per_threshold,
            "sweep": sweep,
            "reliability": calibration["reliability"],
            "behavioral_bins": behavior["behavioral_bins"],
            "n_bins": n_bins,
        }
    )
    if "ci" in agg:
        out["ci"] = agg["ci"]
        out["bootstrap"] = agg["bootstrap"]
    return _clean(out)


def evaluate_model(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    template: PromptTemplate | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    confidence_method: str = "answer_prob",
    grader: AnswerGrader | str | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 16,
    n_bins: int = 15,
    num_samples: int = 8,
    answer_span: str = "line",
    seed: int = 0,
    progress: bool | str = True,
    distributed: bool = True,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate calibration and behavioral calibration of `model` on `dataset` (rows with question/answer/aliases).

    Returns `(metrics, predictions)`: the `metrics.json` dict and one prediction dict per (question, t). With
    `distributed` (default) questions are split across accelerate processes and every process gets all results;
    a single process just runs them. `progress` shows a tqdm bar on the main process (a string sets its label).
    The model is used as given (eval mode, no gradients); callers handle adapters and parameter gathering.
    """
    from tqdm.auto import tqdm

    rows = _rows(dataset)
    thresholds = parse_thresholds(thresholds)
    template = template or PromptTemplate()
    if template.format == "chat" and not getattr(tokenizer, "chat_template", None):
        raise RlcalError("prompt format 'chat' needs a tokenizer with a chat template; this one has none")
    if isinstance(grader, str) or grader is None:
        grader = AnswerGrader(grader or "exact")
    for name, value in (("batch_size", batch_size), ("max_new_tokens", max_new_tokens), ("n_bins", n_bins)):
        if value < 1:
            raise RlcalError(f"{name} must be >= 1, got {value}")

    def run(shard: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
        from accelerate import PartialState

        extra = len(shard) if confidence_method == "agreement" else 0
        show = bool(progress) and PartialState().is_main_process
        desc = progress if isinstance(progress, str) else "eval"
        with tqdm(total=len(shard) * len(thresholds) + extra, desc=desc, disable=not show, leave=False) as bar:
            return predict(
                model,
                tokenizer,
                shard,
                template,
                thresholds,
                confidence_method,
                grader,
                batch_size,
                max_new_tokens,
                num_samples,
                answer_span,
                seed,
                on_batch=bar.update,
                index_offset=offset,
            )

    was_training = getattr(model, "training", False)
    model.eval()
    try:
        predictions = _distributed_predict(rows, run) if distributed else run(rows, 0)
    finally:
        if was_training:
            model.train()
    metrics = compute_metrics(predictions, thresholds, confidence_method, n_bins, n_resamples, seed)
    metrics["settings"] = {
        "format": template.format,
        "grader": grader.grader,
        "max_new_tokens": max_new_tokens,
        "answer_span": answer_span,
        "num_samples": num_samples if confidence_method == "agreement" else None,
        "seed": seed,
    }
    return metrics, predictions


# ---- output ------------------------------------------------------------------------------------------------------


EVAL_FILES = ("metrics.json", "predictions.jsonl", "reliability.png", "sweep.png")


def write_eval(
    out_dir: str | Path,
    metrics: Mapping[str, Any],
    predictions: Sequence[Mapping[str, Any]],
    plots: bool = True,
    title: str | None = None,
) -> dict[str, Path]:
    """Write metrics.json, predictions.jsonl, reliability.png and sweep.png into `out_dir`.

    Everything is written into a hidden sibling folder first, which then replaces `out_dir` in one rename
    (`rlcal.common.files.staged_dir`): a failure leaves the old folder as it was, and a folder holding files other
    than these is refused rather than replaced. Returns the written paths by name.
    """
    from rlcal.evaluation import plots as P

    with staged_dir(out_dir, owned=EVAL_FILES) as tmp:
        files = {"metrics": tmp / "metrics.json", "predictions": tmp / "predictions.jsonl"}
        files["metrics"].write_text(json.dumps(_clean(dict(metrics)), indent=2, allow_nan=False) + "\n")
        with files["predictions"].open("w") as fh:
            for p in predictions:
                fh.write(json.dumps(_clean(dict(p)), ensure_ascii=False, allow_nan=False) + "\n")
        if plots:
            label = title or "model"
            ece = metrics.get("ece")
            files["reliability"] = P.reliability_diagram(
                {label: metrics.get("reliability") or []},
                tmp / "reliability.png",
                title=f"Reliability ({metrics.get('confidence_method', 'confidence')}, t = 0 prompt)",
                ece={label: ece} if ece is not None else None,
            )
            sweep = metrics.get("sweep") or {}
            files["sweep"] = P.sweep_plot(
                {label: metrics.get("per_threshold") or {}},
                tmp / "sweep.png",
                ideal={label: {t: s["ideal"] for t, s in sweep.items()}} if sweep else None,
                title="Behavioral calibration sweep",
            )
    return {name: Path(out_dir) / path.name for name, path in files.items()}


def format_summary(metrics: Mapping[str, Any]) -> str:
    """A short human-readable summary: headline calibration numbers and the sweep table, measured values with their
    95 % bootstrap intervals (`0.542 [0.470, 0.610]`) when the metrics carry them."""

    def f(x: Any) -> str:
        return "—" if x is None else (f"{x:.4f}" if isinstance(x, float) else str(x))

    def f_ci(x: Any, interval: Sequence[float] | None) -> str:
        if x is None or not interval:
            return f(x)
        return f"{x:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"

    ci = metrics.get("ci") or {}
    lines = [
        f"confidence: {metrics.get('confidence_method')}   answered at t=0: {metrics.get('n')}/{metrics.get('n_questions')}",
        "ECE {}  (equal-mass {})  MCE {}  Brier {}  AUROC {}".format(
            f_ci(metrics.get("ece"), ci.get("ece")),
            *(f(metrics.get(k)) for k in ("ece_equal_mass", "mce", "brier", "auroc")),
        ),
    ]
    if metrics.get("behavioral_ece") is not None:
        lines.append(
            f"behavioral ECE {f_ci(metrics['behavioral_ece'], ci.get('behavioral_ece'))}  monotone in t "
            f"{f_ci(metrics.get('behavioral_monotone_share'), ci.get('behavioral_monotone_share'))}"
        )
    per_t = metrics.get("per_threshold") or {}
    header = ("t", "answer", "acc|ans", "halluc", "score", "|", "ideal ans", "ideal sc")
    rows = []
    for key, s in (metrics.get("sweep") or {}).items():
        m, i = s["measured"], s["ideal"]
        intervals = (per_t.get(key) or {}).get("ci") or {}
        rows.append(
            (
                key,
                *(f_ci(m[k], intervals.get(k)) for k in ("answer_rate", "accuracy_answered", "hallucination_rate")),
                f_ci(m["score"], intervals.get("score")),
                "|",
                f(i["answer_rate"]),
                f(i["score"]),
            )
        )
    widths = [max(len(r[j]) for r in [header, *rows]) for j in range(len(header))]
    lines += [" ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [header, *rows]]
    return "\n".join(lines)


# ---- model loading -----------------------------------------------------------------------------------------------


def _adapter_key_mismatch(model: Any, adapter: str) -> str | None:
    """None if the adapter's saved tensors are exactly those the model has for it; else a short description."""
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    saved = set(load_peft_weights(adapter, device="cpu"))
    expected = set(get_peft_model_state_dict(model))
    if saved == expected:
        return None
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    parts = [f"{len(missing)} adapter tensors missing (e.g. {missing[0]})"] if missing else []
    parts += [f"{len(unexpected)} tensors with no place in the model (e.g. {unexpected[0]})"] if unexpected else []
    return "; ".join(parts)


def load_model(
    model_path: str,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    tokenizer_path: str | None = None,
):
    """Load a causal LM (+ tokenizer, + optional LoRA adapter) for evaluation; every failure is one RlcalError."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_ref(model_path)
    if device == "auto":
        from accelerate import PartialState

        device = str(PartialState().device)
    if dtype == "auto":
        use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        torch_dtype = torch.bfloat16 if use_bf16 else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
    except Exception as exc:
        raise RlcalError(f"could not load model {model_path}: {str(exc).splitlines()[0]}") from exc
    if adapter is not None:
        from peft import PeftModel

        config_file = Path(adapter) / "adapter_config.json"
        if not config_file.is_file():
            raise RlcalError(f"no LoRA adapter at {adapter} (adapter_config.json not found)")
        try:
            made_for = json.loads(config_file.read_text()).get("base_model_name_or_path")
        except (OSError, ValueError):
            made_for = None
        hint = f" (the adapter was made for {made_for})" if made_for and made_for != model_path else ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # peft warns about missing keys; we raise on them below
                model = PeftModel.from_pretrained(model, adapter)
            mismatch = _adapter_key_mismatch(model, adapter)
        except Exception as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2]) if first else type(exc).__name__
            raise RlcalError(f"adapter {adapter} does not match model {model_path}{hint}: {detail[:300]}") from exc
        if mismatch:
            raise RlcalError(f"adapter {adapter} does not match model {model_path}{hint}: {mismatch}")
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batched generation needs a pad id; padded positions are masked
    model.to(device)
    model.eval()
    return model, tokenizer


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
    for name in ("batch_size", "max_new_tokens", "n_bins", "num_samples"):
        if getattr(args, name) < 1:
            raise RlcalError(f"--{name.replace('_', '-')} must be >= 1")
    if args.bootstrap < 0:
        raise RlcalError("--bootstrap must be >= 0 (0: no intervals)")
    out = Path(args.out)
    check_out_dir(out, EVAL_FILES, "--out")
    recipe = read_recipe_file(args.recipe) if args.recipe else None
    task = eval_task(args, recipe)
    model_path, adapter = eval_model(args, recipe)

    dataset = task.load(seed=args.seed)
    model, tokenizer = load_model(model_path, adapter, args.device, args.dtype, args.tokenizer)
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
