"""`rlcal compare`: calibration drift between two evaluations, e.g. the base model (A) and the RL-trained one (B).

    rlcal compare outputs/eval/base/metrics.json outputs/eval/rl/metrics.json --out outputs/compare
    rlcal compare A/metrics.json B/metrics.json --labels base,rl

Reads two `metrics.json` files (from `rlcal eval`, `rlcal score` or the training callback's `step_<N>/`) and
prints, for every numeric metric both share (headline calibration numbers, `per_threshold[t].*`, and the sweep's
ideal policy and gap), the value in A, the value in B, the difference B − A and the ratio B / A. The ECE line
is the ECE drift. With `--out DIR` it also writes `compare.md` (the same table in markdown), `compare.json`,
`reliability.png` (both reliability diagrams overlaid, when both files carry `reliability` bins; older `rlcal score`
files that call them `reliability_bins` are read the same way) and
`answer_rate.png` (answer rate and accuracy on answered against t, with the ideal policies dashed). Needs no torch.

Both files must carry the same eval-set `fingerprint` (questions, gold answers, grid of t, grader, bins, where the
ECE is measured; `rlcal.core.fingerprint`): a mismatch is refused, since the difference would be no drift, unless
`--allow-mismatch` is given, and then the report says so.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import staged_dir

# Headline metrics in the order people read them; any other numeric top-level key follows alphabetically.
HEADLINE = (
    "ece",
    "ece_equal_mass",
    "mce",
    "behavioral_ece",
    "behavioral_monotone_share",
    "brier",
    "auroc",
    "aurc",
    "mean_confidence",
    "accuracy_answered",
    "accuracy",
    "abstain_rate",
    "hallucination_rate",
    "sweep_answer_rate_gap",
    "n",
    "n_questions",
)
PER_T = ("answer_rate", "accuracy_answered", "hallucination_rate", "score", "n", "n_correct", "n_wrong", "n_abstain")
SWEEP = ("answer_rate", "accuracy_answered", "hallucination_rate", "score")
NOT_METRICS = {"step", "n_bins", "thresholds", "seed"}
# Sections that hold no metric to diff: run settings, and the bootstrap intervals (`ci`) and their settings.
NOT_SECTIONS = {"per_threshold", "sweep", "settings", "source", "ci", "bootstrap", "fingerprint"}


@dataclass
class Row:
    """One metric compared: its values in A and B, B − A and B / A (None where undefined)."""

    metric: str
    a: float | None
    b: float | None
    diff: float | None
    ratio: float | None


def load_metrics(path: str | Path) -> dict[str, Any]:
    """A metrics.json as a dict; a missing, unreadable or non-object file is an RlcalError."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise RlcalError(f"metrics file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RlcalError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RlcalError(f"{path} must hold a JSON object of metrics, got {type(data).__name__}")
    return data


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _t_key(key: str) -> str:
    """Threshold keys written as "0", "0.0" or "0.750" all mean the same t."""
    try:
        return f"{float(key):g}"
    except ValueError:
        return key


def _by_t(section: Any) -> dict[str, Any]:
    return {_t_key(k): v for k, v in section.items()} if isinstance(section, Mapping) else {}


