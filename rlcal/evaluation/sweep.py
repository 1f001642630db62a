"""The metrics of an evaluation: predictions -> `metrics.json` (calibration, the behavioral-calibration sweep next to
the ideal policy, bootstrap intervals), the printed summary, and the output folder.

    from rlcal.evaluation.sweep import compute_metrics, format_summary, write_eval
    metrics = compute_metrics(predictions, thresholds=[0, 0.5, 0.75, 0.9])   # pure numpy, no model
    print(format_summary(metrics)); write_eval("outputs/eval/base", metrics, predictions)

Aggregation itself is `rlcal.core.aggregate` (shared with `rlcal score`); docs/metrics.md lists every key.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import staged_dir
from rlcal.core import metrics as M
from rlcal.core.aggregate import BEHAVIORAL_LIST_KEYS, CALIBRATION_KEYS, DEFAULT_RESAMPLES, Record, aggregate
from rlcal.core.thresholds import check_threshold

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
    # Questions with the same text (one prompt, several gold draws: the world's forecast family) are resampled
    # together: the model's decision is the same for each, so they are one observation for the intervals.
    records = [
        Record(p["outcome"], float(p["threshold"]), p["confidence"], p["index"], cluster=p.get("question"))
        for p in ordered
    ]
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
            **{k: v for k, v in behavior.items() if k not in BEHAVIORAL_LIST_KEYS},
            "confidence_method": confidence_method,
            "thresholds": sorted(by_t),
            "per_threshold": per_threshold,
            "sweep": sweep,
            "reliability": calibration["reliability"],
            **{k: behavior[k] for k in BEHAVIORAL_LIST_KEYS},
            "n_bins": n_bins,
        }
    )
    if "ci" in agg:
        out["ci"] = agg["ci"]
        out["bootstrap"] = agg["bootstrap"]
    return _clean(out)

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

