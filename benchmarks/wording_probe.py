"""Does a trained model read t, or the penalty's wording? Re-render a finished demo's eval questions at a few t with
the penalty text rewritten, and count how many the confidence-target models answer (greedy).

    python benchmarks/wording_probe.py --demo outputs/demo
    python benchmarks/wording_probe.py --demo outputs/demo --case "0.5=1.0 points" --case "0.75=3.0 points"

A case `T=TEXT` renders the shipped prompt at t = T and replaces its "penalized <shipped>," by "penalized TEXT,";
every case's t is also run with the shipped text, side by side. `reference` counts the questions the pretrained
model answers with probability > t (the ideal policy's answers, from the demo's base predictions); a rewritten row
gives its change from the shipped wording at the same t with a 95 % paired bootstrap interval over questions. One row per
distinct question text (the demo's eval set repeats some forecast texts across towns). A diagnostic, not a claim:
the demo's eval set and grid are untouched.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from rlcal.core.aggregate import bootstrap_weights
from rlcal.core.grading import is_abstention
from rlcal.core.prompts import PromptTemplate
from rlcal.evaluation.confidence import encode_prompts, greedy_generate
from rlcal.evaluation.models import load_model

DEFAULT_CASES = ("0.5=1.0 points", "0.55=1 point", "0.75=3.0 points", "0.8=4.0 points")


def penalty_text(t: float) -> str:
    """The penalty as the prompt at t states it ("1 point" at t = 0.5): the template's own `{penalty_points}`."""
    return PromptTemplate._fields(t)["penalty_points"]


def rewrite(template: PromptTemplate, question: str, t: float, text: str) -> str:
    """The prompt at t with its penalty text replaced by `text`; raises unless the prompt states it exactly once."""
    prompt, shipped = template.render(question, t), f"penalized {penalty_text(t)},"
    if shipped not in prompt:
        raise ValueError(f"the prompt at t = {t} states no penalty: {prompt!r}")
    if prompt.count(shipped) > 1:
        raise ValueError(f"the prompt at t = {t} states its penalty more than once: {prompt!r}")
    return prompt.replace(shipped, f"penalized {text},")


def paired_change(shipped: np.ndarray, rewritten: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """Change in the number answered (rewritten - shipped) with a 95 % bootstrap interval, questions resampled
    together (both prompts of a question stay paired): [change, lo, hi]."""
    diff = rewritten.astype(float) - shipped.astype(float)
    draws = bootstrap_weights(len(diff), resamples, np.random.default_rng(seed)) @ diff
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(diff.sum()), float(lo), float(hi)]


def parse_case(case: str) -> tuple[float, str]:
    """ "T=TEXT" -> (T, TEXT), with 0 < T < 1."""
    t, _, text = case.partition("=")
    try:
        value = float(t)
    except ValueError:
        value = math.nan
    if not text or not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"wants T=TEXT with 0 < T < 1, got {case!r}")
    return value, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, required=True, help="A finished `rlcal demo --out` folder.")
    parser.add_argument(
        "--case", action="append", type=parse_case, help=f"T=TEXT (repeatable; default {', '.join(DEFAULT_CASES)})."
    )
    parser.add_argument("--family", default="forecast", help="Question family to probe (default forecast).")
    args = parser.parse_args()

    template = PromptTemplate()
    needed = ("eval/base/predictions.jsonl", "world/qa.jsonl", "rl_confidence_target/warmup/model")
    missing = [name for name in needed if not (args.demo / name).exists()]
    if missing:
        parser.error(f"{args.demo} is not a finished demo folder: no {', '.join(missing)}")
    cases = args.case or [parse_case(c) for c in DEFAULT_CASES]
    base = {}
    for line in (args.demo / "eval" / "base" / "predictions.jsonl").open():
        row = json.loads(line)
        if row["threshold"] == 0.0:
            base[row["question"]] = row["answer_prob"]
    world = [json.loads(line) for line in (args.demo / "world" / "qa.jsonl").open()]
    family = {row["question"]: row["family"] for row in world}
    questions = [q for q in base if family.get(q) == args.family]

    prompts: list[tuple[float, str, str]] = []
    for t in sorted({t for t, _ in cases}):
        prompts += [(t, f"shipped '{penalty_text(t)}'", template.render(q, t)) for q in questions]
    for t, text in cases:
        prompts += [(t, f"'{text}'", rewrite(template, q, t, text)) for q in questions]

    run = args.demo / "rl_confidence_target"
    models = {"warm-up": (str(run / "warmup" / "model"), None), "RL": (str(run / "warmup" / "model"), str(run))}
    print(f"{len(questions)} {args.family} questions; answered (greedy) per prompt wording\n")
    print("| t | penalty text | reference | " + " | ".join(models) + " |")
    print("|---|---|---|" + "---|" * len(models))
    counts: dict[str, list[int]] = {}
    for name, (path, adapter) in models.items():
        model, tokenizer = load_model(path, adapter, device="cpu")
        generations = greedy_generate(model, tokenizer, encode_prompts(tokenizer, [p for _, _, p in prompts]), 12)
        counts[name] = [not is_abstention(g.response) for g in generations]
    seen: dict[tuple[float, str], list[int]] = {}
    for k, (t, label, _) in enumerate(prompts):
        seen.setdefault((t, label), []).append(k)
    shipped_rows = {t: ks for (t, label), ks in seen.items() if label.startswith("shipped")}
    for (t, label), ks in seen.items():
        ref = sum(base[q] > t for q in questions)
        cells = []
        for name in models:
            answered = np.array([counts[name][k] for k in ks])
            cell = str(int(answered.sum()))
            if not label.startswith("shipped"):  # the change from the shipped wording at the same t, paired
                change, lo, hi = paired_change(np.array([counts[name][k] for k in shipped_rows[t]]), answered)
                cell += f" ({change:+.0f} [{lo:+.0f}, {hi:+.0f}])"
            cells.append(cell)
        print(f"| {t:g} | {label} | {ref} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