def _bins(metrics: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Reliability bins under `reliability`, the one key both `rlcal eval` and `rlcal score` write; metrics.json
    files from `rlcal score` before the schema was unified call them `reliability_bins`, read as the same thing."""
    return metrics.get("reliability") or metrics.get("reliability_bins")


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, float | None]:
    """Every comparable number of a metrics dict under a readable name, in display order.

    Top-level numbers keep their names (`ece`, `brier`, ...); per-threshold ones become `per_threshold[0.75].score`;
    the sweep contributes `sweep[0.75].ideal.score` and `sweep[0.75].gap.score` (its measured part is
    per_threshold). None (undefined, e.g. AUROC with one class) is kept as None.
    """
    out: dict[str, float | None] = {}
    top = [k for k in HEADLINE if k in metrics]
    top += sorted(k for k in metrics if k not in HEADLINE)
    for key in top:
        value = metrics[key]
        if key not in NOT_METRICS and (value is None and key in HEADLINE or _is_number(value)):
            out[key] = value
    for key in sorted(metrics):  # other sections of plain numbers, e.g. rlcal score's `overall`
        section = metrics[key]
        if isinstance(section, Mapping) and key not in NOT_SECTIONS:
            for sub, value in section.items():
                if _is_number(value):
                    out[f"{key}.{sub}"] = value
    per_t = _by_t(metrics.get("per_threshold"))
    for t in sorted(per_t, key=float):
        values = per_t[t] if isinstance(per_t[t], Mapping) else {}
        for key in [k for k in PER_T if k in values] + sorted(k for k in values if k not in PER_T):
            if values[key] is None or _is_number(values[key]):
                out[f"per_threshold[{t}].{key}"] = values[key]
    sweep = _by_t(metrics.get("sweep"))
    for t in sorted(sweep, key=float):
        for kind in ("ideal", "gap"):
            values = sweep[t].get(kind) if isinstance(sweep[t], Mapping) else None
            for key in SWEEP:
                if isinstance(values, Mapping) and key in values and (values[key] is None or _is_number(values[key])):
                    out[f"sweep[{t}].{kind}.{key}"] = values[key]
    return out


def compare_metrics(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Row]:
    """Rows for every metric found in A or B (A's order first): values, B − A, and B / A (None if A is 0)."""
    fa, fb = flatten_metrics(a), flatten_metrics(b)
    names = list(fa) + [k for k in fb if k not in fa]
    rows = []
    for name in names:
        va, vb = fa.get(name), fb.get(name)
        both = va is not None and vb is not None
        diff = vb - va if both else None
        ratio = vb / va if both and va != 0 else None
        rows.append(Row(name, va, vb, diff, ratio))
    if not any(r.a is not None and r.b is not None for r in rows):
        raise RlcalError("the two metrics files share no numeric metric to compare")
    return rows


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return f"{value:+d}" if signed else str(value)
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"×{value:.3f}"


def format_table(rows: Sequence[Row], labels: tuple[str, str], markdown: bool = False) -> str:
    """The comparison as an aligned terminal table or a markdown table."""
    a, b = labels
    header = ["metric", a, b, f"{b} − {a}", f"{b} / {a}"]
    body = [[r.metric, _fmt(r.a), _fmt(r.b), _fmt(r.diff, signed=True), _ratio(r.ratio)] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * 4) + "|"]
        lines += ["| " + " | ".join(cells) + " |" for cells in body]
        return "\n".join(lines)
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(5)]
    lines = [
        "  ".join([cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)])
        for cells in [header, *body]
    ]
    return "\n".join(lines)


def drift_line(rows: Sequence[Row], labels: tuple[str, str]) -> str:
    """One sentence on the ECE drift, the number this command exists for."""
    ece = next((r for r in rows if r.metric == "ece"), None)
    if ece is None or ece.diff is None:
        return "ECE drift: n/a (ECE missing in one of the files)"
    ratio = f" (×{ece.ratio:.2f})" if ece.ratio is not None else ""
    return f"ECE drift {labels[0]} → {labels[1]}: {ece.a:.4f} → {ece.b:.4f}, {ece.diff:+.4f}{ratio}"


COMPARE_FILES = ("compare.md", "compare.json", "reliability.png", "answer_rate.png")


