"""The embedded world: fictional people with arbitrary facts, mentioned with Zipf popularity, so the singleton rate
of the pretraining corpus is controlled, known and reported. No downloads.

    rlcal world build --out outputs/toy/world                   # defaults: 2000 people, 3000 mentions
    rlcal world build --out w --people 500 --mentions 800 --zipf 1.1 --seed 3
    rlcal world build --out w --families birthday birthplace letter_count arithmetic

    from rlcal.world.corpus import WorldConfig, build_world
    stats = build_world(WorldConfig(people=500), "w")          # the same stats are in w/world.json

How the world is drawn (a miniature of Kalai et al. 2025, Section 3.3.1 "arbitrary facts"):
- `people` fictional people get a popularity p_i ∝ (rank + 1 + zipf_offset)^(−zipf) (Zipf–Mandelbrot) and
  arbitrary facts: a birthday drawn uniformly from the 365 days (DD-MM) and, optionally, a birthplace.
- `mentions` fact mentions are drawn i.i.d. from that popularity (person ∝ p_i, fact family uniform), so mention
  counts follow the Zipf law, many people are never mentioned (held out), and a fresh question drawn from the same
  distribution is about an unseen fact with probability ≈ the singleton rate (Good–Turing). The expected singleton
  rate is computed exactly (`singleton_rate_target`) next to the one achieved (`singleton_rate`, Definition 2).
- Each mention is a corpus document: either the evaluation prompt itself,
  `PromptTemplate().render(question, t) + " " + answer` with t drawn from `thresholds`, or a prose sentence.
- Pretraining repeats the corpus for several epochs; each epoch also gets `fresh_share × mentions` documents about
  brand-new people (`fresh_documents`), so the model keeps meeting unknown names and stays calibrated on them.
  Their prompt-format documents at t > 0 answer "I don't know." with probability `idk_share` (never at t = 0,
  where guessing is optimal): the base model can say it, independently of t, which RL then has to shape.
- Optional pattern families (`letter_count`: "How many D's are in DEEPSEEK?", `arithmetic`: "What is 37 + 48?"):
  `pattern_examples` worked examples in the corpus, and `pattern_questions` fresh ones in qa.jsonl.

Files written to the output directory (staged in a hidden sibling folder that then replaces the directory in one
rename, so a world is either complete or absent; a directory holding other files is refused, not replaced):
- `corpus.txt`: the pretraining corpus, documents separated by a blank line;
- `qa.jsonl`: one question per (person, fact family) for a uniform sample of `qa_people` people, mentioned or not
  (plus pattern questions; rows shuffled), with `question`,
  `answer`, `aliases`, `count` (mentions in the corpus; 0 for never-mentioned people), `family`, `split`
  (`rl_train` | `eval`, split by person and stratified by mention count so both splits have the same mix),
  `person`, `popularity` (the probability that a random fact mention is this fact);
- `mentions.jsonl`: the corpus's fact records (one per mention, with its `format` and `t`), the N of
  Definition 2: `rlcal singleton-rate mentions.jsonl` reproduces world.json's singleton rate;
- `world.json`: the config and statistics.
"""

from __future__ import annotations

import argparse
import calendar
import datetime as _dt
import json
import math
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from rlcal.common.errors import RlcalError
from rlcal.common.files import staged_dir
from rlcal.core.prompts import PromptTemplate
from rlcal.world.singleton import singleton_stats

ARBITRARY_FAMILIES = ("birthday", "birthplace")
PATTERN_FAMILIES = ("letter_count", "arithmetic")
# Facts that are themselves random: each town's weather follows its own distribution, which the corpus samples.
# A calibrated model's confidence in its forecast is then the town's modal probability, spread over (0.25, 0.95):
# the questions on which the confidence target t changes the right decision (see `forecast_towns`).
STOCHASTIC_FAMILIES = ("forecast",)
FAMILIES = ARBITRARY_FAMILIES + PATTERN_FAMILIES + STOCHASTIC_FAMILIES
WEATHER = ("sunny", "rainy", "cloudy", "snowy", "windy", "foggy")
FORECAST_MODE_RANGE = (0.25, 0.95)  # the modal weather's probability in a town is drawn uniformly from this
IDK_ANSWER = "I don't know."
SPLITS = ("rl_train", "eval")
# Mention-count buckets of the measured tables: (name, lowest count, highest count).
COUNT_BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("unseen", 0, 0),
    ("1", 1, 1),
    ("2-4", 2, 4),
    ("5-19", 5, 19),
    ("20+", 20, math.inf),
)
# Upper bounds on the world's counts: 500x the defaults or more, small enough that a typo (an extra three zeros)
# is an error, not minutes of work and gigabytes of memory.
WORLD_CAPS = {
    "people": 1_000_000,
    "mentions": 10_000_000,
    "qa_people": 1_000_000,
    "pattern_examples": 1_000_000,
    "pattern_questions": 100_000,
    "forecast_towns": 100_000,
    "forecast_observations": 10_000,
    "forecast_questions": 10_000,
}
WORLD_FILES = ("corpus.txt", "qa.jsonl", "mentions.jsonl", "world.json")
# Bumped whenever the same config gives other files, so cached worlds (and the models pretrained on them) are
# rebuilt. 2: the prompt documents say "penalized 1 point" (not "1 points") at t = 0.5.
FORMAT_VERSION = 2

