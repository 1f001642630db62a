"""Calibrated reward functions for TRL: picklable callables `(prompts, completions, **columns) -> list[float]`.

    from rlcal.core.rewards import build_reward
    reward = build_reward("confidence_target")          # +1 correct, 0 "I don't know", -t/(1-t) wrong
    reward(prompts, completions, answer=[...], threshold=[...])

Rewards (all graded by `rlcal.core.grading`, the same grader `rlcal eval` uses):
- `confidence_target`: +1 correct, 0 abstain, −t/(1−t) wrong, t from the `threshold` column (Kalai et al., 2025);
  `form="bounded"`: +1 correct, 2t − 1 abstain, −1 wrong (Wu et al., 2025, BCRL): the same optimal policy (answer
  iff P(correct) > t: answering is worth 2p − 1 against 2t − 1), every reward in [−1, 1] at every t, so the t = 0.9
  prompts (−9 for a wrong answer in the paper's form) do not dominate a batch's reward scale.
- `binary`: 1 correct, 0 otherwise: the 0-1 baseline under which guessing is optimal.
- `brier`: c − (q − c)² on a verbalised confidence q ∈ [0, 1] (RLCR-style correctness + Brier), c = 1 if correct.
- `log_score`: c + log(q if c else 1 − q), q clipped to [0.01, 0.99].
For `brier` and `log_score` an abstention is "no answer with confidence 0" (c = 0, q = 0): reward 0, the same as
under `confidence_target`. A missing or unparseable confidence scores as the worst confidence for the outcome
(q = 1 − c), so leaving the tag out never pays. Completions may be strings or chat messages. Each call logs
`outcomes/*` batch metrics through TRL's `log_metric` when TRL passes it. Pure Python: no torch, no TRL.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from rlcal.core.aggregate import threshold_block
from rlcal.core.grading import ABSTAIN, CORRECT, DEFAULT_ABSTAIN_PHRASES, AnswerGrader, Outcome
from rlcal.core.thresholds import check_threshold, penalty

LOG_SCORE_EPS = 0.01
_CONFIDENCE_RES = (
    re.compile(r"<confidence>\s*([0-9]*\.?[0-9]+)\s*(%?)\s*</confidence>", re.I),
    re.compile(r"confidence\s*[:=]\s*([0-9]*\.?[0-9]+)\s*(%?)", re.I),
    re.compile(r"([0-9]*\.?[0-9]+)\s*(%)\s*confident", re.I),
)


def completion_text(completion: Any) -> str:
    """The text of a completion: a string as is; for chat format, the last message's content (text parts of a
    multimodal content list joined). Anything else (None, numbers, empty lists) is ""; never raises."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, list | tuple) and completion:
        last = completion[-1]
        content = last.get("content", "") if isinstance(last, dict) else last
        if isinstance(content, list):  # multimodal parts: keep the text ones
            return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        return content if isinstance(content, str) else ""
    return ""


def parse_confidence(text: str) -> float | None:
    """A stated confidence in [0, 1] from `<confidence>0.8</confidence>`, "Confidence: 80%" or "80% confident";
    else None.
    Values above 1 without a % sign are read as percentages (80 -> 0.8); anything above 100 % is None.
    The tag wins over a "Confidence:" phrase, which wins over "80% confident". Never raises."""
    if not isinstance(text, str):
        return None
    if text.isascii() and "confiden" not in text.lower():  # cheap pre-check: most replies state none
        return None
    for pattern in _CONFIDENCE_RES:
        match = pattern.search(text)
        if match:
            value = float(match.group(1))
            if match.group(2) or value > 1.0:
                value /= 100.0
            return value if 0.0 <= value <= 1.0 else None
    return None


def confidence_target_score(outcome: Outcome, t: float) -> float:
    """+1 correct, 0 abstain, −t/(1−t) wrong."""
    if outcome == CORRECT:
        return 1.0
    if outcome == ABSTAIN:
        return 0.0
    return -penalty(t)


def bounded_score(outcome: Outcome, t: float) -> float:
    """+1 correct, 2t − 1 abstain, −1 wrong: the paper's incentives (answer iff P(correct) > t) on a bounded scale."""
    if outcome == CORRECT:
        return 1.0
    if outcome == ABSTAIN:
        return 2.0 * t - 1.0
    return -1.0


REWARD_FORMS = ("paper", "bounded")


def binary_score(outcome: Outcome, t: float = 0.0) -> float:
    """1 correct, 0 otherwise (t is ignored: the 0-1 grader never rewards abstaining)."""
    return 1.0 if outcome == CORRECT else 0.0


def brier_score(outcome: Outcome, confidence: float | None) -> float:
    """c − (q − c)² with c = 1 if correct; 0 for an abstention; a missing confidence counts as q = 1 − c."""
    c = 1.0 if outcome == CORRECT else 0.0
    if outcome == ABSTAIN:
        return 0.0
    q = 1.0 - c if confidence is None else confidence
    return c - (q - c) ** 2


