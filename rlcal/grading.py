"""Grading: is a model's reply correct, wrong, or an abstention? One function serves rewards and evaluation.

    >>> from rlcal.grading import grade
    >>> grade("Paris.", "paris")
    'correct'
    >>> grade("I don't know.", "Paris")
    'abstain'
    >>> grade("I don't know, maybe 03-07", "03-07")   # a hedged guess is an answer, not an abstention
    'correct'

Pipeline: `extract_answer` (tags, "Answer:" prefixes, first line) → `normalize` (NFKC, case, punctuation,
articles, whitespace) → abstention detection (a configurable phrase list; if anything but filler words is left
once the phrases are removed, the reply is a hedged guess and is graded as an answer) → a grader by name
(`exact`: normalised exact match with aliases and numeric equivalence; `numeric`; `contains`). Add graders with
`register_grader`. Pure Python: no torch, no TRL. Nothing here raises on arbitrary text.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Literal

Outcome = Literal["correct", "wrong", "abstain"]
CORRECT: Outcome = "correct"
WRONG: Outcome = "wrong"
ABSTAIN: Outcome = "abstain"

# Phrases are matched after `normalize`, so they are written normalised: lower case, no punctuation, no articles.
DEFAULT_ABSTAIN_PHRASES: tuple[str, ...] = (
    "i dont know",
    "i do not know",
    "dont know",
    "do not know",
    "idk",
    "im not sure",
    "i am not sure",
    "not sure",
    "im unsure",
    "i am unsure",
    "i cannot answer",
    "i cant answer",
    "i can not answer",
    "i am unable to answer",
    "im unable to answer",
    "unable to answer",
    "i have no idea",
    "no idea",
    "i dont have enough information",
    "i do not have enough information",
    "not enough information",
    "i cannot determine",
    "i cant determine",
    "cannot be determined",
    "i dont remember",
    "i do not remember",
    "i cannot recall",
    "i cant recall",
    "i abstain",
    "no answer",
    "不知道",
    "我不确定",
    "不确定",
    "不清楚",
    "无法回答",
    "わかりません",
    "je ne sais pas",
    "no lo sé",
    "no lo se",
    "ich weiß nicht",
    "ich weiss nicht",
)

# Words that carry no answer: what is left of "I don't know the answer to this question, sorry" once the phrase
# is removed. Hedges ("maybe", "I think") are here too, so "IDK, maybe 03-07" leaves "0307", a guess.
FILLER_WORDS: frozenset[str] = frozenset(
    """
    i im me my we you it its this that these those is are was were be been am to of for in on at by with about
    and or but so nor if then than as answer answers question questions sorry unfortunately honestly really truly
    actually afraid however though whether what who whom whose when where which why how any anything one
    have has had do does did can cannot cant could would should will shall may might must not no yes very quite
    sure know knowledge information enough certain confident idea say tell give provide determine recall remember
    maybe perhaps probably possibly likely guess guessing think believe would suppose best my wild
    here there please response reply correct right final
    我 的 了 吧 呢 啊 是 这个 问题 答案 抱歉 对不起 可能 也许 大概
    """.split()
)

_ARTICLES = frozenset({"a", "an", "the"})
_ASCII_PUNCT = str.maketrans("", "", "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


class _UnicodePunct(dict):
    """str.translate table that deletes every Unicode punctuation or symbol; entries are filled in on first use."""

    def __missing__(self, codepoint: int) -> int | None:
        value = None if unicodedata.category(chr(codepoint))[0] in "PS" else codepoint
        self[codepoint] = value
        return value


_UNICODE_PUNCT = _UnicodePunct()


def normalize(text: str) -> str:
    """Normalise for comparison: NFKC, case-fold, delete punctuation/symbols, drop articles, fold whitespace."""
    if text.isascii():  # fast path: NFKC and case folding are no-ops beyond lower() on ASCII
        text = text.lower().translate(_ASCII_PUNCT)
    else:
        text = unicodedata.normalize("NFKC", text).casefold().translate(_UNICODE_PUNCT)
    return " ".join([w for w in text.split() if w not in _ARTICLES])


_TAG_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_CONF_TAG_RE = re.compile(r"<confidence>.*?(?:</confidence>|$)", re.S | re.I)
_PREFIX_RE = re.compile(r"^\s*(?:final answer|answer|a)\s*[:：]\s*", re.I)


def extract_answer(response: str) -> str:
    """The answer part of a reply: `<answer>…</answer>` if present, else the first non-empty line, minus an
    "Answer:" prefix and any `<confidence>` tag."""
    if "<" in response:
        tagged = _TAG_RE.search(response)
        if tagged:
            response = tagged.group(1)
        response = _CONF_TAG_RE.sub(" ", response)
    for line in response.splitlines():
        if line.strip():
            return _PREFIX_RE.sub("", line, count=1).strip()
    return ""


_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")


@lru_cache(maxsize=64)
def _phrase_regex(phrases: tuple[str, ...]) -> re.Pattern[str]:
    normalised = sorted({n for n in map(normalize, phrases) if n}, key=len, reverse=True)
    # Latin phrases need word boundaries ("idk" must not fire inside "kidkit"); CJK text has no spaces to bound.
    cjk = [re.escape(p) for p in normalised if _CJK_RE.search(p)]
    latin = [re.escape(p) for p in normalised if not _CJK_RE.search(p)]
    parts = [rf"(?<![^\W_])(?:{'|'.join(latin)})(?![^\W_])"] if latin else []
    parts += [f"(?:{'|'.join(cjk)})"] if cjk else []
    return re.compile("|".join(parts) or r"(?!x)x")


def _residual(normalised: str, pattern: re.Pattern[str], extra_filler: frozenset[str] = frozenset()) -> str | None:
    """None if no abstention phrase occurs; else what is left once phrases and filler words are removed."""
    if not pattern.search(normalised):
        return None
    words = pattern.sub(" ", normalised).split()
    return " ".join(w for w in words if w not in FILLER_WORDS and w not in extra_filler)


def is_abstention(response: str, phrases: Sequence[str] | None = None, question: str | None = None) -> bool:
    """True if the reply says "I don't know" (in any listed phrasing) and gives no answer besides.

    Words of the `question` count as filler, so "I don't know when Ada Lovelace was born" still abstains.
    """
    pattern = _phrase_regex(tuple(phrases) if phrases is not None else DEFAULT_ABSTAIN_PHRASES)
    extra = frozenset(normalize(question).split()) if question else frozenset()
    return isinstance(response, str) and _residual(normalize(extract_answer(response)), pattern, extra) == ""


# ---- graders: (normalised candidate, raw candidate, golds) -> bool --------------------------------------------

Grader = Callable[[str, str, Sequence[str]], bool]
GRADERS: dict[str, Grader] = {}

_NUMBER_RE = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?(?:e[-+]?\d+)?|[-+]?\.\d+(?:e[-+]?\d+)?", re.I)


def parse_number(text: str) -> float | None:
    """The number a string is, if it is exactly one ("3", "3.0", "-1,000", "2e3"); else None."""
    text = text.strip().rstrip(".")
    if len(text) > 64 or not _NUMBER_RE.fullmatch(text):
        return None
    try:
        return float(text.replace(",", ""))
    except ValueError:  # pragma: no cover - the regex admits only floats
        return None


def register_grader(name: str) -> Callable[[Grader], Grader]:
    """Decorator: make a grader available by name (in recipes and to `grade(..., grader=name)`)."""

    def wrap(fn: Grader) -> Grader:
        GRADERS[name] = fn
        return fn

    return wrap


@lru_cache(maxsize=65536)
def _normalized_gold(gold: str) -> str:
    return normalize(gold)


def _numbers_equal(raw: str, golds: Sequence[str]) -> bool | None:
    """None when the reply or every gold is not a number; else whether they are the same number."""
    value = parse_number(raw)
    if value is None:
        return None
    gold_values = [v for v in map(parse_number, golds) if v is not None]
    if not gold_values:
        return None
    return any(abs(v - value) <= 1e-9 * max(1.0, abs(v)) for v in gold_values)


@register_grader("exact")
def exact_grader(candidate: str, raw: str, golds: Sequence[str]) -> bool:
    """Normalised exact match against the answer or any alias; numbers compare as numbers ("3" == "3.0" but
    "3.0" != "30", which plain punctuation stripping would confuse)."""
    numeric = _numbers_equal(raw, golds)
    if numeric is not None:
        return numeric
    return any(candidate == _normalized_gold(gold) for gold in golds)


@register_grader("numeric")
def numeric_grader(candidate: str, raw: str, golds: Sequence[str]) -> bool:
    """Numbers only: the reply must be a single number equal to the gold (commas and trailing ".0" ignored)."""
    return bool(_numbers_equal(raw, golds))


@register_grader("contains")
def contains_grader(candidate: str, raw: str, golds: Sequence[str]) -> bool:
    """Lenient, for verbose chat models: the normalised gold occurs as whole words inside the reply.
    Note that RL can exploit it by listing several answers; prefer `exact` with an answer-only prompt."""
    padded = f" {candidate} "
    return any(g and f" {g} " in padded for g in map(_normalized_gold, golds)) or exact_grader(candidate, raw, golds)


def _as_golds(answer: str | Sequence[str], aliases: Iterable[str] | None) -> list[str]:
    golds = [answer] if isinstance(answer, str) else [str(a) for a in answer]
    if aliases:
        golds.extend(str(a) for a in aliases if a is not None)
    return golds


class AnswerGrader:
    """A grader bound to its settings (grader name, abstention phrases), compiled once; picklable.

    `AnswerGrader("exact")(response, answer, aliases, question)` is `grade(...)` without per-call set-up cost.
    """

    def __init__(self, grader: str = "exact", abstain_phrases: Sequence[str] | None = None) -> None:
        if grader not in GRADERS:
            raise ValueError(f"unknown grader {grader!r}; available: {', '.join(sorted(GRADERS))}")
        self.grader = grader
        self.abstain_phrases = tuple(abstain_phrases) if abstain_phrases is not None else DEFAULT_ABSTAIN_PHRASES
        self._fn = GRADERS[grader]
        self._pattern = _phrase_regex(self.abstain_phrases)

    def __getstate__(self) -> dict:
        return {"grader": self.grader, "abstain_phrases": self.abstain_phrases}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def __call__(
        self,
        response: str,
        answer: str | Sequence[str],
        aliases: Iterable[str] | None = None,
        question: str | None = None,
    ) -> Outcome:
        raw = extract_answer(response) if isinstance(response, str) else ""
        candidate = normalize(raw)
        extra = frozenset(normalize(question).split()) if question else frozenset()
        residual = _residual(candidate, self._pattern, extra)
        if residual is not None:
            if not residual:
                return ABSTAIN
            candidate = raw = residual  # a hedged guess: grade what it guessed
        if not candidate:
            return WRONG  # an empty reply is not an abstention: abstaining must be said
        return CORRECT if self._fn(candidate, raw, _as_golds(answer, aliases)) else WRONG


@lru_cache(maxsize=32)
def _cached_grader(grader: str, phrases: tuple[str, ...] | None) -> AnswerGrader:
    return AnswerGrader(grader, phrases)


def grade(
    response: str,
    answer: str | Sequence[str],
    aliases: Iterable[str] | None = None,
    grader: str = "exact",
    abstain_phrases: Sequence[str] | None = None,
    question: str | None = None,
) -> Outcome:
    """Grade one reply: "correct", "wrong" or "abstain". Never raises on arbitrary text; an unknown grader is a
    ValueError. The same function is used by the rewards and by `rlcal eval` / `rlcal score`."""
    phrases = tuple(abstain_phrases) if abstain_phrases is not None else None
    return _cached_grader(grader, phrases)(response, answer, aliases, question)
