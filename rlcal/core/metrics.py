"""Calibration and abstention metrics for confidence-scored answers, as pure numpy functions.

Every metric takes a ``confidence`` array (the model's stated probability that its answer is right, in [0, 1]) and a
``correct`` array (bool or 0/1: whether the answer was right), both 1-D and of equal length, and returns plain Python
floats, lists and dicts, so results can go straight into JSON logs::

    from rlcal.core import metrics

    metrics.summarize(conf, correct)              # {"n", "ece", "ece_equal_mass", "mce", "brier", "auroc"}
    metrics.reliability_bins(conf, correct)       # per-bin data for a reliability diagram
    metrics.ideal_policy(conf, correct, 0.75)     # answer iff confidence > t, scored at threshold t
    metrics.abstention_metrics(correct, answered, 0.75)  # score what the model actually did
    metrics.outcome_rates(n, n_correct, n_wrong, penalty_sum)  # the per-threshold rates, on numbers or arrays
    metrics.risk_coverage(conf, correct)          # selective-prediction curve and AURC

Binning (``ece``, ``mce``, ``reliability_bins``):

* ``strategy="uniform"`` follows torchmetrics' ``binary_calibration_error``: bin ``k`` is the half-open interval
  ``[k/n_bins, (k+1)/n_bins)``, so confidence 0 lands in the first bin, and confidence exactly 1.0 gets a bin of its
  own, ``[1, 1]`` (``reliability_bins`` therefore returns ``n_bins + 1`` entries). Boundaries are the correctly
  rounded ``k/n_bins``; torchmetrics' ``linspace`` boundaries can be one ulp above that (e.g. 0.3 with 10 bins), so a
  confidence lying exactly on such a boundary lands one bin to the right here. Away from boundaries the two agree.
* ``strategy="quantile"`` (equal mass) sorts by confidence and splits the sorted order into ``n_bins`` groups of
  nearly equal size (``np.array_split``); tied confidences may straddle two groups.

Scoring at a confidence target ``t`` (the reward the RL objective uses): +1 for a correct answer, 0 for an
abstention and ``-t/(1-t)`` (``rlcal.core.thresholds.penalty``) for a wrong answer, so answering pays off in
expectation exactly when P(correct) > t. ``outcome_rates`` is the one definition of the per-threshold rates; the
aggregation layer (``rlcal.core.aggregate``) uses it for point estimates and bootstrap resamples alike.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from rlcal.core.thresholds import penalty

__all__ = [
    "abstention_metrics",
    "auroc",
    "brier",
    "ece",
    "ideal_policy",
    "mce",
    "outcome_rates",
    "reliability_bins",
    "risk_coverage",
    "summarize",
    "uniform_bin_index",
]

Strategy = Literal["uniform", "quantile"]


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------


def _as_bool(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if arr.dtype == bool:
        return arr
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be bool or 0/1 numbers, got dtype {arr.dtype}")
    # Reject e.g. probabilities passed by mistake instead of silently thresholding them.
    if not np.all((arr == 0) | (arr == 1)):
        raise ValueError(f"{name} must contain only 0/1 (or bool) values")
    return arr == 1


def _validate(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    conf = np.asarray(confidence)
    if conf.ndim != 1:
        raise ValueError(f"confidence must be 1-D, got shape {conf.shape}")
    if conf.size == 0:
        raise ValueError("confidence is empty")
    if conf.dtype == bool or not np.issubdtype(conf.dtype, np.number):
        raise ValueError(f"confidence must be real numbers, got dtype {conf.dtype}")
    if np.iscomplexobj(conf):
        raise ValueError("confidence must be real numbers, got complex values")
    conf = conf.astype(np.float64)
    if not np.all(np.isfinite(conf)):
        raise ValueError("confidence contains NaN or infinite values")
    if conf.min() < 0.0 or conf.max() > 1.0:
        raise ValueError(f"confidence must lie in [0, 1], got range [{conf.min()}, {conf.max()}]")
    corr = _as_bool(correct, "correct")
    if corr.shape != conf.shape:
        raise ValueError(f"confidence and correct differ in length: {conf.size} vs {corr.size}")
    return conf, corr


def _check_bins(n_bins: int, strategy: str) -> None:
    # bool is an int subclass; True bins is almost certainly a bug.
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    if strategy not in ("uniform", "quantile"):
        raise ValueError(f"strategy must be 'uniform' or 'quantile', got {strategy!r}")


def _check_threshold(threshold: float) -> float:
    t = float(threshold)
    if not 0.0 <= t < 1.0:  # also rejects NaN
        raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
    return t


# ---------------------------------------------------------------------------
# Binning
# ---------------------------------------------------------------------------


def _uniform_edges(n_bins: int) -> np.ndarray:
    # k/n rather than linspace: correctly rounded, so e.g. 0.3 is the boundary of [0.3, 0.4) with 10 bins.
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def uniform_bin_index(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """The uniform bin (0 .. n_bins) of each confidence, as ``reliability_bins`` assigns them (1.0 -> n_bins).

    Exposed so that resampled ECEs (``rlcal.core.aggregate``) bin exactly as the point estimate does.
    """
    # side="right" == torch.bucketize(right=True): bins are [lo, hi); 1.0 gets its own bin index n_bins.
    return np.searchsorted(_uniform_edges(n_bins), np.asarray(confidence, dtype=np.float64), side="right") - 1


def _bins(conf: np.ndarray, corr: np.ndarray, n_bins: int, strategy: str) -> list[dict[str, Any]]:
    """Per-bin ``lo, hi, count, mean_confidence, accuracy`` (means None for empty bins)."""
    _check_bins(n_bins, strategy)
    out: list[dict[str, Any]] = []
    if strategy == "uniform":
        edges = _uniform_edges(n_bins)
        idx = uniform_bin_index(conf, n_bins)
        counts = np.bincount(idx, minlength=n_bins + 1)
        conf_sum = np.bincount(idx, weights=conf, minlength=n_bins + 1)
        acc_sum = np.bincount(idx, weights=corr.astype(np.float64), minlength=n_bins + 1)
        for k in range(n_bins + 1):
            lo = float(edges[k])
            hi = float(edges[k + 1]) if k < n_bins else 1.0
            c = int(counts[k])
            out.append(
                {
                    "lo": lo,
                    "hi": hi,
                    "count": c,
                    "mean_confidence": float(conf_sum[k] / c) if c else None,
                    "accuracy": float(acc_sum[k] / c) if c else None,
                }
            )
    else:
        order = np.argsort(conf, kind="stable")
        for group in np.array_split(order, n_bins):
            if group.size == 0:  # only when n < n_bins
                out.append({"lo": None, "hi": None, "count": 0, "mean_confidence": None, "accuracy": None})
                continue
            gc = conf[group]
            out.append(
                {
                    "lo": float(gc[0]),  # sorted, so first/last are min/max
                    "hi": float(gc[-1]),
                    "count": int(group.size),
                    "mean_confidence": float(gc.mean()),
                    "accuracy": float(corr[group].mean()),
                }
            )
    return out


def _gaps(bins: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Counts and |accuracy - mean confidence| of the non-empty bins."""
    full = [b for b in bins if b["count"]]
    counts = np.array([b["count"] for b in full], dtype=np.float64)
    gaps = np.array([abs(b["accuracy"] - b["mean_confidence"]) for b in full], dtype=np.float64)
    return counts, gaps


