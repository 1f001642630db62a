"""`rlcal score`: score any model's predictions (JSONL) for calibration and behavioural calibration.

    rlcal score preds.jsonl                                   # print the table
    rlcal score preds.jsonl --bins 15 --out metrics.json      # and write the metrics as JSON
    rlcal score preds.jsonl --plot reliability.png            # and draw the reliability diagram
    cat preds.jsonl | rlcal score -                           # read standard input

One JSON object per line, of either kind (they may be mixed):
- graded by rlcal: `{"response": ..., "answer": ...}` with optional `aliases`, `question`, `id`, `threshold`,
  `confidence`. The response (a string or chat messages) is graded by `rlcal.core.grading`, the very function the
  rewards use; without a `confidence` field a verbalised one in the response (`<confidence>0.8</confidence>`)
  is used if present;
- already graded: `{"confidence": ..., "correct": ...}` with optional `threshold`, `abstained`, `question`, `id`
  (`correct` may be left out when `abstained` is true).

A record without `threshold` counts at t = 0 (0-1 grading). Calibration (ECE, MCE, Brier, AUROC) is computed on
the answered records that carry a confidence; per threshold t the table reports answer rate, accuracy of the
answered, hallucination rate (wrong / all) and score, the mean confidence-target reward (+1 correct, 0 abstain,
−t/(1−t) wrong) of the records at t, each with a 95 % bootstrap interval over questions (`--bootstrap 0` skips
them). Records of one question (same `id`, else same `question` text; a record with neither is a question of its
own) are resampled together, and when the same questions were decided at t = 0 and other thresholds the
behavioral ECE is reported too. Aggregation is `rlcal.core.aggregate`; every key is in docs/metrics.md. Pure: no
torch, no TRL.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_files, check_out_file
from rlcal.common.jsonl import BLANK, parse_line
from rlcal.core import aggregate as A
from rlcal.core.fingerprint import eval_fingerprint
from rlcal.core.grading import ABSTAIN, CORRECT, GRADERS, WRONG, AnswerGrader
from rlcal.core.prompts import format_number
from rlcal.core.rewards import completion_text, parse_confidence
from rlcal.core.thresholds import penalty

DEFAULT_BINS = 15
PER_THRESHOLD_KEYS = A.PER_THRESHOLD_KEYS
Prediction = A.Record  # one scored record: outcome, confidence target t, confidence, question id
threshold_key = A.threshold_key


# ---- reading and validating records ---------------------------------------------------------------------------


def _bad(where: str, message: str) -> RlcalError:
    return RlcalError(f"{where}: {message}")


def _show(value: Any) -> str:
    """A value as JSON for an error message, shortened."""
    text = json.dumps(value, ensure_ascii=False).encode("utf-8", "backslashreplace").decode()  # lone surrogates
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _confidence(record: Mapping[str, Any], where: str) -> float | None:
    value = record.get("confidence")
    if value is None:
        return None
    if not _is_number(value) or not (0.0 <= value <= 1.0):  # NaN fails the range test too
        raise _bad(where, f"field 'confidence' must be a number in [0, 1] or null, got {_show(value)}")
    return float(value)


def _threshold(record: Mapping[str, Any], where: str) -> float:
    value = record.get("threshold")
    if value is None:
        return 0.0
    if not _is_number(value) or not (0.0 <= value < 1.0):
        raise _bad(where, f"field 'threshold' must be a number in [0, 1) or null, got {_show(value)}")
    return float(value)


def _flag(record: Mapping[str, Any], field: str, where: str) -> bool | None:
    value = record.get(field)
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if _is_number(value) and value in (0, 1):
        return bool(value)
    raise _bad(where, f"field {field!r} must be true/false (or 1/0), got {_show(value)}")


def _gold(value: Any, field: str, where: str) -> str:
    if isinstance(value, str):
        if not value.strip():
            raise _bad(where, f"field {field!r} is empty")
        return value
    if _is_number(value) and math.isfinite(value):
        return json.dumps(value)  # 3 -> "3", 0.5 -> "0.5": the number as written
    raise _bad(where, f"field {field!r} must be a string or a number, got {_show(value)}")


def _question_id(record: Mapping[str, Any], where: str) -> tuple[str, Any] | None:
    """Which question a record belongs to: its `id` (string or integer) if given, else its `question` text; None
    when it has neither (then it is a question of its own). Records of one question are resampled together."""
    value = record.get("id")
    if value is not None:
        if not (isinstance(value, str) or isinstance(value, int) and not isinstance(value, bool)):
            raise _bad(where, f"field 'id' must be a string or an integer, got {_show(value)}")
        return ("id", value)
    question = record.get("question")
    if question is None:
        return None
    if not isinstance(question, str):
        raise _bad(where, f"field 'question' must be a string, got {_show(question)}")
    return ("question", question)


def parse_record(record: Any, grader: AnswerGrader, where: str = "record") -> Prediction:
    """Validate one JSON record and turn it into a `Prediction`; `RlcalError` naming `where` and the field if bad."""
    if not isinstance(record, dict):
        raise _bad(where, f"expected a JSON object, got {type(record).__name__}")
    t = _threshold(record, where)
    qid = _question_id(record, where)
    if "response" in record:  # graded by rlcal; any 'correct'/'abstained' fields are ignored
        response = record["response"]
        if not isinstance(response, str | list | dict):
            raise _bad(where, f"field 'response' must be a string or chat messages, got {_show(response)}")
        if "answer" not in record or record["answer"] is None:
            raise _bad(where, "missing field 'answer' (a record with 'response' needs the gold 'answer')")
        answer = record["answer"]
        answers = answer if isinstance(answer, list) else [answer]
        if not answers:
            raise _bad(where, "field 'answer' is an empty list")
        golds = [_gold(a, "answer", where) for a in answers]
        aliases = record.get("aliases")
        if aliases is not None:
            if not isinstance(aliases, list):
                raise _bad(where, f"field 'aliases' must be a list of strings, got {_show(aliases)}")
            # an empty alias can never match, so it is dropped rather than rejected
            golds += [_gold(a, "aliases", where) for a in aliases if not (isinstance(a, str) and not a.strip())]
        question = record.get("question")  # validated by _question_id
        text = completion_text(response)
        outcome = grader(text, golds, None, question)
        confidence = _confidence(record, where) if "confidence" in record else parse_confidence(text)
        return Prediction(outcome, t, confidence, qid)
    if "correct" in record or "confidence" in record or "abstained" in record:
        confidence = _confidence(record, where)
        if _flag(record, "abstained", where):
            return Prediction(ABSTAIN, t, confidence, qid)
        correct = _flag(record, "correct", where)
        if correct is None:
            raise _bad(where, "missing field 'correct' (true/false; it may be left out only when 'abstained' is true)")
        return Prediction(CORRECT if correct else WRONG, t, confidence, qid)
    fields = ", ".join(sorted(record)) or "none"
    raise _bad(
        where,
        f"missing field 'response' or 'correct': a record is either {{'response', 'answer'}} (graded by rlcal) or "
        f"{{'confidence', 'correct'}} (already graded); got fields: {fields}",
    )


def _lines(source: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
    if str(source) == "-":
        yield from enumerate(sys.stdin.buffer, 1)
        return
    path = Path(source)
    if not path.exists():
        raise RlcalError(f"predictions file not found: {source}")
    if path.is_dir():
        raise RlcalError(f"{source} is a directory, not a JSONL file")
    with path.open("rb") as handle:
        yield from enumerate(handle, 1)


def load_predictions(
    source: str | os.PathLike[str], grader: str = "exact", abstain_phrases: Sequence[str] | None = None
) -> list[Prediction]:
    """Read and grade a JSONL file ("-" = standard input). Blank lines are skipped; any bad line is an
    `RlcalError` naming the file, the line and the field."""
    from tqdm import tqdm  # light; imported here so `import rlcal.evaluation.score` stays minimal

    try:
        answer_grader = AnswerGrader(grader, abstain_phrases)
    except ValueError as exc:
        raise RlcalError(str(exc)) from None
    name = "<stdin>" if str(source) == "-" else str(source)
    predictions: list[Prediction] = []
    # The bar only appears when scoring takes more than a second, and only on a terminal.
    lines = tqdm(_lines(source), desc="scoring", unit=" records", delay=1.0, disable=None, leave=False)
    for lineno, raw in lines:
        where = f"{name} line {lineno}"
        record = parse_line(raw, lineno, where)
        if record is BLANK:
            continue
        predictions.append(parse_record(record, answer_grader, where))
    if not predictions:
        raise RlcalError(f"{name}: no records (the file is empty)")
    return predictions


# ---- metrics ---------------------------------------------------------------------------------------------------


def outcome_metrics(predictions: Sequence[Prediction]) -> dict[str, Any]:
    """`{n, n_correct, n_wrong, n_abstain, answer_rate, accuracy_answered, hallucination_rate, score}` of a group
    (`rlcal.core.aggregate.threshold_block`); score is the mean confidence-target reward, each record at its own t."""
    return A.threshold_block([p.outcome for p in predictions], [p.threshold for p in predictions])


def score_predictions(
    predictions: Sequence[Prediction], n_bins: int = DEFAULT_BINS, n_resamples: int = A.DEFAULT_RESAMPLES,
    seed: int = 0, grader: str = "exact",
) -> dict[str, Any]:  # fmt: skip
    """The metrics of `rlcal score` as a JSON-ready dict (see docs/metrics.md for every key). `n_resamples`
    bootstrap resamples of questions (seeded by `seed`) give the 95 % intervals; 0 leaves them out. `grader` (the
    one the predictions were graded with) goes into the eval-set `fingerprint` (`rlcal.core.fingerprint`)."""
    if not predictions:
        raise RlcalError("no predictions to score")
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or not 1 <= n_bins <= A.MAX_BINS:
        raise RlcalError(f"--bins must be an integer from 1 to {A.MAX_BINS}, got {n_bins!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or not 0 <= n_resamples <= A.MAX_RESAMPLES:
        raise RlcalError(f"--bootstrap must be an integer from 0 to {A.MAX_RESAMPLES}, got {n_resamples!r}")
    outcomes = [p.outcome for p in predictions]
    agg = A.aggregate(predictions, n_bins, calibration_threshold=None, n_resamples=n_resamples, seed=seed)
    calibration = agg["calibration"]
    result: dict[str, Any] = {
        "n": len(predictions),
        "n_answered": len(predictions) - outcomes.count(ABSTAIN),
        "n_abstained": outcomes.count(ABSTAIN),
        "n_correct": outcomes.count(CORRECT),
        "n_wrong": outcomes.count(WRONG),
        "n_confidence": calibration["n"],
        "n_bins": n_bins,
    }
    for key in A.CALIBRATION_KEYS:
        result[key] = calibration[key]
    behavior = agg["behavioral"]
    result.update({k: v for k, v in behavior.items() if k not in A.BEHAVIORAL_LIST_KEYS})
    result["per_threshold"] = agg["per_threshold"]
    result["overall"] = outcome_metrics(predictions)
    result["reliability"] = calibration["reliability"]
    result.update({k: behavior[k] for k in A.BEHAVIORAL_LIST_KEYS})
    # A record without a question id is a question of its own: its position stands in for it.
    ids = [list(p.question) if isinstance(p.question, tuple) else p.question for p in predictions]
    items = [(i if q is None else q, p.threshold) for i, (q, p) in enumerate(zip(ids, predictions, strict=True))]
    result["fingerprint"] = eval_fingerprint(items, grader=grader, n_bins=n_bins, calibration_at="all")
    if "ci" in agg:
        result["ci"] = agg["ci"]
        result["bootstrap"] = agg["bootstrap"]
    return result


# ---- output ----------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def with_ci(value: float | None, interval: Sequence[float] | None, digits: int = 3) -> str:
    """`0.542 [0.470, 0.610]`; just the value when there is no interval, "-" when there is no value."""
    if value is None:
        return "-"
    if not interval:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"


def format_table(result: Mapping[str, Any], source: str = "") -> str:
    """The human-readable report: counts, calibration line, and one aligned row per threshold (values with their
    95 % bootstrap intervals when the result has them)."""
    ci = result.get("ci") or {}
    lines = [
        f"rlcal score {source}".rstrip(),
        f"records {result['n']}: answered {result['n_answered']} (correct {result['n_correct']}, wrong "
        f"{result['n_wrong']}), abstained {result['n_abstained']}",
    ]
    if result["n_confidence"]:
        lines.append(
            f"calibration on the {result['n_confidence']} answered records with a confidence "
            f"({result['n_bins']} bins): ECE {with_ci(result['ece'], ci.get('ece'))}  ECE (equal mass) "
            f"{_fmt(result['ece_equal_mass'])}  MCE {_fmt(result['mce'])}  Brier {_fmt(result['brier'])}  AUROC "
            f"{_fmt(result['auroc'])}"
        )
    else:
        lines.append("calibration: no answered record carries a confidence (ECE, Brier, AUROC are null)")
    if result.get("behavioral_ece") is not None:
        lines.append(
            f"behavioral ECE over the {result['behavioral_n']} questions decided at every t: "
            f"{with_ci(result['behavioral_ece'], ci.get('behavioral_ece'))}  monotone in t: "
            f"{with_ci(result['behavioral_monotone_share'], ci.get('behavioral_monotone_share'))}"
        )
    header = ("t", "penalty", "n", "answer rate", "accuracy (answered)", "hallucination rate", "score")
    rates = ("answer_rate", "accuracy_answered", "hallucination_rate", "score")
    rows = [
        (
            key,
            format_number(penalty(float(key))),
            str(m["n"]),
            *(with_ci(m[k], (m.get("ci") or {}).get(k)) for k in rates),
        )
        for key, m in result["per_threshold"].items()
    ]
    overall = result["overall"]
    rows.append(("all", "", str(overall["n"]), *(_fmt(overall[k]) for k in rates)))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def row(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]).rstrip()

    lines += ["", row(header), *(row(r) for r in rows)]
    lines.append("score = mean reward: +1 correct, 0 abstain, -t/(1-t) wrong; hallucination rate = wrong / all")
    if ci:
        boot = result.get("bootstrap") or {}
        lines.append(
            f"[lo, hi] = {100 * boot.get('level', 0.95):g} % percentile bootstrap interval, "
            f"{boot.get('n_resamples')} resamples of {boot.get('n_units')} questions (seed {boot.get('seed')})"
        )
    return "\n".join(lines)


def write_outputs(outputs: Sequence[tuple[Path, bytes]]) -> None:
    """Write files all or nothing (`rlcal.common.files.atomic_write_files`): each is staged beside its target and
    only when every one is written are they renamed into place, so a failure never leaves a partial or stale-mixed
    file."""
    atomic_write_files(outputs)


def render_plot(result: Mapping[str, Any], title: str = "") -> bytes:
    """PNG bytes: the reliability diagram (left) and behavioural calibration per threshold (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    left.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    bins = [b for b in result.get("reliability") or [] if b["count"]]
    if bins:
        width = 1.0 / result["n_bins"]
        left.bar(
            [b["lo"] for b in bins], [b["accuracy"] for b in bins], width=width, align="edge", alpha=0.7,
            edgecolor="black", label="accuracy",
        )  # fmt: skip
        left.plot([b["mean_confidence"] for b in bins], [b["accuracy"] for b in bins], "o", color="C3", ms=4,
                  label="bin mean confidence")  # fmt: skip
        left.set_title(f"reliability (ECE {result['ece']:.3f}, n={result['n_confidence']})")
    else:
        left.set_title("reliability: no confidences")
    left.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy")
    left.legend(loc="upper left", fontsize=8)
    ts = [float(k) for k in result["per_threshold"]]
    per = list(result["per_threshold"].values())
    acc = [m["accuracy_answered"] if m["accuracy_answered"] is not None else float("nan") for m in per]
    right.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="accuracy = t")
    right.plot(ts, acc, "o-", label="accuracy (answered)")
    right.plot(ts, [m["answer_rate"] for m in per], "s-", label="answer rate")
    right.plot(ts, [m["hallucination_rate"] for m in per], "^-", label="hallucination rate")
    right.set(xlim=(-0.02, 1), ylim=(0, 1.02), xlabel="confidence target t", title="behavioural calibration")
    right.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    return buffer.getvalue()


