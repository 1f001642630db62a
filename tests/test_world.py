"""Tests for rlcal.world.corpus: statistics against their targets, determinism, file contents, CLI errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.core.grading import grade
from rlcal.core.prompts import PromptTemplate
from rlcal.world.corpus import (
    COUNT_BUCKETS,
    IDK_ANSWER,
    WorldConfig,
    birthday,
    build_world,
    count_bucket,
    expected_singleton_rate,
    fresh_documents,
    generate_world,
    read_corpus,
    tokenizer_documents,
    world_matches,
)
from rlcal.world.singleton import singleton_stats


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def default_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("default_world")
    build_world(WorldConfig(), out)
    return out


def test_default_singleton_rate_matches_target(default_world):
    stats = json.loads((default_world / "world.json").read_text())
    assert abs(stats["singleton_rate"] - stats["singleton_rate_target"]) <= 0.02
    # Good-Turing: the singleton rate estimates the probability that a fresh question is about an unseen fact.
    assert abs(stats["singleton_rate"] - stats["missing_mass"]) <= 0.05
    assert 0.1 <= stats["singleton_rate"] <= 0.3
    assert stats["n_records"] == stats["mentions"]


@pytest.mark.parametrize("seed", [1, 2])
def test_singleton_rate_target_holds_for_other_seeds_and_sizes(seed):
    config = WorldConfig(people=3000, mentions=6000, zipf=1.1, seed=seed)
    _, _, _, stats = generate_world(config)
    assert abs(stats["singleton_rate"] - stats["singleton_rate_target"]) <= 0.02


def test_mentions_file_reproduces_world_singleton_rate(default_world, capsys):
    stats = json.loads((default_world / "world.json").read_text())
    assert main(["singleton-rate", str(default_world / "mentions.jsonl")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == stats["n_records"]
    assert result["singletons"] == stats["singletons"]
    assert result["singleton_rate"] == pytest.approx(stats["singleton_rate"])


def test_qa_counts_match_corpus_mentions(default_world):
    qa = read_jsonl(default_world / "qa.jsonl")
    mentions = read_jsonl(default_world / "mentions.jsonl")
    told = Counter(m["question"] for m in mentions)
    assert len(mentions) == WorldConfig().mentions
    if len(qa) == WorldConfig().people:  # everyone is asked about
        assert sum(r["count"] for r in qa) == WorldConfig().mentions
    for row in qa:
        assert row["count"] == told.get(row["question"], 0)
    # every stated fact is the person's true answer, and each is actually in the corpus text
    gold = {r["question"]: r["answer"] for r in qa}
    assert all(m["answer"] == gold[m["question"]] for m in mentions if m["question"] in gold)
    corpus = (default_world / "corpus.txt").read_text()
    top = max(qa, key=lambda r: r["count"])
    assert corpus.count(top["person"]) == top["count"]


def test_qa_fields_and_splits_have_the_same_mix(default_world):
    qa = read_jsonl(default_world / "qa.jsonl")
    assert {"question", "answer", "aliases", "count", "family", "split"} <= set(qa[0])
    assert {r["split"] for r in qa} == {"rl_train", "eval"}
    by_split = {s: Counter(count_bucket(r["count"]) for r in qa if r["split"] == s) for s in ("rl_train", "eval")}
    for name, _, _ in COUNT_BUCKETS:  # every bucket, incl. unseen and singletons, in both splits, ~50/50
        a, b = by_split["rl_train"][name], by_split["eval"][name]
        assert a > 0 and b > 0, name
        assert abs(a - b) <= 1, name
    people = {s: {r["person"] for r in qa if r["split"] == s} for s in ("rl_train", "eval")}
    assert not people["rl_train"] & people["eval"]
    if len(qa) == WorldConfig().people:
        assert sum(r["popularity"] for r in qa) == pytest.approx(1.0)


def test_qa_people_is_a_shuffled_uniform_sample():
    _, qa, _, _ = generate_world(WorldConfig(people=1000, mentions=1500, qa_people=200))
    assert len(qa) == 200 and len({r["person"] for r in qa}) == 200
    popularity = [r["popularity"] for r in qa]
    assert popularity != sorted(popularity, reverse=True)  # not in rank order: a prefix is a fair sample
    assert {count_bucket(r["count"]) for r in qa if r["split"] == "eval"} >= {"unseen", "1", "2-4"}


def test_birthdays_are_valid_uniform_dates(default_world):
    qa = read_jsonl(default_world / "qa.jsonl")
    days = Counter()
    for row in qa:
        day, month = map(int, row["answer"].split("-"))
        assert 1 <= month <= 12 and 1 <= day <= 31 and len(row["answer"]) == 5
        for alias in row["aliases"]:
            assert grade(alias, row["answer"], row["aliases"]) == "correct"
        days[month] += 1
    # months are uniform-ish (chi-square with 11 dof, far from its 0.1% tail of 31.3)
    expected = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]) / 365 * len(qa)
    observed = np.array([days[m] for m in range(1, 13)])
    assert ((observed - expected) ** 2 / expected).sum() < 31.3


def test_birthday_format():
    assert birthday(0) == ("01-01", ["1-1", "1 January", "January 1"])
    assert birthday(364) == ("31-12", ["31 December", "December 31"])
    assert birthday(31 + 28) == ("01-03", ["1-3", "1 March", "March 1"])


def test_corpus_speaks_the_prompt_format(default_world):
    docs = read_corpus(default_world)
    template = PromptTemplate()
    heads = {t: template.render("X", t).split("Question:")[0] for t in (0.0, 0.5, 0.75, 0.9)}
    prompt_docs = [d for d in docs if "\nQuestion: " in d]
    assert 0.2 < len(prompt_docs) / len(docs) < 0.3  # qa_format_share 0.25
    for t, head in heads.items():
        assert any(d.startswith(head) for d in prompt_docs), t
    assert all(d.split("\nAnswer: ")[1][:2].isdigit() for d in prompt_docs)
    assert not any(IDK_ANSWER in d for d in docs)  # the fixed corpus states facts only


def test_fresh_documents_are_new_people_and_abstain_only_above_zero(default_world):
    config = WorldConfig()
    epoch0, epoch1 = fresh_documents(config, 0), fresh_documents(config, 1)
    assert len(epoch0) == len(epoch1) == config.fresh_per_epoch
    assert fresh_documents(config, 0) == epoch0 and epoch0 != epoch1
    known = {r["person"] for r in read_jsonl(default_world / "qa.jsonl")}
    names = {d.split("When was ")[1].split(" born?")[0] for d in epoch0 + epoch1 if "When was " in d}
    assert names and not names & known
    template = PromptTemplate()
    best_guess = template.render("X", 0.0).split("Question:")[0]
    idk = [d for d in epoch0 + epoch1 if d.endswith("Answer: " + IDK_ANSWER)]
    above_zero = [d for d in epoch0 + epoch1 if "\nQuestion: " in d and not d.startswith(best_guess)]
    assert not any(d.startswith(best_guess) for d in idk)  # never "I don't know" under best-guess grading
    assert abs(len(idk) / len(above_zero) - config.idk_share) < 0.1
    assert fresh_documents(WorldConfig(fresh_share=0.0), 0) == []


def test_determinism_by_seed(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    config = dict(people=200, mentions=400, families=["birthday", "birthplace", "letter_count", "arithmetic"])
    build_world(WorldConfig(**config, seed=7), a)
    build_world(WorldConfig(**config, seed=7), b)
    build_world(WorldConfig(**config, seed=8), c)
    for name in ("corpus.txt", "qa.jsonl", "mentions.jsonl", "world.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "corpus.txt").read_bytes() != (c / "corpus.txt").read_bytes()
    assert world_matches(a, WorldConfig(**config, seed=7))
    assert not world_matches(a, WorldConfig(**config, seed=8))


def test_optional_families(tmp_path):
    config = WorldConfig(
        people=100,
        mentions=200,
        families=["birthday", "birthplace", "letter_count", "arithmetic"],
        pattern_examples=50,
        pattern_questions=20,
    )
    stats = build_world(config, tmp_path)
    qa = read_jsonl(tmp_path / "qa.jsonl")
    families = Counter(r["family"] for r in qa)
    assert families == {"birthday": 100, "birthplace": 100, "letter_count": 20, "arithmetic": 20}
    corpus = (tmp_path / "corpus.txt").read_text()
    for row in qa:
        if row["family"] == "letter_count":
            letter, word = row["question"][len("How many ") :].split("'s are in ")
            assert int(row["answer"]) == word.rstrip("?").count(letter)
            assert row["count"] == 0 and row["question"] not in corpus  # held out: learnable only as a pattern
        elif row["family"] == "arithmetic":
            expression = row["question"][len("What is ") :].rstrip("?")
            assert int(row["answer"]) == eval(expression)  # noqa: S307 - digits and +/- only
    assert stats["qa"]["eval"]["letter_count"] == 10
    assert "How many" in corpus and " + " in corpus


def test_format_mix():
    corpus, _, records, _ = generate_world(
        WorldConfig(people=300, mentions=2000, qa_format_share=0.1, question_share=0.3)
    )
    formats = Counter(r["format"] for r in records)
    assert abs(formats["prompt"] / 2000 - 0.1) < 0.03 and abs(formats["question"] / 2000 - 0.3) < 0.04
    bare = [d for d in corpus if d.startswith("Question: ")]
    assert len(bare) == formats["question"] and all("\nAnswer: " in d for d in bare)


def test_tokenizer_documents_replace_the_people(default_world):
    config = WorldConfig(people=300, mentions=500, families=["birthday", "arithmetic"], pattern_examples=40)
    corpus, qa, _, _ = generate_world(config)
    texts = tokenizer_documents(config, corpus)
    assert len(texts) == len(corpus)
    people = {r["person"] for r in qa}
    assert not any(name in text for text in texts for name in list(people)[:100])
    assert sum(" + " in t or " - " in t for t in texts) == 40  # pattern documents are kept as they are


@settings(max_examples=15, deadline=None)
@given(
    people=st.integers(1, 150),
    mentions=st.integers(1, 300),
    zipf=st.floats(0, 3),
    offset=st.floats(0, 50),
    seed=st.integers(0, 2**16),
    share=st.floats(0, 1),
)
def test_world_invariants(people, mentions, zipf, offset, seed, share):
    config = WorldConfig(
        people=people, mentions=mentions, zipf=zipf, zipf_offset=offset, seed=seed, qa_format_share=share
    )
    corpus, qa, records, stats = generate_world(config)
    assert sum(r["count"] for r in qa) == mentions
    assert len(corpus) == len(records) == mentions
    assert singleton_stats(records)["singletons"] == sum(r["count"] == 1 for r in qa) == stats["singletons"]
    assert 0 <= stats["singleton_rate"] <= 1 and 0 <= stats["singleton_rate_target"] <= 1
    assert len({r["question"] for r in qa}) == people


def test_expected_singleton_rate_closed_form():
    # two equally likely facts, 2 draws: P(exactly one each) = 1/2 -> E[singletons] = 1, rate 1/2
    assert expected_singleton_rate(np.array([0.5, 0.5]), 2, 2) == pytest.approx(0.5)
    assert expected_singleton_rate(np.array([1.0]), 1, 1) == pytest.approx(1.0)


def test_count_bucket():
    assert [count_bucket(c) for c in (0, 1, 2, 4, 5, 19, 20, 10**6)] == [
        "unseen",
        "1",
        "2-4",
        "2-4",
        "5-19",
        "5-19",
        "20+",
        "20+",
    ]
    with pytest.raises(ValueError):
        count_bucket(-1)


# ---- errors --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"people": 0}, "people must be > 0"),
        ({"mentions": -3}, "mentions must be > 0"),
        ({"zipf": -1.0}, "zipf must be"),
        ({"families": ["weather"]}, "unknown families"),
        ({"families": ["arithmetic"]}, "arbitrary-fact family"),
        ({"thresholds": [1.0]}, "threshold"),
        ({"thresholds": [0.0]}, "idk_share > 0 needs a threshold"),
        ({"fresh_share": -0.1}, "fresh_share"),
        ({"qa_people": -1}, "qa_people"),
        ({"qa_format_share": 0.8, "question_share": 0.3}, "must be <= 1"),
        ({"eval_fraction": 1.0}, "eval_fraction"),
        ({"people": 2.5}, "people must be an integer"),
    ],
)
def test_invalid_config(kwargs, message):
    with pytest.raises(RlcalError, match=message):
        WorldConfig(**kwargs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--people", "0"], "people must be > 0"),
        (["--zipf", "-2"], "zipf must be"),
        (["--idk_share", "1.5"], "idk_share"),
    ],
)
def test_cli_rejects_bad_parameters_without_writing(tmp_path, capsys, args, message):
    out = tmp_path / "w"
    assert main(["world", "build", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_rejects_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert main(["world", "build", "--out", str(blocker / "world")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write to output directory" in err and len(err.splitlines()) == 1


def test_cli_builds(tmp_path, capsys):
    assert main(["world", "build", "--out", str(tmp_path), "--people", "50", "--mentions", "80", "--seed", "3"]) == 0
    assert "singleton rate" in capsys.readouterr().out
    stats = json.loads((tmp_path / "world.json").read_text())
    assert stats["config"]["people"] == 50 and stats["config"]["seed"] == 3
    assert not list(tmp_path.glob(".*")) and not list(tmp_path.parent.glob(f".{tmp_path.name}.*"))  # no temp left


# ---- the forecast family: facts that are themselves random ------------------------------------------------------


def test_weather_distributions_have_one_mode_in_range():
    from rlcal.world.corpus import FORECAST_MODE_RANGE, WEATHER, weather_distribution

    rng = np.random.default_rng(0)
    modes = []
    for _ in range(300):
        probs = weather_distribution(rng)
        assert probs.shape == (len(WEATHER),) and probs.sum() == pytest.approx(1.0)
        top = np.sort(probs)[::-1]
        assert top[0] > top[1]  # a unique best forecast
        assert FORECAST_MODE_RANGE[0] <= top[0] <= FORECAST_MODE_RANGE[1]
        modes.append(int(np.argmax(probs)))
    assert len(set(modes)) == len(WEATHER)  # the modal weather is not always the same one


def test_forecast_rows_and_reports_follow_each_towns_distribution():
    from rlcal.world.corpus import WEATHER, forecast_world

    config = WorldConfig(families=["birthday", "forecast"], forecast_towns=6, forecast_observations=2000,
                         forecast_questions=5)
    docs, qa = forecast_world(config)
    towns = sorted({r["town"] for r in qa})
    assert len(towns) == 6 and len(qa) == 6 * 5 and len(docs) == 6 * 2000
    by_split = {s: {r["town"] for r in qa if r["split"] == s} for s in ("eval", "rl_train")}
    assert len(by_split["eval"]) == 3 and not by_split["eval"] & by_split["rl_train"]  # split by town
    for town in towns:
        reports = Counter(d["answer"] for d in docs if d["fields"]["town"] == town)
        mode, count = reports.most_common(1)[0]
        p_mode = next(r["mode_probability"] for r in qa if r["town"] == town)
        # 2000 draws: the empirical share of the modal weather is within 4 standard errors of its probability
        assert abs(count / 2000 - p_mode) < 4 * (p_mode * (1 - p_mode) / 2000) ** 0.5
        assert set(reports) <= set(WEATHER)
        assert all(r["question"] == f"What will the weather be in {town} tomorrow?" for r in qa if r["town"] == town)


def test_adding_the_forecast_family_leaves_the_other_draws_unchanged():
    base = WorldConfig(people=200, mentions=300, qa_people=100)
    with_forecast = WorldConfig(people=200, mentions=300, qa_people=100, families=["birthday", "forecast"],
                                forecast_towns=4, forecast_observations=3, forecast_questions=2)
    corpus_a, qa_a, mentions_a, _ = generate_world(base)
    corpus_b, qa_b, mentions_b, _ = generate_world(with_forecast)
    birthdays_b = [r for r in qa_b if r["family"] == "birthday"]
    assert [{k: v for k, v in r.items() if k not in ("town", "mode_probability")} for r in birthdays_b] == qa_a
    assert all(r["town"] is None and r["mode_probability"] is None for r in birthdays_b)  # one schema for all rows
    # Forecast reports are not arbitrary-fact mentions: the same records (in another corpus order), same singleton rate.
    assert sorted(map(json.dumps, mentions_b)) == sorted(map(json.dumps, mentions_a))
    assert set(corpus_a) <= set(corpus_b) and len(corpus_b) == len(corpus_a) + 4 * 3
    assert all(set(r) == set(qa_b[0]) for r in qa_b)


def test_forecast_prose_names_the_town_before_the_weather():
    """A causal LM cannot answer "What will the weather be in X?" from "It was rainy in X" (the reversal curse):
    with such a template the toy model learned only the marginal forecast."""
    from rlcal.world.corpus import PROSE, WEATHER

    for template in PROSE["forecast"]:
        text = template.format(town="Tovaley", answer=WEATHER[0])
        assert text.index("Tovaley") < text.index(WEATHER[0])


@pytest.mark.parametrize(
    "kwargs",
    [{"forecast_towns": 1}, {"forecast_observations": 0}, {"forecast_questions": 0}, {"forecast_towns": 200_000}],
)
def test_invalid_forecast_config(kwargs):
    with pytest.raises(RlcalError, match="forecast"):
        WorldConfig(families=["birthday", "forecast"], **kwargs)
