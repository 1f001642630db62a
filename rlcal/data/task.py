"""The QA task: one declaration of which rows to ask, how each becomes a prompt, and how replies are graded.

    from rlcal.data.task import QATask
    task = QATask(source="world/qa.jsonl", split_filter="eval", instruction="Answer if > {t_percent} sure.")
    task.prompt_template().render("When was Ada Vell born?", 0.75)     # the prompt training and eval both use
    task.answer_grader()("I don't know", "12-03")                      # -> "abstain"
    ds = task.load(seed=0)                                              # rows via rlcal.data.qa.load_qa_dataset
    task = QATask.from_recipe_file("recipes/toy/grpo/config_confidence_target.yaml", section="calibration")

The fields are declared once, here, in TRL style (`field(default=..., metadata={"help": ...})`, checks in
`__post_init__` raising ValueError, which the config layer turns into one-line RlcalErrors), in groups that the
recipe sections and `rlcal eval` are built from:

    QARows        = split, subset, columns, split_filter, split_column, max_samples, weight_column
    QASource      = source + QARows                      `data:` (DataArguments = QASource + PromptSpec)
    HeldOutSource = data + QARows (max_samples 256)      `calibration:` (CalibrationEvalConfig, + eval settings)
    PromptSpec    = prompt_format, instruction, instruction_t0, template, system_prompt
    GradingSpec   = grader, abstain_phrases              `reward:` (RewardArguments, + name and threshold)
    QATask        = QASource + PromptSpec + GradingSpec  `rlcal eval` (one flag per field)

In a training recipe the grading keys stay in the `reward:` section (where they always were: the reward grades
with them), so the task a recipe trains on is `data:` + `reward.grader` / `reward.abstain_phrases`
(`QATask.from_recipe(raw, "data")`), and the task its calibration callback evaluates is the same prompt and grading
on `calibration:`'s source fields (`QATask.from_recipe(raw, "calibration")`). This module reads recipe YAML itself
(it imports rlcal.core and rlcal.common only), so evaluation never needs the training layer.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import read_text
from rlcal.common.recipes import find_recipe
from rlcal.core.grading import GRADERS, AnswerGrader
from rlcal.core.prompts import BEST_GUESS_INSTRUCTION, CONFIDENCE_TARGET_INSTRUCTION, PromptTemplate
from rlcal.data.qa import check_columns, load_qa_dataset

HELD_OUT_MAX_SAMPLES = 256  # the calibration callback's default eval-set size (it runs many times per training)


@dataclass
class FieldGroup:
    """Root of the cooperative `__post_init__` chain: every group checks its own fields, then calls super()."""

    def __post_init__(self) -> None:
        pass


@dataclass
class QARows(FieldGroup):
    """Which rows of a QA source to use and how its columns map onto question/answer/aliases."""

    split: str = field(default="train", metadata={"help": "Split of a `datasets` source."})
    subset: str | None = field(default=None, metadata={"help": "Subset/config name of a `datasets` source."})
    columns: dict | str | None = field(
        default=None,
        metadata={
            "help": "Column mapping onto question/answer/aliases, e.g. {answer: answer.value} (dotted = nested)."
        },
    )
    split_filter: str | None = field(default=None, metadata={"help": "Keep rows whose split column equals this."})
    split_column: str = field(default="split", metadata={"help": "Column that `split_filter` looks at."})
    max_samples: int | None = field(
        default=None, metadata={"help": "Use at most this many rows (with weight_column: draw this many)."}
    )
    weight_column: str | None = field(
        default=None,
        metadata={
            "help": "Draw rows with replacement, probability ∝ this column (the world's `popularity`: questions "
            "arrive as often as their facts are mentioned in pretraining)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        self.columns = check_columns(self.columns)
        if self.max_samples is not None and self.max_samples <= 0:
            raise ValueError("max_samples must be > 0 (or null for all rows)")

    def row_fields(self) -> dict[str, Any]:
        """The `QARows` fields as keyword arguments."""
        return {name: getattr(self, name) for name in ROW_FIELDS}


@dataclass
class _SourceField(FieldGroup):
    source: str | None = field(
        default=None, metadata={"help": "Local .jsonl/.json/.csv/.parquet file, or a `datasets` name."}
    )


@dataclass
class QASource(QARows, _SourceField):
    """A QA source and the rows to use from it (the `data:` section's data fields). `source` is required."""

    def __post_init__(self) -> None:
        if not self.source:
            raise ValueError("source is required (a local QA file or a `datasets` name)")
        super().__post_init__()

    def load(self, seed: int = 0):
        """The rows as a `datasets.Dataset` with question/answer/aliases (`seed`: the weighted draw)."""
        return load_qa_dataset(self.source, seed=seed, **self.row_fields())

    def source_fields(self) -> dict[str, Any]:
        """The `QASource` fields as keyword arguments."""
        return {"source": self.source, **self.row_fields()}


@dataclass
class _HeldOutField(FieldGroup):
    data: str | None = field(
        default=None, metadata={"help": "Held-out QA source (local file or `datasets` name); null = no eval set."}
    )


@dataclass
class HeldOutSource(QARows, _HeldOutField):
    """The held-out source of the `calibration:` section: `data` plus the `QARows` fields (at most 256 rows by
    default: the callback evaluates several times per run)."""

    # Redeclared for its default only (a dataclass keeps the field where QARows put it).
    max_samples: int | None = field(
        default=HELD_OUT_MAX_SAMPLES,
        metadata={"help": "Evaluate at most this many questions (with weight_column: draw this many)."},
    )

    def source_fields(self) -> dict[str, Any]:
        """The held-out source as `QASource` keyword arguments (`data` becomes `source`)."""
        return {"source": self.data, **self.row_fields()}

    def load(self, seed: int = 0):
        if self.data is None:
            raise RlcalError("calibration.data is not set: there is no held-out eval set")
        return load_qa_dataset(self.data, seed=seed, **self.row_fields())


@dataclass
class PromptSpec(FieldGroup):
    """How a question and its confidence target t become a prompt (`rlcal.core.prompts.PromptTemplate`)."""

    prompt_format: str = field(default="plain", metadata={"help": "plain (completion prompt) | chat (messages)."})
    instruction: str = field(default=CONFIDENCE_TARGET_INSTRUCTION, metadata={"help": "Instruction for t > 0."})
    instruction_t0: str = field(default=BEST_GUESS_INSTRUCTION, metadata={"help": "Instruction at t = 0."})
    template: str | None = field(
        default=None, metadata={"help": "Prompt (plain) or user turn (chat) with {instruction} and {question}."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message (chat format)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prompt_template()  # bad placeholders and formats fail here, at config time

    def prompt_template(self) -> PromptTemplate:
        return PromptTemplate(
            format=self.prompt_format,
            instruction=self.instruction,
            instruction_t0=self.instruction_t0,
            template=self.template,
            system_prompt=self.system_prompt,
        )


@dataclass
class GradingSpec(FieldGroup):
    """How a reply is graded: correct, wrong or abstain (`rlcal.core.grading.AnswerGrader`)."""

    grader: str = field(default="exact", metadata={"help": f"Answer grader: {', '.join(sorted(GRADERS))}."})
    abstain_phrases: list[str] | None = field(
        default=None, metadata={"help": "Phrases that count as \"I don't know\" (default: rlcal's built-in list)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.grader not in GRADERS:
            raise ValueError(f"unknown grader {self.grader!r}; choose from {', '.join(sorted(GRADERS))}")
        if self.abstain_phrases is not None:
            if isinstance(self.abstain_phrases, str) or not all(isinstance(p, str) for p in self.abstain_phrases):
                raise ValueError(f"abstain_phrases must be a list of strings, got {self.abstain_phrases!r}")
            self.abstain_phrases = list(self.abstain_phrases)

    def answer_grader(self) -> AnswerGrader:
        return AnswerGrader(self.grader, self.abstain_phrases)


@dataclass
class QATask(GradingSpec, PromptSpec, QASource):
    """A QA task: source and rows (`QASource`), prompt (`PromptSpec`) and grading (`GradingSpec`).

    Field order: source fields, prompt fields, grading fields (a dataclass collects base fields in reverse MRO).
    """

    @classmethod
    def from_recipe(cls, raw: Mapping[str, Any], section: str = "data", path: str | None = None) -> QATask:
        """The task of a training recipe (a YAML mapping): prompt from `data:`, grading from `reward:`, and the
        source fields from `data:` (section="data": what training trains on) or from `calibration:`
        (section="calibration": the callback's held-out set; RlcalError when `calibration.data` is not set).

        Keys of `data:` must all be task fields (unknown ones are errors with a did-you-mean); of `reward:` and
        `calibration:` only the task's keys are read (the rest belong to the reward and the callback, which the
        training config validates).
        """
        where = f"{path}: " if path else ""
        if section not in ("data", "calibration"):
            raise ValueError(f"section must be 'data' or 'calibration', got {section!r}")
        if not isinstance(raw, Mapping):
            raise RlcalError(f"{where}a recipe must be a YAML mapping of sections")

        def part(name: str) -> Mapping[str, Any]:
            value = raw.get(name) or {}
            if not isinstance(value, Mapping):
                raise RlcalError(f"{where}section {name!r} must be a mapping, got {type(value).__name__}")
            return value

        data, reward, calibration = part("data"), part("reward"), part("calibration")
        known = SOURCE_FIELDS + PROMPT_FIELDS
        unknown = [k for k in data if k not in known]
        if unknown:
            raise RlcalError(where + str(unknown_keys_error("data", unknown, known, "section")))

        def build(what: str, spec: type, values: Mapping[str, Any], names: Sequence[str]) -> Any:
            try:
                return spec(**{k: values[k] for k in names if k in values})
            except (ValueError, TypeError) as exc:  # TypeError: a value of the wrong type (`max_samples: many`)
                raise RlcalError(f"{where}{what}: {exc}") from None

        if section == "data":
            source = build("data", QASource, data, SOURCE_FIELDS).source_fields()
        else:
            held = build("calibration", HeldOutSource, calibration, HELD_OUT_FIELDS)
            if held.data is None:
                raise RlcalError(f"{where}calibration.data is not set: the recipe has no held-out eval set")
            source = held.source_fields()
        prompt = build("data", PromptSpec, data, PROMPT_FIELDS)
        grading = build("reward", GradingSpec, reward, GRADING_FIELDS)
        prompt_values = {k: getattr(prompt, k) for k in PROMPT_FIELDS}
        return cls(**source, **prompt_values, **{k: getattr(grading, k) for k in GRADING_FIELDS})

    @classmethod
    def from_recipe_file(cls, path: str | os.PathLike, section: str = "data") -> QATask:
        """`from_recipe` on a recipe YAML file (errors name the file)."""
        return cls.from_recipe(read_recipe_file(path), section=section, path=str(path))


def _names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.init)


ROW_FIELDS = _names(QARows)
SOURCE_FIELDS = _names(QASource)  # source + ROW_FIELDS
HELD_OUT_FIELDS = _names(HeldOutSource)  # data + ROW_FIELDS
PROMPT_FIELDS = _names(PromptSpec)
GRADING_FIELDS = _names(GradingSpec)
TASK_FIELDS = _names(QATask)  # SOURCE_FIELDS + PROMPT_FIELDS + GRADING_FIELDS


def unknown_keys_error(section: str, unknown: Sequence[str], known: Sequence[str], where: str) -> RlcalError:
    """One line naming each unknown key, with the closest known one: `unknown key in data section: 'x' (did you
    mean 'y'?)`."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        parts.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return RlcalError(f"unknown key{'s' if len(parts) > 1 else ''} in {section} {where}: {', '.join(parts)}")


def read_recipe_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe YAML file into a mapping (errors name the file)."""
    import yaml

    p = find_recipe(path)  # as given, else the recipe shipped with rlcal (docs/training.md)
    try:
        raw = yaml.safe_load(read_text(p, str(path)))
    except yaml.YAMLError as exc:
        raise RlcalError(f"{path}: invalid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(raw, Mapping):
        raise RlcalError(f"{path}: a recipe must be a YAML mapping of sections")
    return dict(raw)