# ---- command line ----------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="predictions, one JSON object per line ('-' reads standard input)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="bins for ECE/MCE (default %(default)s)")
    parser.add_argument("--out", type=Path, help="write the metrics as JSON here (written atomically)")
    parser.add_argument("--plot", type=Path, help="write a reliability + behavioural calibration plot (PNG) here")
    parser.add_argument(
        "--grader", default="exact", choices=sorted(GRADERS), help="grader for response records (default exact)"
    )
    parser.add_argument(
        "--bootstrap", type=int, default=A.DEFAULT_RESAMPLES, metavar="N",
        help="bootstrap resamples of questions for the 95%% intervals (default %(default)s; 0: no intervals)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")


def score_file(
    source: str | os.PathLike[str], n_bins: int = DEFAULT_BINS, grader: str = "exact",
    abstain_phrases: Sequence[str] | None = None, n_resamples: int = A.DEFAULT_RESAMPLES, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Load, grade and score a predictions file: the Python API behind `rlcal score`."""
    predictions = load_predictions(source, grader, abstain_phrases)
    return score_predictions(predictions, n_bins, n_resamples, seed, grader=grader)


def run(args: argparse.Namespace) -> int:
    if not 1 <= args.bins <= A.MAX_BINS:
        raise RlcalError(f"--bins must be an integer from 1 to {A.MAX_BINS}, got {args.bins}")
    if args.seed < 0:
        raise RlcalError(f"--seed must be >= 0, got {args.seed}")
    if not 0 <= args.bootstrap <= A.MAX_RESAMPLES:
        raise RlcalError(f"--bootstrap must be 0 or a number of resamples up to {A.MAX_RESAMPLES}, got {args.bootstrap}")
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        if path is not None:
            check_out_file(path, flag)  # a folder, or a place that cannot be written: said before any work
    result = score_file(args.file, args.bins, args.grader, n_resamples=args.bootstrap, seed=args.seed)
    source = "<stdin>" if args.file == "-" else str(args.file)
    # Everything is computed before anything is written, so a failure leaves no partial output behind.
    outputs: list[tuple[Path, bytes]] = []
    if args.out is not None:
        payload = {"source": source, "grader": args.grader, **result}
        outputs.append((args.out, (json.dumps(payload, indent=2, allow_nan=False) + "\n").encode()))
    if args.plot is not None:
        outputs.append((args.plot, render_plot(result, title=source)))
    write_outputs(outputs)
    if not args.quiet:
        report = [format_table(result, source), *(f"wrote {path}" for path, _ in outputs)]
        try:
            print("\n".join(report), flush=True)
        except BrokenPipeError:  # `rlcal score ... | head`: the reader left early, which is not an error
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0