# ---------------------------------------------------------------------------
# Calibration metrics
# ---------------------------------------------------------------------------


def reliability_bins(
    confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform"
) -> list[dict[str, Any]]:
    """Data for a reliability diagram: one dict per bin, in increasing confidence order.

    Each dict has ``lo`` and ``hi`` (bin range; for ``quantile`` the min/max confidence in the bin), ``count``,
    ``mean_confidence`` and ``accuracy``. Empty bins are included with ``count`` 0 and None for the means (and for
    ``lo``/``hi`` of empty quantile bins). ``uniform`` yields ``n_bins + 1`` entries, the last being the ``[1, 1]``
    bin for confidence exactly 1.0; ``quantile`` yields ``n_bins`` entries.
    """
    conf, corr = _validate(confidence, correct)
    return _bins(conf, corr, n_bins, strategy)


def ece(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform") -> float:
    """Expected calibration error: ``sum_b |B_b|/n * |accuracy_b - mean_confidence_b|``, in [0, 1].

    With ``strategy="uniform"`` this equals torchmetrics' ``binary_calibration_error(..., n_bins, norm="l1")``.
    """
    conf, corr = _validate(confidence, correct)
    counts, gaps = _gaps(_bins(conf, corr, n_bins, strategy))
    return float(np.sum(counts * gaps) / conf.size)


def mce(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15, strategy: Strategy = "uniform") -> float:
    """Maximum calibration error: the largest ``|accuracy_b - mean_confidence_b|`` over non-empty bins."""
    conf, corr = _validate(confidence, correct)
    _, gaps = _gaps(_bins(conf, corr, n_bins, strategy))
    return float(gaps.max())


def brier(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Brier score: mean of ``(confidence - correct)**2``, in [0, 1]; lower is better."""
    conf, corr = _validate(confidence, correct)
    return float(np.mean((conf - corr) ** 2))


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing the mean of their ranks."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    # Start index of each run of equal values in sorted order.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]  # exclusive
    run_rank = (starts + 1 + ends) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(run_rank, ends - starts)
    return ranks


def auroc(confidence: ArrayLike, correct: ArrayLike) -> float:
    """Area under the ROC curve of confidence as a score for correctness (ties count 1/2, Mann-Whitney U).

    The probability that a random correct answer has higher confidence than a random wrong one. Returns
    ``float('nan')`` when all answers are correct or all are wrong, since the ROC curve is then undefined.
    """
    conf, corr = _validate(confidence, correct)
    n_pos = int(corr.sum())
    n_neg = conf.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = _average_ranks(conf)[corr].sum()
    u = rank_sum - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# ---------------------------------------------------------------------------
# Abstention metrics
# ---------------------------------------------------------------------------


def abstention_metrics(correct: ArrayLike, answered: ArrayLike, threshold: float) -> dict[str, Any]:
    """Score a set of answer/abstain decisions at confidence target ``threshold`` (t in [0, 1)).

    ``answered[i]`` False means item i was an abstention; ``correct[i]`` is ignored there. Returns a dict with
    counts ``n, n_correct, n_wrong, n_abstain`` and

    * ``answer_rate``: answered / n
    * ``accuracy_answered``: correct / answered, None when nothing was answered
    * ``hallucination_rate``: wrong / n (wrong answers over *all* items, not just answered ones)
    * ``score``: mean reward, +1 correct, 0 abstain, ``-t/(1-t)`` wrong
    """
    corr = _as_bool(correct, "correct")
    ans = _as_bool(answered, "answered")
    if corr.shape != ans.shape:
        raise ValueError(f"correct and answered differ in length: {corr.size} vs {ans.size}")
    t = _check_threshold(threshold)
    n = corr.size
    n_answered = int(ans.sum())
    n_correct = int((corr & ans).sum())
    n_wrong = n_answered - n_correct
    counts = {"n": n, "n_correct": n_correct, "n_wrong": n_wrong, "n_abstain": n - n_answered}
    return {**counts, **outcome_rates(n, n_correct, n_wrong, n_wrong * penalty(t))}


def _ratio(num: Any, den: Any) -> Any:
    """num / den; None for a scalar 0 denominator, NaN where an array denominator is 0."""
    if isinstance(den, np.ndarray) or isinstance(num, np.ndarray):
        num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
        return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den != 0)
    return num / den if den else None


def outcome_rates(n: Any, n_correct: Any, n_wrong: Any, penalty_sum: Any) -> dict[str, Any]:
    """The rates of a group of ``n`` decisions with ``n_correct`` right and ``n_wrong`` wrong answers (the rest
    abstentions), ``penalty_sum`` being the sum of ``t/(1-t)`` over the wrong answers (``n_wrong * penalty(t)``
    for one t):

    * ``answer_rate`` = (correct + wrong) / n
    * ``accuracy_answered`` = correct / (correct + wrong); None (NaN for arrays) when nothing was answered
    * ``hallucination_rate`` = wrong / n (over *all* decisions)
    * ``score`` = (correct - penalty_sum) / n, the mean reward: +1 correct, 0 abstain, -t/(1-t) wrong

    Works on Python numbers (point estimates) and on equal-shape numpy arrays (bootstrap resamples, where a
    resample without decisions gives NaN) with the same arithmetic, so both are one definition.
    """
    answered = n_correct + n_wrong
    return {
        "answer_rate": _ratio(answered, n),
        "accuracy_answered": _ratio(n_correct, answered),
        "hallucination_rate": _ratio(n_wrong, n),
        "score": _ratio(n_correct - penalty_sum, n),
    }


def ideal_policy(confidence: ArrayLike, correct: ArrayLike, threshold: float) -> dict[str, Any]:
    """``abstention_metrics`` for the policy that answers iff ``confidence > threshold``.

    This is the behaviourally calibrated policy: with calibrated confidences it maximises the expected score at t.
    """
    conf, corr = _validate(confidence, correct)
    t = _check_threshold(threshold)
    return abstention_metrics(corr, conf > t, t)


def risk_coverage(confidence: ArrayLike, correct: ArrayLike) -> dict[str, Any]:
    """Selective-prediction curve: answer the k most confident items, for k = 1..n.

    Returns ``coverage`` (k/n) and ``risk`` (error rate among those k), both float arrays of length n, and ``aurc``,
    the area under the risk-coverage curve (mean of ``risk``; lower is better). Tied confidences are treated as an
    unordered block: errors inside a block are spread evenly over it, i.e. the expected curve under random
    tie-breaking, so the result does not depend on input order (constant confidence gives a flat curve).
    """
    conf, corr = _validate(confidence, correct)
    n = conf.size
    order = np.argsort(-conf, kind="stable")
    cs = conf[order]
    err = (~corr[order]).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    ends = np.r_[starts[1:], n]
    sizes = ends - starts
    block_err = np.add.reduceat(err, starts)
    err_before = np.r_[0.0, np.cumsum(block_err)[:-1]]
    pos_in_block = np.arange(n) - np.repeat(starts, sizes) + 1  # 1..size within each block
    cum_err = np.repeat(err_before, sizes) + pos_in_block * np.repeat(block_err / sizes, sizes)
    k = np.arange(1, n + 1, dtype=np.float64)
    risk = cum_err / k
    return {"coverage": k / n, "risk": risk, "aurc": float(risk.mean())}


def summarize(confidence: ArrayLike, correct: ArrayLike, n_bins: int = 15) -> dict[str, Any]:
    """Headline calibration numbers as a JSON-friendly dict (NaN becomes None).

    Keys: ``n``, ``ece`` (uniform bins), ``ece_equal_mass`` (quantile bins), ``mce`` (uniform bins), ``brier``,
    ``auroc`` (None when all answers are correct or all wrong).
    """
    conf, corr = _validate(confidence, correct)
    out: dict[str, Any] = {
        "n": int(conf.size),
        "ece": ece(conf, corr, n_bins, "uniform"),
        "ece_equal_mass": ece(conf, corr, n_bins, "quantile"),
        "mce": mce(conf, corr, n_bins, "uniform"),
        "brier": brier(conf, corr),
        "auroc": auroc(conf, corr),
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()}
