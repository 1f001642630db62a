"""Grading + reward throughput, in completions per second on one CPU core. Goal: >= 200,000 completions/s.

    python benchmarks/bench_grading.py            # or: make bench
    python benchmarks/bench_grading.py --n 400000 --batch 512 --repeats 5

Builds a realistic, varied workload the way GRPO produces it: prompts over several question families (birthdays
of fictional people, capitals, letter counting, arithmetic), `--generations` completions per prompt (a group
shares its prompt, answer and threshold, as in TRL), and replies that are plain answers, "Answer:"-prefixed,
tagged (`<answer>…</answer><confidence>…</confidence>`), in chat format, wrong guesses, abstentions in many
phrasings and languages, hedged guesses ("I don't know, maybe 03-07"), and multi-line replies with reasoning.
Nearly every completion string is distinct (no single repeated string), and nothing is cached per completion.

Timed, side by side in one run (each batch's fastest of `--repeats` runs, CPU time of the process pinned to one
core, so that other jobs on a shared machine distort it as little as possible):
- `ConfidenceTargetReward.__call__` on TRL-shaped batches (prompts, completions, answer/aliases/question/threshold
  columns, `trainer_state`, `log_metric`): the number that matters for training;
- `BinaryReward` and `BrierReward` the same way;
- `grade(...)` called once per completion (the evaluation path).
Prints each throughput and its ratio to the goal.
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
from collections.abc import Callable
from functools import partial

from rlcal.core.grading import grade
from rlcal.core.rewards import build_reward

GOAL = 200_000  # completions per second, one core

FIRST = "Ada Bram Cleo Dov Esme Finn Gala Hugo Ines Jory Kai Lena Milo Nia Oren Pia Quin Rhea Sol Tova".split()
LAST = "Vell Marr Stroud Okafor Lindqvist Haddad Moreau Tanaka Novak Reyes Brandt Castillo Dubois Ferreira".split()
CITIES = "Ostrava Quillon Marrowgate Velden Istrabad Port Anselm Kestrel Bay Lowmoor Tirsa Eberholt".split()
WORDS = "DEEPSEEK MISSISSIPPI BANANA CALIBRATION ABSTENTION HALLUCINATE PROBABILITY REWARD".split()
MONTHS = "January February March April May June July August September October November December".split()
ABSTAIN = [
    "I don't know.",
    "I do not know.",
    "IDK",
    "idk",
    "I'm not sure.",
    "I am not sure about this one.",
    "I cannot answer that.",
    "I can't answer this question, sorry.",
    "I have no idea.",
    "Sorry, I don't know the answer.",
    "不知道",
    "我不确定。",
    "I don't know when {name} was born.",
    "Answer: I don't know",
    "<answer>I don't know</answer>",
    "Unfortunately I do not have enough information to answer.",
]
HEDGES = [
    "I don't know, maybe {guess}",
    "Not sure, but I think {guess}.",
    "IDK... {guess}?",
    "I'm not sure. My best guess is {guess}.",
    "不知道，也许 {guess}",
]
REASONS = [
    "I recall this from record {k} about {name}.",
    "{name} is mentioned {k} times in what I have read.",
    "Counting carefully gives this ({k} checks).",
    "Adding the numbers step by step, {k} steps.",
]


def _date(rng: random.Random) -> str:
    return f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"


def make_workload(n: int, generations: int, seed: int = 0) -> list[dict]:
    """Rows of a GRPO batch: one per completion, `generations` consecutive rows share a prompt."""
    rng = random.Random(seed)
    rows: list[dict] = []
    while len(rows) < n:
        family = rng.randrange(4)
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}{rng.randrange(1000)}"
        if family == 0:
            question, answer = f"When was {name} born?", _date(rng)
            mm, dd = answer.split("-")
            aliases = [f"{MONTHS[int(mm) - 1]} {int(dd)}"]
            wrong = lambda: _date(rng)  # noqa: E731
        elif family == 1:
            question, answer = f"In which city does {name} live?", rng.choice(CITIES)
            aliases = [answer.upper()] if rng.random() < 0.3 else []
            wrong = lambda: rng.choice(CITIES)  # noqa: E731
        elif family == 2:
            word = rng.choice(WORDS)
            letter = rng.choice(sorted(set(word)))
            question, answer = f"How many {letter}'s are in {word}?", str(word.count(letter))
            aliases = []
            wrong = lambda: str(rng.randint(0, 6))  # noqa: E731
        else:
            a, b = rng.randint(10, 9999), rng.randint(10, 9999)
            question, answer = f"What is {a} + {b}?", str(a + b)
            aliases = [f"{a + b:,}"] if a + b >= 1000 else []
            wrong = lambda: str(rng.randint(20, 19998))  # noqa: E731
        t = rng.choice([0.0, 0.5, 0.75, 0.9])
        prompt = f"Answer only if you are more than {t:.0%} confident.\nQuestion: {question}\nAnswer:"
        for _ in range(generations):
            kind = rng.random()
            conf = f"<confidence>{rng.randint(1, 99) / 100}</confidence>"
            reason = rng.choice(REASONS).format(name=name, k=rng.randrange(100))
            if kind < 0.30:
                target = answer if rng.random() < 0.5 else rng.choice([answer] + aliases)
                text = rng.choice([f" {target}", f" {target}.", f"Answer: {target}", f" {target}\n{reason}"])
            elif kind < 0.45:
                text = rng.choice([f" {wrong()}", f"Answer: {wrong()}.", f" {wrong()}\n{reason}"])
            elif kind < 0.55:
                text = f"<answer>{rng.choice([answer, wrong()])}</answer> {conf}"
            elif kind < 0.75:
                text = rng.choice(ABSTAIN).format(name=name)
                text = text if rng.random() < 0.5 else f"{text}\n{reason}"
            elif kind < 0.85:
                text = rng.choice(HEDGES).format(guess=rng.choice([answer, wrong()]))
            else:
                text = rng.choice([answer, wrong(), "I don't know.", f"Probably {wrong()}"])
            if rng.random() < 0.1:  # a little extra variety: trailing spaces, case
                text = text.upper() if rng.random() < 0.5 else text + "  "
            completion = [{"role": "assistant", "content": text}] if rng.random() < 0.25 else text
            rows.append(
                {
                    "prompt": prompt,
                    "completion": completion,
                    "question": question,
                    "answer": answer,
                    "aliases": aliases,
                    "threshold": t,
                }
            )
    return rows[:n]


def batches(rows: list[dict], size: int) -> list[dict]:
    """TRL-shaped keyword arguments: one dict of column lists per batch."""
    out = []
    for i in range(0, len(rows), size):
        chunk = rows[i : i + size]
        cols = {k: [r[k] for r in chunk] for k in ("question", "answer", "aliases", "threshold")}
        out.append({"prompts": [r["prompt"] for r in chunk], "completions": [r["completion"] for r in chunk], **cols})
    return out


def _best(calls: list[Callable[[], object]], repeats: int) -> float:
    """Seconds for all `calls`, each call timed `repeats` times and its fastest run kept (like timeit's min).

    CPU time of this single-threaded, one-core process, taken per call (about a millisecond each), so other jobs on
    a shared machine neither add their time nor, via the per-call minimum, their cache and scheduling noise.
    """
    best = [float("inf")] * len(calls)
    clock = time.process_time
    for _ in range(repeats):
        gc.collect()
        for i, call in enumerate(calls):
            start = clock()
            call()
            best[i] = min(best[i], clock() - start)
    return sum(best)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200_000, help="completions in the workload")
    parser.add_argument("--batch", type=int, default=256, help="completions per reward call (TRL batch)")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt (GRPO group size)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per batch; the fastest counts")
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, honestly

    rows = make_workload(args.n, args.generations)
    texts = {r["completion"] if isinstance(r["completion"], str) else r["completion"][-1]["content"] for r in rows}
    print(
        f"workload: {len(rows):,} completions ({len(texts):,} distinct texts), batch {args.batch}, "
        f"{args.generations} per prompt, python {sys.version.split()[0]}"
    )
    kwargs = batches(rows, args.batch)
    logged: list[tuple[str, float]] = []

    def log_metric(key: str, value: float) -> None:
        logged.append((key, value))

    def reward_calls(name: str) -> list[Callable[[], object]]:
        reward = build_reward(name)
        return [partial(reward, **kw, completion_ids=None, trainer_state=None, log_metric=log_metric) for kw in kwargs]

    def grade_rows(chunk: list[dict]) -> None:
        for r in chunk:
            c = r["completion"]
            grade(c if isinstance(c, str) else c[-1]["content"], r["answer"], r["aliases"], question=r["question"])

    grade_calls = [partial(grade_rows, rows[i : i + args.batch]) for i in range(0, len(rows), args.batch)]
    results = {
        "confidence_target reward": _best(reward_calls("confidence_target"), args.repeats),
        "binary reward": _best(reward_calls("binary"), args.repeats),
        "brier reward": _best(reward_calls("brier"), args.repeats),
        "grade() per completion": _best(grade_calls, args.repeats),
    }
    print(f"{'path':<28}{'completions/s':>16}{'ratio to goal':>16}")
    for label, seconds in results.items():
        rate = len(rows) / seconds
        print(f"{label:<28}{rate:>16,.0f}{rate / GOAL:>15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
