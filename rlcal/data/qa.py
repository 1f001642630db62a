"""QA data for training and evaluation: load, standardise columns, sample thresholds, render prompts.

    from rlcal.data.qa import load_qa_dataset, prepare_prompts
    ds = load_qa_dataset("world/qa.jsonl", split_filter="rl_train")       # or "trivia_qa" + subset/split
    ds = prepare_prompts(ds, PromptTemplate(), ThresholdSampler.from_spec({"choice": [0.5, 0.75, 0.9]}), seed=0)

Sources: a local `.jsonl`/`.json`/`.csv`/`.parquet` file, or any `datasets` hub name (with `subset` and `split`).
Columns are mapped onto rlcal's standard names: `question`, `answer`, `aliases` (list[str], may be empty);
every other column is kept (extra columns reach TRL reward functions as keyword arguments). After
`prepare_prompts` each row also has `threshold` (t) and `prompt` (the rendered confidence-target prompt).
Bad rows are `RlcalError`s naming the file and line or row: bytes that are not UTF-8, a JSONL line that is not
a JSON object, a null or blank question or gold answer (it would grade every reply wrong). docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import check_utf8_file
from rlcal.common.jsonl import BLANK, parse_line
from rlcal.core.prompts import PromptTemplate
from rlcal.core.thresholds import ThresholdSampler

LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
STANDARD_COLUMNS = ("question", "answer", "aliases")


def check_columns(value: Any, what: str = "columns") -> dict[str, str] | None:
    """Validate a column mapping onto question/answer/aliases (a YAML string from the command line is parsed);
    raises ValueError, which config parsing turns into one clear error."""
    if isinstance(value, str):
        import yaml

        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what}: cannot parse {value!r} as YAML: {exc}") from None
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a mapping like {{answer: answer.value}}, got {value!r}")
    unknown = sorted(set(value) - set(STANDARD_COLUMNS))
    if unknown:
        raise ValueError(f"{what} can map question, answer and aliases only, not {unknown}")
    return {str(k): str(v) for k, v in value.items()}


def check_jsonl_file(path: Path, source: str) -> None:
    """Every line of a local JSONL file is UTF-8 and a JSON object (blank lines aside): a bad line is an RlcalError
    naming it. One pass with Python's json before pyarrow reads the file, because pyarrow reports bad bytes only
    mid-map, as a traceback, and crashes the process (a segmentation fault) on deeply nested arrays."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise RlcalError(f"cannot read {source}: {exc.strerror or exc}") from None
    with handle:
        for lineno, raw in enumerate(handle, 1):
            where = f"{source}: line {lineno}"
            row = parse_line(raw, lineno, where)
            if row is BLANK:
                continue
            if not isinstance(row, dict):
                raise RlcalError(f"{where}: expected a JSON object (one QA row), got {type(row).__name__}")


