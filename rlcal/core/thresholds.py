"""Confidence-target thresholds: the penalty t/(1−t) and seeded per-example samplers of t.

    >>> from rlcal.core.thresholds import penalty, ThresholdSampler
    >>> penalty(0.75)          # the paper prints 2 here; t/(1-t) at 0.75 is 3
    3.0
    >>> ThresholdSampler.from_spec({"choice": [0.5, 0.75, 0.9]}).sample(4, seed=0)
    [0.9, 0.9, 0.75, 0.5]

A sampler is described in a recipe as one of
    threshold: 0.75                                    # fixed
    threshold: {choice: [0.5, 0.75, 0.9], weights: [1, 1, 2]}
    threshold: {uniform: [0.0, 0.9]}
    threshold: {beta: [2.0, 2.0]}
with optional `cap` (largest t allowed, default 0.95: the penalty must stay finite) and `decimals` (default 2).
Sampled t are rounded to `decimals` so the t written into the prompt is exactly the t the reward uses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# The confidence targets evaluation sweeps when none are given (t = 0 is the plain best-guess prompt).
DEFAULT_THRESHOLDS = [0.0, 0.5, 0.75, 0.9]

DEFAULT_CAP = 0.95


def check_threshold(t: float, cap: float = 1.0) -> float:
    """Return t as a float if 0 <= t < 1 (and t <= cap); raise ValueError naming the problem otherwise."""
    if isinstance(t, bool):  # float(True) is 1.0: a config typo, not a threshold
        raise ValueError(f"threshold must be a number in [0, 1), got {t!r}")
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number in [0, 1), got {t!r}") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise ValueError(f"threshold must be in [0, 1) so the penalty t/(1-t) is finite, got {t!r}")
    if value > cap:
        raise ValueError(f"threshold {value} is above the cap {cap}")
    return value


def penalty(t: float) -> float:
    """Points lost for a wrong answer at confidence target t: t/(1−t). Answering then has expected reward
    p − (1−p)·t/(1−t), which is positive exactly when p > t."""
    t = check_threshold(t)
    return t / (1.0 - t)


@dataclass
class ThresholdSampler:
    """Draws one confidence target t per example. Seeded: the same seed gives the same thresholds."""

    kind: str = field(default="fixed", metadata={"help": "fixed | choice | uniform | beta"})
    value: float = field(default=0.75, metadata={"help": "t for `fixed`."})
    values: list[float] = field(default_factory=list, metadata={"help": "Candidates for `choice`."})
    weights: list[float] | None = field(default=None, metadata={"help": "Relative weights for `choice`."})
    low: float = field(default=0.0, metadata={"help": "Lower end for `uniform`."})
    high: float = field(default=0.9, metadata={"help": "Upper end for `uniform`."})
    alpha: float = field(default=2.0, metadata={"help": "Beta(alpha, beta) shape for `beta`."})
    beta: float = field(default=2.0, metadata={"help": "Beta(alpha, beta) shape for `beta`."})
    cap: float = field(default=DEFAULT_CAP, metadata={"help": "Largest t drawn (penalty cap/(1-cap))."})
    decimals: int = field(default=2, metadata={"help": "Round t so prompt and reward agree exactly."})

    def __post_init__(self) -> None:
        if isinstance(self.cap, bool) or not (0.0 <= self.cap < 1.0):
            raise ValueError(f"threshold cap must be in [0, 1), got {self.cap}")
        if isinstance(self.decimals, bool) or not isinstance(self.decimals, int) or not 0 <= self.decimals <= 12:
            raise ValueError(f"threshold decimals must be an integer in [0, 12], got {self.decimals!r}")
        if self.kind == "fixed":
            check_threshold(self.value, self.cap)
        elif self.kind == "choice":
            if not self.values:
                raise ValueError("threshold choice needs a non-empty list of values")
            self.values = [check_threshold(v, self.cap) for v in self.values]
            if self.weights is not None:
                try:
                    self.weights = [float(w) for w in self.weights]
                except (TypeError, ValueError):
                    raise ValueError(f"threshold weights must be numbers, got {self.weights!r}") from None
                if len(self.weights) != len(self.values):
                    raise ValueError(f"threshold weights ({len(self.weights)}) must match values ({len(self.values)})")
                if any(not (0 <= w < math.inf) for w in self.weights) or sum(self.weights) <= 0:
                    raise ValueError("threshold weights must be finite, non-negative and not all zero")
        elif self.kind == "uniform":
            check_threshold(self.low)
            check_threshold(self.high)
            if not (self.low <= self.high <= self.cap):
                raise ValueError(f"threshold uniform range needs low <= high <= cap, got [{self.low}, {self.high}]")
        elif self.kind == "beta":
            if not (0 < self.alpha < math.inf and 0 < self.beta < math.inf):
                raise ValueError(f"threshold beta parameters must be > 0, got ({self.alpha}, {self.beta})")
        else:
            raise ValueError(f"unknown threshold sampler {self.kind!r}; use fixed, choice, uniform or beta")

    @classmethod
    def from_spec(cls, spec: float | Mapping[str, Any] | ThresholdSampler) -> ThresholdSampler:
        """Build from a recipe value: a number, or a mapping with one of fixed/choice/uniform/beta."""
        if isinstance(spec, ThresholdSampler):
            return spec
        if isinstance(spec, bool):
            raise ValueError(f"threshold must be a number or a sampler mapping, got {spec!r}")
        if isinstance(spec, int | float):
            return cls(kind="fixed", value=float(spec))
        if isinstance(spec, str):  # "0.75" from a command-line override
            try:
                return cls(kind="fixed", value=float(spec))
            except ValueError:
                raise ValueError(f"threshold must be a number or a sampler mapping, got {spec!r}") from None
        if not isinstance(spec, Mapping):
            raise ValueError(f"threshold must be a number or a sampler mapping, got {spec!r}")
        spec = dict(spec)
        common = {k: spec.pop(k) for k in ("cap", "decimals") if k in spec}
        kinds = [k for k in ("fixed", "choice", "uniform", "beta") if k in spec]
        if len(kinds) != 1:
            raise ValueError(f"threshold sampler needs exactly one of fixed/choice/uniform/beta, got {sorted(spec)}")
        kind = kinds[0]
        arg = spec.pop(kind)
        weights = spec.pop("weights", None)
        if spec:
            raise ValueError(f"unknown threshold sampler keys: {sorted(spec)}")
        if weights is not None and kind != "choice":
            raise ValueError(f"threshold weights only apply to `choice`, not `{kind}`")
        if kind == "fixed":
            return cls(kind=kind, value=_number(arg, kind), **common)
        if kind == "choice":
            values = [_number(v, kind) for v in _pair_or_list(arg, kind)]
            return cls(kind=kind, values=values, weights=weights, **common)
        low, high = (_number(v, kind) for v in _pair_or_list(arg, kind, length=2))
        if kind == "uniform":
            return cls(kind=kind, low=low, high=high, **common)
        return cls(kind=kind, alpha=low, beta=high, **common)

    def sample(self, n: int, seed: int = 0) -> list[float]:
        """n thresholds, each in [0, cap], rounded to `decimals`. The same (sampler, n, seed) gives the same list."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"number of thresholds must be a non-negative integer, got {n!r}")
        rng = random.Random(seed)
        if self.kind == "fixed":
            draws = [self.value] * n
        elif self.kind == "choice":
            draws = rng.choices(self.values, weights=self.weights, k=n)
        elif self.kind == "uniform":
            draws = [rng.uniform(self.low, self.high) for _ in range(n)]
        else:
            draws = [rng.betavariate(self.alpha, self.beta) for _ in range(n)]
        return [min(round(t, self.decimals), self.cap) for t in draws]


def _number(value: Any, kind: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"threshold {kind} needs numbers, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold {kind} needs numbers, got {value!r}") from None


def _pair_or_list(arg: Any, kind: str, length: int | None = None) -> Sequence[Any]:
    if not isinstance(arg, list | tuple) or (length is not None and len(arg) != length):
        want = f"a list of {length} numbers" if length else "a list of numbers"
        raise ValueError(f"threshold {kind} needs {want}, got {arg!r}")
    return arg