def log_score(outcome: Outcome, confidence: float | None) -> float:
    """c + log(q if correct else 1 − q), q clipped to [0.01, 0.99]; 0 for an abstention; missing q = 1 − c."""
    c = 1.0 if outcome == CORRECT else 0.0
    if outcome == ABSTAIN:
        return 0.0
    q = 1.0 - c if confidence is None else confidence
    q = min(max(q, LOG_SCORE_EPS), 1.0 - LOG_SCORE_EPS)
    return c + math.log(q if c else 1.0 - q)


class CalibratedReward:
    """Base class: grade each completion against its row's answer/aliases, then score the outcome.

    Subclasses set `name` and implement `score(outcome, t, completion_text)`. Instances are picklable and carry
    `__name__` so TRL logs them as `rewards/<name>/mean`.
    """

    name = "calibrated"
    needs_threshold = False

    def __init__(
        self,
        grader: str = "exact",
        abstain_phrases: Sequence[str] | None = None,
        answer_column: str = "answer",
        aliases_column: str = "aliases",
        threshold_column: str = "threshold",
        question_column: str | None = "question",
        default_threshold: float | None = None,
        log_metrics: bool = True,
    ) -> None:
        self.grader = AnswerGrader(grader, abstain_phrases if abstain_phrases is not None else DEFAULT_ABSTAIN_PHRASES)
        self.answer_column = answer_column
        self.aliases_column = aliases_column
        self.threshold_column = threshold_column
        self.question_column = question_column
        self.default_threshold = None if default_threshold is None else check_threshold(default_threshold)
        self.log_metrics = log_metrics
        self.__name__ = self.name

    def score(self, outcome: Outcome, t: float, text: str) -> float:
        raise NotImplementedError

    def _thresholds(self, n: int, columns: dict[str, Any]) -> list[float]:
        values = columns.get(self.threshold_column)
        if values is None:
            if self.needs_threshold and self.default_threshold is None:
                raise ValueError(
                    f"reward {self.name!r} needs a {self.threshold_column!r} column (or a default_threshold)"
                )
            return [self.default_threshold or 0.0] * n  # rewards that ignore t (binary) need none
        if len(values) != n:
            raise ValueError(f"column {self.threshold_column!r} has {len(values)} values for {n} completions")
        try:
            thresholds = [float(t) for t in values]
        except (TypeError, ValueError):
            raise ValueError(f"column {self.threshold_column!r} must hold numbers in [0, 1)") from None
        for t in set(thresholds):  # a handful of distinct t per batch: validate each once
            check_threshold(t)
        return thresholds

    def outcomes(self, completions: Sequence[Any], **columns: Any) -> list[Outcome]:
        """Grade each completion against its row: the shared step of every reward (and of logging)."""
        if self.answer_column not in columns:
            raise ValueError(f"reward {self.name!r} needs a {self.answer_column!r} column; got {sorted(columns)}")
        n = len(completions)
        answers = columns[self.answer_column]
        aliases = columns.get(self.aliases_column)
        questions = columns.get(self.question_column) if self.question_column else None
        for name, column in ((self.answer_column, answers), (self.aliases_column, aliases),
                             (self.question_column, questions)):  # fmt: skip
            if column is not None and len(column) != n:
                raise ValueError(f"column {name!r} has {len(column)} values for {n} completions")
        grade = self.grader
        texts = [c if type(c) is str else completion_text(c) for c in completions]
        if aliases is None and questions is None:
            return [grade(x, a) for x, a in zip(texts, answers, strict=True)]
        aliases = aliases if aliases is not None else [None] * n
        questions = questions if questions is not None else [None] * n
        return [grade(x, a, al, q) for x, a, al, q in zip(texts, answers, aliases, questions, strict=True)]

    def scores(self, outcomes: Sequence[Outcome], thresholds: Sequence[float], texts: Sequence[str]) -> list[float]:
        """Rewards of a batch of graded outcomes (subclasses may vectorise; the default calls `score`)."""
        score = self.score
        return [score(o, t, x) for o, t, x in zip(outcomes, thresholds, texts, strict=True)]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **columns: Any):
        """TRL's reward-function protocol: one float per completion. Unknown keyword arguments that TRL passes
        (`trainer_state`, `completion_ids`, `log_extra`, other dataset columns) are ignored."""
        log_metric: Callable[[str, float], None] | None = columns.pop("log_metric", None)
        texts = [c if type(c) is str else completion_text(c) for c in completions]
        thresholds = self._thresholds(len(texts), columns)  # first: a bad t fails before any grading
        outcomes = self.outcomes(texts, **columns)
        rewards = self.scores(outcomes, thresholds, texts)
        if log_metric is not None and self.log_metrics and outcomes:
            for key, value in outcome_stats(outcomes, thresholds).items():
                log_metric(f"outcomes/{key}", value)
        return rewards

    def __repr__(self) -> str:
        return f"{type(self).__name__}(grader={self.grader.grader!r})"


