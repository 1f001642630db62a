"""Bootstrap confidence intervals: seconds for the whole metrics schema with 95 % intervals. Goal: < 1 s.

    python benchmarks/bench_bootstrap.py                       # 1000 questions x 12 thresholds x 1000 resamples
    python benchmarks/bench_bootstrap.py --questions 10000 --naive-resamples 10

Times `rlcal.core.aggregate.aggregate` (the vectorised bootstrap: one resample-count matrix times one matrix of
per-question sums) against the naive way, which rebuilds every resample's records and scores it with the point
estimate path (`aggregate(..., n_resamples=0)`); the naive one runs `--naive-resamples` resamples and is
extrapolated to the full count. Both take the same resample draws (tests/test_aggregate.py checks that they give
the same intervals). Wall time, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from rlcal.core.aggregate import Record, aggregate, bootstrap_weights
from rlcal.core.grading import ABSTAIN, CORRECT, WRONG

GOAL = 1.0  # seconds for 1000 x 12 x 1000


def workload(n_questions: int, n_thresholds: int, seed: int = 0) -> list[Record]:
    """A slightly overconfident model: answers iff p + 0.1 > t, right with probability p."""
    rng = random.Random(seed)
    grid = [0.0, *np.linspace(0.1, 0.95, n_thresholds - 1).round(2).tolist()]
    records = []
    for q in range(n_questions):
        p = rng.random()
        right = rng.random() < p
        for t in grid:
            answered = t == 0.0 or p + 0.1 > t
            outcome = ABSTAIN if not answered else CORRECT if right else WRONG
            records.append(Record(outcome, t, min(p + 0.1, 1.0) if t == 0.0 else None, q))
    return records


def naive(records: list[Record], n_resamples: int, seed: int) -> None:
    by_q: dict[int, list[Record]] = {}
    for r in records:
        by_q.setdefault(r.question, []).append(r)
    questions = list(by_q)
    for row in bootstrap_weights(len(questions), n_resamples, np.random.default_rng(seed)):
        sample = [
            Record(r.outcome, r.threshold, r.confidence, (q, copy))
            for q, count in zip(questions, row.astype(int), strict=True)
            for copy in range(count)
            for r in by_q[q]
        ]
        aggregate(sample, calibration_threshold=0.0, n_resamples=0)


def best_of(repeats: int, fn) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=1000)
    parser.add_argument("--thresholds", type=int, default=12)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--naive-resamples", type=int, default=20, help="Resamples the naive loop runs.")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    records = workload(args.questions, args.thresholds)
    point = best_of(args.repeats, lambda: aggregate(records, calibration_threshold=0.0, n_resamples=0))
    fast = best_of(args.repeats, lambda: aggregate(records, calibration_threshold=0.0, n_resamples=args.resamples))
    slow = best_of(1, lambda: naive(records, args.naive_resamples, 0)) * args.resamples / args.naive_resamples
    print(f"{args.questions} questions x {args.thresholds} thresholds, {args.resamples} resamples")
    print(f"point estimates only:         {point:8.3f} s")
    print(f"with intervals (vectorised):  {fast:8.3f} s   ({fast / GOAL:.2f} x the {GOAL:g} s goal)")
    print(f"with intervals (naive loop):  {slow:8.1f} s   (extrapolated from {args.naive_resamples}); "
          f"vectorised is {slow / fast:.0f} x faster")  # fmt: skip


if __name__ == "__main__":
    main()
