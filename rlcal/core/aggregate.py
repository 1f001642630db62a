"""The one aggregation layer: per-sample records -> the whole metrics schema, with bootstrap confidence intervals.

    from rlcal.core.aggregate import Record, aggregate, threshold_block
    records = [Record("correct", 0.0, 0.9, question="q1"), Record("abstain", 0.75, None, question="q1"), ...]
    result = aggregate(records, n_bins=15, calibration_threshold=0.0)   # n_resamples=1000, seed=0
    result["per_threshold"]["0.75"]["answer_rate"], result["per_threshold"]["0.75"]["ci"]["answer_rate"]
    threshold_block(["correct", "wrong"], [0.5, 0.5])     # one group's counts and rates (no CI)

A `Record` is one decision: outcome (correct / wrong / abstain), the confidence target t it was made at, the
model's confidence in its answer (optional) and the question it belongs to (optional; records without one are
each their own question). `aggregate` returns (every key is documented in docs/metrics.md):

- `calibration`: n, ece, ece_equal_mass, mce, brier, auroc (`rlcal.core.metrics.summarize`) and `reliability`
  (bins) over the answered records that carry a confidence, at `calibration_threshold` (None: at every t);
- `per_threshold[key]`: n, n_correct, n_wrong, n_abstain, answer_rate, accuracy_answered, hallucination_rate,
  score (`threshold_block`: penalty t/(1-t) from `rlcal.core.thresholds.penalty`) and `ci` (below);
- `behavioral`: behavioral_ece, behavioral_monotone_share, behavioral_n, behavioral_bins and
  behavioral_rate_changes (`rlcal.core.behavioral`; per consecutive pair of grid t: from, to, change in answer rate
  and its paired interval `ci`), when the same questions were decided at >= 2 thresholds including t = 0 (else None);
- `ci`: `{"ece": [lo, hi], "behavioral_ece": [lo, hi], "behavioral_monotone_share": [lo, hi]}`, and `bootstrap`:
  how the intervals were made.

Confidence intervals are percentile bootstrap intervals (default 95 %, 1000 resamples, seed 0) that resample
*questions*: every record of a drawn question (all its thresholds, its calibration record) comes along, so the
paired structure across t is kept. Vectorised: one (resamples x questions) count matrix times one (questions x
features) matrix of per-question sums gives every resample's sums at once; each statistic is then computed from
those sums by the same function as its point estimate (`metrics.outcome_rates`, `behavioral.ece_from_sums`). An
interval is None where no resample defines the statistic. Pure numpy, no torch.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rlcal.core import behavioral, metrics
from rlcal.core.grading import ABSTAIN, CORRECT, WRONG, Outcome
from rlcal.core.prompts import format_number
from rlcal.core.thresholds import penalty

__all__ = [
    "BEHAVIORAL_LIST_KEYS",
    "CALIBRATION_KEYS",
    "COUNT_KEYS",
    "DEFAULT_RESAMPLES",
    "PER_THRESHOLD_KEYS",
    "RATE_KEYS",
    "Record",
    "aggregate",
    "bootstrap_weights",
    "rises_beyond_noise",
    "threshold_block",
    "threshold_key",
]

CALIBRATION_KEYS = ("ece", "ece_equal_mass", "mce", "brier", "auroc")
COUNT_KEYS = ("n", "n_correct", "n_wrong", "n_abstain")
RATE_KEYS = ("answer_rate", "accuracy_answered", "hallucination_rate", "score")  # each gets a CI
PER_THRESHOLD_KEYS = COUNT_KEYS + RATE_KEYS
BEHAVIORAL_CI_KEYS = ("behavioral_ece", "behavioral_monotone_share")
# The behavioral block's per-bin and per-step lists: metrics files put them after the scalars.
BEHAVIORAL_LIST_KEYS = ("behavioral_bins", "behavioral_rate_changes")
DEFAULT_RESAMPLES = 1000
# Sane caps on the counts users give (`--bins`, `--n-bins`, `--bootstrap`, `calibration.n_bins`): far above any
# useful value, far below the sizes that exhaust memory (a bin count of 10^9 was killed after 24 GB).
MAX_BINS = 10_000
MAX_RESAMPLES = 100_000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
_CHUNK_CELLS = 2_000_000  # resamples x questions per matrix product: bounds memory (16 MB) for any n


@dataclass(frozen=True)
class Record:
    """One decision: its outcome, the confidence target t it was made at, the stated confidence (None if none)
    and the question it answers (None: a question of its own). `cluster` (None: the question itself) is the
    bootstrap's unit: questions that share one are drawn together (the same prompt asked with several gold draws,
    as in the world's forecast family, is one independent observation, not several)."""

    outcome: Outcome
    threshold: float = 0.0
    confidence: float | None = None
    question: Hashable | None = None
    cluster: Hashable | None = None