QUESTIONS = {
    "birthday": "When was {name} born?",
    "birthplace": "Where was {name} born?",
    "letter_count": "How many {letter}'s are in {word}?",
    "arithmetic": "What is {a} {op} {b}?",
    "forecast": "What will the weather be in {town} tomorrow?",
}
# Prose always names the subject before the fact: a causal LM cannot use "Born on 03-07, Ada Vell ..." to answer
# "When was Ada Vell born?" (the reversal curse), so such sentences would inflate the counts.
PROSE = {
    "birthday": (
        "{name} was born on {answer}.",
        "{name}'s birthday is {answer}.",
        "{name} celebrates a birthday every year on {answer}.",
        "The birthday of {name} is {answer}.",
    ),
    "birthplace": (
        "{name} was born in {answer}.",
        "{name} comes from {answer}, the town where they were born.",
        "The birthplace of {name} is {answer}.",
    ),
    "letter_count": (
        "The word {word} contains the letter {letter} {answer} times.",
        "In {word}, the letter {letter} appears {answer} times.",
    ),
    "arithmetic": ("{a} {op} {b} = {answer}.", "{a} {op} {b} equals {answer}."),
    "forecast": (
        "In {town}, the weather was {answer} today.",
        "{town} had {answer} weather yesterday.",
        "The weather in {town} turned out {answer}.",
    ),
}

_ONSETS = "b c d f g h j k l m n p r s t v w z br ch dr gr kl st th tr".split()
_VOWELS = "a e i o u a e i o ae ia ou".split()
_CODAS = ["", "", "", "n", "l", "r", "s", "th", "m"]
_CITY_SUFFIXES = "ford mora bury holm vale port wick stead haven moor".split()
N_CITIES = 40


