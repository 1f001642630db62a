"""`rlcal demo`: the paper's claims and behavioral calibration, end to end on the embedded world, with a report.

    rlcal demo                      # full run (7-14 minutes on 2 idle CPU cores, by CPU) into outputs/demo
    rlcal demo --quick --out /tmp/d # the same pipeline at toy scale (under a minute): plumbing, not science
    rlcal demo --rescore --out DIR  # metrics, claims and report rebuilt from DIR's saved predictions (seconds)

Stages (each shows progress): build the world (birthdays + forecast towns) → pretrain the tiny LM (cross-entropy;
cached) → evaluate the base model, and the reference (the base model with t applied after generation) → post-train
one LoRA copy per route with the same data and RL budget: the 0-1 reward, the confidence-target reward (t in the
prompt) and the stated-confidence route (Brier reward, t applied after generation), each from its own warm-up
(`recipes/toy/grpo/config_{binary,confidence_target,stated_confidence}.yaml`) → evaluate each warm-up model and
each RL model → compare. Every model is evaluated on the same fixed eval set at the same grid of t. Writes `DIR/report.md` (tables
+ plots), `DIR/summary.json` and every stage's own outputs (`eval/<model>/metrics.json`, `predictions.jsonl`, …).
The report states each claim next to the measured number with its 95 % interval; a missed target is reported as
measured, never tuned away.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
import warnings
from collections.abc import Mapping
from itertools import pairwise
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_text
from rlcal.common.recipes import shipped_recipe
from rlcal.core.aggregate import rises_beyond_noise

# Every model is evaluated on one fixed eval set at one fixed grid, chosen before any model was compared:
# `reference` is the base model with t applied after generation (answer iff its own answer probability > t).
MODELS = (
    "base",
    "reference",
    "binary_warmup",
    "binary",
    "confidence_target_warmup",
    "confidence_target",
    "stated_confidence_warmup",
    "stated_confidence",
)
TRAINED = ("binary", "confidence_target", "stated_confidence")
# How each trained route is evaluated: the stated-confidence route answers at the best-guess prompt with a stated
# number ("rainy, 80% confident"), and t is applied afterwards (abstain iff the stated confidence <= t).
EVAL_OPTIONS: dict[str, dict[str, Any]] = {
    "stated_confidence": {"policy": "posthoc", "confidence": "verbal", "max_new_tokens": 16},
}
DEMO_THRESHOLDS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
TARGET_THRESHOLDS = tuple(str(t) for t in DEMO_THRESHOLDS[1:])  # t > 0: where the rewards differ
REPORT_THRESHOLDS = ("0.5", "0.7", "0.9")  # the answer-rate-by-confidence table
MIN_ANSWERED = 30  # a per-t accuracy claim is made only where at least this many questions are answered
BUCKETS = ("unseen", "1", "2-4", "5-19", "20+")
CONFIDENCE_BANDS = (0.0, 0.1, 0.3, 0.5, 0.75, 0.9, 1.0)  # bands of the base model's own t = 0 confidence
BAND_LABELS = tuple(f"{lo:g}-{hi:g}" for lo, hi in pairwise(CONFIDENCE_BANDS))

# (full, quick) sizes. The full run is the experiment; quick only checks the pipeline end to end.
# The demo's world adds the forecast family to the birthdays: 160 towns with their own weather distribution, so
# that 320 eval questions (80 towns) have a reference confidence spread over (0.2, 0.95), the questions on which t
# changes the right decision. The birthday part is smaller than recipes/toy/pretrain.yaml's to keep the run short.
# Prompt documents state every t on a 0.05 grid, so every t of the eval grid has been read in pretraining.
FINE_T = [str(round(0.05 * i, 2)) for i in range(20)]
WORLD = (
    "--world_people 1500 --world_mentions 2000 --world_qa_people 2000 --world_families birthday forecast "
    "--world_forecast_towns 160 --world_forecast_observations 20 --world_forecast_questions 4"
).split() + ["--world_thresholds", *FINE_T]

# (full, quick) sizes. The full run is the experiment; quick only checks the pipeline end to end.
SCALE = {
    "full": {"pretrain": WORLD, "eval_samples": None, "rl_steps": None, "warmup_steps": None, "eval_batch": 64},
    "quick": {
        # epochs/people/model shrunk so the whole pipeline runs in well under a minute on 2 idle cores
        "pretrain": "--epochs 1 --world_people 200 --world_mentions 300 --world_qa_people 200 --model_size nano "
        "--vocab_size 400 --world_families birthday forecast --world_forecast_towns 8 "
        "--world_forecast_observations 4 --world_forecast_questions 2".split()
        + ["--world_thresholds", *FINE_T],
        "eval_samples": 32,
        "rl_steps": 2,
        "warmup_steps": 2,
        "eval_batch": 32,
    },
}


class _Clock:
    """Prints each stage with its elapsed time, so a ten-minute run shows where it is."""

    def __init__(self) -> None:
        self.start = time.time()
        self.stages: dict[str, float] = {}

    def stage(self, name: str) -> _Clock:
        self._name, self._t0 = name, time.time()
        print(f"[rlcal demo {time.time() - self.start:6.0f}s] {name} ...", flush=True)
        return self

    def __enter__(self) -> _Clock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stages[self._name] = round(time.time() - self._t0, 1)
        if exc[0] is None:
            print(f"[rlcal demo {time.time() - self.start:6.0f}s] {self._name}: done in {self.stages[self._name]}s")


def _pretrain(out: Path, scale: str, seed: int, verbose: bool = False) -> tuple[Path, dict[str, Any]]:
    from rlcal.world.corpus import load_world_stats
    from rlcal.world.pretrain import ensure_pretrained, load_pretrain_config

    overrides = ["--world_dir", str(out / "world"), "--output_dir", str(out / "pretrained"), "--seed", str(seed)]
    overrides += ["--world_seed", str(seed), *SCALE[scale]["pretrain"]]
    config = load_pretrain_config(_recipe_path("pretrain.yaml"), overrides)
    config.verbose = verbose  # how it prints, not what it builds (not part of the cache key)
    model_dir = ensure_pretrained(config)
    return Path(model_dir), load_world_stats(out / "world") or {}


def _recipe_path(name: str) -> Path:
    """A toy recipe as shipped with rlcal (not whatever `recipes/` the current folder may hold)."""
    return shipped_recipe(f"toy/{name}")


def _eval_rows(world_dir: Path, max_samples: int | None):
    """The fixed eval set: every eval-split question of the world (people RL never saw, each asked once, with the
    world's mix of unseen to famous; and the eval towns' forecasts), shuffled once with seed 0."""
    from rlcal.data.qa import load_qa_dataset

    ds = load_qa_dataset(str(world_dir / "qa.jsonl"), split_filter="eval").shuffle(seed=0)
    return ds if max_samples is None else ds.select(range(min(max_samples, len(ds))))


def _rl_rows(world_dir: Path, out: Path, seed: int) -> Path:
    """The RL training set, written once: every rl_train forecast question, and as many rl_train birthday questions
    drawn ∝ popularity (questions arrive as often as their facts are mentioned: Theorem 2's setting)."""
    import numpy as np

    rows = [json.loads(line) for line in (world_dir / "qa.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in rows if r.get("split") == "rl_train"]
    forecast = [r for r in train if r.get("family") == "forecast"]
    people = [r for r in train if r.get("family", "birthday") == "birthday" and (r.get("popularity") or 0) > 0]
    weights = np.array([float(r["popularity"]) for r in people])
    n = max(len(forecast), 64)
    drawn = np.random.default_rng(seed).choice(len(people), size=n, p=weights / weights.sum()) if people else []
    path = out / "rl_train.jsonl"
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in [*forecast, *(people[i] for i in drawn)]))
    return path


def _evaluate(
    name: str,
    model_path: str,
    adapter: str | None,
    rows,
    out: Path,
    scale: str,
    seed: int,
    policy: str = "prompt",
    confidence: str = "answer_prob",
    max_new_tokens: int = 12,
    prompt: Any = None,
):
    """Evaluate one model on the demo's rows and grid (`prompt`: a `PromptTemplate`, the shipped one by default;
    benchmarks/variants.py passes a variant recipe's own); writes out/eval/<name>/."""
    from rlcal.core.prompts import PromptTemplate
    from rlcal.evaluation.evaluate import evaluate_model
    from rlcal.evaluation.models import load_model
    from rlcal.evaluation.sweep import write_eval

    model, tokenizer = load_model(model_path, adapter, device="cpu", dtype="float32")
    metrics, predictions = evaluate_model(
        model,
        tokenizer,
        rows,
        prompt if prompt is not None else PromptTemplate(),
        thresholds=DEMO_THRESHOLDS,
        batch_size=SCALE[scale]["eval_batch"],
        confidence_method=confidence,
        max_new_tokens=max_new_tokens,
        seed=seed,
        progress=f"eval {name}",
        distributed=False,
        policy=policy,
    )
    write_eval(out / "eval" / name, metrics, predictions, title=name)
    return metrics, predictions


def _train(
    reward: str, model_dir: Path, out: Path, scale: str, seed: int, verbose: bool = False, trainer: str = "grpo"
) -> tuple[str, str]:
    """Post-train one LoRA copy with the toy recipe for `reward` (`recipes/toy/<trainer>/`); returns (the model the adapter sits on: the
    warm-up model when the recipe has a warm-up, else the base; adapter dir). The
    training shows one progress bar per stage (`verbose`: every log dict too); its logs are in run_dir/*.jsonl."""
    from rlcal.training.config import load_recipe_dict, parse_recipe
    from rlcal.training.train import train

    raw = load_recipe_dict(_recipe_path(f"{trainer}/config_{reward}.yaml"))
    run_dir = out / (f"rl_{reward}" if trainer == "grpo" else f"rl_{trainer}_{reward}")
    shutil.rmtree(run_dir, ignore_errors=True)  # a demo run starts fresh: no resuming someone else's checkpoint
    raw["resume"] = "never"
    raw["model"] = {**raw["model"], "model_name_or_path": str(model_dir), "pretrain_recipe": None}
    raw["data"] = {**raw["data"], "source": str(out / "rl_train.jsonl"), "split_filter": None, "weight_column": None}
    raw["calibration"] = {}  # evaluated below on the same questions as the base model
    training = dict(raw["training"])
    training.update(output_dir=str(run_dir), seed=seed, report_to=[], save_strategy="no", logging_steps=1)
    if SCALE[scale]["rl_steps"] is not None:
        training["max_steps"] = SCALE[scale]["rl_steps"]
    raw["training"] = training
    if SCALE[scale]["warmup_steps"] is not None and raw.get("warmup"):
        raw["warmup"] = {**raw["warmup"], "steps": SCALE[scale]["warmup_steps"], "num_examples": 64}
    result = train(parse_recipe(raw, path=f"demo:{reward}"), verbose=verbose)
    return result.model_path, result.output_dir


def _bucket(count: int) -> str:
    if count <= 0:
        return "unseen"
    if count == 1:
        return "1"
    return "2-4" if count <= 4 else "5-19" if count <= 19 else "20+"


def hallucination_by_count(predictions: list[Mapping[str, Any]], counts: list[int], t: float) -> dict[str, Any]:
    """Per mention-count bucket at prompt target t: n, accuracy, hallucination rate (wrong / all), abstain rate
    (counts from `rlcal.core.aggregate.threshold_block`, the per-threshold function of `rlcal eval`)."""
    from rlcal.core.aggregate import threshold_block

    groups: dict[str, list[str]] = {}
    for p in predictions:
        if float(p["threshold"]) == t:
            groups.setdefault(_bucket(counts[p["index"]]), []).append(p["outcome"])
    out = {}
    for k, outcomes in sorted(groups.items(), key=lambda kv: BUCKETS.index(kv[0])):
        m = threshold_block(outcomes, [t] * len(outcomes))
        out[k] = {
            "n": m["n"],
            "accuracy": m["n_correct"] / m["n"],
            "hallucination_rate": m["hallucination_rate"],
            "abstain_rate": m["n_abstain"] / m["n"],
        }
    return out


def error_drawn_like_mentions(predictions: list[Mapping[str, Any]], weights: list[float]) -> float:
    """Error at the t = 0 prompt (anything but a correct answer) with question i weighted by `weights[i]`: the
    world's popularity makes this the error on questions drawn like the pretraining mentions, Theorem 2's setting."""
    num = den = 0.0
    for p in predictions:
        if float(p["threshold"]) == 0.0:
            w = weights[p["index"]]
            num += w * (p["outcome"] != "correct")
            den += w
    if den <= 0:
        raise RlcalError("no t = 0 predictions with positive weight to measure the base error on")
    return num / den


def _band(confidence: float) -> str:
    """The label of the band holding `confidence`; 1.0 belongs to the top band."""
    inner_edges = CONFIDENCE_BANDS[1:-1]
    return BAND_LABELS[sum(confidence >= edge for edge in inner_edges)]


def answer_rate_by_confidence(
    predictions: list[Mapping[str, Any]], base_confidence: list[float], t: float
) -> dict[str, dict[str, Any]]:
    """Behavioral calibration question by question: at prompt target t, per band of the *base* model's own t = 0
    confidence, the share of questions the model answers (`answer_rate`) and the share an ideal behaviorally
    calibrated base model would answer (`ideal`: confidence > t). Bands without questions are left out."""
    out: dict[str, dict[str, float]] = {}
    for p in predictions:
        if float(p["threshold"]) != t:
            continue
        conf = base_confidence[p["index"]]
        b = out.setdefault(_band(conf), {"n": 0, "answered": 0, "ideal": 0})
        b["n"] += 1
        b["answered"] += p["outcome"] != "abstain"
        b["ideal"] += conf > t
    return {
        k: {"n": v["n"], "answer_rate": v["answered"] / v["n"], "ideal": v["ideal"] / v["n"]}
        for k, v in sorted(out.items(), key=lambda kv: BAND_LABELS.index(kv[0]))
    }


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def model_summary(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The summary.json entry of one model: ECE (t = 0 prompt), behavioral ECE and its monotone share over the
    grid, abstain and hallucination rates averaged over the confidence targets t > 0 of the grid (where the rewards
    differ), and per_threshold as `rlcal score` (with 95 % intervals when the metrics carry them)."""
    from rlcal.core.aggregate import RATE_KEYS

    per_t = metrics["per_threshold"]
    targets = [per_t[t] for t in TARGET_THRESHOLDS if t in per_t]
    ci = metrics.get("ci") or {}
    return {
        "ece": metrics.get("ece"),
        "ece_ci": ci.get("ece"),
        "behavioral_ece": metrics.get("behavioral_ece"),
        "behavioral_ece_ci": ci.get("behavioral_ece"),
        "behavioral_monotone_share": metrics.get("behavioral_monotone_share"),
        "behavioral_rate_changes": metrics.get("behavioral_rate_changes"),
        "abstain_rate": _mean([1.0 - m["answer_rate"] for m in targets]),
        "hallucination_rate": _mean([m["hallucination_rate"] for m in targets]),
        "accuracy_t0": metrics.get("accuracy"),
        "hallucination_rate_t0": metrics.get("hallucination_rate"),
        "per_threshold": {
            t: {k: m[k] for k in ("n", "n_correct", "n_wrong", *RATE_KEYS) if k in m}
            | ({"ci": m["ci"]} if "ci" in m else {})
            for t, m in per_t.items()
        },
    }


def family_metrics(predictions: list[Mapping[str, Any]], families: list[str]) -> dict[str, Any]:
    """model_summary of each question family's predictions alone (the same aggregation, no intervals)."""
    from rlcal.evaluation.sweep import compute_metrics

    out = {}
    for family in sorted(set(families)):
        subset = [p for p in predictions if families[p["index"]] == family]
        if subset:
            thresholds = sorted({float(p["threshold"]) for p in subset})
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a family with no answered question has no ECE: None says so
                out[family] = model_summary(compute_metrics(subset, thresholds, n_resamples=0))
    return out


def _at_most(value: float | None, bound: float) -> bool:
    """value <= bound, where an undefined value (None) fails; 0.0 is a real value, not a missing one."""
    return value is not None and value <= bound


def check_claims(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The paper's claims and behavioral calibration as measurable targets: (claim, target, measured, met)."""
    base, binary, ct = summary["base"], summary["binary"], summary["confidence_target"]

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or not b else a / b

    drift_ct, drift_bin = ct.get("ece_drift"), binary.get("ece_drift")
    claims = [
        ("base model is calibrated", "base ECE ≤ 0.05", base["ece"], _at_most(base["ece"], 0.05)),
        (
            "base errs on arbitrary facts at least about the singleton rate",
            f"error ≥ singleton rate {summary['singleton_rate']:.3f} − small terms",
            summary["base_error_arbitrary_facts"],
            summary["base_error_arbitrary_facts"] >= summary["singleton_rate"] - 0.05,
        ),
        (
            "0-1 RL makes the model overconfident",
            "0-1 ECE ≥ 3× base ECE",
            ratio(binary["ece"], base["ece"]),
            (ratio(binary["ece"], base["ece"]) or 0) >= 3,
        ),
        (
            "0-1 RL never abstains",
            "0-1 abstain rate ≈ 0 (≤ 0.02)",
            binary["abstain_rate"],
            _at_most(binary["abstain_rate"], 0.02),
        ),
        (
            "confidence targets cut hallucinations",
            "hallucination rate ≤ 50% of the 0-1 run's",
            ratio(ct["hallucination_rate"], binary["hallucination_rate"]),
            _at_most(ratio(ct["hallucination_rate"], binary["hallucination_rate"]), 0.5),
        ),
        (
            "confidence targets keep calibration",
            "|ECE drift from the pretrained model| smaller than the 0-1 run's",
            drift_ct,
            drift_ct is not None and drift_bin is not None and abs(drift_ct) < abs(drift_bin),
        ),
        (
            "behavioral calibration",
            "behavioral ECE ≤ 0.05",
            ct.get("behavioral_ece"),
            _at_most(ct.get("behavioral_ece"), 0.05),
        ),
    ]
    per_t = ct["per_threshold"]
    for t in TARGET_THRESHOLDS:
        m = per_t.get(t, {})
        answered = (m.get("n") or 0) * (m.get("answer_rate") or 0.0)
        if answered < MIN_ANSWERED - 1e-9:
            continue  # too few answers to test; the per-t table still shows them
        acc = m.get("accuracy_answered")
        claims.append(
            (
                f"answers only when P(correct) > t, at t = {t}",
                f"accuracy on answered ≥ {float(t) - 0.05:.2f}",
                acc,
                acc is not None and acc >= float(t) - 0.05,
            )
        )
    rates = [per_t[t]["answer_rate"] for t in ("0", *TARGET_THRESHOLDS) if t in per_t]
    claims.append(
        (
            "answer rate falls as t rises",
            "answer rate non-increasing in t",
            rates,
            all(b <= a + 1e-9 for a, b in pairwise(rates)),
        )
    )
    # The strict test above fails on a rise of one question; this one asks whether any rise is beyond sampling
    # noise: each change between consecutive grid t has a paired bootstrap interval over the same questions.
    changes = ct.get("behavioral_rate_changes") or []
    if changes:
        claims.append(
            (
                "no answer-rate rise beyond noise",
                "every change in answer rate from one grid t to the next has its 95% interval reach ≤ 0",
                max(c["change"] for c in changes),
                not rises_beyond_noise(changes),
            )
        )
    return [{"claim": c, "target": t, "measured": m, "met": bool(ok)} for c, t, m, ok in claims]


def _ci(interval: Any) -> str:
    """" [lo, hi]" for a 95 % interval, "" without one."""
    if not interval or any(v is None for v in interval):
        return ""
    return f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _plot_answer_rate_by_confidence(by_t: Mapping[str, Mapping[str, Any]], path: Path, model: str) -> Path:
    from rlcal.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bands = BAND_LABELS
    for k, (t, by_band) in enumerate(by_t.items()):
        xs = [i for i, b in enumerate(bands) if b in by_band]
        color = f"C{k}"
        ax.plot(xs, [by_band[bands[i]]["answer_rate"] for i in xs], "o-", color=color, label=f"{model}, t = {t}")
        ax.plot(xs, [by_band[bands[i]]["ideal"] for i in xs], "x--", color=color, alpha=0.7, label=f"ideal, t = {t}")
    ax.set_xticks(range(len(bands)), bands)
    ax.set(xlabel="base model's confidence in its own t = 0 answer", ylabel="answer rate", ylim=(-0.03, 1.03))
    ax.set_title("Answer when P(correct) > t? Answer rate by the base model's confidence")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def _plot_hallucination_by_count(by_count: Mapping[str, Mapping[str, Any]], path: Path) -> Path:
    from rlcal.evaluation.plots import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    width = 0.8 / max(len(by_count), 1)
    for k, (label, buckets) in enumerate(by_count.items()):
        xs = [i + k * width for i, b in enumerate(BUCKETS) if b in buckets]
        ys = [buckets[b]["hallucination_rate"] for b in BUCKETS if b in buckets]
        ax.bar(xs, ys, width=width, label=label)
    ax.set_xticks([i + width * (len(by_count) - 1) / 2 for i in range(len(BUCKETS))], BUCKETS)
    ax.set(xlabel="mentions of the fact in the pretraining corpus", ylabel="hallucination rate (wrong / all)")
    ax.set_title("Hallucinations by mention count (mean over t ∈ {0.5, 0.75, 0.9})")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_report(out: Path, summary: Mapping[str, Any], command: str) -> Path:
    """report.md: claims, the per-model table, per-t behaviour, mention-count breakdown, singleton check, plots."""
    bands = BAND_LABELS
    lines = [
        "# rlcal demo: calibrated rewards on the embedded world",
        "",
        f"Command: `{command}` — {summary['scale']} run, seed {summary['seed']}, "
        f"{summary['timing']['total']:.0f} s on {os.cpu_count()} CPU cores.",
        "",
        "## The paper's claims, measured",
        "",
        "| claim | target | measured | met |",
        "|---|---|---|---|",
    ]
    for c in summary["claims"]:
        target = c["target"].replace("|", "\\|")  # "|ECE drift|" would split the markdown cell
        lines.append(f"| {c['claim']} | {target} | {_fmt(c['measured'])} | {'yes' if c['met'] else '**no**'} |")
    lines += [
        "",
        "Missed targets are reported as measured; the evaluation is the same for every model. Claims are about the "
        f"`confidence_target` run; an accuracy-on-answered claim is made at each grid t where it answers ≥ "
        f"{MIN_ANSWERED} questions. One seed: `python benchmarks/bench_claims.py --seeds 0 1 2` checks several.",
        "",
        "## Models",
        "",
        f"One fixed eval set for every model ({summary.get('n_eval_questions')} questions: "
        f"{', '.join(f'{n} {f}' for f, n in (summary.get('n_eval_by_family') or {}).items())}) and one grid, "
        f"t ∈ {{{', '.join(f'{t:g}' for t in summary.get('thresholds', DEMO_THRESHOLDS))}}}. "
        "ECE is measured at the t = 0 prompt on the answered questions, confidence = the model's own probability "
        "of its answer; drift = ECE − the pretrained model's. Behavioral ECE and the monotone share are over the "
        "grid (docs/metrics.md). Abstain and hallucination rates are means over the grid's t > 0. `reference` is the "
        "pretrained model with t applied after generation (answer iff its answer probability > t); "
        "`binary` is 0-1 RL from `binary_warmup` (SFT on the model's own sampled answers, never an abstention: the "
        "format only); `confidence_target` is RL with the confidence-target reward from `confidence_target_warmup` "
        "(the t-aware warm-up: the reference policy's decisions, distilled); `stated_confidence` (BCRL's route) "
        "answers at the best-guess prompt and states a confidence, trained with the Brier reward from "
        "`stated_confidence_warmup` (its own sampled answers with their probabilities), and t is applied after "
        "generation (abstain iff the stated confidence ≤ t); its ECE is that of the stated number. "
        "95 % intervals: bootstrap over questions, questions with the same prompt drawn together.",
        "",
        "| model | ECE | drift | behavioral ECE | monotone share | abstain rate | hallucination rate | accuracy (t = 0) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        m = summary[name]
        lines.append(
            f"| {name} | {_fmt(m['ece'])} {_ci(m.get('ece_ci'))} | {_fmt(m.get('ece_drift'))} "
            f"| {_fmt(m.get('behavioral_ece'))} {_ci(m.get('behavioral_ece_ci'))} "
            f"| {_fmt(m.get('behavioral_monotone_share'))} | {_fmt(m['abstain_rate'])} "
            f"| {_fmt(m['hallucination_rate'])} | {_fmt(m['accuracy_t0'])} |"
        )
    lines += [
        "",
        "Per question family (same predictions, split):",
        "",
        "| model | family | ECE | behavioral ECE | abstain rate | hallucination rate | accuracy (t = 0) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        for family, m in (summary[name].get("by_family") or {}).items():
            lines.append(
                f"| {name} | {family} | {_fmt(m['ece'])} | {_fmt(m.get('behavioral_ece'))} "
                f"| {_fmt(m['abstain_rate'])} | {_fmt(m['hallucination_rate'])} | {_fmt(m['accuracy_t0'])} |"
            )
    lines += ["", "## Behaviour at each confidence target t", ""]
    lines += [
        "| model | t | answer rate | accuracy on answered | hallucination rate | score |",
        "|---|---|---|---|---|---|",
    ]
    for name in MODELS:
        for t, m in summary[name]["per_threshold"].items():
            ci = m.get("ci") or {}
            lines.append(
                f"| {name} | {t} | {_fmt(m['answer_rate'])} {_ci(ci.get('answer_rate'))} "
                f"| {_fmt(m['accuracy_answered'])} {_ci(ci.get('accuracy_answered'))} "
                f"| {_fmt(m['hallucination_rate'])} | {_fmt(m['score'])} {_ci(ci.get('score'))} |"
            )
    lines += [
        "",
        "![reliability](reliability.png)",
        "",
        "![answer rate and accuracy vs t](answer_rate.png)",
        "",
        "## Hallucinations by mention count",
        "",
        "| model | " + " | ".join(BUCKETS) + " |",
        "|---|" + "---|" * len(BUCKETS),
    ]
    for name in MODELS:
        buckets = summary["by_mention_count"][name]
        cells = [_fmt(buckets[b]["hallucination_rate"]) if b in buckets else "–" for b in BUCKETS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    singleton = summary["singleton"]
    lines += [
        "",
        "![hallucination by count](hallucination_by_count.png)",
        "",
        "## Answer rate by the base model's confidence",
        "",
        "Behavioral calibration asks for an answer exactly when P(correct) > t. Using the base model's own t = 0 "
        f"confidence in its answer as P(correct) (base ECE {_fmt(summary['base']['ece'])}), each cell gives the "
        "confidence-target model's answer rate on the questions in that band, next to the share the ideal policy "
        "answers.",
        "",
        "| t | " + " | ".join(bands) + " |",
        "|---|" + "---|" * len(bands),
    ]
    for t, by_band in summary["by_base_confidence"]["confidence_target"].items():
        cells = [
            f"{_fmt(by_band[b]['answer_rate'])} (ideal {_fmt(by_band[b]['ideal'])}, n = {by_band[b]['n']})"
            if b in by_band
            else "–"
            for b in bands
        ]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "![answer rate by base confidence](answer_rate_by_confidence.png)",
        "",
        "## Singleton-rate check (Theorem 2)",
        "",
        f"Singleton rate of the pretraining facts: **{summary['singleton_rate']:.3f}** "
        f"(N = {singleton.get('n')} mentions). Base model error on arbitrary facts at the t = 0 prompt, each eval "
        f"person weighted by popularity so questions arrive as often as the facts are mentioned (Theorem 2's "
        f"setting): **{summary['base_error_arbitrary_facts']:.3f}** (unweighted, each eval person once: "
        f"{_fmt(summary.get('base_error_uniform_people'))}).",
        f"Theorem 2's bound with its terms: {json.dumps(singleton.get('terms'))} → {_fmt(singleton.get('bound'))}"
        + (
            " (vacuous at this N: the (35 + 6 ln N)/√N term dominates below N ≈ 10⁶)."
            if singleton.get("vacuous")
            else "."
        ),
        "",
        "## Stage timings (s)",
        "",
        "| stage | seconds |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["timing"].items()]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    return path


def run_demo(
    out_dir: str | Path = "outputs/demo", quick: bool = False, seed: int = 0, verbose: bool = False
) -> dict[str, Any]:
    """Run the whole demo; returns summary.json's content."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write_test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise RlcalError(f"cannot write to {out}: {exc.strerror or exc}") from None
    from rlcal.common.progress import quiet_libraries

    with quiet_libraries(verbose):  # the stage lines and one bar per stage, not every datasets map or weight load
        return _run_demo(out, out_dir, quick, seed, verbose)


def _run_demo(out: Path, out_dir: str | Path, quick: bool, seed: int, verbose: bool) -> dict[str, Any]:
    scale = "quick" if quick else "full"
    clock = _Clock()
    with clock.stage("world + pretraining (cached)"):
        model_dir, world = _pretrain(out, scale, seed, verbose)
    rows = _eval_rows(out / "world", SCALE[scale]["eval_samples"])
    _rl_rows(out / "world", out, seed)
    metrics: dict[str, dict[str, Any]] = {}
    predictions: dict[str, list[dict[str, Any]]] = {}
    with clock.stage("evaluate base"):
        metrics["base"], predictions["base"] = _evaluate("base", str(model_dir), None, rows, out, scale, seed)
    with clock.stage("evaluate the reference (base, t applied after generation)"):
        metrics["reference"], predictions["reference"] = _evaluate(
            "reference", str(model_dir), None, rows, out, scale, seed, policy="posthoc"
        )
    for reward in TRAINED:
        with clock.stage(f"post-train with the {reward} reward"):
            base_path, adapter = _train(reward, model_dir, out, scale, seed, verbose)
        how = EVAL_OPTIONS.get(reward, {})
        with clock.stage(f"evaluate {reward}_warmup"):  # what the warm-up alone does, so that what RL adds is visible
            name = f"{reward}_warmup"
            metrics[name], predictions[name] = _evaluate(name, base_path, None, rows, out, scale, seed, **how)
        with clock.stage(f"evaluate {reward}"):
            metrics[reward], predictions[reward] = _evaluate(reward, base_path, adapter, rows, out, scale, seed, **how)

    return _summarize(out, out_dir, scale, seed, rows, world, metrics, predictions, clock.stages, clock.start)


def _summarize(
    out: Path,
    out_dir: str | Path,
    scale: str,
    seed: int,
    rows,
    world: Mapping[str, Any],
    metrics: dict[str, dict[str, Any]],
    predictions: dict[str, list[dict[str, Any]]],
    stages: dict[str, float],
    start: float | None,
) -> dict[str, Any]:
    """Everything after the evaluations: summary.json, claims, plots and report.md (`rescore_demo` reruns it)."""
    from rlcal.evaluation.plots import reliability_diagram, sweep_plot
    from rlcal.world.singleton import theorem2_bound

    counts = [int(c) for c in rows["count"]] if "count" in rows.column_names else [0] * len(rows)
    families = list(rows["family"]) if "family" in rows.column_names else ["birthday"] * len(rows)
    summary: dict[str, Any] = {name: model_summary(metrics[name]) for name in MODELS}
    for name in MODELS:
        summary[name]["ece_drift"] = _diff(summary[name]["ece"], summary["base"]["ece"])
        summary[name]["by_family"] = family_metrics(predictions[name], families)
    sr = float(world.get("singleton_rate", 0.0))
    n_mentions = int(world.get("n_records", world.get("mentions", 0)) or 0)
    summary["singleton_rate"] = sr
    summary["singleton"] = {"n": n_mentions, **(theorem2_bound(sr, n_mentions) if n_mentions else {})}
    weights = [float(w or 0.0) for w in rows["popularity"]] if "popularity" in rows.column_names else [1.0] * len(rows)
    summary["base_error_arbitrary_facts"] = error_drawn_like_mentions(predictions["base"], weights)
    people = summary["base"]["by_family"].get("birthday") or summary["base"]
    summary["base_error_uniform_people"] = 1.0 - float(people["accuracy_t0"])
    is_person = [f == "birthday" for f in families]
    summary["by_mention_count"] = {
        name: _by_count_mean([p for p in predictions[name] if is_person[p["index"]]], counts) for name in MODELS
    }
    base_conf = [0.0] * len(rows)  # as in the sweep's ideal policy: an abstention counts as confidence 0
    for p in predictions["base"]:
        if float(p["threshold"]) == 0.0 and p["answered"] and p["confidence"] is not None:
            base_conf[p["index"]] = float(p["confidence"])
    summary["by_base_confidence"] = {
        name: {t: answer_rate_by_confidence(predictions[name], base_conf, float(t)) for t in REPORT_THRESHOLDS}
        for name in ("binary", "confidence_target_warmup", "confidence_target")
    }
    summary["claims"] = check_claims(summary)
    summary.update(
        scale=scale,
        seed=seed,
        n_eval_questions=len(rows),
        n_eval_by_family={f: families.count(f) for f in sorted(set(families))},
        thresholds=DEMO_THRESHOLDS,
    )
    reliability_diagram(
        {name: metrics[name]["reliability"] for name in MODELS},
        out / "reliability.png",
        title="Reliability at the t = 0 prompt",
        ece={name: metrics[name]["ece"] for name in MODELS},
    )
    sweep_plot(
        {name: metrics[name]["per_threshold"] for name in MODELS},
        out / "answer_rate.png",
        ideal={"base": {t: s["ideal"] for t, s in metrics["base"]["sweep"].items()}},
        title="Behavioral calibration: answer rate and accuracy vs confidence target",
    )
    _plot_hallucination_by_count(summary["by_mention_count"], out / "hallucination_by_count.png")
    _plot_answer_rate_by_confidence(
        summary["by_base_confidence"]["confidence_target"], out / "answer_rate_by_confidence.png", "confidence_target"
    )
    summary["timing"] = {**stages, "total": round(time.time() - start, 1)} if start is not None else dict(stages)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    command = "rlcal demo" + (" --quick" if scale == "quick" else "") + f" --out {out_dir} --seed {seed}"
    report = write_report(out, summary, command)
    met = sum(c["met"] for c in summary["claims"])
    print(f"[rlcal demo] {met}/{len(summary['claims'])} claims met; report: {report}")
    return summary


def rescore_demo(out_dir: str | Path) -> dict[str, Any]:
    """Recompute a finished demo's metrics, summary, claims, plots and report from its saved per-question
    predictions (`DIR/eval/<model>/predictions.jsonl`), without running any model: for when the metrics or the
    claims change. Each eval folder's metrics.json is rewritten (its settings and fingerprint kept); the timing is
    the original run's. Same eval rows, grid, bootstrap seed and confidence method as the run itself."""
    from rlcal.evaluation.sweep import compute_metrics, write_eval
    from rlcal.world.corpus import load_world_stats

    out = Path(out_dir)
    try:
        old = json.loads((out / "summary.json").read_text())
        scale, seed = old["scale"], int(old["seed"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RlcalError(f"{out} holds no finished demo (summary.json: {exc})") from None
    metrics, predictions = {}, {}
    for name in MODELS:
        folder = out / "eval" / name
        try:
            saved = json.loads((folder / "metrics.json").read_text())
            lines = (folder / "predictions.jsonl").read_text().splitlines()
            predictions[name] = [json.loads(line) for line in lines if line.strip()]
        except (OSError, ValueError) as exc:
            raise RlcalError(f"{folder}: {exc}") from None
        fresh = compute_metrics(predictions[name], DEMO_THRESHOLDS, saved.get("confidence_method", "answer_prob"),
                                seed=seed)  # fmt: skip
        metrics[name] = {**fresh, **{k: saved[k] for k in ("settings", "fingerprint") if k in saved}}
    rows = _eval_rows(out / "world", SCALE[scale]["eval_samples"])
    world = load_world_stats(out / "world") or {}
    for name in MODELS:  # written only once everything has been read and rescored: a bad folder changes nothing
        write_eval(out / "eval" / name, metrics[name], predictions[name], title=name)
    return _summarize(out, out, scale, seed, rows, world, metrics, predictions, dict(old.get("timing") or {}), None)


def _by_count_mean(predictions: list[Mapping[str, Any]], counts: list[int]) -> dict[str, Any]:
    """hallucination_by_count averaged over the confidence targets t ∈ {0.5, 0.75, 0.9}."""
    per_t = [hallucination_by_count(predictions, counts, float(t)) for t in TARGET_THRESHOLDS]
    buckets = {b for d in per_t for b in d}
    return {
        b: {
            k: _mean([d[b][k] for d in per_t if b in d])
            for k in ("n", "accuracy", "hallucination_rate", "abstain_rate")
        }
        for b in BUCKETS
        if b in buckets
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs/demo", help="Output directory (default: outputs/demo).")
    parser.add_argument("--quick", action="store_true", help="Toy-scale run (under a minute) that checks the pipeline.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for the world, pretraining and RL.")
    parser.add_argument("--verbose", action="store_true", help="Print the trainings' log dicts (rlcal train --verbose).")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="Rebuild a finished demo's metrics, claims and report in --out from its saved predictions (no model runs).",
    )


def run(args: argparse.Namespace) -> int:
    if args.seed < 0:
        raise RlcalError(f"--seed must be >= 0, got {args.seed}")
    if getattr(args, "rescore", False):
        rescore_demo(args.out)  # prints the claims line and the report's path, like a run
        return 0
    run_demo(args.out, quick=args.quick, seed=args.seed, verbose=getattr(args, "verbose", False))
    return 0
