"""Behavioral ECE: how well a model's answer/abstain decisions across confidence targets match its accuracy.

    from rlcal.core import behavioral
    # answered[i, j]: did question i get an answer at grid[j]; correct[i]: was its t = 0 answer right
    behavioral.behavioral_ece([0.0, 0.5, 0.75, 0.9], answered, correct)
    behavioral.monotone_share(answered)     # share of questions whose answered set shrinks as t rises
    behavioral.behavioral_bins(grid, answered, correct)   # per-bin data (interval, count, accuracy, distance)
    behavioral.answer_rate_changes(answered)   # answer rate at each grid t minus at the one before

Definition. Grid ``0 = t_0 < t_1 < ... < t_k < 1`` and ``t_{k+1} = 1``. For each question, ``a_i`` = answered at
``t_i`` and ``y`` = correctness of its ``t_0`` answer (0 if it abstains at ``t_0``). ``L`` = the largest ``i`` with
``a_0 = ... = a_i = 1`` (``L = -1`` if ``a_0 = 0``): the model acts as if its confidence lay in ``[t_L, t_{L+1}]``
(answering at ``t`` pays off exactly when P(correct) > t). Bin ``i`` = the questions with ``L = i``, interval
``[t_i, t_{i+1}]``; bin ``-1`` has interval ``[0, 0]``. Then

    behavioral ECE = sum over bins (n_bin / N) * distance(mean y of the bin, its interval),

the distance from a point to an interval being 0 inside it and the distance to the nearer end outside. Bin -1
always contributes 0 (its y are all 0, inside ``[0, 0]``) but counts in N. A model that answers everything scores
``max(0, t_k - accuracy)``: with a fine grid (``t_k`` near 1) that is about ``1 - accuracy``. Answers that come back
after an abstention (non-monotone in t) are ignored past the first abstention; ``monotone_share`` reports how often
that happens. Pure numpy, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "answer_rate_changes",
    "behavioral_bins",
    "behavioral_ece",
    "bin_intervals",
    "check_grid",
    "ece_from_sums",
    "is_monotone",
    "monotone_share",
    "stop_levels",
]


def check_grid(thresholds: Sequence[float]) -> np.ndarray:
    """The grid as a float array; ValueError unless it starts at 0, rises strictly, stays below 1, has >= 2 points."""
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise ValueError(f"behavioral ECE needs a grid of at least 2 thresholds, got {list(thresholds)!r}")
    if grid[0] != 0.0 or not np.all(np.diff(grid) > 0) or not grid[-1] < 1.0:
        raise ValueError(f"the grid must be 0 = t_0 < t_1 < ... < t_k < 1, got {list(thresholds)!r}")
    return grid


def _check_decisions(
    grid: np.ndarray, answered: ArrayLike, correct: ArrayLike | None = None
) -> tuple[np.ndarray, ...]:
    ans = np.asarray(answered)
    if ans.ndim != 2 or ans.shape[1] != grid.size:
        raise ValueError(f"answered must have shape (questions, {grid.size}), got {ans.shape}")
    if ans.shape[0] == 0:
        raise ValueError("answered is empty")
    if ans.dtype != bool and not np.all((ans == 0) | (ans == 1)):
        raise ValueError("answered must contain only 0/1 (or bool) values")
    ans = ans.astype(bool)
    if correct is None:
        return (ans,)
    corr = np.asarray(correct)
    if corr.shape != (ans.shape[0],):
        raise ValueError(f"correct must have shape ({ans.shape[0]},), got {corr.shape}")
    if corr.dtype != bool and not np.all((corr == 0) | (corr == 1)):
        raise ValueError("correct must contain only 0/1 (or bool) values")
    # y is the correctness of the t_0 *answer*: an abstention at t_0 is never correct.
    return ans, corr.astype(bool) & ans[:, 0]


def stop_levels(answered: ArrayLike) -> np.ndarray:
    """L per question: the largest i with a_0 = ... = a_i = 1, or -1 when a_0 = 0. ``answered`` is (N, k+1)."""
    ans = np.asarray(answered, dtype=bool)
    # cumprod keeps 1 up to the first abstention; the count of leading answers minus one is L.
    return np.cumprod(ans, axis=1).sum(axis=1).astype(np.int64) - 1


def bin_intervals(thresholds: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) of bins -1, 0, ..., k (array position = L + 1): [0, 0], then [t_i, t_{i+1}] with t_{k+1} = 1."""
    grid = check_grid(thresholds)
    lo = np.r_[0.0, grid]
    hi = np.r_[0.0, grid[1:], 1.0]
    return lo, hi


