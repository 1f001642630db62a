"""Tests for rlcal.core.grading: abstentions, hedged guesses, numbers, aliases, and fast paths equal to their references."""

from __future__ import annotations

import pickle
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rlcal.core import grading as G
from rlcal.core.grading import (
    ABSTAIN,
    CORRECT,
    DEFAULT_ABSTAIN_PHRASES,
    GRADERS,
    WRONG,
    AnswerGrader,
    extract_answer,
    grade,
    is_abstention,
    normalize,
    parse_number,
    register_grader,
)

PROPS = settings(max_examples=200, deadline=None)
OUTCOMES = {CORRECT, WRONG, ABSTAIN}

# ---- abstentions and hedged guesses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "I don't know.",
        "I don’t know",  # curly apostrophe
        "i dont know",
        "I do not know.",
        "IDK",
        "idk.",
        "I'm not sure.",
        "I am not sure about this one.",
        "I cannot answer that.",
        "I can't answer this question, sorry.",
        "I have no idea!",
        "Sorry, I don't know the answer.",
        "Unfortunately I do not have enough information to answer.",
        "不知道",
        "我不知道。",
        "我不确定",
        "Je ne sais pas.",
        "No lo sé",
        "Ich weiß nicht.",
        "Не знаю",
        "Answer: I don't know",
        "<answer>I don't know</answer>",
        "  \n I don't know.\nThe records do not say.",  # only the first non-empty line is the answer
        "ＩＤＫ",  # full-width, folded by NFKC
        "I DON'T KNOW",
    ],
)
def test_abstentions(reply):
    assert is_abstention(reply)
    assert grade(reply, "03-07") == ABSTAIN


def test_question_words_count_as_filler():
    question = "When was Ada Vell born?"
    reply = "I don't know when Ada Vell was born."
    assert grade(reply, "03-07", question=question) == ABSTAIN
    assert is_abstention(reply, question=question)
    # without the question the names are left over: a (wrong) guess
    assert grade(reply, "03-07") == WRONG


@pytest.mark.parametrize(
    "reply, gold, expected",
    [
        ("I don't know, maybe 03-07", "03-07", CORRECT),
        ("I don't know, maybe 03-07", "04-11", WRONG),
        ("IDK... 03-07?", "03-07", CORRECT),
        ("Not sure, but I think Paris.", "Paris", CORRECT),
        ("I'm not sure. My best guess is Lyon.", "Paris", WRONG),
        ("不知道，也许 03-07", "03-07", CORRECT),
        ("不知道也许03-07", "03-07", CORRECT),  # no spaces: CJK filler is peeled off the guess
        ("我不确定，可能是北京", "北京", CORRECT),
        ("I don't know, maybe 3.0", "3", CORRECT),  # the decimal point survives into the guess
        ("I don't know, maybe 3.0", "30", WRONG),
    ],
)
def test_hedged_guesses_are_graded_as_answers(reply, gold, expected):
    assert not is_abstention(reply)
    assert grade(reply, gold) == expected


@pytest.mark.parametrize("reply", ["kidkit", "Idaho", "Notsure Lake", "The Unknowable", "Knowles"])
def test_phrases_match_whole_words_only(reply):
    assert not is_abstention(reply)
    assert grade(reply, reply) == CORRECT


def test_abstain_phrases_are_configurable():
    assert grade("pass", "Paris") == WRONG
    assert grade("Pass.", "Paris", abstain_phrases=["pass"]) == ABSTAIN
    assert is_abstention("PASS", phrases=["pass"])
    # a list without "idk" makes "IDK" an ordinary (wrong) answer
    assert grade("IDK", "Paris", abstain_phrases=["i don't know"]) == WRONG
    assert grade("I don't know", "Paris", abstain_phrases=["I don't know"]) == ABSTAIN
    # an empty list: nothing is an abstention
    assert grade("I don't know", "Paris", abstain_phrases=[]) == WRONG
    with pytest.raises(ValueError, match="list of phrases"):
        grade("pass", "Paris", abstain_phrases="pass")
    grader = AnswerGrader(abstain_phrases=["keine Ahnung"])
    assert grader("Keine Ahnung!", "Berlin") == ABSTAIN
    assert "i dont know" in DEFAULT_ABSTAIN_PHRASES and "不知道" in DEFAULT_ABSTAIN_PHRASES


def test_empty_reply_is_wrong_not_abstention():
    for reply in ("", "   ", "...", "\n\n", "<answer></answer>"):
        assert grade(reply, "Paris") == WRONG
        assert not is_abstention(reply)


