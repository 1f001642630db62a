"""Grading: is a model's reply correct, wrong, or an abstention? One function serves rewards and evaluation.

    >>> from rlcal.core.grading import grade
    >>> grade("Paris.", "paris")
    'correct'
    >>> grade("I don't know.", "Paris")
    'abstain'
    >>> grade("I don't know, maybe 03-07", "03-07")   # a hedged guess is an answer, not an abstention
    'correct'

Pipeline: `extract_answer` (tags, "Answer:" prefixes, first line) → `normalize` (NFKC, case, punctuation except
decimal points, articles, whitespace) → abstention detection (a configurable phrase list; if anything but filler words is left
once the phrases are removed, the reply is a hedged guess and is graded as an answer) → a grader by name
(`exact`: normalised exact match with aliases and numeric equivalence; `numeric`; `contains`). Add graders with
`register_grader`. Pure Python: no torch, no TRL. Nothing here raises on arbitrary text.

Speed matters (the reward runs on every GRPO completion): ASCII replies take byte-level fast paths, golds are
normalised once per distinct gold, and `AnswerGrader` compiles its phrase list once; see
`benchmarks/bench_grading.py`.
"""

from __future__ import annotations

import math
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
    "i dunno",
    "dunno",
    "i have no clue",
    "no clue",
    "im not certain",
    "i am not certain",
    "not certain",
    "unsure",
    "i cannot say",
    "i cant say",
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
    "non lo so",
    "não sei",
    "не знаю",
    "모르겠습니다",
    "모르겠어요",
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
    here there please response reply correct right final exact exactly specific specifically precise precisely
    he she they him her his hers their them someone something person people anyone nobody nothing
    live lives lived living born birth birthday died die dies work works worked located location called named
    name city place date day year time number
    offhand off top head currently now without access data details detail context more further reliable reliably
    accurate accurately look check verify need needed able unable help
    我 的 了 吧 呢 啊 是 这个 问题 答案 抱歉 对不起 可能 也许 大概
    """.split()
)

_ARTICLES = frozenset({"a", "an", "the"})
_EMPTY: frozenset[str] = frozenset()
# ASCII punctuation and symbols (exactly the ASCII characters of Unicode categories P* and S*), for bytes.translate:
# about 4x faster than str.translate on the ASCII text that almost all model replies are.
_ASCII_PUNCT = b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
# A point between two digits is a decimal point and survives normalisation, so "3.0" and "30" stay different.
_ASCII_DECIMAL_RE = re.compile(rb"(?<=[0-9])\.(?=[0-9])")
_DECIMAL_RE = re.compile(r"(?<=\d)\.(?=\d)")


class _UnicodePunct(dict):
    """str.translate table that deletes every Unicode punctuation or symbol; entries are filled in on first use."""

    def __missing__(self, codepoint: int) -> int | None:
        value = None if unicodedata.category(chr(codepoint))[0] in "PS" else codepoint
        self[codepoint] = value
        return value


_UNICODE_PUNCT = _UnicodePunct()


def _unicode_step(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    if "." in text and _DECIMAL_RE.search(text):
        return ".".join([part.translate(_UNICODE_PUNCT) for part in _DECIMAL_RE.split(text)])
    return text.translate(_UNICODE_PUNCT)


def _words(text: str) -> list[str]:
    """The words of `normalize(text)` (which is `" ".join(_words(text))`)."""
    if text.isascii():  # fast path: NFKC is the identity and case folding is lower() on ASCII
        data = text.encode().lower()
        # A point can only be a decimal point strictly inside the text; most points end a sentence ("03-07.").
        if data.find(b".", 1, -1) != -1 and _ASCII_DECIMAL_RE.search(data):
            data = b".".join([part.translate(None, _ASCII_PUNCT) for part in _ASCII_DECIMAL_RE.split(data)])
        else:
            data = data.translate(None, _ASCII_PUNCT)
        words = data.decode().split()
    else:
        # Case folding or deleting a symbol can expose new NFKC compositions; iterate to the fixed point (bounded:
        # real text settles in one step, and ASCII output is already fixed).
        for _ in range(8):
            step = _unicode_step(text)
            if step == text or step.isascii():
                text = step
                break
            text = step
        words = text.split()
    if _ARTICLES.isdisjoint(words):
        return words
    return [w for w in words if w not in _ARTICLES]


def normalize(text: str) -> str:
    """Normalise for comparison: NFKC, case-fold, delete punctuation/symbols (but keep decimal points between
    digits), drop the articles a/an/the, fold whitespace. Idempotent: normalize(normalize(x)) == normalize(x)."""
    return " ".join(_words(text))


_TAG_RE = re.compile(r"<answer>(.*?)(?:</answer>|$)", re.S | re.I)
_CONF_TAG_RE = re.compile(r"<confidence>.*?(?:</confidence>|$)", re.S | re.I)
_PREFIX_RE = re.compile(r"^\s*(?:final answer|answer|a)\s*[:：]\s*", re.I)
# A stated confidence written as a phrase after the answer ("rainy, 80% confident", "rainy. Confidence: 0.8"): the
# forms `rlcal.core.rewards.parse_confidence` reads, removed so that the answer alone is graded.
_CONF_PHRASE_RE = re.compile(
    r"[,;.]?\s*\(?\s*(?:[0-9]*\.?[0-9]+\s*%\s*confident|confidence\s*[:=]\s*[0-9]*\.?[0-9]+\s*%?)\s*\)?\.?", re.I
)


def _first_line(response: str) -> str:
    for line in response.splitlines():
        if line.strip():
            return _PREFIX_RE.sub("", line, count=1).strip()
    return ""


def extract_answer(response: str) -> str:
    """The answer part of a reply: `<answer>…</answer>` if present, else the first non-empty line, minus an
    "Answer:" prefix and any stated confidence (`<confidence>` tag, "80% confident", "Confidence: 0.8")."""
    if "<" in response:
        tagged = _TAG_RE.search(response)
        if tagged:
            response = tagged.group(1)
        response = _CONF_TAG_RE.sub(" ", response)
    if "onfiden" in response:
        response = _CONF_PHRASE_RE.sub(" ", response)
    # Fast path for the common reply: cut at the first "\n"; if what is left holds no other line break or control
    # character (isprintable), it is the first non-empty line. Anything else takes the exact splitlines() path.
    if "\n" in response:
        line = response.lstrip()
        cut = line.find("\n")
        line = (line[:cut] if cut >= 0 else line).rstrip()
    else:
        line = response.strip()
    if not line.isprintable():
        return _first_line(response)
    if line[:1] not in ("a", "A", "f", "F"):  # only these can start "Answer:" / "Final answer:" / "A:"
        return line
    if not line.isascii():
        return _PREFIX_RE.sub("", line, count=1).strip()
    # ASCII: the same as _PREFIX_RE without the regex engine.
    head = line[:12].lower()
    skip = 12 if head.startswith("final answer") else 6 if head.startswith("answer") else 1 if head[0] == "a" else 0
    rest = line[skip:].lstrip() if skip else ""
    return rest[1:].lstrip() if rest[:1] == ":" else line


_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uf900-\ufaff\uac00-\ud7af]")
_CJK_FILLER = tuple(sorted((w for w in FILLER_WORDS if _CJK_RE.search(w)), key=len, reverse=True))


def _trie_regex(words: Iterable[str]) -> str:
    """An alternation of literal words as a character trie: "i dont know|i do not know" -> "i\\ do(?:nt|\\ not)..."

    Same matches as the longest-first alternation (greedy optional tails try the longer word first), but the regex
    engine rejects a position after one character instead of trying every phrase there.
    """
    trie: dict[str, dict] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else f"(?:{'|'.join(alts)})"
        if "" in node:  # a word ends here and longer ones go on: the tail is optional, tried first
            return f"(?:{body})?" if len(alts) == 1 else f"{body}?"
        return body

    return emit(trie)


@lru_cache(maxsize=64)
def _phrase_regex(phrases: tuple[str, ...]) -> re.Pattern[str]:
    normalised = sorted({n for n in map(normalize, phrases) if n})
    # Latin phrases need word boundaries ("idk" must not fire inside "kidkit"); CJK text has no spaces to bound.
    cjk = [p for p in normalised if _CJK_RE.search(p)]
    latin = [p for p in normalised if not _CJK_RE.search(p)]
    parts = [rf"(?<![^\W_])(?:{_trie_regex(latin)})(?![^\W_])"] if latin else []
    parts += [f"(?:{_trie_regex(cjk)})"] if cjk else []
    return re.compile("|".join(parts) or r"(?!x)x")


@lru_cache(maxsize=64)
def _phrase_first_words(phrases: tuple[str, ...]) -> frozenset[str] | None:
    """First words of the phrases, for a cheap pre-check that proves "no phrase occurs" in clean ASCII text.

    Sound when every phrase is letters and spaces: in a normalised ASCII reply made only of [a-z0-9. ] a phrase
    can only occur as whole words (a kept "." always sits between digits), so it occurs only if its first word is
    one of the reply's words. None (no pre-check) when some phrase holds digits or other characters.
    """
    normalised = [n for n in map(normalize, phrases) if n]
    if not all(p.replace(" ", "").isalpha() for p in normalised):
        return None
    return frozenset(p.split()[0] for p in normalised)


_QUESTION_WORDS: dict[str, frozenset[str]] = {}


def _question_words(question: object) -> frozenset[str]:
    """Normalised words of a question (cached: in GRPO every completion of a group shares its question)."""
    if not question:
        return _EMPTY
    key = question if isinstance(question, str) else str(question)
    words = _QUESTION_WORDS.get(key)
    if words is None:
        if len(_QUESTION_WORDS) >= 65536:
            _QUESTION_WORDS.clear()
        words = _QUESTION_WORDS[key] = frozenset(normalize(key).split())
    return words


def _strip_cjk_filler(word: str) -> str:
    """Chinese has no spaces: peel filler ("也许", "可能", "是") off the ends of a token, "也许0307" -> "0307"."""
    changed = True
    while changed and word:
        changed = False
        for filler in _CJK_FILLER:
            if word.startswith(filler):
                word, changed = word[len(filler) :], True
            if word.endswith(filler) and word:
                word, changed = word[: -len(filler)], True
    return word


def _residual(normalised: str, pattern: re.Pattern[str], question: object = None) -> str | None:
    """None if no abstention phrase occurs; else what is left once phrases and filler words are removed
    ("" for a pure abstention, the guess for a hedged one)."""
    rest, found = pattern.subn(" ", normalised)
    if not found:
        return None
    extra = _question_words(question)
    kept = []
    for word in rest.split():
        if word in FILLER_WORDS or word in extra:
            continue
        if _CJK_RE.search(word):
            word = _strip_cjk_filler(word)
            if not word or word in extra:
                continue
        kept.append(word)
    return " ".join(kept)


def is_abstention(response: str, phrases: Sequence[str] | None = None, question: str | None = None) -> bool:
    """True if the reply says "I don't know" (in any listed phrasing) and gives no answer besides.

    Words of the `question` count as filler, so "I don't know when Ada Lovelace was born" still abstains.
    """
    if not isinstance(response, str):
        return False
    pattern = _phrase_regex(tuple(phrases) if phrases is not None else DEFAULT_ABSTAIN_PHRASES)
    return _residual(normalize(extract_answer(response)), pattern, question) == ""


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
        value = float(text.replace(",", ""))
    except ValueError:  # pragma: no cover - the regex admits only floats
        return None
    return value if math.isfinite(value) else None  # "1e999" is not a number anyone means


def register_grader(name: str) -> Callable[[Grader], Grader]:
    """Decorator: make a grader available by name (in recipes and to `grade(..., grader=name)`)."""

    def wrap(fn: Grader) -> Grader:
        GRADERS[name] = fn
        return fn

    return wrap


# gold string -> (normalised, number or None). Golds repeat (every completion of a GRPO group shares its answer,
# an eval set is graded many times), so both are computed once per distinct gold. Bounded; cleared when full.
_GOLD_CACHE: dict[str, tuple[str, float | None]] = {}
_GOLD_CACHE_MAX = 1 << 17


def _gold_info(gold: str) -> tuple[str, float | None]:
    info = _GOLD_CACHE.get(gold)
    if info is None:
        if len(_GOLD_CACHE) >= _GOLD_CACHE_MAX:
            _GOLD_CACHE.clear()
        if isinstance(gold, str):
            info = (normalize(gold), parse_number(gold))
        elif gold is None:  # a null alias matches nothing
            info = ("", None)
        else:  # a number or other value used as a gold: compare its text
            text = str(gold)
            info = (normalize(text), parse_number(text))
        _GOLD_CACHE[gold] = info
    return info


_NUMBER_START = frozenset("+-.")


def _reply_number(raw: str) -> float | None:
    """parse_number(raw) behind a cheap necessary condition: the first non-space character is a digit, sign or
    point (raw is usually stripped already)."""
    first = raw[:1]
    if not (first.isdecimal() or first in _NUMBER_START):
        if not first.isspace():
            return None
        first = raw.lstrip()[:1]
        if not (first.isdecimal() or first in _NUMBER_START):
            return None
    return parse_number(raw)


def _same_number(value: float, gold_values: Iterable[float]) -> bool:
    for g in gold_values:
        if abs(g - value) <= 1e-9 * max(1.0, abs(g)):
            return True
    return False


def _numbers_equal(raw: str, golds: Sequence[str]) -> bool | None:
    """None when the reply or every gold is not a number; else whether they are the same number."""
    gold_values = [v for v in (_gold_info(g)[1] for g in golds) if v is not None]
    if not gold_values:
        return None  # only parse the reply when some gold is a number
    value = _reply_number(raw)
    return None if value is None else _same_number(value, gold_values)


@register_grader("exact")
def exact_grader(candidate: str, raw: str, golds: Sequence[str]) -> bool:
    """Normalised exact match against the answer or any alias; numbers compare as numbers ("3" == "3.0" but
    "3.0" != "30", and "-3" != "3" although both normalise to "3")."""
    match = False
    gold_values = None
    for gold in golds:  # one pass over the cached (normalised, number) of each gold
        normalised, number = _GOLD_CACHE.get(gold) or _gold_info(gold)
        if number is not None:
            gold_values = [number] if gold_values is None else [*gold_values, number]
        if normalised == candidate:
            match = True
    if gold_values is not None:
        value = _reply_number(raw)
        if value is not None:
            return _same_number(value, gold_values)
    return match


@register_grader("numeric")
def numeric_grader(candidate: str, raw: str, golds: Sequence[str]) -> bool:
    """Numbers only: the reply must be a single number equal to the gold (commas and trailing ".0" ignored)."""
    return bool(_numbers_equal(raw, golds))


@register_grader("contains")
def contains_grader(candidate: str, raw: str, golds: Sequence[str]) -> bool:
    """Lenient, for verbose chat models: the normalised gold occurs as whole words inside the reply.
    Note that RL can exploit it by listing several answers; prefer `exact` with an answer-only prompt."""
    padded = f" {candidate} "
    for gold in golds:
        normalised = _gold_info(gold)[0]
        if normalised and f" {normalised} " in padded:
            return True
    return exact_grader(candidate, raw, golds)


def _gold_text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _as_golds(answer: object, aliases: object) -> list[str]:
    """The answer and its aliases as a list of strings; tolerant of numbers, None and a bare alias string."""
    if isinstance(answer, str):
        golds = [answer]
    elif isinstance(answer, list | tuple):
        golds = [g for g in map(_gold_text, answer) if g is not None]
    else:
        golds = [] if answer is None else [str(answer)]
    if aliases:
        if isinstance(aliases, str):
            golds.append(aliases)
        elif isinstance(aliases, Iterable):
            golds.extend(g for g in map(_gold_text, aliases) if g is not None)
    return golds


class AnswerGrader:
    """A grader bound to its settings (grader name, abstention phrases), compiled once; picklable.

    `AnswerGrader("exact")(response, answer, aliases, question)` is `grade(...)` without per-call set-up cost.
    """

    def __init__(self, grader: str = "exact", abstain_phrases: Sequence[str] | None = None) -> None:
        if grader not in GRADERS:
            raise ValueError(f"unknown grader {grader!r}; available: {', '.join(sorted(GRADERS))}")
        if isinstance(abstain_phrases, str):
            raise ValueError("abstain_phrases must be a list of phrases, not one string")
        self.grader = grader
        self.abstain_phrases = tuple(abstain_phrases) if abstain_phrases is not None else DEFAULT_ABSTAIN_PHRASES
        self._fn = GRADERS[grader]
        self._pattern = _phrase_regex(self.abstain_phrases)
        self._first_words = _phrase_first_words(self.abstain_phrases)

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
        words = _words(raw)
        candidate = " ".join(words)
        pattern = self._pattern
        first_words = self._first_words
        # Skip the phrase regex when the pre-check proves no phrase occurs (most answers); else run it.
        maybe_abstains = (
            first_words is None
            or not first_words.isdisjoint(words)
            or not (candidate.isascii() and candidate.isprintable())
        )
        residual = _residual(candidate, pattern, question) if maybe_abstains else None
        if residual is not None:
            if not residual:
                return ABSTAIN
            candidate = raw = residual  # a hedged guess: grade what it guessed
        if not candidate:
            return WRONG  # an empty reply is not an abstention: abstaining must be said
        # The common rows (one gold string, optionally a list of aliases) skip `_as_golds`.
        if type(answer) is str and (aliases is None or type(aliases) is list):
            golds: Sequence[str] = [answer, *aliases] if aliases else (answer,)
        else:
            golds = _as_golds(answer, aliases)
        return CORRECT if self._fn(candidate, raw, golds) else WRONG

    def __repr__(self) -> str:
        return f"AnswerGrader({self.grader!r})"


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
    if isinstance(abstain_phrases, str):
        raise ValueError("abstain_phrases must be a list of phrases, not one string")
    phrases = tuple(abstain_phrases) if abstain_phrases is not None else None
    return _cached_grader(grader, phrases)(response, answer, aliases, question)