def threshold_key(t: float) -> str:
    """How t names its group in `per_threshold`: "0", "0.5", "0.75"; t is rounded to 2 decimals (more near 1, so
    that 0.999 does not read "1")."""
    for decimals in (2, 4, 6):
        key = format_number(t, decimals)
        if key != "1":
            return key
    return repr(t)


def threshold_block(outcomes: Sequence[Outcome], thresholds: Sequence[float]) -> dict[str, Any]:
    """Counts and rates of one group of decisions, each wrong answer costing t/(1-t) at its own t:
    `{n, n_correct, n_wrong, n_abstain, answer_rate, accuracy_answered, hallucination_rate, score}`
    (`metrics.outcome_rates`). Plain Python: it runs on every logged reward batch."""
    n = len(outcomes)
    if n == 0:
        raise ValueError("threshold_block needs at least one outcome")
    if len(thresholds) != n:
        raise ValueError(f"{len(thresholds)} thresholds for {n} outcomes")
    counts = Counter(outcomes)
    unknown = set(counts) - {CORRECT, WRONG, ABSTAIN}
    if unknown:
        raise ValueError(f"unknown outcomes {sorted(map(str, unknown))}; expected correct, wrong or abstain")
    n_correct, n_wrong = counts[CORRECT], counts[WRONG]
    wrong_at = Counter(t for o, t in zip(outcomes, thresholds, strict=True) if o == WRONG)
    # One t (the per-threshold case): n_wrong * penalty(t), the very expression metrics.abstention_metrics uses.
    penalty_sum = math.fsum(c * penalty(t) for t, c in wrong_at.items())
    block = {"n": n, "n_correct": n_correct, "n_wrong": n_wrong, "n_abstain": counts[ABSTAIN]}
    return {**block, **metrics.outcome_rates(n, n_correct, n_wrong, penalty_sum)}


def bootstrap_weights(n_units: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_resamples, n_units) matrix: how often each unit (question) is drawn in each resample of size n_units.

    Drawn as a resample index matrix (`rng.integers`, one row per resample) and counted per row."""
    idx = rng.integers(0, n_units, size=(n_resamples, n_units))
    flat = idx + (np.arange(n_resamples) * n_units)[:, None]
    return np.bincount(flat.ravel(), minlength=n_resamples * n_units).reshape(n_resamples, n_units).astype(np.float64)


def _interval(values: np.ndarray, level: float) -> list[float] | None:
    """Percentile interval of the defined (non-NaN) values; None if none is defined."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    lo, hi = np.percentile(values, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def _dense_ids(keys: Sequence[Hashable | None]) -> tuple[np.ndarray, int]:
    """(dense integer id of each key in order of first appearance, number of ids); each None gets an id of its own."""
    ids: dict[Hashable, int] = {}
    out = np.empty(len(keys), dtype=np.int64)
    n = 0
    for i, key in enumerate(keys):
        j = None if key is None else ids.get(key)
        if j is None:
            j = n
            n += 1
            if key is not None:
                ids[key] = j
        out[i] = j
    return out, n


def _question_index(records: Sequence[Record]) -> tuple[np.ndarray, int]:
    return _dense_ids([r.question for r in records])


def _cluster_index(records: Sequence[Record], q_index: np.ndarray, n_questions: int) -> tuple[np.ndarray, int]:
    """(cluster of each question, number of clusters): a question's cluster is its first record's; a question
    without a cluster is its own."""
    first = np.full(n_questions, -1, dtype=np.int64)
    for i, q in enumerate(q_index):
        if first[q] < 0:
            first[q] = i
    return _dense_ids([records[i].cluster for i in first])


def _behavioral_rows(
    records: Sequence[Record], q_index: np.ndarray, n_questions: int, keys: list[str]
) -> tuple[list[float], np.ndarray, np.ndarray, np.ndarray] | None:
    """(grid, question indices, answered matrix, t_0 correctness) of the questions decided exactly once at every
    threshold of the grid; None when the records carry no such data (fewer than 2 thresholds, none at t = 0)."""
    if len(keys) < 2 or float(keys[0]) != 0.0:
        return None
    column = {key: j for j, key in enumerate(keys)}
    cells = np.zeros((n_questions, len(keys)), dtype=np.int64)
    answered = np.zeros((n_questions, len(keys)), dtype=bool)
    correct0 = np.zeros(n_questions, dtype=bool)
    for r, q in zip(records, q_index, strict=True):
        j = column[threshold_key(r.threshold)]
        cells[q, j] += 1
        answered[q, j] = r.outcome != ABSTAIN
        if j == 0:
            correct0[q] = r.outcome == CORRECT
    complete = np.flatnonzero(np.all(cells == 1, axis=1))
    if complete.size == 0:
        return None
    return [float(k) for k in keys], complete, answered[complete], correct0[complete]


