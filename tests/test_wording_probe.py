"""benchmarks/wording_probe.py: the prompt rewrite and the --case parser on hand-worked inputs (the probe itself runs
on a finished demo, which is the benchmark's job)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from rlcal.core.prompts import PromptTemplate

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "wording_probe.py"
_spec = importlib.util.spec_from_file_location("wording_probe", _PATH)
probe = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(probe)


@pytest.mark.parametrize(("t", "shipped"), [(0.5, "1 point"), (0.75, "3 points"), (0.55, "1.22 points")])
def test_rewrite_changes_only_the_penalty(t, shipped):
    template = PromptTemplate()
    assert probe.penalty_text(t) == shipped
    prompt = template.render("When was Ada Vell born?", t)
    rewritten = probe.rewrite(template, "When was Ada Vell born?", t, "2.0 points")
    assert rewritten != prompt and "penalized 2.0 points," in rewritten
    assert rewritten.replace("penalized 2.0 points,", f"penalized {shipped},") == prompt
    assert f"{round(100 * t)}% confident" in rewritten  # t itself still stated as shipped


def test_rewrite_refuses_a_template_without_the_penalty():
    template = PromptTemplate(instruction="Answer only if you are more than {t_percent} confident.")
    with pytest.raises(ValueError, match="states no penalty"):
        probe.rewrite(template, "Q?", 0.5, "1.0 points")


@pytest.mark.parametrize("bad", ["0.5", "x=1 point", "1.5=1 point", "0=1 point", "0.5="])
def test_parse_case_rejects_bad_cases(bad):
    with pytest.raises(argparse.ArgumentTypeError):
        probe.parse_case(bad)


def test_parse_case_and_defaults():
    assert probe.parse_case("0.75=3.0 points") == (0.75, "3.0 points")
    assert all(probe.rewrite(PromptTemplate(), "Q?", *probe.parse_case(c)) for c in probe.DEFAULT_CASES)


def test_paired_change_counts_and_brackets_the_change():
    shipped = np.array([1, 0, 0, 1] * 20)
    rewritten = np.array([1, 1, 0, 1] * 20)  # 20 more answers, always the same questions
    change, lo, hi = probe.paired_change(shipped, rewritten)
    assert change == 20 and lo < 20 < hi and lo > 0
    assert probe.paired_change(shipped, shipped) == [0.0, 0.0, 0.0]