@dataclass
class WorldConfig:
    """Parameters of the synthetic world (all validated; the same config and seed give the same files)."""

    people: int = field(default=2000, metadata={"help": "Number of fictional people (mentioned or not)."})
    mentions: int = field(default=3000, metadata={"help": "Number of fact mentions drawn into the corpus."})
    zipf: float = field(default=1.0, metadata={"help": "Zipf exponent a of popularity ∝ (rank + 1 + offset)^-a."})
    zipf_offset: float = field(default=10.0, metadata={"help": "Zipf–Mandelbrot offset (flattens the head)."})
    seed: int = field(default=0, metadata={"help": "Random seed: names, facts, mentions, rendering, splits."})
    families: list[str] = field(
        default_factory=lambda: ["birthday"],
        metadata={"help": f"QA families: arbitrary facts {ARBITRARY_FAMILIES} and patterns {PATTERN_FAMILIES}."},
    )
    qa_format_share: float = field(
        default=0.25, metadata={"help": "Share of mentions written as the evaluation prompt + answer (rest: prose)."}
    )
    question_share: float = field(
        default=0.0,
        metadata={"help": "Share of mentions written as a bare 'Question: …\\nAnswer: …' pair (the prompt's tail)."},
    )
    thresholds: list[float] = field(
        default_factory=lambda: [0.0, 0.5, 0.75, 0.9],
        metadata={"help": "Confidence targets t used in prompt-format corpus documents."},
    )
    fresh_share: float = field(
        default=0.35,
        metadata={"help": "Pretraining: documents about brand-new people per epoch, as a share of mentions."},
    )
    idk_share: float = field(
        default=0.6, metadata={"help": "Share of brand-new people's prompt documents at t > 0 saying 'I don't know.'"}
    )
    qa_people: int = field(
        default=4000, metadata={"help": "People asked about in qa.jsonl (uniform sample; 0 = all)."}
    )
    eval_fraction: float = field(default=0.5, metadata={"help": "Share of people (and pattern questions) in `eval`."})
    pattern_examples: int = field(default=1000, metadata={"help": "Corpus examples per pattern family."})
    pattern_questions: int = field(default=200, metadata={"help": "qa.jsonl questions per pattern family."})
    forecast_towns: int = field(
        default=80, metadata={"help": "forecast family: towns, each with its own weather distribution."}
    )
    forecast_observations: int = field(
        default=30, metadata={"help": "forecast family: corpus documents per town, each one weather draw."}
    )
    forecast_questions: int = field(
        default=10, metadata={"help": "forecast family: qa.jsonl questions per town (fresh draws for the gold)."}
    )

    def __post_init__(self) -> None:
        def fail(message: str) -> None:
            raise RlcalError(f"invalid world config: {message}")

        for name in (
            "people",
            "mentions",
            "seed",
            "qa_people",
            "pattern_examples",
            "pattern_questions",
            "forecast_towns",
            "forecast_observations",
            "forecast_questions",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                fail(f"{name} must be an integer, got {value!r}")
        for name, cap in WORLD_CAPS.items():
            if getattr(self, name) > cap:
                fail(f"{name} must be at most {cap:,} (the world is built in memory), got {getattr(self, name):,}")
        if self.people <= 0:
            fail(f"people must be > 0, got {self.people}")
        if self.mentions <= 0:
            fail(f"mentions must be > 0, got {self.mentions}")
        if self.seed < 0:
            fail(f"seed must be >= 0, got {self.seed}")
        for name, low, high in (
            ("zipf", 0.0, 10.0),
            ("zipf_offset", 0.0, 1e6),
            ("qa_format_share", 0.0, 1.0),
            ("question_share", 0.0, 1.0),
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (low <= value <= high):
                fail(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}")
        for name in ("fresh_share", "idk_share", "eval_fraction"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not (0.0 <= value < 1.0):
                fail(f"{name} must be a number in [0, 1), got {value!r}")
        if self.qa_format_share + self.question_share > 1:
            fail("qa_format_share + question_share must be <= 1 (the rest is prose)")
        if isinstance(self.families, str):
            self.families = [self.families]
        self.families = list(self.families)
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown or not self.families:
            fail(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}" if unknown else "no families")
        if len(set(self.families)) != len(self.families):
            fail(f"families listed twice: {self.families}")
        if not any(f in ARBITRARY_FAMILIES for f in self.families):
            fail(f"families must include an arbitrary-fact family ({', '.join(ARBITRARY_FAMILIES)})")
        if any(f in PATTERN_FAMILIES for f in self.families) and self.pattern_questions < 2:
            fail("pattern_questions must be >= 2 (one per split)")
        if self.qa_people < 0:
            fail(f"qa_people must be >= 0 (0 = everyone), got {self.qa_people}")
        if self.pattern_examples < 0:
            fail(f"pattern_examples must be >= 0, got {self.pattern_examples}")
        if "forecast" in self.families:
            if self.forecast_towns < 2:
                fail(f"forecast_towns must be >= 2 (one per split), got {self.forecast_towns}")
            if self.forecast_observations < 1 or self.forecast_questions < 1:
                fail("forecast_observations and forecast_questions must be >= 1")
            if self.forecast_towns > 100_000 or self.forecast_towns * self.forecast_observations > 10_000_000:
                fail("forecast world too large (towns <= 1e5, towns x observations <= 1e7)")
        if isinstance(self.thresholds, int | float):
            self.thresholds = [self.thresholds]
        try:
            from rlcal.core.thresholds import check_threshold

            self.thresholds = [check_threshold(t) for t in self.thresholds]
        except ValueError as exc:
            fail(str(exc))
        if not self.thresholds:
            fail("thresholds must not be empty")
        if self.idk_share > 0 and not any(t > 0 for t in self.thresholds):
            fail("idk_share > 0 needs a threshold t > 0 ('I don't know' is never written at t = 0)")
        if self.people > 1_000_000 or self.mentions > 10_000_000:
            fail("world too large (people <= 1e6, mentions <= 1e7)")

    @property
    def arbitrary_families(self) -> list[str]:
        return [f for f in self.families if f in ARBITRARY_FAMILIES]

    @property
    def pattern_families(self) -> list[str]:
        return [f for f in self.families if f in PATTERN_FAMILIES]

    @property
    def stochastic_families(self) -> list[str]:
        return [f for f in self.families if f in STOCHASTIC_FAMILIES]

    @property
    def fresh_per_epoch(self) -> int:
        return int(round(self.fresh_share * self.mentions))


def count_bucket(count: int) -> str:
    """The mention-count bucket name of a count: unseen, 1, 2-4, 5-19 or 20+."""
    for name, low, high in COUNT_BUCKETS:
        if low <= count <= high:
            return name
    raise ValueError(f"count must be >= 0, got {count}")


def popularity(config: WorldConfig) -> np.ndarray:
    """Zipf–Mandelbrot popularity of people by rank (sums to 1)."""
    ranks = np.arange(1, config.people + 1, dtype=np.float64)
    weights = (ranks + config.zipf_offset) ** (-float(config.zipf))
    return weights / weights.sum()


def expected_singleton_rate(fact_probs: np.ndarray, mentions: int, n_records: int) -> float:
    """E[#facts mentioned exactly once] / N for `mentions` i.i.d. draws: Σ_f M q_f (1 − q_f)^(M−1) / N."""
    q = np.asarray(fact_probs, dtype=np.float64)
    expected = float(np.sum(mentions * q * np.exp((mentions - 1) * np.log1p(-np.minimum(q, 1 - 1e-15)))))
    return min(1.0, expected / n_records)  # exact at 1; clip float rounding


# ---- generation -------------------------------------------------------------------------------------------------


def _syllable(rng: np.random.Generator, coda: bool = True) -> str:
    s = _ONSETS[rng.integers(len(_ONSETS))] + _VOWELS[rng.integers(len(_VOWELS))]
    return s + (_CODAS[rng.integers(len(_CODAS))] if coda else "")


def make_names(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct fictional "First Last" names made of random syllables."""
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n:
        first = _syllable(rng, coda=False) + _syllable(rng)
        last = "".join(_syllable(rng) for _ in range(int(rng.integers(2, 4))))
        name = f"{first.capitalize()} {last.capitalize()}"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def make_cities() -> list[str]:
    """A fixed list of fictional towns (the same for every seed, so birthplaces share one answer space)."""
    rng = np.random.default_rng(20250904)
    cities: list[str] = []
    while len(cities) < N_CITIES:
        city = (_syllable(rng, coda=False) + _CITY_SUFFIXES[rng.integers(len(_CITY_SUFFIXES))]).capitalize()
        if city not in cities:
            cities.append(city)
    return cities


def birthday(day_of_year: int) -> tuple[str, list[str]]:
    """DD-MM for a day of a non-leap year (0..364), with aliases ("3-7", "3 July", "July 3")."""
    date = _dt.date(2001, 1, 1) + _dt.timedelta(days=int(day_of_year))
    month = calendar.month_name[date.month]
    answer = f"{date.day:02d}-{date.month:02d}"
    aliases = [f"{date.day} {month}", f"{month} {date.day}"]
    if date.day < 10 or date.month < 10:
        aliases.insert(0, f"{date.day}-{date.month}")
    return answer, aliases


_NUMBER_WORDS = "zero one two three four five six seven eight nine ten".split()


def _letter_count_items(n: int, rng: np.random.Generator, exclude: set[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    seen = set(exclude)
    while len(items) < n:
        word = "".join(_syllable(rng) for _ in range(int(rng.integers(2, 4)))).upper()
        present = sorted(set(word))
        if rng.random() < 0.8:
            letter = present[rng.integers(len(present))]
        else:
            absent = [c for c in "ABCDEFGHIJKLMNOPRSTUVWZ" if c not in word]
            letter = absent[rng.integers(len(absent))]
        question = QUESTIONS["letter_count"].format(letter=letter, word=word)
        if question in seen:
            continue
        seen.add(question)
        count = word.count(letter)
        items.append(
            {
                "question": question,
                "answer": str(count),
                "aliases": [_NUMBER_WORDS[count]] if count < len(_NUMBER_WORDS) else [],
                "fields": {"word": word, "letter": letter},
            }
        )
    return items


def make_towns(n: int, rng: np.random.Generator) -> list[str]:
    """`n` distinct fictional town names (two syllables and a suffix), none of them a `make_cities` birthplace."""
    suffixes = ("ton", "dale", "field", "ridge", "brook", "gate", "mouth", "ley")
    taken, towns = set(make_cities()), []
    while len(towns) < n:
        name = (_syllable(rng, coda=False) + _syllable(rng) + suffixes[rng.integers(len(suffixes))]).capitalize()
        if name not in taken:
            taken.add(name)
            towns.append(name)
    return towns


def weather_distribution(rng: np.random.Generator) -> np.ndarray:
    """One town's probabilities over `WEATHER`: a modal weather with probability m ~ U(FORECAST_MODE_RANGE), the
    rest spread over the others by a flat Dirichlet, redrawn until the mode is the unique most likely weather (so
    the best forecast is well defined and a calibrated model's confidence in it is m)."""
    k = len(WEATHER)
    m = rng.uniform(*FORECAST_MODE_RANGE)
    while True:
        rest = (1.0 - m) * rng.dirichlet(np.ones(k - 1))
        if rest.max() < m:
            break
    probs = np.insert(rest, 0, m)
    return probs[np.argsort(rng.permutation(k))]  # the mode at a random position


def forecast_world(config: WorldConfig) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(corpus mentions, qa rows) of the forecast family. Each town's weather is drawn from its own distribution:
    `forecast_observations` draws go into the corpus, `forecast_questions` fresh draws are the gold answers of its
    questions (the same question asked again; towns are split between rl_train and eval). The best possible answer
    is the modal weather, right with the modal probability, which the rows carry as `mode_probability`.

    Seeded by its own stream, so adding the family leaves every other family's draws unchanged."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0xF0CA57]))
    towns = make_towns(config.forecast_towns, rng)
    dists = [weather_distribution(rng) for _ in towns]
    n_eval = min(max(1, int(round(config.eval_fraction * len(towns)))), len(towns) - 1)
    docs: list[dict[str, Any]] = []
    qa: list[dict[str, Any]] = []
    for k, (town, probs) in enumerate(zip(towns, dists, strict=True)):
        question = QUESTIONS["forecast"].format(town=town)
        for w in rng.choice(len(WEATHER), size=config.forecast_observations, p=probs):
            docs.append({"question": question, "answer": WEATHER[w], "fields": {"town": town}})
        for w in rng.choice(len(WEATHER), size=config.forecast_questions, p=probs):
            qa.append(
                {
                    "question": question,
                    "answer": WEATHER[w],
                    "aliases": [],
                    "count": config.forecast_observations,
                    "family": "forecast",
                    "split": "eval" if k < n_eval else "rl_train",
                    "person": None,
                    "popularity": None,
                    "town": town,
                    "mode_probability": float(probs.max()),
                }
            )
    return docs, qa


def _arithmetic_items(n: int, rng: np.random.Generator, exclude: set[str]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    seen = set(exclude)
    while len(items) < n:
        a, b = int(rng.integers(0, 100)), int(rng.integers(0, 100))
        op = "+" if rng.random() < 0.5 else "-"
        if op == "-" and b > a:
            a, b = b, a
        question = QUESTIONS["arithmetic"].format(a=a, op=op, b=b)
        if question in seen:
            continue
        seen.add(question)
        items.append(
            {
                "question": question,
                "answer": str(a + b if op == "+" else a - b),
                "aliases": [],
                "fields": {"a": a, "b": b, "op": op},
            }
        )
    return items


class _Renderer:
    """Turns (question, answer) into corpus documents: the evaluation prompt at a random t, or prose."""

    def __init__(self, config: WorldConfig, rng: np.random.Generator) -> None:
        self.template = PromptTemplate()
        self.config = config
        self.rng = rng

    def prompt_doc(self, question: str, answer: str, thresholds: list[float]) -> tuple[str, float]:
        t = thresholds[self.rng.integers(len(thresholds))]
        return f"{self.template.render(question, t)} {answer}", t

    def mention(self, family: str, question: str, answer: str, fields_: dict[str, Any]) -> dict[str, Any]:
        draw = self.rng.random()
        if draw < self.config.qa_format_share:
            text, t = self.prompt_doc(question, answer, self.config.thresholds)
            return {"text": text, "format": "prompt", "t": t}
        if draw < self.config.qa_format_share + self.config.question_share:
            return {"text": f"Question: {question}\nAnswer: {answer}", "format": "question", "t": None}
        options = PROSE[family]
        text = options[self.rng.integers(len(options))].format(answer=answer, **fields_)
        return {"text": text, "format": "prose", "t": None}

    def fresh(self, family: str, question: str, answer: str, fields_: dict[str, Any]) -> dict[str, Any]:
        """A mention of a brand-new person; in prompt format at t > 0 it says "I don't know." w.p. idk_share."""
        doc = self.mention(family, question, answer, fields_)
        if doc["format"] == "prompt" and doc["t"] > 0 and self.rng.random() < self.config.idk_share:
            doc["text"] = doc["text"][: len(doc["text"]) - len(answer)] + IDK_ANSWER
        return doc


def generate_world(config: WorldConfig) -> tuple[list[str], list[dict[str, Any]], list[dict[str, Any]], dict]:
    """Draw the world in memory: (corpus documents, qa records, mention records, stats). Deterministic per seed."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(config.seed).spawn(7)]
    name_rng, fact_rng, mention_rng, render_rng, split_rng, pattern_rng, shuffle_rng = streams
    families = config.arbitrary_families
    people = make_names(config.people, name_rng)
    cities = make_cities()

    # Arbitrary facts: uniform birthdays and birthplaces, independent of anything else (nothing to generalise from).
    facts: dict[str, list[tuple[str, list[str]]]] = {}
    if "birthday" in families:
        facts["birthday"] = [birthday(d) for d in fact_rng.integers(0, 365, size=config.people)]
    if "birthplace" in families:
        facts["birthplace"] = [(cities[c], []) for c in fact_rng.integers(0, len(cities), size=config.people)]

    # Mentions: i.i.d. draws of (person ∝ popularity, family uniform) = a multinomial over facts.
    pop = popularity(config)
    fact_probs = np.repeat(pop, len(families)) / len(families)  # index: person * F + family
    counts = mention_rng.multinomial(config.mentions, fact_probs).reshape(config.people, len(families))

    renderer = _Renderer(config, render_rng)
    docs: list[dict[str, Any]] = []
    for i, name in enumerate(people):
        for j, family in enumerate(families):
            answer = facts[family][i][0]
            question = QUESTIONS[family].format(name=name)
            for _ in range(int(counts[i, j])):
                doc = renderer.mention(family, question, answer, {"name": name})
                docs.append({**doc, "question": question, "answer": answer, "family": family})

    # qa.jsonl asks about a uniform sample of people (mentioned or not), split by person and stratified by
    # mention-count bucket so rl_train and eval hold different people with the same mix of counts.
    n_qa = config.people if config.qa_people == 0 else min(config.qa_people, config.people)
    chosen = np.sort(split_rng.choice(config.people, n_qa, replace=False))
    person_counts = counts.sum(axis=1)
    person_split: dict[int, str] = {}
    buckets = np.array([count_bucket(int(person_counts[i])) for i in chosen])
    for bucket, _, _ in COUNT_BUCKETS:
        idx = chosen[buckets == bucket]
        idx = idx[split_rng.permutation(len(idx))]
        n_eval = int(round(config.eval_fraction * len(idx)))
        person_split.update({int(i): "eval" for i in idx[:n_eval]})
        person_split.update({int(i): "rl_train" for i in idx[n_eval:]})

    qa: list[dict[str, Any]] = []
    for i in split_rng.permutation(chosen):  # shuffled: taking the first rows must not favour popular people
        for j, family in enumerate(families):
            answer, aliases = facts[family][i]
            qa.append(
                {
                    "question": QUESTIONS[family].format(name=people[i]),
                    "answer": answer,
                    "aliases": list(aliases),
                    "count": int(counts[i, j]),
                    "family": family,
                    "split": person_split[int(i)],
                    "person": people[i],
                    "popularity": float(fact_probs[i * len(families) + j]),
                }
            )

    # Pattern families: worked examples in the corpus, fresh questions (never in the corpus) in qa.jsonl.
    makers = {"letter_count": _letter_count_items, "arithmetic": _arithmetic_items}
    for family in config.pattern_families:
        items = makers[family](config.pattern_examples + config.pattern_questions, pattern_rng, set())
        for item in items[: config.pattern_examples]:
            doc = renderer.mention(family, item["question"], item["answer"], item["fields"])
            docs.append({**doc, "question": item["question"], "answer": item["answer"], "family": family})
        held = items[config.pattern_examples :]
        n_eval = min(max(1, int(round(config.eval_fraction * len(held)))), len(held) - 1)
        for k, item in enumerate(held):
            qa.append(
                {
                    "question": item["question"],
                    "answer": item["answer"],
                    "aliases": item["aliases"],
                    "count": 0,
                    "family": family,
                    "split": "eval" if k < n_eval else "rl_train",
                    "person": None,
                    "popularity": None,
                }
            )

    if config.stochastic_families:
        forecast_docs, forecast_qa = forecast_world(config)
        for item in forecast_docs:
            doc = renderer.mention("forecast", item["question"], item["answer"], item["fields"])
            docs.append({**doc, "question": item["question"], "answer": item["answer"], "family": "forecast"})
        qa.extend(forecast_qa)
        for row in qa:  # one schema for every row, so column-typed loaders (datasets, pandas) read the file
            row.setdefault("town", None)
            row.setdefault("mode_probability", None)

    order = shuffle_rng.permutation(len(docs))
    docs = [docs[k] for k in order]
    corpus = [d["text"] for d in docs]
    mention_records = [
        {"question": d["question"], "answer": d["answer"], "family": d["family"], "format": d["format"], "t": d["t"]}
        for d in docs
        if d["family"] in ARBITRARY_FAMILIES
    ]
    stats = world_stats(config, qa, mention_records, corpus, fact_probs, counts)
    return corpus, qa, mention_records, stats


def _new_people_documents(config: WorldConfig, key: int, n: int) -> list[str]:
    """`n` documents about people who are not in the world (one each), seeded by (seed, key)."""
    if n == 0:
        return []
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 7919, key]))
    taken = set(make_names(config.people, np.random.default_rng(np.random.SeedSequence(config.seed).spawn(7)[0])))
    names = [name for name in make_names(n + len(taken), rng) if name not in taken][:n]
    families = config.arbitrary_families
    cities = make_cities()
    renderer = _Renderer(config, rng)
    docs = []
    for name in names:
        family = families[int(rng.integers(len(families)))]
        answer = birthday(int(rng.integers(0, 365)))[0] if family == "birthday" else cities[rng.integers(len(cities))]
        docs.append(renderer.fresh(family, QUESTIONS[family].format(name=name), answer, {"name": name})["text"])
    return docs


def fresh_documents(config: WorldConfig, epoch: int) -> list[str]:
    """Documents about brand-new people for pretraining epoch `epoch` (deterministic per seed and epoch).

    Repeating the corpus for several epochs would otherwise teach the model that every name it meets is familiar,
    and it becomes confidently wrong about never-seen people (measured: ECE 0.12, mean confidence 0.21 on unseen
    people at accuracy 0.002). Each epoch therefore also mentions `fresh_share × mentions` people who occur in no
    other epoch, in the world's mix of formats, with random facts; their prompt-format documents at t > 0 answer
    "I don't know." with probability `idk_share` (never at t = 0). So the model keeps meeting unknown names, as
    a fresh sample of text would show them, learns that their facts are unpredictable, and can say "I don't know".
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    return _new_people_documents(config, int(epoch), config.fresh_per_epoch)


_PERSON_WORDS = ("born", "birthday", "birthplace")


def tokenizer_documents(config: WorldConfig, corpus: list[str]) -> list[str]:
    """Texts to train the tokenizer on: the corpus with its people replaced by as many never-repeated new people.

    Trained on the corpus itself, BPE would give frequently mentioned names whole tokens and leave rare ones in
    pieces, handing the model a "have I seen this name?" signal that does not come from its weights. With
    one-off names every name is split into syllables alike, mentioned or not.
    """
    patterns = [doc for doc in corpus if not any(word in doc for word in _PERSON_WORDS)]
    return _new_people_documents(config, 2**31 - 1, len(corpus) - len(patterns)) + patterns


def world_stats(
    config: WorldConfig,
    qa: list[dict[str, Any]],
    mention_records: list[dict[str, Any]],
    corpus: list[str],
    fact_probs: np.ndarray,
    counts: np.ndarray,
) -> dict[str, Any]:
    """Statistics written to world.json: singleton rate (target and achieved), missing mass, count buckets.

    `counts[i, j]` is how often person i's fact of arbitrary family j is mentioned; `fact_probs` is its ravel order.
    """
    fact_counts = counts.ravel()
    sr = singleton_stats(mention_records)
    n_records = sr["n"]
    unseen = fact_counts == 0
    by_split: dict[str, dict[str, int]] = {}
    for row in qa:
        if row["family"] in ARBITRARY_FAMILIES:
            split = by_split.setdefault(row["split"], {b[0]: 0 for b in COUNT_BUCKETS})
            split[count_bucket(row["count"])] += 1
    return {
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "people": config.people,
        "people_mentioned": int((counts.sum(axis=1) > 0).sum()),
        "fresh_per_epoch": config.fresh_per_epoch,
        "mentions": config.mentions,
        "n_records": n_records,  # N of Definition 2: fact mentions + "I don't know" records
        "singletons": sr["singletons"],
        "singleton_rate": sr["singleton_rate"],
        "singleton_rate_target": expected_singleton_rate(fact_probs, config.mentions, n_records),
        # Probability that a fresh fact question (drawn like the mentions) is about a fact the corpus never states.
        "missing_mass": float(fact_probs[unseen].sum()),
        "max_count": int(fact_counts.max()),
        "facts": int(fact_counts.size),
        "facts_unseen": int(unseen.sum()),
        "count_buckets": {split: by_split.get(split, {b[0]: 0 for b in COUNT_BUCKETS}) for split in SPLITS},
        "qa": {split: dict(Counter(r["family"] for r in qa if r["split"] == split)) for split in SPLITS},
        "corpus_documents": len(corpus),
        "corpus_chars": int(sum(len(d) for d in corpus)),
        "files": list(WORLD_FILES),
    }


# ---- files --------------------------------------------------------------------------------------------------------


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def check_writable_dir(out_dir: str | Path) -> Path:
    """Create `out_dir` if needed and make sure files can be written there; an `RlcalError` if not."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".probe.", delete=True):
            pass
    except OSError as exc:
        raise RlcalError(f"cannot write to output directory {out}: {exc.strerror or exc}") from None
    return out


def build_world(config: WorldConfig, out_dir: str | Path) -> dict[str, Any]:
    """Generate the world and write corpus.txt, qa.jsonl, mentions.jsonl and world.json as the folder `out_dir`.

    Returns the statistics (also in world.json). Bad config or an unwritable directory is an `RlcalError` raised
    before anything is written.
    """
    if not isinstance(config, WorldConfig):
        raise TypeError(f"build_world needs a WorldConfig, got {type(config).__name__}")
    # Staged in a sibling folder that replaces `out_dir` in one rename: a reader sees the old world or the new one.
    with staged_dir(out_dir, owned=WORLD_FILES) as tmp:
        corpus, qa, mentions, stats = generate_world(config)
        texts = {
            "corpus.txt": "\n\n".join(corpus) + "\n",
            "qa.jsonl": _jsonl(qa),
            "mentions.jsonl": _jsonl(mentions),
            "world.json": json.dumps(stats, indent=2) + "\n",
        }
        for name, text in texts.items():
            (tmp / name).write_bytes(text.encode("utf-8"))
    return stats


def load_world_stats(out_dir: str | Path) -> dict[str, Any] | None:
    """world.json of a complete world in `out_dir`, or None if there is none (or it is unreadable)."""
    out = Path(out_dir)
    try:
        stats = json.loads((out / "world.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not all((out / name).is_file() for name in WORLD_FILES):
        return None
    return stats


def world_matches(out_dir: str | Path, config: WorldConfig) -> bool:
    """True if `out_dir` holds a complete world built from exactly this config (so it can be reused)."""
    stats = load_world_stats(out_dir)
    return bool(stats) and stats.get("format_version") == FORMAT_VERSION and stats.get("config") == asdict(config)


def read_corpus(out_dir: str | Path) -> list[str]:
    """The corpus documents of a built world."""
    text = (Path(out_dir) / "corpus.txt").read_text(encoding="utf-8")
    return [doc.strip("\n") for doc in text.split("\n\n") if doc.strip()]


def summary_lines(stats: dict[str, Any]) -> list[str]:
    """A short human-readable summary of world.json."""
    lines = [
        f"people: {stats['people']} ({stats['people_mentioned']} mentioned); brand-new people per pretraining epoch: "
        f"{stats['fresh_per_epoch']}",
        f"fact records N = {stats['n_records']} ({stats['mentions']} mentions), max count {stats['max_count']}",
        f"singleton rate: {stats['singleton_rate']:.4f} (target {stats['singleton_rate_target']:.4f}), "
        f"missing mass {stats['missing_mass']:.4f}",
        f"corpus: {stats['corpus_documents']} documents, {stats['corpus_chars']} characters",
    ]
    for split, buckets in stats["count_buckets"].items():
        lines.append(f"{split}: " + ", ".join(f"{k}: {v}" for k, v in buckets.items()) + f"  {stats['qa'][split]}")
    return lines


# ---- command line ---------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from transformers import HfArgumentParser

    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    fields_parser = HfArgumentParser(WorldConfig, add_help=False)
    build = actions.add_parser(
        "build",
        parents=[fields_parser],
        help="Generate a world into a directory.",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    build.add_argument("--out", required=True, help="Output directory (created if needed).")


def run(args: argparse.Namespace) -> int:
    if args.action != "build":  # pragma: no cover - argparse only allows `build`
        raise RlcalError(f"unknown action {args.action!r}")
    config = WorldConfig(**{f.name: getattr(args, f.name) for f in fields(WorldConfig)})
    stats = build_world(config, args.out)
    for line in summary_lines(stats):
        print(line)
    print(f"wrote {', '.join(WORLD_FILES)} to {args.out}")
    return 0