def ece_from_sums(counts: np.ndarray, y_sums: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Behavioral ECE from per-bin question counts and sums of y, shape (..., k+2); NaN where there are no
    questions. Shared by the point estimate and the bootstrap resamples (rlcal.core.aggregate)."""
    counts = np.asarray(counts, dtype=np.float64)
    y_sums = np.asarray(y_sums, dtype=np.float64)
    mean = np.divide(y_sums, counts, out=np.zeros_like(y_sums), where=counts > 0)
    distance = np.maximum(np.maximum(lo - mean, mean - hi), 0.0)
    total = counts.sum(axis=-1)
    weighted = (counts * distance).sum(axis=-1)
    return np.divide(weighted, total, out=np.full(np.shape(total), np.nan), where=total > 0)


def _bin_sums(levels: np.ndarray, y: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    counts = np.bincount(levels + 1, minlength=n_bins).astype(np.float64)
    y_sums = np.bincount(levels + 1, weights=y.astype(np.float64), minlength=n_bins)
    return counts, y_sums


def behavioral_ece(thresholds: Sequence[float], answered: ArrayLike, correct: ArrayLike) -> float:
    """Behavioral ECE (module docstring) of N questions: ``answered`` (N, k+1) bool at the grid ``thresholds``,
    ``correct`` (N,) the correctness of each t_0 answer. In [0, 1]; 0 means every bin's accuracy lies in the
    confidence interval the decisions imply."""
    grid = check_grid(thresholds)
    ans, y = _check_decisions(grid, answered, correct)
    lo, hi = bin_intervals(grid)
    counts, y_sums = _bin_sums(stop_levels(ans), y, lo.size)
    return float(ece_from_sums(counts, y_sums, lo, hi))


def behavioral_bins(thresholds: Sequence[float], answered: ArrayLike, correct: ArrayLike) -> list[dict[str, Any]]:
    """One dict per bin L = -1 .. k: ``level`` (L), ``lo``, ``hi``, ``count``, ``accuracy`` (mean y; None when
    empty) and ``distance`` (from accuracy to [lo, hi]; None when empty)."""
    grid = check_grid(thresholds)
    ans, y = _check_decisions(grid, answered, correct)
    lo, hi = bin_intervals(grid)
    counts, y_sums = _bin_sums(stop_levels(ans), y, lo.size)
    out = []
    for j in range(lo.size):
        c = int(counts[j])
        acc = float(y_sums[j] / c) if c else None
        dist = None if acc is None else max(float(lo[j]) - acc, acc - float(hi[j]), 0.0)
        out.append({"level": j - 1, "lo": float(lo[j]), "hi": float(hi[j]), "count": c, "accuracy": acc,
                    "distance": dist})  # fmt: skip
    return out


def is_monotone(answered: ArrayLike) -> np.ndarray:
    """Per question: True when its answered set is non-increasing in t (never answers again after abstaining)."""
    ans = np.asarray(answered, dtype=bool)
    return ~np.any(~ans[:, :-1] & ans[:, 1:], axis=1)


def monotone_share(answered: ArrayLike) -> float:
    """Share of questions (rows of ``answered``, columns in increasing t) whose answers are monotone in t."""
    return float(is_monotone(_answered_matrix(answered)).mean())


def answer_rate_changes(answered: ArrayLike) -> np.ndarray:
    """Answer rate at each grid t minus the rate at the t before it (columns in increasing t), over the same
    questions: k values for k + 1 thresholds. A policy that answers iff P(correct) > t has every change <= 0; the
    aggregation layer gives each change a paired bootstrap interval, so a rise of a few questions can be told from
    one beyond sampling noise."""
    return np.diff(_answered_matrix(answered).astype(np.float64).mean(axis=0))


def _answered_matrix(answered: ArrayLike) -> np.ndarray:
    """``answered`` as an array; ValueError unless it is (questions >= 1, thresholds >= 2)."""
    ans = np.asarray(answered)
    if ans.ndim != 2 or ans.shape[0] == 0 or ans.shape[1] < 2:
        raise ValueError(f"answered must have shape (questions >= 1, thresholds >= 2), got {ans.shape}")
    return ans
