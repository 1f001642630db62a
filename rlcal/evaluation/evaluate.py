"""Evaluating a checkpoint (`evaluate_model`): calibration (ECE, Brier, AUROC, reliability) and the behavioral-
calibration sweep; the code behind `rlcal eval` (`rlcal.evaluation.command`) and the training callback.

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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.core.aggregate import DEFAULT_RESAMPLES, MAX_BINS
from rlcal.core.fingerprint import eval_fingerprint
from rlcal.core.grading import AnswerGrader
from rlcal.core.prompts import PromptTemplate
from rlcal.core.thresholds import DEFAULT_THRESHOLDS
from rlcal.evaluation import CONFIDENCE_METHODS, POLICIES
from rlcal.evaluation.sweep import compute_metrics, parse_thresholds

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
        for name in ("question", "answer"):  # a null or blank gold grades every reply wrong: refuse it, as score does
            value = row[name]
            if value is None or isinstance(value, str) and not value.strip():
                raise RlcalError(f"eval row {i} has {'null' if value is None else 'empty'} {name}")
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
    policy: str = "prompt",
    critic: Any = None,
) -> list[dict[str, Any]]:
    """Generate, grade and score confidence for every (row, t): one prediction dict each, ordered by row then t.

    `policy="prompt"` renders every t into the prompt and keeps the reply. `policy="posthoc"` generates once per
    question at the t = 0 prompt and, at each t > 0, keeps that answer iff its confidence exceeds t (an answer
    without a confidence is withheld), else records an abstention (`withheld: true`, the response kept).

    `answer_prob` (and its normalised variant) is recorded for every answer; `confidence` is the chosen method's
    value. `agreement` samples only at the t = 0 prompt (the one calibration is measured at): k extra generations
    per question, not per threshold; `critic` (which needs `critic`, a `rlcal.evaluation.critic.Critic`) likewise
    reads the value head at the t = 0 prompt only, and records the raw value as `critic_value`.
    """
    from rlcal.evaluation.confidence import encode_prompts, greedy_generate, sample_agreement, verbal_confidence

    if confidence_method not in CONFIDENCE_METHODS:
        raise RlcalError(
            f"confidence method must be one of {', '.join(CONFIDENCE_METHODS)}, got {confidence_method!r}"
        )
    if policy not in POLICIES:
        raise RlcalError(f"policy must be one of {', '.join(POLICIES)}, got {policy!r}")
    grader = grader or AnswerGrader()
    generated = [0.0] if policy == "posthoc" else [float(t) for t in thresholds]
    items = [(i, t) for i in range(len(rows)) for t in generated]
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
    critic_value: dict[int, float] = {}
    if confidence_method == "critic":
        from rlcal.evaluation.confidence import pad_token_id
        from rlcal.evaluation.critic import critic_values

        if critic is None:
            raise RlcalError("confidence method critic needs the value head of a `trainer: ppo` run (critic=...)")
        t0 = [k for k, (_, t) in enumerate(items) if t == 0.0]
        values = critic_values(model, critic, [prompt_ids[k] for k in t0], batch_size, pad_token_id(model, tokenizer))
        critic_value = dict(zip(t0, values, strict=True))
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
            "critic": critic.confidence(critic_value[k]) if k in critic_value else None,
        }[confidence_method]
        record = {
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
        if k in critic_value:
            record["critic_value"] = critic_value[k]
        if policy == "prompt":
            out.append(record)
            continue
        for t_post in (float(x) for x in thresholds):
            keep = t_post == 0.0 or (confidence is not None and confidence > t_post) or outcome == "abstain"
            posthoc = {**record, "threshold": t_post, "policy": "posthoc", "withheld": not keep}
            if not keep:
                posthoc.update(outcome="abstain", correct=False, answered=False)
            out.append(posthoc)
    return out


def shard(state: Any, n: int) -> tuple[list[int], int]:
    """This process's share of n rows: (row indices to run, how many of them are real). accelerate's contiguous
    `split_between_processes`, padded by repeating the last row so that every process runs the same number of
    batches (needed where generation holds collectives: ZeRO-3); the first `real` indices are this process's own."""
    indices = list(range(n))
    with state.split_between_processes(indices) as mine:
        real = len(mine)
    with state.split_between_processes(indices, apply_padding=True) as padded:
        return list(padded), real


def _distributed_predict(rows: list[dict[str, Any]], run: Callable[..., list[dict[str, Any]]]) -> list[dict]:
    """Split rows across accelerate processes (`shard`), run each shard, gather every prediction on every process
    (accelerate's `gather_object`, in process order: the rows' order).

    The padding is dropped before gathering. A failure on one process is gathered too and re-raised everywhere, so
    no process is left waiting in a collective.
    """
    from accelerate import PartialState
    from accelerate.utils import gather_object

    state = PartialState()
    if state.num_processes == 1:
        return run(rows, 0)
    indices, real = shard(state, len(rows))
    start = indices[0]  # shards are contiguous; with no real row, the padding (dropped below)
    try:
        preds = [p for p in run([rows[i] for i in indices], start) if p["index"] < start + real]
        payload = [("ok", preds)]
    except Exception as exc:  # noqa: BLE001 - re-raised below on every process
        payload = [("error", f"process {state.process_index}: {type(exc).__name__}: {exc}")]
    gathered = gather_object(payload)
    errors = [p for status, p in gathered if status == "error"]
    if errors:
        raise RuntimeError("evaluation failed on " + "; ".join(errors))
    return [pred for _, preds in gathered for pred in preds]


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
    policy: str = "prompt",
    critic: Any = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Evaluate calibration and behavioral calibration of `model` on `dataset` (rows with question/answer/aliases).

    Returns `(metrics, predictions)`: the `metrics.json` dict and one prediction dict per (question, t). With
    `policy` (`prompt` | `posthoc`) is how the decision at each t is made (see `predict`). With
    `distributed` (default) questions are split across accelerate processes and every process gets all results;
    a single process just runs them. `progress` shows a tqdm bar on the main process (a string sets its label).
    `critic` (`rlcal.evaluation.critic.load_critic`) is needed by, and only by, confidence_method="critic".
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
    if n_bins > MAX_BINS:
        raise RlcalError(f"n_bins must be at most {MAX_BINS}, got {n_bins}")

    def run(shard: list[dict[str, Any]], offset: int) -> list[dict[str, Any]]:
        from accelerate import PartialState

        extra = len(shard) if confidence_method == "agreement" else 0
        show = bool(progress) and PartialState().is_main_process
        desc = progress if isinstance(progress, str) else "eval"
        per_question = 1 if policy == "posthoc" else len(thresholds)
        with tqdm(total=len(shard) * per_question + extra, desc=desc, disable=not show, leave=False) as bar:
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
                policy=policy,
                critic=critic,
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
        "policy": policy,
        "grader": grader.grader,
        "max_new_tokens": max_new_tokens,
        "answer_span": answer_span,
        "num_samples": num_samples if confidence_method == "agreement" else None,
        "seed": seed,
    }
    items = [(p["question"], p["answer"], float(p["threshold"])) for p in predictions]
    metrics["fingerprint"] = eval_fingerprint(items, grader=grader.grader, n_bins=n_bins, calibration_at=0.0)
    return metrics, predictions

