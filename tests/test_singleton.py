"""Tests for rlcal.world.singleton: Definition 2 on hand-made files, the Theorem 2 bound, and input errors."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.world.singleton import singleton_stats, theorem2_bound


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def run_cli(capsys, *args) -> tuple[int, dict | None, str]:
    code = main(["singleton-rate", *map(str, args)])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


HAND_MADE = [
    {"question": "When was Ada born?", "answer": "01-02"},  # singleton
    {"question": "When was Bo born?", "answer": "03-04"},  # twice: not a singleton
    {"question": "When was Bo born?", "answer": "03-04"},
    {"question": "When was Cy born?", "answer": "05-06"},  # once with an answer + once abstaining: singleton
    {"question": "When was Cy born?", "answer": "I don't know."},
    {"question": "When was Di born?", "answer": "IDK"},  # only abstentions: not a singleton
    {"prompt": "When was Ed born?", "answer": "07-08"},  # `prompt` works too: singleton
    {"question": "When was Fa born?", "answer": "I don't know, maybe 09-10"},  # a hedged guess is an answer
]


def test_definition_2_on_a_hand_made_file(tmp_path, capsys):
    code, result, _ = run_cli(capsys, write_jsonl(tmp_path / "a.jsonl", HAND_MADE))
    assert code == 0
    assert result["n"] == 8  # N counts every record, abstentions included
    assert result["singletons"] == 4  # Ada, Cy, Ed, Fa
    assert result["singleton_rate"] == pytest.approx(4 / 8)
    assert result["abstentions"] == 2
    assert result["distinct_prompts"] == 6


def test_bound_terms_are_shown_and_add_up(tmp_path, capsys):
    path = write_jsonl(tmp_path / "a.jsonl", HAND_MADE)
    out = tmp_path / "sr.json"
    code, result, _ = run_cli(capsys, path, "--min-ec", 364, "--delta", 0.01, "--out", out)
    assert code == 0
    terms = result["terms"]
    assert terms["2/min_ec"] == pytest.approx(2 / 364)
    assert terms["(35+6lnN)/sqrtN"] == pytest.approx((35 + 6 * math.log(8)) / math.sqrt(8))
    assert terms["delta"] == 0.01
    expected = 0.5 - 2 / 364 - (35 + 6 * math.log(8)) / math.sqrt(8) - 0.01
    assert result["bound"] == pytest.approx(expected)
    assert result["vacuous"] is True
    assert json.loads(out.read_text()) == result
    assert set(result) >= {"n", "singletons", "singleton_rate", "bound"}


def test_bound_without_min_ec_leaves_the_term_out():
    result = theorem2_bound(0.3, 10**8)
    assert result["terms"]["2/min_ec"] == 0.0 and result["min_ec"] is None
    assert result["bound"] == pytest.approx(0.3 - (35 + 6 * math.log(1e8)) / 1e4)
    assert result["vacuous"] is False  # at N = 1e8 the bound says something


def test_chat_prompts_are_compared_as_messages():
    chat = [{"role": "user", "content": "When was Ada born?"}]
    records = [{"prompt": chat, "answer": "01-02"}, {"prompt": list(chat), "answer": "01-02"}]
    assert singleton_stats(records)["singletons"] == 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.sampled_from(["01-02", "I don't know", "03-04"])), min_size=1))
def test_singleton_count_matches_a_direct_count(pairs):
    records = [{"question": f"q{q}", "answer": a} for q, a in pairs]
    answered = Counter(q for q, a in pairs if a != "I don't know")
    stats = singleton_stats(records)
    assert stats["singletons"] == sum(1 for c in answered.values() if c == 1)
    assert stats["n"] == len(pairs)
    assert 0 <= stats["singleton_rate"] <= 1


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"question": "q", "answer": "a"}\n{not json\n', ":2: invalid JSON"),
        ('{"question": "q"}\n', "needs a `question` (or `prompt`) and a string `answer`"),
        ('{"answer": "a"}\n', "needs a `question`"),
        ('{"question": "q", "answer": ["a"]}\n', "string `answer`"),
        ("[1, 2]\n", "expected a JSON object"),
        ("\n\n", "no records"),
        ("[" * 100_000 + "\n", ":1: JSON nested too deeply"),  # Python's parser gives up: bad input, not a crash
        (b'{"question": "q", "answer": "a"}\n\xff\n', ":2: not UTF-8 text"),
    ],
)
def test_malformed_files_give_one_clear_error(tmp_path, capsys, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    out = tmp_path / "out.json"
    code, _, err = run_cli(capsys, path, "--out", out)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_file_and_bad_options(tmp_path, capsys):
    code, _, err = run_cli(capsys, tmp_path / "nope.jsonl")
    assert code == 2 and "file not found" in err
    path = write_jsonl(tmp_path / "a.jsonl", HAND_MADE)
    code, _, err = run_cli(capsys, path, "--min-ec", 0)
    assert code == 2 and "--min-ec must be > 0" in err
    code, _, err = run_cli(capsys, path, "--delta", -1)
    assert code == 2 and "--delta" in err
    with pytest.raises(RlcalError):
        theorem2_bound(0.1, 0)