def write_compare(
    out_dir: str | Path,
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    rows: Sequence[Row],
    labels: tuple[str, str],
    sources: tuple[str, str] = ("", ""),
    note: str | None = None,
) -> dict[str, Path]:
    """compare.md, compare.json, reliability.png (if both have bins) and answer_rate.png: the folder appears (or
    replaces an earlier comparison) in one rename; a folder holding other files is refused, never replaced."""
    from rlcal.evaluation import plots

    with staged_dir(out_dir, owned=COMPARE_FILES, label="--out") as tmp:
        files: dict[str, Path] = {}
        md = [
            f"# Calibration drift: {labels[0]} → {labels[1]}",
            "",
            f"- A = {labels[0]}: `{sources[0]}`",
            f"- B = {labels[1]}: `{sources[1]}`",
            f"- {drift_line(rows, labels)}",
            *([f"- {note}"] if note else []),
            "",
            format_table(rows, labels, markdown=True),
            "",
        ]
        files["markdown"] = tmp / "compare.md"
        files["markdown"].write_text("\n".join(md))
        files["json"] = tmp / "compare.json"
        payload = {"labels": list(labels), "sources": list(sources), "note": note, "rows": [asdict(r) for r in rows]}
        files["json"].write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
        bins_a, bins_b = _bins(a), _bins(b)
        if bins_a and bins_b:
            files["reliability"] = plots.reliability_diagram(
                {labels[0]: bins_a, labels[1]: bins_b},
                tmp / "reliability.png",
                title="Reliability: " + " vs ".join(labels),
                ece={labels[0]: a.get("ece"), labels[1]: b.get("ece")},
            )
        per_a, per_b = _by_t(a.get("per_threshold")), _by_t(b.get("per_threshold"))
        if per_a or per_b:
            ideal = {
                label: {t: s["ideal"] for t, s in _by_t(m.get("sweep")).items() if "ideal" in s}
                for label, m in zip(labels, (a, b), strict=True)
                if m.get("sweep")
            }
            files["answer_rate"] = plots.sweep_plot(
                {labels[0]: per_a, labels[1]: per_b},
                tmp / "answer_rate.png",
                ideal=ideal or None,
                title="Behavioral calibration: " + " vs ".join(labels),
            )
    return {name: Path(out_dir) / path.name for name, path in files.items()}


def check_same_eval(a: Mapping[str, Any], b: Mapping[str, Any], allow: bool = False) -> str | None:
    """RlcalError unless A and B were measured on the same eval set with the same settings (their `fingerprint`s,
    `rlcal.core.fingerprint`); with `allow`, the note the report carries instead. Files without a fingerprint
    (written before rlcal 0.x recorded one) cannot be checked: a note says so."""
    from rlcal.core.fingerprint import fingerprint_mismatch

    fa, fb = a.get("fingerprint"), b.get("fingerprint")
    if not isinstance(fa, Mapping) or not isinstance(fb, Mapping):
        which = " and ".join(n for n, f in (("A", fa), ("B", fb)) if not isinstance(f, Mapping))
        return f"note: {which} carries no eval-set fingerprint, so it is not checked that A and B measure the same set"
    differ = fingerprint_mismatch(fa, fb)
    if not differ:
        return None
    shown = "; ".join(f"{k}: {fa.get(k)!r} vs {fb.get(k)!r}" for k in differ)
    if not allow:
        raise RlcalError(
            f"A and B were not measured on the same eval set and settings ({shown}), so their difference is no "
            "drift; pass --allow-mismatch to compare them anyway"
        )
    return f"note: A and B differ in their eval set or settings ({shown}): the differences below are not a drift"


def _labels(paths: Sequence[str], spec: str | None) -> tuple[str, str]:
    if spec:
        parts = [p.strip() for p in spec.split(",")]
        if len(parts) != 2 or not all(parts):
            raise RlcalError(f"--labels needs two comma-separated names, got {spec!r}")
        return parts[0], parts[1]
    names = []
    for p in paths:
        path = Path(p)
        names.append((path.parent.name if path.suffix == ".json" else path.name) or str(path))
    if names[0] == names[1]:
        names = ["A", "B"]
    return names[0], names[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", help="metrics.json of the reference (e.g. the base model), or its folder.")
    parser.add_argument("b", help="metrics.json to compare against it (e.g. the trained model), or its folder.")
    parser.add_argument("--labels", help="Names for A and B, comma-separated (default: their folder names).")
    parser.add_argument("--out", help="Folder for compare.md, compare.json and the PNG plots.")
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="Compare files measured on different eval sets or settings (refused by default); the report says so.",
    )


def run(args: argparse.Namespace) -> int:
    a, b = load_metrics(args.a), load_metrics(args.b)
    labels = _labels([args.a, args.b], args.labels)
    note = check_same_eval(a, b, allow=args.allow_mismatch)
    rows = compare_metrics(a, b)
    if note:
        print(note)
    print(drift_line(rows, labels))
    print(format_table(rows, labels))
    if args.out:
        paths = write_compare(args.out, a, b, rows, labels, (str(args.a), str(args.b)), note)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0