def _load_raw(source: str, subset: str | None, split: str):
    import datasets

    path = Path(source)
    if path.suffix.lower() in LOCAL_FORMATS:
        if not path.is_file():
            raise RlcalError(f"data file not found: {source}")
        if path.suffix.lower() == ".jsonl":
            check_jsonl_file(path, source)
        elif LOCAL_FORMATS[path.suffix.lower()] != "parquet":  # pyarrow would fail later, mid-map, with a traceback
            check_utf8_file(path, source)
        try:
            return datasets.load_dataset(LOCAL_FORMATS[path.suffix.lower()], data_files=str(path), split="train")
        except Exception as exc:  # datasets wraps parse errors in many types; one clear line is what users need
            raise RlcalError(f"could not read {source}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if path.exists():
        raise RlcalError(f"unsupported data file type {path.suffix!r}; use one of {', '.join(LOCAL_FORMATS)}")
    try:
        return datasets.load_dataset(source, subset, split=split)
    except Exception as exc:
        raise RlcalError(f"could not load dataset {source!r} (subset={subset}, split={split}): {exc}") from exc


@contextmanager
def _quiet_bars(quiet: bool) -> Iterator[None]:
    """`datasets`' progress bars off while a local file is read and standardised: it takes well under a second,
    and a bar on stderr would stand between the user and an error line about a bad row."""
    import datasets

    was_on = not datasets.are_progress_bars_disabled()
    if quiet and was_on:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if quiet and was_on:
            datasets.enable_progress_bars()


def load_qa_dataset(
    source: str,
    split: str = "train",
    subset: str | None = None,
    columns: Mapping[str, str] | None = None,
    split_filter: str | None = None,
    split_column: str = "split",
    max_samples: int | None = None,
    weight_column: str | None = None,
    seed: int = 0,
):
    """Load a QA dataset and rename its columns onto question/answer/aliases.

    `columns` maps rlcal names to the source's (e.g. {"answer": "answer.value", "aliases": "answer.aliases"};
    dotted names reach into nested dicts). `split_filter` keeps rows whose `split_column` equals it (the world's
    qa.jsonl marks rl_train / eval rows). With `weight_column`, `max_samples` rows (default: as many as there are)
    are drawn with replacement ∝ that column (`sample_by_weight`, seeded); otherwise the first `max_samples` are
    kept. Missing columns and empty results are `RlcalError`s.
    """
    with _quiet_bars(Path(source).suffix.lower() in LOCAL_FORMATS):
        return _load_qa_dataset(
            source, split, subset, columns, split_filter, split_column, max_samples, weight_column, seed
        )


def _load_qa_dataset(source, split, subset, columns, split_filter, split_column, max_samples, weight_column, seed):
    import datasets

    ds = _load_raw(source, subset, split)
    mapping = {name: name for name in STANDARD_COLUMNS}
    mapping.update(columns or {})
    if split_filter is not None:
        if split_column not in ds.column_names:
            raise RlcalError(f"{source}: no {split_column!r} column to select split {split_filter!r}")
        ds = ds.filter(lambda row: row[split_column] == split_filter)

    def nested(row: dict[str, Any], dotted: str) -> Any:
        value: Any = row
        for key in dotted.split("."):
            value = value.get(key) if isinstance(value, Mapping) else None
        return value

    for name in ("question", "answer"):
        top = mapping[name].split(".")[0]
        if top not in ds.column_names:
            raise RlcalError(
                f"{source}: missing column {mapping[name]!r} for {name!r} (columns: {', '.join(ds.column_names)})"
            )

    def where(index: int) -> str:
        return f"row {index + 1}" + (f" of the {split_filter!r} rows" if split_filter is not None else "")

    def standardise(row: dict[str, Any], index: int) -> dict[str, Any]:
        aliases = nested(row, mapping["aliases"]) if mapping["aliases"].split(".")[0] in row else None
        # A null or blank gold answer would grade every reply wrong (and a null question asks "None"): both are
        # refused, as `rlcal score` refuses them, rather than silently lowering the accuracy.
        values = {name: nested(row, mapping[name]) for name in ("question", "answer")}
        for name, value in values.items():
            if value is None or isinstance(value, str) and not value.strip():
                what = "null" if value is None else "empty"
                raise RlcalError(f"{source}: {where(index)} has {what} {name} (column {mapping[name]!r})")
            if isinstance(value, Mapping | list | tuple):
                raise RlcalError(
                    f"{source}: {where(index)}: {name} (column {mapping[name]!r}) must be text or a number, got "
                    f"a {type(value).__name__}; map a nested field with columns, e.g. {{{name}: {mapping[name]}.value}}"
                )
        return {
            "question": str(values["question"]),
            "answer": str(values["answer"]),
            "aliases": [str(a) for a in aliases] if isinstance(aliases, list | tuple) else [],
        }

    # The standard columns' types are given: inferred, they keep the file's (datasets 5 casts a numeric answer
    # column back to int64, so `answer` would be 7, not "7", and aliases [x, 3] stay mixed).
    features = ds.features.copy()
    text = datasets.Value("string")
    listing = getattr(datasets, "List", None) or datasets.Sequence  # List: datasets >= 4; Sequence before
    features.update(question=text, answer=text, aliases=listing(text))
    ds = ds.map(standardise, with_indices=True, features=features, desc="standardise columns")
    if len(ds) == 0:
        raise RlcalError(f"{source}: no rows" + (f" with {split_column} == {split_filter!r}" if split_filter else ""))
    if weight_column is not None:
        try:
            return sample_by_weight(ds, weight_column, max_samples, seed=seed)
        except RlcalError as exc:
            raise RlcalError(f"{source}: {exc}") from None
    if max_samples is not None:
        ds = ds.select(range(min(max_samples, len(ds))))
    return ds


def sample_by_weight(ds, column: str, num_rows: int | None = None, seed: int = 0):
    """Draw `num_rows` rows (default: as many as there are) with replacement, each with probability ∝ `column`.

    With the world's `popularity` column, questions arrive as often as their facts are mentioned in pretraining:
    the prompt distribution of the paper's Theorem 2, where popular facts are asked about often and rare ones
    seldom. Negative, non-finite or all-zero weights are `RlcalError`s.
    """
    import numpy as np

    if column not in ds.column_names:
        raise RlcalError(f"no weight column {column!r} (columns: {', '.join(ds.column_names)})")
    try:
        weights = np.asarray(ds[column], dtype=float)
    except (TypeError, ValueError):
        raise RlcalError(f"weight column {column!r} must be numeric") from None
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise RlcalError(f"weight column {column!r} must be finite, >= 0 and not all zero")
    n = len(ds) if num_rows is None else num_rows
    if n < 1:
        raise RlcalError(f"num_rows must be >= 1, got {n}")
    indices = np.random.default_rng(seed).choice(len(ds), size=n, replace=True, p=weights / weights.sum())
    return ds.select(indices.tolist())


def prepare_prompts(ds, template: PromptTemplate, sampler: ThresholdSampler | None = None, seed: int = 0):
    """Add `threshold` (sampled per row, seeded) and `prompt` (rendered with that same t) columns."""
    thresholds = (sampler or ThresholdSampler()).sample(len(ds), seed=seed)
    if "threshold" in ds.column_names:
        ds = ds.remove_columns("threshold")
    ds = ds.add_column("threshold", thresholds)
    return ds.map(lambda row: {"prompt": template.render(row["question"], row["threshold"])}, desc="render prompts")
