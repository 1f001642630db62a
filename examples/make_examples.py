"""Regenerate the example prediction files scored by `rlcal score` (`make demo`). Deterministic (seeded).

    python examples/make_examples.py      # rewrites examples/predictions.jsonl and examples/confidences.jsonl

`predictions.jsonl`: 160 replies of a simulated, slightly overconfident model to questions about fictional people
(birthdays, birth cities) and sums, 40 at each confidence target t in {0, 0.5, 0.75, 0.9}. The model is right
with probability p, states confidence about p + 0.04, and answers when its confidence exceeds t (with occasional
slips). Replies mix plain answers, "Answer:" prefixes, `<answer>`/`<confidence>` tags, chat messages, aliases
("March 9" for "03-09"), abstentions in several phrasings and languages, and hedged guesses ("I don't know, maybe
03-07"), so the file exercises every grading rule. Each intended outcome is checked against `rlcal.core.grading`.

`confidences.jsonl`: 200 already-graded records `{confidence, correct}` / `{confidence, abstained}` of a model that
is calibrated below 0.7 confidence and overconfident above it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rlcal.core.grading import grade

HERE = Path(__file__).resolve().parent
FIRST = "Ada Bram Cleo Dov Esme Finn Gala Hugo Ines Jory Kai Lena Milo Nia Oren Pia Quin Rhea Sol Tova Uma Vito Wren Xavi Yara Zeno".split()
LAST = "Vell Marr Stroud Okafor Lindqvist Haddad Moreau Tanaka Novak Reyes Brandt Castillo Dubois Ferreira Ilves Kowal".split()
CITIES = "Ostrava Quillon Marrowgate Velden Istrabad Kestrel Lowmoor Tirsa Eberholt Pellam Drossa Vintry".split()
MONTHS = "January February March April May June July August September October November December".split()
ABSTAIN = ["I don't know.", "I do not know.", "IDK", "I'm not sure.", "I cannot answer that.", "I have no idea.",
           "Sorry, I don't know.", "不知道", "Answer: I don't know", "{about}"]  # fmt: skip
HEDGE = ["I don't know, maybe {g}", "Not sure, but I think {g}.", "I'm not sure. My best guess is {g}."]


def make_predictions(rng: random.Random) -> list[dict]:
    records, used = [], set()
    for t in (0.0, 0.5, 0.75, 0.9):
        for _ in range(40):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            while name in used:
                name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            used.add(name)
            kind = rng.random()
            if kind < 0.6:
                m, d = rng.randint(1, 12), rng.randint(1, 28)
                question, answer, aliases = f"When was {name} born?", f"{m:02d}-{d:02d}", [f"{MONTHS[m - 1]} {d}"]
                right = rng.choice([answer, answer, answer, aliases[0]])
                about = f"I don't know when {name} was born."

                def wrong() -> str:
                    return f"{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
            elif kind < 0.85:
                city = rng.choice(CITIES)
                question, answer, aliases, right = f"In which city was {name} born?", city, [], city
                about = f"I'm not sure where {name} lives."

                def wrong(city: str = city) -> str:
                    return rng.choice([c for c in CITIES if c != city])
            else:
                x, y = rng.randint(10, 99), rng.randint(10, 99)
                question, answer, aliases = f"What is {x} + {y}?", str(x + y), []
                right = rng.choice([answer, answer, f"{x + y}.0"])
                about = "I can't say for sure."

                def wrong(total: int = x + y) -> str:
                    return str(total + rng.choice([-10, -1, 1, 10]))
            p = rng.betavariate(2.2, 1.6)
            conf = min(0.99, max(0.01, round(p + 0.04 + rng.gauss(0, 0.05), 2)))
            correct = rng.random() < p
            answers = conf > t if rng.random() > 0.06 else conf <= t  # behaviourally calibrated, with slips
            record: dict = {"question": question, "answer": answer}
            if aliases:
                record["aliases"] = aliases
            if t > 0:
                record["threshold"] = t
            if answers:
                guess = right if correct else wrong()
                style = rng.random()
                if style < 0.08:
                    text = rng.choice(HEDGE).format(g=guess)
                elif style < 0.2:
                    text = f"Answer: {guess}"
                elif style < 0.3:
                    text = f"<answer>{guess}</answer> <confidence>{conf}</confidence>"
                else:
                    text = guess if rng.random() < 0.7 else f"{guess}."
            else:
                text = rng.choice(ABSTAIN).format(about=about)
            record["response"] = [{"role": "assistant", "content": text}] if rng.random() < 0.15 else text
            if "<confidence>" not in text and (answers or rng.random() < 0.5):
                record["confidence"] = conf
            intended = ("correct" if correct else "wrong") if answers else "abstain"
            got = grade(text, answer, aliases, question=question)
            assert got == intended, (text, answer, got, intended)
            records.append(record)
    rng.shuffle(records)
    return records


def make_confidences(rng: random.Random) -> list[dict]:
    rows = []
    for _ in range(200):
        t = rng.choice([0.0, 0.5, 0.75, 0.9])
        c = round(rng.betavariate(3, 1.5), 2)
        p_true = c if c < 0.7 else 0.7 + 0.5 * (c - 0.7)
        row: dict = {"confidence": c, "correct": rng.random() < p_true}
        if c <= t and rng.random() < 0.85:
            row = {"confidence": c, "abstained": True}
        if t > 0:
            row["threshold"] = t
        rows.append(row)
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


if __name__ == "__main__":
    rng = random.Random(7)
    write_jsonl(HERE / "predictions.jsonl", make_predictions(rng))
    write_jsonl(HERE / "confidences.jsonl", make_confidences(rng))
    print(f"wrote {HERE / 'predictions.jsonl'} and {HERE / 'confidences.jsonl'}")