# ---- correctness: normalisation, numbers, aliases -------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, gold, expected",
    [
        ("Paris.", "paris", CORRECT),
        ("  The Eiffel Tower! ", "eiffel tower", CORRECT),
        ("ＰＡＲＩＳ", "Paris", CORRECT),  # NFKC
        ("Straße", "STRASSE", CORRECT),  # case folding
        ("03-07", "03-07", CORRECT),
        ("3", "3.0", CORRECT),
        ("3.0", "3", CORRECT),
        ("3.0", "30", WRONG),
        ("30", "3.0", WRONG),
        ("-3", "3", WRONG),  # both normalise to "3"; the numbers differ
        ("1,000", "1000", CORRECT),
        ("1000.", "1,000", CORRECT),
        ("2e3", "2000", CORRECT),
        ("03", "3", CORRECT),
        ("３．５", "3.5", CORRECT),
        ("Answer: 42", "42", CORRECT),
        ("Final answer: Lyon", "lyon", CORRECT),
        ("<answer>Lyon</answer><confidence>0.9</confidence>", "Lyon", CORRECT),
        ("Lyon\nBecause it is on the Rhône.", "Lyon", CORRECT),
        ("Lyon is the answer", "Lyon", WRONG),  # exact: the reply must be the answer
    ],
)
def test_exact_grader(reply, gold, expected):
    assert grade(reply, gold) == expected


def test_aliases_and_answer_lists():
    assert grade("March 7", "03-07", aliases=["March 7", "7 March"]) == CORRECT
    assert grade("7 march", "03-07", aliases=["March 7", "7 March"]) == CORRECT
    assert grade("March 8", "03-07", aliases=["March 7"]) == WRONG
    assert grade("NYC", ["New York City", "NYC"]) == CORRECT
    assert grade("NYC", ("New York City",), aliases=("nyc",)) == CORRECT
    # tolerant inputs: numbers as golds, a bare alias string, null aliases
    assert grade("3", 3) == CORRECT
    assert grade("3.0", [3]) == CORRECT
    assert grade("Big Apple", "New York", aliases="Big Apple") == CORRECT
    assert grade("None", "New York", aliases=[None]) == WRONG
    assert grade("x", None) == WRONG


def test_other_graders():
    assert grade("It is Paris, of course", "Paris", grader="contains") == CORRECT
    assert grade("It is 3.5 metres", "35", grader="contains") == WRONG  # decimal point kept
    assert grade("Parisian", "Paris", grader="contains") == WRONG  # whole words only
    assert grade("3.0", "3", grader="numeric") == CORRECT
    assert grade("three", "3", grader="numeric") == WRONG
    with pytest.raises(ValueError, match="unknown grader"):
        grade("x", "x", grader="nope")
    with pytest.raises(ValueError, match="unknown grader"):
        AnswerGrader("nope")


def test_register_grader():
    @register_grader("_test_prefix")
    def prefix_grader(candidate, raw, golds):
        return any(candidate.startswith(normalize(g)) for g in golds)

    try:
        assert grade("Paris, France", "Paris", grader="_test_prefix") == CORRECT
        assert grade("I don't know", "Paris", grader="_test_prefix") == ABSTAIN  # abstention is checked first
    finally:
        del GRADERS["_test_prefix"]


def test_normalize_and_parse_number():
    assert normalize("  The  Eiffel\tTower!! ") == "eiffel tower"
    assert normalize("An apple a day") == "apple day"
    assert normalize("U.S.A.") == "usa"
    assert normalize("3.14 and 3. 5") == "3.14 and 3 5"
    assert parse_number("-1,000.5") == -1000.5
    assert parse_number("3.") == 3.0
    assert parse_number("03-07") is None
    assert parse_number("1e999") is None  # not finite
    assert parse_number("12 apples") is None


def test_extract_answer():
    assert extract_answer("<answer> 42 </answer> because") == "42"
    assert extract_answer("<ANSWER>Lyon") == "Lyon"  # unterminated tag
    assert extract_answer("Lyon <confidence>0.8</confidence>") == "Lyon"
    assert extract_answer("Lyon, 80% confident") == "Lyon"
    assert extract_answer(" 12-03 (5% confident)") == "12-03"
    assert extract_answer("Lyon. Confidence: 0.8") == "Lyon"
    assert extract_answer("I am confident it is Lyon") == "I am confident it is Lyon"  # no number: kept
    assert extract_answer("\n\n  Answer:  Lyon  \nmore") == "Lyon"
    assert extract_answer("A: yes") == "yes"
    assert extract_answer("answers: x") == "answers: x"
    assert extract_answer("Lyon\r\nmore") == "Lyon"
    assert extract_answer("") == ""


def test_answer_grader_pickles():
    grader = AnswerGrader("contains", abstain_phrases=["pass", "no clue"])
    clone = pickle.loads(pickle.dumps(grader))
    assert clone.grader == "contains" and clone.abstain_phrases == ("pass", "no clue")
    for reply in ("pass", "It is Paris", "no clue, maybe Lyon", "I don't know"):
        assert clone(reply, "Paris") == grader(reply, "Paris")


# ---- properties ------------------------------------------------------------------------------------------------

