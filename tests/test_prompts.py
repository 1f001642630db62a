"""Tests for rlcal.core.prompts: the confidence-target instruction with the computed penalty, t = 0, chat format."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.core.prompts import BEST_GUESS_INSTRUCTION, PromptTemplate, format_number
from rlcal.core.thresholds import penalty


def test_plain_prompt_at_three_quarters_says_three_points():
    prompt = PromptTemplate().render("When was Ada Vell born?", 0.75)
    assert isinstance(prompt, str)
    assert "more than 75% confident" in prompt
    assert "penalized 3 points" in prompt  # computed: 0.75 / 0.25 = 3, not the paper's misprinted 2
    assert 'an answer of "I don\'t know" receives 0 points' in prompt
    assert prompt.endswith("Question: When was Ada Vell born?\nAnswer:")


@pytest.mark.parametrize(
    "t, points",
    [(0.5, "1 point"), (0.75, "3 points"), (0.9, "9 points"), (0.95, "19 points"), (0.6, "1.5 points"),
     (0.25, "0.33 points"), (0.2, "0.25 points")],
)  # fmt: skip
def test_penalty_is_computed_and_its_noun_agrees(t, points):
    assert f"mistakes are penalized {points}, while" in PromptTemplate().render("Q?", t)
    assert PromptTemplate(instruction="{penalty_points}").instruction_text(t) == points


def test_the_paper_wording_is_one_override_away():
    paper = PromptTemplate(instruction="penalized {penalty} points.")
    assert paper.instruction_text(0.5) == "penalized 1 points."  # "{penalty} points" reads as written


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 0.95).map(lambda t: round(t, 2)))
def test_prompt_states_t_and_its_penalty(t):
    text = PromptTemplate().render("Q?", t)
    stated = float(re.search(r"penalized ([0-9.]+) point", text).group(1))
    assert stated == pytest.approx(penalty(t), abs=0.005)
    percent = float(re.search(r"more than ([0-9.]+)% confident", text).group(1))
    assert percent == pytest.approx(100 * t)


def test_t_zero_is_the_best_guess_variant():
    prompt = PromptTemplate().render("Q?", 0.0)
    assert BEST_GUESS_INSTRUCTION in prompt
    assert "penalized" not in prompt and "confident" not in prompt


def test_chat_format():
    messages = PromptTemplate(format="chat", system_prompt="You are careful.").render("Q?", 0.75)
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == "You are careful."
    assert "penalized 3 points" in messages[1]["content"] and "Question: Q?" in messages[1]["content"]
    assert [m["role"] for m in PromptTemplate(format="chat").render("Q?", 0)] == ["user"]


def test_overrides_and_placeholders():
    template = PromptTemplate(
        instruction="t={t} pct={t_percent} pen={penalty} pts={penalty_points}",
        instruction_t0="guess!",
        template="[{instruction}] {question} ->",
    )
    assert template.render("Q", 0.75) == "[t=0.75 pct=75% pen=3 pts=3 points] Q ->"
    assert template.render("Q", 0) == "[guess!] Q ->"
    assert template.render("What is {x}?", 0.5) == "[t=0.5 pct=50% pen=1 pts=1 point] What is {x}? ->"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"format": "xml"}, "format"),
        ({"template": "no question here"}, "question"),
        ({"template": "{question} {nope}"}, "placeholder"),
        ({"instruction": "{penalty} {oops}"}, "placeholder"),
        ({"instruction_t0": "{oops}"}, "placeholder"),
    ],
)
def test_bad_templates_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PromptTemplate(**kwargs)


def test_bad_threshold_raises():
    with pytest.raises(ValueError, match="threshold"):
        PromptTemplate().render("Q?", 1.0)


@pytest.mark.parametrize(
    "x, decimals, text",
    [(3.0, 2, "3"), (1.5, 2, "1.5"), (9.000000000000002, 2, "9"), (1 / 3, 2, "0.33"), (1 / 3, 4, "0.3333"),
     (0.0, 2, "0"), (-0.0001, 2, "0"), (100.0, 2, "100"), (0.75, 2, "0.75")],
)  # fmt: skip
def test_format_number(x, decimals, text):
    assert format_number(x, decimals) == text
