"""Singleton rate of a QA/training file (Kalai et al. 2025, Definition 2) and the Theorem 2 lower bound.

    rlcal singleton-rate outputs/toy/world/mentions.jsonl --min-ec 364
    rlcal singleton-rate data.jsonl --min-ec 364 --delta 0.01 --out sr.json

Records are JSON lines with `question` (or `prompt`) and `answer`. With N = the number of records (abstaining
ones included), a prompt is a *singleton* if exactly one record asks it with a non-abstaining answer
(abstentions are recognised with `rlcal.core.grading.is_abstention`), and the singleton rate is sr = #singletons / N:
the Good–Turing estimate of the probability mass of prompts never seen in training. Theorem 2 says a calibrated
model errs on arbitrary facts at a rate of at least

    sr − 2/min|E_c| − (35 + 6 ln N)/√N − δ

(|E_c|: the number of wrong answers a prompt admits, e.g. 364 for a birthday; δ: the model's calibration error).
The JSON output has `n`, `singletons`, `singleton_rate`, `bound` and every term of the bound. Pure Python.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.jsonl import BLANK, parse_line
from rlcal.core.grading import is_abstention


def prompt_key(record: Mapping[str, Any]) -> str | None:
    """The prompt a record asks: its `question`, else its `prompt` (chat messages are compared as JSON)."""
    prompt = record.get("question", record.get("prompt"))
    if prompt is None:
        return None
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True, ensure_ascii=False)


def singleton_stats(records: Iterable[Mapping[str, Any]], abstain_phrases: Sequence[str] | None = None) -> dict:
    """Count records, abstentions and singleton prompts (Definition 2). Records need a prompt and an answer."""
    n = 0
    abstentions = 0
    answered: Counter[str] = Counter()  # prompt -> number of non-abstaining records
    prompts: set[str] = set()
    for i, record in enumerate(records):
        key = prompt_key(record) if isinstance(record, Mapping) else None
        answer = record.get("answer") if isinstance(record, Mapping) else None
        if key is None or answer is None or isinstance(answer, list | dict | bool):
            raise RlcalError(f"record {i + 1} needs a `question` (or `prompt`) and a string `answer`")
        n += 1
        prompts.add(key)
        question = key if isinstance(record.get("question", record.get("prompt")), str) else None
        if is_abstention(str(answer), abstain_phrases, question=question):
            abstentions += 1
        else:
            answered[key] += 1
    singletons = sum(1 for c in answered.values() if c == 1)
    return {
        "n": n,
        "singletons": singletons,
        "singleton_rate": singletons / n if n else 0.0,
        "abstentions": abstentions,
        "distinct_prompts": len(prompts),
    }


def theorem2_bound(singleton_rate: float, n: int, min_ec: float | None = None, delta: float = 0.0) -> dict:
    """Theorem 2's lower bound on the error rate on arbitrary facts, with each term.

    `min_ec` None leaves out the 2/min|E_c| term (|E_c| → ∞). Below N ≈ 10^6 the (35 + 6 ln N)/√N term alone is
    above 0.1, so on small data the bound is vacuous (negative); the singleton rate itself is still the estimate
    of the unseen mass.
    """
    if n <= 0:
        raise RlcalError("the bound needs at least one record")
    if min_ec is not None and not min_ec > 0:
        raise RlcalError(f"--min-ec must be > 0, got {min_ec}")
    if not (delta >= 0 and math.isfinite(delta)):
        raise RlcalError(f"--delta must be a finite number >= 0, got {delta}")
    ec_term = 2.0 / min_ec if min_ec is not None else 0.0
    n_term = (35.0 + 6.0 * math.log(n)) / math.sqrt(n)
    bound = singleton_rate - ec_term - n_term - delta
    return {
        "terms": {"singleton_rate": singleton_rate, "2/min_ec": ec_term, "(35+6lnN)/sqrtN": n_term, "delta": delta},
        "min_ec": min_ec,
        "delta": delta,
        "bound": bound,
        "vacuous": bound <= 0,
    }


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file of objects; malformed lines are an `RlcalError` naming the line."""
    path = Path(path)
    if not path.is_file():
        raise RlcalError(f"file not found: {path}")
    records = []
    with path.open("rb") as handle:
        for lineno, raw in enumerate(handle, 1):
            record = parse_line(raw, lineno, f"{path}:{lineno}")
            if record is BLANK:
                continue
            if not isinstance(record, dict):
                raise RlcalError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    if not records:
        raise RlcalError(f"{path}: no records")
    return records


def analyze(path: str | Path, min_ec: float | None = None, delta: float = 0.0) -> dict[str, Any]:
    """Singleton statistics of a JSONL file plus the Theorem 2 bound."""
    records = read_jsonl(path)
    try:
        stats = singleton_stats(records)
    except RlcalError as exc:
        raise RlcalError(f"{path}: {exc}") from None
    return {"file": str(path), **stats, **theorem2_bound(stats["singleton_rate"], stats["n"], min_ec, delta)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="JSONL records with `question` (or `prompt`) and `answer`.")
    parser.add_argument(
        "--min-ec", type=float, default=None, help="min |E_c|: wrong answers per prompt (364 for a DD-MM birthday)."
    )
    parser.add_argument("--delta", type=float, default=0.0, help="Calibration error δ of the model (default 0).")
    parser.add_argument("--out", default=None, help="Also write the JSON result to this file.")


def run(args: argparse.Namespace) -> int:
    if args.out:
        from rlcal.common.files import check_out_file

        check_out_file(args.out)  # before reading the file, not after
    result = analyze(args.file, args.min_ec, args.delta)
    text = json.dumps(result, indent=2)
    if args.out:
        from rlcal.common.files import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    print(text)
    return 0