# Text rich in what the fast paths special-case: phrase words, prefixes, tags, digits, points, line breaks, CJK.
_PIECES = [
    "i", "dont", "don't", "know", "do", "not", "idk", "im", "sure", "no", "idea", "cannot", "answer", "Answer:",
    "A:", "final answer:", "maybe", "the", "a", "3.0", "30", "-3", "03-07", ".", ",", "不知道", "也许", "我",
    "<answer>", "</answer>", "<confidence>0.8</confidence>", "\n", "\r\n", "\t", "\x0c", "\u2028", "\x00", " ",
    "Paris", "ＩＤＫ", "é", "e\u0301", "kidkit",
]  # fmt: skip
tricky_text = st.one_of(st.text(), st.lists(st.sampled_from(_PIECES), max_size=12).map(" ".join),
                        st.lists(st.sampled_from(_PIECES), max_size=12).map("".join))  # fmt: skip


@PROPS
@given(reply=tricky_text, gold=st.text(), aliases=st.one_of(st.none(), st.lists(st.text(), max_size=3)),
       question=st.one_of(st.none(), st.text()), grader=st.sampled_from(sorted(GRADERS)))  # fmt: skip
def test_grading_never_raises_on_arbitrary_unicode(reply, gold, aliases, question, grader):
    assert grade(reply, gold, aliases, grader=grader, question=question) in OUTCOMES
    assert isinstance(is_abstention(reply, question=question), bool)
    assert isinstance(extract_answer(reply), str)
    for fn in GRADERS.values():
        assert isinstance(fn(normalize(reply), reply, [gold, *(aliases or [])]), bool)


@settings(max_examples=400, deadline=None)
@given(tricky_text)
def test_normalize_is_idempotent(text):
    once = normalize(text)
    assert normalize(once) == once
    assert once == once.strip() and "  " not in once


def _reference_extract(response: str) -> str:
    """extract_answer without its fast paths: the definition."""
    if "<" in response:
        tagged = G._TAG_RE.search(response)
        if tagged:
            response = tagged.group(1)
        response = G._CONF_TAG_RE.sub(" ", response)
    for line in response.splitlines():
        if line.strip():
            return G._PREFIX_RE.sub("", line, count=1).strip()
    return ""


@settings(max_examples=400, deadline=None)
@given(tricky_text)
def test_extract_answer_fast_path_matches_reference(text):
    assert extract_answer(text) == _reference_extract(text)


def _reference_phrase_regex(phrases):
    """The plain longest-first alternation the trie regex replaces."""
    normalised = sorted({n for n in map(normalize, phrases) if n}, key=len, reverse=True)
    cjk = [re.escape(p) for p in normalised if G._CJK_RE.search(p)]
    latin = [re.escape(p) for p in normalised if not G._CJK_RE.search(p)]
    parts = [rf"(?<![^\W_])(?:{'|'.join(latin)})(?![^\W_])"] if latin else []
    parts += [f"(?:{'|'.join(cjk)})"] if cjk else []
    return re.compile("|".join(parts))


# Phrase lists with prefix chains ("no" < "no idea" < "no idea at all"), where longest-first order matters.
PHRASE_LISTS = [
    DEFAULT_ABSTAIN_PHRASES,
    ("no", "no idea", "no idea at all", "i", "i do", "i do not know", "不", "不知道", "知道"),
    ("idk", "id", "i d k", "sure", "not sure", "im not sure at all"),
]
_CHAIN_WORDS = ["no", "idea", "at", "all", "i", "do", "not", "know", "idk", "id", "d", "k", "sure", "im", "x",
                "不", "知道", "不知道", "."]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.one_of(tricky_text, st.lists(st.sampled_from(_CHAIN_WORDS), max_size=10).map(" ".join),
                 st.lists(st.sampled_from(_CHAIN_WORDS), max_size=10).map("".join)),
       st.sampled_from(PHRASE_LISTS))  # fmt: skip
def test_trie_phrase_regex_matches_plain_alternation(text, phrases):
    candidate = normalize(text)
    fast = G._phrase_regex(tuple(phrases))
    slow = _reference_phrase_regex(phrases)
    assert fast.subn(" ", candidate) == slow.subn(" ", candidate)


@settings(max_examples=400, deadline=None)
@given(tricky_text, st.sampled_from(["03-07", "Paris", "3", "i"]))
def test_abstention_precheck_is_sound(text, gold):
    """Skipping the phrase regex on clean ASCII replies never changes an outcome."""
    fast = AnswerGrader()
    slow = AnswerGrader()
    slow._first_words = None  # no pre-check: always run the regex
    assert fast._first_words is not None
    assert fast(text, gold) == slow(text, gold)


@PROPS
@given(tricky_text, st.one_of(st.none(), st.text(max_size=30)))
def test_is_abstention_agrees_with_grade(text, question):
    assert is_abstention(text, question=question) == (grade(text, "zz-gold", question=question) == ABSTAIN)


@PROPS
@given(st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 3)))
def test_numbers_compare_as_numbers(x):
    assert grade(repr(x), str(x)) == CORRECT
    assert grade(f"{x:.3f}", repr(x)) == CORRECT
    assume(x != 0)
    assert grade(repr(-x), repr(x)) == WRONG