def aggregate(
    records: Sequence[Record],
    n_bins: int = 15,
    calibration_threshold: float | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> dict[str, Any]:
    """The metrics schema of `records` (module docstring); `n_resamples=0` skips the confidence intervals."""
    records = list(records)
    if not records:
        raise ValueError("no records to aggregate")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 0:
        raise ValueError(f"n_resamples must be a non-negative integer, got {n_resamples!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    keyed = [threshold_key(r.threshold) for r in records]
    keys = sorted(set(keyed), key=float)
    groups: dict[str, list[Record]] = {k: [] for k in keys}
    for r, k in zip(records, keyed, strict=True):
        groups[k].append(r)
    per_threshold = {
        k: threshold_block([r.outcome for r in g], [r.threshold for r in g]) for k, g in groups.items()
    }

    def rated_at(r: Record) -> bool:
        at = calibration_threshold is None or r.threshold == calibration_threshold
        return at and r.outcome != ABSTAIN and r.confidence is not None

    rated = [i for i, r in enumerate(records) if rated_at(r)]
    if rated:
        conf = np.array([records[i].confidence for i in rated], dtype=np.float64)
        corr = np.array([records[i].outcome == CORRECT for i in rated])
        calibration = metrics.summarize(conf, corr, n_bins)
        calibration["reliability"] = metrics.reliability_bins(conf, corr, n_bins)
    else:
        calibration = {"n": 0, **dict.fromkeys(CALIBRATION_KEYS), "reliability": []}

    q_index, n_questions = _question_index(records)
    rows = _behavioral_rows(records, q_index, n_questions, keys)
    if rows is None:
        behavior: dict[str, Any] = {
            "behavioral_ece": None, "behavioral_monotone_share": None, "behavioral_n": 0, "behavioral_bins": None,
            "behavioral_rate_changes": None,
        }  # fmt: skip
    else:
        grid, _, answered, correct0 = rows
        behavior = {
            "behavioral_ece": behavioral.behavioral_ece(grid, answered, correct0),
            "behavioral_monotone_share": behavioral.monotone_share(answered),
            "behavioral_n": int(answered.shape[0]),
            "behavioral_bins": behavioral.behavioral_bins(grid, answered, correct0),
            "behavioral_rate_changes": [
                {"from": lo, "to": hi, "change": float(change)}
                for lo, hi, change in zip(grid[:-1], grid[1:], behavioral.answer_rate_changes(answered), strict=True)
            ],
        }
    out: dict[str, Any] = {"calibration": calibration, "per_threshold": per_threshold, "behavioral": behavior}
    if n_resamples == 0:
        return out
    design = _Design(records, keyed, keys, q_index, n_questions, rated, n_bins, rows)
    c_index, n_clusters = _cluster_index(records, q_index, n_questions)
    clustered = n_clusters < n_questions
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, _CHUNK_CELLS // n_questions))
    parts = []
    for start in range(0, n_resamples, chunk):
        weights = bootstrap_weights(n_clusters, min(chunk, n_resamples - start), rng)
        # A drawn cluster brings all its questions: each question's weight is its cluster's draw count.
        parts.append(design.statistics(weights[:, c_index] if clustered else weights))
    stats = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    for j, k in enumerate(keys):
        per_threshold[k]["ci"] = {name: _interval(stats[name][:, j], level) for name in RATE_KEYS}
    out["ci"] = {
        "ece": _interval(stats["ece"], level) if rated else None,
        **{name: _interval(stats[name], level) if rows is not None else None for name in BEHAVIORAL_CI_KEYS},
    }
    for j, entry in enumerate(behavior["behavioral_rate_changes"] or []):
        entry["ci"] = _interval(stats["rate_changes"][:, j], level)
    out["bootstrap"] = {
        "method": "percentile", "unit": "cluster" if clustered else "question",
        "n_units": n_clusters, "n_questions": n_questions, "n_resamples": n_resamples,
        "seed": seed, "level": level,
    }  # fmt: skip
    return out


class _Design:
    """Per-question sums of everything a statistic needs, as one (questions x features) matrix, so that a batch of
    resamples is one matrix product (weights @ X) followed by the statistics' own formulas on the sums."""

    def __init__(
        self,
        records: Sequence[Record],
        keyed: Sequence[str],
        keys: list[str],
        q_index: np.ndarray,
        n_questions: int,
        rated: Sequence[int],
        n_bins: int,
        rows: tuple[list[float], np.ndarray, np.ndarray, np.ndarray] | None,
    ) -> None:
        n_keys = len(keys)
        column = {k: j for j, k in enumerate(keys)}
        k_index = np.array([column[k] for k in keyed], dtype=np.int64)
        outcome = np.array([r.outcome for r in records])
        is_correct = (outcome == CORRECT).astype(np.float64)
        is_wrong = (outcome == WRONG).astype(np.float64)
        penalties = {t: penalty(t) for t in {r.threshold for r in records}}
        wrong_cost = is_wrong * np.array([penalties[r.threshold] for r in records])

        def per_cell(weights: np.ndarray | None, q: np.ndarray, col: np.ndarray, width: int) -> np.ndarray:
            flat = np.bincount(q * width + col, weights=weights, minlength=n_questions * width)
            return flat.reshape(n_questions, width)

        blocks = {
            "n": per_cell(None, q_index, k_index, n_keys),
            "correct": per_cell(is_correct, q_index, k_index, n_keys),
            "wrong": per_cell(is_wrong, q_index, k_index, n_keys),
            "cost": per_cell(wrong_cost, q_index, k_index, n_keys),
        }
        if rated:
            idx = np.asarray(rated)
            conf = np.array([records[i].confidence for i in idx], dtype=np.float64)
            b = metrics.uniform_bin_index(conf, n_bins)
            blocks["bin_n"] = per_cell(None, q_index[idx], b, n_bins + 1)
            blocks["bin_conf"] = per_cell(conf, q_index[idx], b, n_bins + 1)
            blocks["bin_correct"] = per_cell(is_correct[idx], q_index[idx], b, n_bins + 1)
        self.lohi = None
        if rows is not None:
            grid, questions, answered, correct0 = rows
            self.lohi = behavioral.bin_intervals(grid)
            width = len(grid) + 1
            levels = behavioral.stop_levels(answered) + 1
            y = (correct0 & answered[:, 0]).astype(np.float64)
            blocks["beh_n"] = per_cell(None, questions, levels, width)
            blocks["beh_y"] = per_cell(y, questions, levels, width)
            mono = behavioral.is_monotone(answered).astype(np.float64)
            blocks["mono"] = per_cell(mono, questions, np.zeros_like(questions), 1)
            blocks["complete"] = per_cell(None, questions, np.zeros_like(questions), 1)
            full = np.zeros((n_questions, len(grid)))
            full[questions] = answered
            blocks["answered"] = full
        self.slices: dict[str, slice] = {}
        start = 0
        for name, block in blocks.items():
            self.slices[name] = slice(start, start + block.shape[1])
            start += block.shape[1]
        self.matrix = np.hstack(list(blocks.values()))

    def statistics(self, weights: np.ndarray) -> dict[str, np.ndarray]:
        """Every bootstrapped statistic for each row of `weights` (resamples x questions); NaN where undefined."""
        sums = weights @ self.matrix

        def s(name: str) -> np.ndarray:
            return sums[:, self.slices[name]]

        with np.errstate(invalid="ignore", divide="ignore"):
            out = metrics.outcome_rates(s("n"), s("correct"), s("wrong"), s("cost"))
            if "bin_n" in self.slices:
                total = s("bin_n").sum(axis=1)
                # sum_b n_b |acc_b - conf_b| / N == sum_b |correct_b - conf_sum_b| / N: metrics.ece, from sums
                gap = np.abs(s("bin_correct") - s("bin_conf")).sum(axis=1)
                out["ece"] = np.divide(gap, total, out=np.full(total.shape, np.nan), where=total > 0)
            if self.lohi is not None:
                out["behavioral_ece"] = behavioral.ece_from_sums(s("beh_n"), s("beh_y"), *self.lohi)
                complete = s("complete")[:, 0]
                mono = s("mono")[:, 0]
                out["behavioral_monotone_share"] = np.divide(
                    mono, complete, out=np.full(complete.shape, np.nan), where=complete > 0
                )
                rates = np.divide(
                    s("answered"), complete[:, None], out=np.full(s("answered").shape, np.nan), where=complete[:, None] > 0
                )
                out["rate_changes"] = np.diff(rates, axis=1)
        return out


def rises_beyond_noise(changes: Sequence[Mapping[str, Any]] | None) -> list[Mapping[str, Any]]:
    """The entries of `behavioral_rate_changes` whose answer rate rises beyond noise: the paired 95 % interval lies
    above 0 (an entry without an interval counts its point change)."""
    return [c for c in changes or [] if (c.get("ci") or [c["change"]])[0] > 1e-9]
