"""The bad-input table: every `rlcal` command, given a bad file, recipe, flag, data row or output location, answers
with exactly one stderr line (`rlcal CMD: error: ...`), exit code 2, no traceback, and leaves nothing behind.

    pytest tests/test_bad_inputs.py          # ~20 s on one CPU core: every case fails before any model loads

Each case runs `rlcal.cli.main(argv)` in-process in a fresh folder (the cwd); the folder's tree (names, sizes,
modification times) must be the same after the run as before it, so a half-written file, an empty output folder
or a stray temporary one fails the case. A few cases run the real `python -m rlcal.cli` in a subprocess, where
library warnings and log lines would reach stderr too. docs/errors.md describes the classes of bad input.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlcal.cli import main

REPO = Path(__file__).resolve().parents[1]
NOT_UTF8 = b'{"question": "When was Ada born?", "answer": "12-\xff03"}\n'


@dataclass
class Env:
    """What a case builds its command line from: its own folder (the cwd), a tiny model and a tiny world."""

    tmp: Path
    model: str
    world: str

    @property
    def qa(self) -> str:
        return str(Path(self.world) / "qa.jsonl")

    def file(self, name: str, data: bytes | str) -> str:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return name

    def blocker(self) -> str:
        """A plain file, so that `blocker/sub` cannot be created."""
        return self.file("blocker", "not a folder\n")

    def foreign(self, name: str = "theirs") -> str:
        """A non-empty folder of files no rlcal command wrote."""
        self.file(f"{name}/notes.txt", "someone else's\n")
        return name

    def train_recipe(self, name: str = "r.yaml", **training) -> str:
        recipe = {
            "trainer": "grpo",
            "model": {"model_name_or_path": self.model, "use_peft": True, "lora_r": 4},
            "data": {"source": self.qa},
            "reward": {"name": "binary"},
            "training": {
                "output_dir": "out/train",
                "max_steps": 1,
                "per_device_train_batch_size": 4,
                "num_generations": 2,
                "max_completion_length": 4,
                "scale_rewards": "batch",
                "report_to": [],
                **training,
            },
        }
        return self.file(name, json.dumps(recipe))  # JSON is YAML

    def eval_args(self, *extra: str, data: str | None = None, out: str = "out/eval") -> list[str]:
        return [
            "eval", "--model", self.model, "--data", data or self.qa, "--max-samples", "2", "--thresholds", "0",
            "--bootstrap", "0", "--max-new-tokens", "2", "--out", out, *extra,
        ]  # fmt: skip

    def preds(self, *rows: str) -> str:
        return self.file("preds.jsonl", "".join(r + "\n" for r in rows))

    def metrics(self, name: str = "a") -> str:
        return self.file(f"{name}/metrics.json", json.dumps({"n": 10, "ece": 0.1, "per_threshold": {}}))

    def pretrain_recipe(self, **values) -> str:
        base = {"world_dir": "out/world", "world_people": 30, "world_mentions": 60, "output_dir": "out/model"}
        return self.file("p.yaml", json.dumps({**base, **values}))


GOOD = '{"response": "12-03", "answer": "12-03", "confidence": 0.9}'
Build = Callable[[Env], list[str]]
CASES: list[tuple[str, Build, str]] = []  # (id, argv builder, regex the one error line must match)


def case(case_id: str, match: str) -> Callable[[Build], Build]:
    def register(build: Build) -> Build:
        CASES.append((case_id, build, match))
        return build

    return register


def table(rows: list[tuple[str, Build, str]]) -> None:
    CASES.extend(rows)


# ---- files and data rows ---------------------------------------------------------------------------------------

table(
    [
        ("score/not-utf8", lambda e: ["score", e.file("p.jsonl", NOT_UTF8)], r"line 1: not UTF-8"),
        ("singleton/not-utf8", lambda e: ["singleton-rate", e.file("p.jsonl", NOT_UTF8)], r"not UTF-8"),
        (
            "pretrain/recipe-not-utf8",
            lambda e: ["pretrain", e.file("p.yaml", b"epochs: \xff\n")],
            r"p.yaml.*not UTF-8",
        ),
        ("train/recipe-not-utf8", lambda e: ["train", e.file("r.yaml", b"trainer: \xffgrpo\n")], r"r.yaml.*not UTF-8"),
        (
            "eval/recipe-not-utf8",
            lambda e: ["eval", "--recipe", e.file("r.yaml", b"a: \xff\n"), "--out", "o"],
            r"r.yaml.*not UTF-8 text .*line 1",
        ),
        (
            "train/data-not-utf8",
            lambda e: ["train", e.train_recipe(), "--data.source", e.file("d.jsonl", NOT_UTF8)],
            r"d.jsonl: line 1: not UTF-8 text \(invalid start byte",
        ),
        (
            "eval/data-not-utf8",
            lambda e: e.eval_args(data=e.file("d.jsonl", b'{"a": 1}\n' + NOT_UTF8)),
            r"d.jsonl: line 2: not UTF-8 text",
        ),
        (
            "eval/data-csv-not-utf8",
            lambda e: e.eval_args(data=e.file("d.csv", b"question,answer\nq\xfe,a\n")),
            r"d.csv: not UTF-8",
        ),
        (
            "train/model-without-config",
            lambda e: ["train", e.train_recipe(), "--model_name_or_path", e.world],
            r"model folder .* has no config.json",
        ),
        (
            "eval/model-without-config",
            lambda e: e.eval_args("--model", e.world),
            r"model folder .* has no config.json",
        ),
        ("eval/model-is-a-file", lambda e: e.eval_args("--model", e.qa), r"model .*qa.jsonl is a file"),
        ("eval/adapter-without-config", lambda e: e.eval_args("--adapter", e.world), r"no LoRA adapter at"),
        (
            "eval/tokenizer-without-files",
            lambda e: e.eval_args("--tokenizer", e.foreign()),
            r"tokenizer folder theirs has no config.json",
        ),
    ]
)

table(
    [
        ("score/nested-too-deeply", lambda e: ["score", e.preds("[" * 100_000)], r"line 1: JSON nested too deeply"),
        (
            "eval/data-nested-too-deeply",  # pyarrow itself would crash the process (segmentation fault)
            lambda e: e.eval_args(data=e.file("d.jsonl", '{"question": "q", "answer": ' + "[" * 100_000 + "}\n")),
            r"d.jsonl: line 1: JSON nested too deeply",
        ),
        (
            "train/data-row-not-an-object",
            lambda e: ["train", e.train_recipe(), "--data.source", e.file("d.jsonl", '["q", "a"]\n')],
            r"d.jsonl: line 1: expected a JSON object",
        ),
    ]
)

table(
    [
        ("eval/max-new-tokens-huge", lambda e: e.eval_args("--max-new-tokens", "10000000"), r"at most 32768"),
        ("pretrain/vocab-size-huge", lambda e: ["pretrain", e.pretrain_recipe(vocab_size=10**9)], r"vocab_size="),
        ("score/negative-seed", lambda e: ["score", e.preds(GOOD), "--seed", "-1"], r"--seed must be >= 0, got -1"),
        ("eval/negative-seed", lambda e: e.eval_args("--seed", "-1"), r"--seed must be from 0 to 2\*\*32 - 1"),
        ("train/negative-seed", lambda e: ["train", e.train_recipe(seed=-1)], r"training.seed must be from 0"),
        ("train/nan-learning-rate", lambda e: ["train", e.train_recipe(), "--learning_rate", "nan"], r"got nan"),
    ]
)

# ---- recipes and flags -----------------------------------------------------------------------------------------

table(
    [
        (
            "train/negative-learning-rate",
            lambda e: ["train", e.train_recipe(), "--learning_rate=-1e-4"],
            r"training.learning_rate must be a number >= 0",
        ),
        (
            "train/nan-learning-rate-in-yaml",
            lambda e: ["train", e.train_recipe(learning_rate=float("nan"))],
            r"training.learning_rate must be a number >= 0",
        ),
        (
            "train/zero-batch-size",
            lambda e: ["train", e.train_recipe(per_device_train_batch_size=0)],
            r"per_device_train_batch_size must be >= 1, got 0",
        ),
        (
            "train/zero-gradient-accumulation",
            lambda e: ["train", e.train_recipe(), "--gradient_accumulation_steps", "0"],
            r"gradient_accumulation_steps must be >= 1",
        ),
        ("train/max-steps-negative", lambda e: ["train", e.train_recipe(max_steps=-5)], r"max_steps must be >= 1"),
        (
            "train/negative-logging-steps",
            lambda e: ["train", e.train_recipe(logging_steps=-1)],
            r"logging_steps must be > 0",
        ),
        ("train/negative-beta", lambda e: ["train", e.train_recipe(beta=-0.1)], r"training.beta must be >= 0"),
        (
            "train/dry-run-negative-learning-rate",
            lambda e: ["train", e.train_recipe(), "--dry-run", "--learning_rate", "-1"],
            r"learning_rate must be a number >= 0",
        ),
        ("eval/device-not-a-device", lambda e: e.eval_args("--device", "gpu"), r"--device must be auto, cpu, cuda"),
        (
            "score/bins-not-an-int",
            lambda e: ["score", e.preds(GOOD), "--bins", "many"],
            r"argument --bins: invalid int value: 'many' \(see `rlcal score --help`\)",
        ),
        ("world/missing-out", lambda e: ["world", "build"], r"required: --out"),
        ("eval/unknown-flag", lambda e: e.eval_args("--no-such-flag"), r"unrecognized arguments: --no-such-flag"),
    ]
)


@case("eval/device-cuda-without-cuda", r"--device cuda: no CUDA device on this machine")
def _cuda(e: Env) -> list[str]:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    return e.eval_args("--device", "cuda")


# ---- output locations ------------------------------------------------------------------------------------------

table(
    [
        (
            "train/output-under-a-file",
            lambda e: ["train", e.train_recipe(output_dir=f"{e.blocker()}/run")],
            r"cannot write to training.output_dir blocker/run: .*blocker is a file",
        ),
        (
            "train/output-in-proc",
            lambda e: ["train", e.train_recipe(output_dir="/proc/rlcal-x/run")],
            r"cannot write to training.output_dir /proc/rlcal-x/run",
        ),
        (
            "eval/out-under-a-file",
            lambda e: e.eval_args(out=f"{e.blocker()}/eval"),
            r"cannot write to --out blocker/eval: .*blocker is a file",
        ),
        ("eval/out-in-proc", lambda e: e.eval_args(out="/proc/rlcal-x"), r"cannot write to --out /proc/rlcal-x"),
        (
            "score/out-under-a-file",
            lambda e: ["score", e.preds(GOOD), "--out", f"{e.blocker()}/m.json"],
            r"cannot write to --out blocker/m.json",
        ),
        (
            "score/plot-in-proc",
            lambda e: ["score", e.preds(GOOD), "--plot", "/proc/rlcal-x/r.png"],
            r"cannot write to --plot /proc/rlcal-x/r.png",
        ),
        (
            "singleton/out-under-a-file",
            lambda e: ["singleton-rate", e.qa, "--out", f"{e.blocker()}/s.json"],
            r"cannot write to --out blocker/s.json",
        ),
        ("world/out-under-a-file", lambda e: ["world", "build", "--out", f"{e.blocker()}/w"], r"cannot write to"),
        ("world/out-in-proc", lambda e: ["world", "build", "--out", "/proc/rlcal-x"], r"cannot write to"),
        (
            "pretrain/world-dir-under-a-file",
            lambda e: ["pretrain", e.pretrain_recipe(world_dir=f"{e.blocker()}/w")],
            r"cannot write to world_dir blocker/w",
        ),
        (
            "pretrain/world-dir-foreign",
            lambda e: ["pretrain", e.pretrain_recipe(world_dir=e.foreign())],
            r"world_dir theirs holds files this command does not write \(notes.txt\)",
        ),
    ]
)


# ---- silent wrong results: null gold answers, other people's folders, unbounded counts ---------------------------

table(
    [
        (
            "eval/null-gold-answer",
            lambda e: e.eval_args(data=e.file("d.jsonl", '{"question": "q", "answer": null}\n')),
            r"d.jsonl: row 1 has null answer",
        ),
        (
            "eval/empty-gold-answer",
            lambda e: e.eval_args(
                data=e.file("d.jsonl", '{"question": "q", "answer": "1"}\n{"question": "r", "answer": "  "}\n')
            ),
            r"row 2 has empty answer",
        ),
        (
            "eval/null-question",
            lambda e: e.eval_args(data=e.file("d.jsonl", '{"question": null, "answer": "1"}\n')),
            r"row 1 has null question",
        ),
        (
            "eval/answer-is-a-mapping",
            lambda e: e.eval_args(data=e.file("d.jsonl", '{"question": "q", "answer": {"value": "1"}}\n')),
            r"answer .* must be text or a number, got a dict; map a nested field",
        ),
        (
            "train/null-gold-answer",
            lambda e: [
                "train",
                e.train_recipe(),
                "--data.source",
                e.file("d.jsonl", '{"question": "q", "answer": null}\n'),
            ],
            r"row 1 has null answer",
        ),
        (
            "eval/out-is-a-foreign-folder",
            lambda e: e.eval_args(out=e.foreign()),
            r"--out theirs holds files this command does not write \(notes.txt\)",
        ),
        (
            "world/out-is-a-foreign-folder",
            lambda e: ["world", "build", "--out", e.foreign()],
            r"holds files this command does not write",
        ),
        (
            "train/output-is-a-foreign-folder",
            lambda e: ["train", e.train_recipe(output_dir=e.foreign())],
            r"training.output_dir theirs holds files rlcal train did not write \(notes.txt\)",
        ),
        (
            "train/output-is-the-model-folder",
            lambda e: ["train", e.train_recipe(output_dir=e.model)],
            r"holds files rlcal train did not write \(.*config.json",
        ),
        (
            "compare/out-is-a-foreign-folder",
            lambda e: ["compare", e.metrics("a"), e.metrics("b"), "--out", e.foreign()],
            r"holds files this command does not write",
        ),
        (
            "score/bins-huge",
            lambda e: ["score", e.preds(GOOD), "--bins", "1000000000"],
            r"--bins must be an integer from 1 to 10000, got 1000000000",
        ),
        (
            "score/bootstrap-huge",
            lambda e: ["score", e.preds(GOOD), "--bootstrap", "1000000000"],
            r"--bootstrap must be .* up to 100000",
        ),
        ("eval/n-bins-huge", lambda e: e.eval_args("--n-bins", "100000000"), r"--n-bins must be at most 10000"),
        (
            "eval/num-samples-huge",
            lambda e: e.eval_args("--num-samples", "5000"),
            r"--num-samples must be at most 1000",
        ),
        ("eval/bootstrap-huge", lambda e: e.eval_args("--bootstrap", "10000000"), r"--bootstrap must be from 0"),
        (
            "train/calibration-bins-huge",
            lambda e: ["train", e.train_recipe(), "--calibration.data", e.qa, "--calibration.n_bins", "1000000"],
            r"calibration.n_bins must be at most 10000",
        ),
        (
            "world/people-huge",
            lambda e: ["world", "build", "--out", "w", "--people", "1000000000"],
            r"people must be at most 1,000,000",
        ),
        (
            "pretrain/world-mentions-huge",
            lambda e: ["pretrain", e.pretrain_recipe(world_mentions=10**11)],
            r"mentions must be at most 10,000,000",
        ),
    ]
)

# ---- the rest of each command's inputs (most were one line already; the table keeps them so) -------------------

table(
    [
        ("score/missing-file", lambda e: ["score", "nope.jsonl"], r"predictions file not found: nope.jsonl"),
        ("score/file-is-a-folder", lambda e: ["score", e.foreign()], r"theirs is a directory"),
        ("score/invalid-json", lambda e: ["score", e.preds(GOOD, "{oops")], r"line 2: invalid JSON"),
        ("score/record-not-an-object", lambda e: ["score", e.preds("[1, 2]")], r"line 1: expected a JSON object"),
        (
            "score/confidence-out-of-range",
            lambda e: ["score", e.preds('{"confidence": 1.5, "correct": true}')],
            r"'confidence' must be a number in \[0, 1\]",
        ),
        (
            "score/threshold-one",
            lambda e: ["score", e.preds('{"confidence": 0.5, "correct": true, "threshold": 1}')],
            r"'threshold' must be a number in \[0, 1\)",
        ),
        (
            "score/response-without-answer",
            lambda e: ["score", e.preds('{"response": "12-03"}')],
            r"missing field 'answer'",
        ),
        ("score/empty-file", lambda e: ["score", e.preds()], r"no records"),
        ("score/zero-bins", lambda e: ["score", e.preds(GOOD), "--bins", "0"], r"--bins must be an integer from 1"),
        ("score/negative-bootstrap", lambda e: ["score", e.preds(GOOD), "--bootstrap", "-1"], r"--bootstrap must be"),
        (
            "score/out-is-a-folder",
            lambda e: ["score", e.preds(GOOD), "--out", e.foreign()],
            r"--out theirs is a direct",
        ),
        (
            "score/unknown-grader",
            lambda e: ["score", e.preds(GOOD), "--grader", "fuzzy"],
            r"argument --grader: invalid",
        ),
        ("singleton/missing-file", lambda e: ["singleton-rate", "nope.jsonl"], r"nope.jsonl"),
        ("singleton/invalid-json", lambda e: ["singleton-rate", e.preds("{oops")], r"preds.jsonl"),
        ("singleton/empty-file", lambda e: ["singleton-rate", e.preds()], r"preds.jsonl"),
        ("singleton/negative-delta", lambda e: ["singleton-rate", e.qa, "--delta", "-0.5"], r"--delta must be"),
        ("singleton/zero-min-ec", lambda e: ["singleton-rate", e.qa, "--min-ec", "0"], r"--min-ec must be > 0"),
        ("world/zero-people", lambda e: ["world", "build", "--out", "w", "--people", "0"], r"people must be > 0"),
        ("world/zipf-out-of-range", lambda e: ["world", "build", "--out", "w", "--zipf", "100"], r"zipf must be"),
        (
            "world/unknown-family",
            lambda e: ["world", "build", "--out", "w", "--families", "dragons"],
            r"unknown families \['dragons'\]",
        ),
        ("world/negative-seed", lambda e: ["world", "build", "--out", "w", "--seed", "-1"], r"seed must be >= 0"),
        ("world/out-is-a-file", lambda e: ["world", "build", "--out", e.blocker()], r"exists and is not a folder"),
        ("pretrain/missing-recipe", lambda e: ["pretrain", "nope.yaml"], r"recipe not found: nope.yaml"),
        ("pretrain/invalid-yaml", lambda e: ["pretrain", e.file("p.yaml", "epochs: [1\n")], r"not valid YAML"),
        ("pretrain/recipe-is-a-list", lambda e: ["pretrain", e.file("p.yaml", "- 1\n")], r"must be a YAML mapping"),
        ("pretrain/unknown-key", lambda e: ["pretrain", e.pretrain_recipe(epoch=3)], r"unknown keys epoch"),
        (
            "pretrain/negative-learning-rate",
            lambda e: ["pretrain", e.pretrain_recipe(learning_rate=-1)],
            r"learning_rate=-1",
        ),
        ("pretrain/zero-batch-size", lambda e: ["pretrain", e.pretrain_recipe(batch_size=0)], r"batch_size=0"),
        (
            "pretrain/output-under-a-file",
            lambda e: ["pretrain", e.pretrain_recipe(output_dir=f"{e.blocker()}/m")],
            r"cannot write to output directory blocker/m",
        ),
        (
            "pretrain/output-is-a-foreign-folder",
            lambda e: ["pretrain", e.pretrain_recipe(output_dir=e.foreign())],
            r"theirs exists and is not a model directory",
        ),
        ("train/no-recipe", lambda e: ["train"], r"no recipe given"),
        ("train/missing-recipe", lambda e: ["train", "nope.yaml"], r"recipe not found: nope.yaml"),
        ("train/invalid-yaml", lambda e: ["train", e.file("r.yaml", "model: [\n")], r"r.yaml: invalid YAML"),
        (
            "train/unknown-override",
            lambda e: ["train", e.train_recipe(), "--learning_rat", "1e-4"],
            r"did you mean 'learning_rate'",
        ),
        (
            "train/unknown-trainer",
            lambda e: ["train", e.train_recipe(), "--trainer", "dpo"],
            r"trainer must be one of",
        ),
        (
            "train/threshold-out-of-range",
            lambda e: ["train", e.train_recipe(), "--reward.threshold", "2"],
            r"threshold must be in \[0, 1\)",
        ),
        (
            "train/generations-do-not-divide",
            lambda e: ["train", e.train_recipe(), "--num_generations", "3"],
            r"num_generations \(3\) must divide",
        ),
        (
            "train/data-file-missing",
            lambda e: ["train", e.train_recipe(), "--data.source", "nope.jsonl"],
            r"data file not found: nope.jsonl",
        ),
        (
            "train/data-missing-column",
            lambda e: ["train", e.train_recipe(), "--data.source", e.file("d.jsonl", '{"q": "x", "answer": "1"}\n')],
            r"missing column 'question'",
        ),
        (
            "eval/data-missing-column",
            lambda e: e.eval_args(data=e.file("d.jsonl", '{"q": "x", "answer": "1"}\n')),
            r"missing column 'question'",
        ),
        ("eval/threshold-out-of-range", lambda e: e.eval_args("--thresholds", "0,1.5"), r"bad threshold '1.5'"),
        ("eval/zero-batch-size", lambda e: e.eval_args("--batch-size", "0"), r"--batch-size must be >= 1"),
        ("eval/no-out", lambda e: e.eval_args()[:-2], r"required: --out"),
        (
            "eval/recipe-without-eval-set",
            lambda e: ["eval", "--recipe", e.train_recipe(), "--out", "o"],
            r"calibration.data is not set",
        ),
        ("compare/missing-file", lambda e: ["compare", "a/metrics.json", e.metrics("b")], r"metrics file not found"),
        (
            "compare/not-json",
            lambda e: ["compare", e.file("a/metrics.json", "{oops"), e.metrics("b")],
            r"is not valid JSON",
        ),
        (
            "compare/not-utf8",
            lambda e: ["compare", e.file("a/metrics.json", b'{"n": "\xff"}'), e.metrics("b")],
            r"a/metrics.json",
        ),
        (
            "compare/not-an-object",
            lambda e: ["compare", e.file("a/metrics.json", "[1]"), e.metrics("b")],
            r"must hold a JSON object",
        ),
        (
            "compare/out-under-a-file",
            lambda e: ["compare", e.metrics("a"), e.metrics("b"), "--out", f"{e.blocker()}/c"],
            r"cannot write to --out blocker/c",
        ),
        ("demo/negative-seed", lambda e: ["demo", "--quick", "--seed", "-1", "--out", "d"], r"--seed must be >= 0"),
        ("demo/out-under-a-file", lambda e: ["demo", "--quick", "--out", f"{e.blocker()}/d"], r"cannot write to"),
        ("demo/out-in-proc", lambda e: ["demo", "--quick", "--out", "/proc/rlcal-x"], r"cannot write to"),
        ("demo/out-is-a-file", lambda e: ["demo", "--quick", "--out", e.blocker()], r"cannot write to"),
        ("demo/unknown-flag", lambda e: ["demo", "--fast"], r"unrecognized arguments: --fast"),
    ]
)

# ---- running the table -----------------------------------------------------------------------------------------


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry under `root` (hidden ones included) with its size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            out[str(path.relative_to(root))] = (st.st_size if path.is_file() else 0, st.st_mtime_ns)
    return out


@pytest.fixture
def env(tmp_path, monkeypatch, tiny_model_dir, tiny_world_dir) -> Env:
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return Env(work, tiny_model_dir, tiny_world_dir)


def assert_one_error_line(rc: int, err: str, command: str, match: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    assert lines[0].startswith(f"rlcal {command}: error: "), lines[0]
    assert re.search(match, lines[0]), f"{match!r} not in {lines[0]!r}"


@pytest.mark.parametrize(("build", "match"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(env, capsys, build, match):
    argv = build(env)
    before = tree(env.tmp)
    rc = main(argv)
    captured = capsys.readouterr()
    assert_one_error_line(rc, captured.err, argv[0], match)
    assert tree(env.tmp) == before, "the failed command changed its folder"


def test_the_table_covers_every_command():
    from rlcal.cli import COMMANDS

    covered = {case_id.split("/")[0] for case_id, _, _ in CASES}
    assert {"singleton-rate" if c == "singleton" else c for c in covered} == set(COMMANDS)
    assert len(CASES) >= 60 and len({case_id for case_id, _, _ in CASES}) == len(CASES)


# ---- the real process: library warnings and log lines would show here ------------------------------------------

SUBPROCESS_CASES = ["score/not-utf8", "train/negative-learning-rate", "eval/model-without-config"]


@pytest.mark.parametrize("case_id", SUBPROCESS_CASES)
def test_bad_input_in_a_real_process_prints_one_line(env, case_id):
    build, match = next((b, m) for i, b, m in CASES if i == case_id)
    argv = build(env)
    before = tree(env.tmp)
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    environment.pop("WANDB_MODE", None)  # transformers prints "[INFO] Running in WANDB offline mode" on import
    done = subprocess.run(
        [sys.executable, "-m", "rlcal.cli", *argv], capture_output=True, text=True, env=environment,
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip
    assert_one_error_line(done.returncode, done.stderr, argv[0], match)
    assert done.stdout == ""
    assert tree(env.tmp) == before


# ---- the rules behind the table --------------------------------------------------------------------------------


def test_train_output_dir_of_its_own_is_accepted_for_resuming(tmp_path):
    """A folder rlcal train wrote (a checkpoint, its log, its recipe; with the adapter files TRL adds) may be
    trained into again: resuming and re-running are the other engineer's rules, not refused here."""
    from rlcal.common.errors import RlcalError
    from rlcal.training.config import parse_recipe
    from rlcal.training.models import check_output_dir

    def recipe(out):
        return parse_recipe({
            "model": {"model_name_or_path": "m"}, "data": {"source": "d.jsonl"},
            "training": {"output_dir": str(out), "scale_rewards": "batch", "report_to": []},
        })  # fmt: skip

    own = tmp_path / "own"
    (own / "checkpoint-2").mkdir(parents=True)
    (own / "adapter_model.safetensors").write_bytes(b"")
    check_output_dir(recipe(own))
    for marker in ("train_log.jsonl", "rlcal_recipe.yaml"):
        alone = tmp_path / marker.split(".")[0]
        alone.mkdir()
        (alone / marker).write_text("")
        (alone / "README.md").write_text("")  # PEFT writes one next to the adapter
        check_output_dir(recipe(alone))
    check_output_dir(recipe(tmp_path / "new"))  # missing: created later, by the run
    (tmp_path / "empty").mkdir()
    check_output_dir(recipe(tmp_path / "empty"))
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "README.md").write_text("")
    with pytest.raises(RlcalError, match="did not write"):
        check_output_dir(recipe(tmp_path / "theirs"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "own", "rlcal_recipe", "theirs", "train_log"]


def test_eval_rows_refuse_a_null_or_blank_gold_answer():
    """The library path of `rlcal eval` (and of the calibration callback) refuses what the loader refuses."""
    from rlcal.common.errors import RlcalError
    from rlcal.evaluation.evaluate import _rows

    assert _rows([{"question": "q", "answer": 3}])[0]["answer"] == "3"
    with pytest.raises(RlcalError, match="eval row 1 has null answer"):
        _rows([{"question": "q", "answer": "1"}, {"question": "r", "answer": None}])
    with pytest.raises(RlcalError, match="eval row 0 has empty answer"):
        _rows([{"question": "q", "answer": ""}])


def test_check_creatable_makes_nothing(tmp_path):
    from rlcal.common.errors import RlcalError
    from rlcal.common.files import check_creatable

    check_creatable(tmp_path / "a" / "b" / "c")
    check_creatable(tmp_path / "a" / "b", beside=True)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(RlcalError, match="f is a file, not a folder"):
        check_creatable(tmp_path / "f" / "x" / "y")
    with pytest.raises(RlcalError, match="cannot write to"):
        check_creatable("/proc/rlcal-no/such")
    assert [p.name for p in tmp_path.iterdir()] == ["f"]


def test_interrupt_is_exit_130_and_one_line(env, capsys, monkeypatch):
    """Ctrl-C: `rlcal CMD: interrupted`, exit 130, and (score writes all or nothing) no output file."""
    import rlcal.evaluation.score as score

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(score, "render_plot", interrupted)
    before = tree(env.tmp)
    preds = env.preds(GOOD)
    before = tree(env.tmp)
    assert main(["score", preds, "--out", "m.json", "--plot", "r.png"]) == 130
    assert capsys.readouterr().err == "rlcal score: interrupted\n"
    assert tree(env.tmp) == before


def test_check_creatable_on_a_non_main_process_writes_nothing(tmp_path, monkeypatch):
    """Process 1 of a distributed run only looks (the main process probes); a file in the way is still refused."""
    from rlcal.common.errors import RlcalError
    from rlcal.common.files import check_creatable

    monkeypatch.setenv("RANK", "1")
    calls = []
    monkeypatch.setattr("tempfile.mkdtemp", lambda *a, **k: calls.append(a) or "/nonexistent")
    check_creatable(tmp_path / "run")
    (tmp_path / "f").write_text("")
    with pytest.raises(RlcalError, match="is a file"):
        check_creatable(tmp_path / "f" / "run")
    assert calls == [] and [p.name for p in tmp_path.iterdir()] == ["f"]