class ConfidenceTargetReward(CalibratedReward):
    """+1 correct, 0 "I don't know", −t/(1−t) wrong: answering pays off exactly when P(correct) > t.
    `form="bounded"`: +1 / 2t − 1 / −1, the same optimal policy with rewards in [−1, 1] at every t."""

    name = "confidence_target"
    needs_threshold = True

    def __init__(self, *args: Any, form: str = "paper", **kwargs: Any) -> None:
        if form not in REWARD_FORMS:
            raise ValueError(f"confidence_target form must be one of {', '.join(REWARD_FORMS)}, got {form!r}")
        super().__init__(*args, **kwargs)
        self.form = form

    def score(self, outcome: Outcome, t: float, text: str) -> float:
        return bounded_score(outcome, t) if self.form == "bounded" else confidence_target_score(outcome, t)

    def scores(self, outcomes: Sequence[Outcome], thresholds: Sequence[float], texts: Sequence[str]) -> list[float]:
        if self.form == "bounded":
            return [bounded_score(o, t) for o, t in zip(outcomes, thresholds, strict=True)]
        # A batch holds a few distinct t (GRPO groups share theirs): compute each penalty once.
        wrong: dict[float, float] = {}
        out = []
        for o, t in zip(outcomes, thresholds, strict=True):
            if o == CORRECT:
                out.append(1.0)
            elif o == ABSTAIN:
                out.append(0.0)
            else:
                value = wrong.get(t)
                if value is None:
                    value = wrong[t] = -penalty(t)
                out.append(value)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(grader={self.grader.grader!r}, form={self.form!r})"


class BinaryReward(CalibratedReward):
    """The 0-1 baseline: 1 correct, 0 wrong or abstain."""

    name = "binary"

    def score(self, outcome: Outcome, t: float, text: str) -> float:
        return binary_score(outcome)

    def scores(self, outcomes: Sequence[Outcome], thresholds: Sequence[float], texts: Sequence[str]) -> list[float]:
        return [1.0 if o == CORRECT else 0.0 for o in outcomes]


class BrierReward(CalibratedReward):
    """Correctness plus the Brier score of the stated confidence (RLCR): c − (q − c)²."""

    name = "brier"

    def score(self, outcome: Outcome, t: float, text: str) -> float:
        return brier_score(outcome, parse_confidence(text))

    def scores(self, outcomes: Sequence[Outcome], thresholds: Sequence[float], texts: Sequence[str]) -> list[float]:
        return [0.0 if o == ABSTAIN else brier_score(o, parse_confidence(x)) for o, x in zip(outcomes, texts, strict=True)]


class LogScoreReward(CalibratedReward):
    """Correctness plus the log score of the stated confidence: c + log(q or 1 − q)."""

    name = "log_score"

    def score(self, outcome: Outcome, t: float, text: str) -> float:
        return log_score(outcome, parse_confidence(text))

    def scores(self, outcomes: Sequence[Outcome], thresholds: Sequence[float], texts: Sequence[str]) -> list[float]:
        return [0.0 if o == ABSTAIN else log_score(o, parse_confidence(x)) for o, x in zip(outcomes, texts, strict=True)]


REWARDS: dict[str, type[CalibratedReward]] = {
    cls.name: cls for cls in (ConfidenceTargetReward, BinaryReward, BrierReward, LogScoreReward)
}


def build_reward(name: str, **kwargs: Any) -> CalibratedReward:
    """A reward by name (`confidence_target`, `binary`, `brier`, `log_score`)."""
    if name not in REWARDS:
        raise ValueError(f"unknown reward {name!r}; available: {', '.join(REWARDS)}")
    return REWARDS[name](**kwargs)


def outcome_stats(outcomes: Sequence[Outcome], thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """Batch statistics of graded outcomes: accuracy, abstain rate, hallucination rate (wrong / all), mean t.

    The counts come from `rlcal.core.aggregate.threshold_block`, the per-threshold function `rlcal score` and
    `rlcal eval` use, so the logged `outcomes/*` mean what their tables mean."""
    n = len(outcomes)
    if n == 0:
        return {}
    block = threshold_block(list(outcomes), list(thresholds) if thresholds else [0.0] * n)
    stats = {
        "accuracy": block["n_correct"] / n,
        "abstain_rate": block["n_abstain"] / n,
        "hallucination_rate": block["hallucination_rate"],
    }
    if thresholds:
        stats["mean_threshold"] = sum(thresholds) / len(thresholds)
    return stats
