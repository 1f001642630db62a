"""`rlcal eval` and `rlcal.evaluation.evaluate`: metrics from predictions, the shared `evaluate_model`, the CLI end to end
(plain/chat prompts, LoRA adapters) and its bad-input errors. Runs on a nano Llama trained for a few seconds."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.core import metrics as M
from rlcal.evaluation.sweep import compute_metrics, parse_thresholds, threshold_key

TOY_THRESHOLDS = (0.0, 0.5, 0.75, 0.9)


def person(i: int) -> str:
    return f"When was Person {i} born?"


_TOY_MODELS: dict[str, str] = {}


def toy_qa_model(base_dir: str, out_dir: str, steps: int = 120) -> str:
    """The fixture's nano Llama, trained (answer tokens only) to reply " 48" or a random guess at t = 0 and
    "I don't know" at t >= 0.75: replies end with <eos>, grade as correct, wrong or abstain, with real probabilities.
    Trained once per session (test_confidence and test_callbacks import this; the first `out_dir` is kept)."""
    if base_dir not in _TOY_MODELS:
        _TOY_MODELS[base_dir] = _train_toy_qa_model(base_dir, out_dir, steps)
    return _TOY_MODELS[base_dir]


def _train_toy_qa_model(base_dir: str, out_dir: str, steps: int) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcal.core.prompts import PromptTemplate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a nano model gains nothing from threads, and they thrash on a busy machine
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir)
    template, rng = PromptTemplate(), random.Random(0)
    prompts, answers = [], []
    for i in range(40):
        for t in TOY_THRESHOLDS:
            if t >= 0.75 or (t == 0.5 and i % 2):
                answer = "I don't know"
            else:
                answer = "48" if rng.random() < 0.6 else f"{rng.randrange(10, 100)}"
            prompts.append(template.render(person(i), t))
            answers.append(f" {answer}{tok.eos_token}")
    prompt_lens = [len(tok(p)["input_ids"]) for p in prompts]
    enc = tok(
        [p + a for p, a in zip(prompts, answers, strict=True)], return_tensors="pt", padding=True, padding_side="right"
    )
    labels = enc.input_ids.clone()
    labels[enc.attention_mask == 0] = -100
    for row, n in enumerate(prompt_lens):
        labels[row, :n] = -100
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(steps):
        idx = torch.randint(0, len(prompts), (16,))
        loss = model(input_ids=enc.input_ids[idx], attention_mask=enc.attention_mask[idx], labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    torch.set_num_threads(threads)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


def write_qa(path: Path, n: int = 12, **extra) -> Path:
    """Eval questions: gold "48" for even i (the toy model's usual reply), "17" for odd i; split column too."""
    with path.open("w") as fh:
        for i in range(n):
            row = {"question": person(i), "answer": "48" if i % 2 == 0 else "17", "split": "eval", **extra}
            fh.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(scope="module")
def toy_model(tiny_model_dir, tmp_path_factory) -> str:
    return toy_qa_model(tiny_model_dir, str(tmp_path_factory.mktemp("toy_qa")))


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_qa(tmp_path_factory.mktemp("qa") / "qa.jsonl")


def run_cli(*argv: str) -> int:
    return main([str(a) for a in argv])


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


def assert_close(a, b, rel: float = 1e-5, path: str = "") -> None:
    """Nested dicts/lists equal, floats to `rel` (batch composition changes float sums in the last digits)."""
    if isinstance(a, dict) and isinstance(b, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_close(a[k], b[k], rel, f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rel, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, rel=rel, abs=1e-9), path
    else:
        assert a == b, path


# ---- metrics from predictions (pure) -----------------------------------------------------------------------------

outcomes = st.sampled_from(["correct", "wrong", "abstain"])


@st.composite
def prediction_sets(draw):
    n = draw(st.integers(1, 25))
    thresholds = sorted({0.0, *draw(st.lists(st.sampled_from([0.25, 0.5, 0.75, 0.9]), max_size=3))})
    preds = []
    for i in range(n):
        for t in thresholds:
            outcome = draw(outcomes)
            preds.append(
                {
                    "index": i,
                    "threshold": t,
                    "outcome": outcome,
                    "correct": outcome == "correct",
                    "answered": outcome != "abstain",
                    "confidence": draw(st.floats(0, 1)),
                }
            )
    draw(st.randoms()).shuffle(preds)  # order must not matter
    return thresholds, preds


@given(prediction_sets())
@settings(max_examples=60, deadline=None)
def test_compute_metrics_matches_the_metric_functions(case):
    thresholds, preds = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = compute_metrics(preds, thresholds, "answer_prob", n_bins=10)
    t0 = sorted((p for p in preds if p["threshold"] == 0.0), key=lambda p: p["index"])
    answered = [p for p in t0 if p["answered"]]
    assert m["n_questions"] == len(t0) and m["n"] == len(answered)
    assert m["abstain_rate"] == pytest.approx(1 - len(answered) / len(t0))
    if answered:  # ECE etc. over the answered questions at the t = 0 prompt
        conf, corr = [p["confidence"] for p in answered], [p["correct"] for p in answered]
        assert m["ece"] == pytest.approx(M.ece(conf, corr, 10))
        assert m["brier"] == pytest.approx(M.brier(conf, corr))
        assert m["reliability"] == M.reliability_bins(conf, corr, 10)
    else:
        assert m["ece"] is None and m["reliability"] == []
    ideal_conf = [p["confidence"] if p["answered"] else 0.0 for p in t0]
    for t in thresholds:
        rows = [p for p in preds if p["threshold"] == t]
        key = threshold_key(t)
        measured = m["per_threshold"][key]
        assert measured["n"] == len(t0)
        assert measured["answer_rate"] == pytest.approx(sum(p["answered"] for p in rows) / len(rows))
        assert measured["hallucination_rate"] == pytest.approx(sum(p["outcome"] == "wrong" for p in rows) / len(rows))
        ideal = M.ideal_policy(ideal_conf, [p["correct"] for p in t0], t)
        sweep = m["sweep"][key]
        for k in ("answer_rate", "accuracy_answered", "hallucination_rate", "score"):
            assert sweep["measured"][k] == measured[k]
            assert sweep["ideal"][k] == ideal[k]
            if measured[k] is not None and ideal[k] is not None:
                assert sweep["gap"][k] == pytest.approx(measured[k] - ideal[k])
    json.dumps(m, allow_nan=False)  # JSON-ready


@settings(deadline=None)  # the first example imports accelerate
@given(st.integers(1, 50), st.integers(1, 8))  # never 0 rows: an empty eval set is refused before sharding
def test_shards_cover_every_row_once_with_equal_padded_length(n, world):
    from accelerate import PartialState

    from rlcal.evaluation.evaluate import shard

    class Process:  # accelerate's split on `world` processes, seen from process `rank`, without starting them
        split_between_processes = PartialState.split_between_processes

        def __init__(self, rank: int) -> None:
            self.process_index, self.num_processes = rank, world

    covered, lengths = [], set()
    for rank in range(world):
        indices, real = shard(Process(rank), n)
        assert 0 <= real <= len(indices)
        assert indices[:real] == list(range(indices[0], indices[0] + real))  # contiguous
        covered += indices[:real]
        lengths.add(len(indices))
    assert covered == list(range(n)) and len(lengths) == 1


def test_parse_thresholds():
    assert parse_thresholds("0.5, 0.9,0.5") == [0.0, 0.5, 0.9]
    assert parse_thresholds([0.75]) == [0.0, 0.75]
    assert threshold_key(0.0) == "0" and threshold_key(0.75) == "0.75"
    for bad in ("1.0", "-0.1", "abc", "nan"):
        with pytest.raises(RlcalError, match="threshold"):
            parse_thresholds(bad)


# ---- evaluate_model and `rlcal eval` -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(toy_model):
    from rlcal.evaluation.models import load_model

    return load_model(toy_model, device="cpu")


def test_evaluate_model_schema_and_consistency(loaded, qa_file):
    from rlcal.data.qa import load_qa_dataset
    from rlcal.evaluation.evaluate import evaluate_model

    model, tok = loaded
    metrics, preds = evaluate_model(model, tok, load_qa_dataset(str(qa_file)), max_new_tokens=8, progress=False)
    assert len(preds) == 12 * 4 and metrics["thresholds"] == [0.0, 0.5, 0.75, 0.9]
    for key in ("n", "ece", "ece_equal_mass", "mce", "brier", "auroc", "abstain_rate", "hallucination_rate"):
        assert key in metrics
    assert metrics["confidence_method"] == "answer_prob"
    assert set(metrics["per_threshold"]) == set(metrics["sweep"]) == {"0", "0.5", "0.75", "0.9"}
    for values in metrics["per_threshold"].values():
        assert {"n", "answer_rate", "accuracy_answered", "hallucination_rate", "score"} <= set(values)
    # the toy model answers " 48" at t = 0 (right for even questions) and abstains at t >= 0.75
    t0 = [p for p in preds if p["threshold"] == 0.0]
    assert {p["response"].strip() for p in t0} == {"48"} and metrics["accuracy"] == 0.5
    assert metrics["per_threshold"]["0.9"]["answer_rate"] == 0.0
    assert all(p["confidence"] == p["answer_prob"] for p in preds)
    assert metrics["ece"] == pytest.approx(M.ece([p["confidence"] for p in t0], [p["correct"] for p in t0]))
    fp = metrics["fingerprint"]
    assert fp["thresholds"] == [0.0, 0.5, 0.75, 0.9] and fp["n_items"] == 48 and fp["calibration_at"] == 0.0
    fewer, _ = evaluate_model(model, tok, load_qa_dataset(str(qa_file)).select(range(11)), max_new_tokens=8, progress=False)
    assert fewer["fingerprint"]["eval_set"] != fp["eval_set"]  # one question fewer: another eval set


def test_posthoc_policy_withholds_exactly_the_answers_with_confidence_at_most_t(loaded, qa_file):
    """`policy="posthoc"`: one reply per question at the t = 0 prompt, kept at t iff its confidence > t. Checked
    against the prompt policy's own t = 0 predictions (same greedy pass), not against a re-implementation."""
    from rlcal.data.qa import load_qa_dataset
    from rlcal.evaluation.evaluate import evaluate_model

    model, tok = loaded
    rows = load_qa_dataset(str(qa_file))
    grid = [0.0, 0.3, 0.5, 0.9]
    _, prompt_preds = evaluate_model(model, tok, rows, thresholds=grid, max_new_tokens=8, progress=False)
    metrics, preds = evaluate_model(
        model, tok, rows, thresholds=grid, max_new_tokens=8, progress=False, policy="posthoc"
    )
    # the policy is what is compared, not part of the eval set: both runs carry the same fingerprint
    assert metrics["fingerprint"] == evaluate_model(model, tok, rows, thresholds=grid, max_new_tokens=8,
                                                    progress=False)[0]["fingerprint"]
    assert metrics["settings"]["policy"] == "posthoc" and len(preds) == 12 * len(grid)
    t0 = {p["index"]: p for p in prompt_preds if p["threshold"] == 0.0}
    for p in preds:
        base = t0[p["index"]]
        # another batch composition (t = 0 prompts only) moves the float sums in the last digits, nothing more
        assert p["response"] == base["response"] and p["confidence"] == pytest.approx(base["confidence"], abs=1e-5)
        kept = p["threshold"] == 0.0 or p["confidence"] > p["threshold"]
        assert p["answered"] == (kept and base["answered"])
        assert p["outcome"] == (base["outcome"] if kept else "abstain")
    # Monotone by construction, and the t = 0 row is the prompt policy's t = 0 row.
    assert metrics["behavioral_monotone_share"] == 1.0
    assert metrics["per_threshold"]["0"]["accuracy_answered"] == pytest.approx(
        sum(p["correct"] for p in t0.values()) / len(t0)
    )
    with pytest.raises(RlcalError, match="policy"):
        evaluate_model(model, tok, rows, policy="after", progress=False)


def test_other_confidence_methods(loaded, qa_file):
    from rlcal.evaluation.evaluate import evaluate_model

    model, tok = loaded
    rows = [json.loads(line) for line in qa_file.read_text().splitlines()][:4]
    m, preds = evaluate_model(
        model,
        tok,
        rows,
        thresholds=[0.9],
        confidence_method="agreement",
        num_samples=4,
        max_new_tokens=6,
        progress=False,
    )
    assert m["confidence_method"] == "agreement" and m["settings"]["num_samples"] == 4
    assert all(p["confidence"] in (0, 0.25, 0.5, 0.75, 1) for p in preds if p["threshold"] == 0)
    assert all(p["confidence"] is None for p in preds if p["threshold"] == 0.9)  # sampled at t = 0 only
    m, preds = evaluate_model(model, tok, rows, confidence_method="answer_prob_norm", max_new_tokens=6, progress=False)
    assert all(p["confidence"] == p["answer_prob_norm"] >= p["answer_prob"] for p in preds)
    with pytest.warns(UserWarning, match="undefined"):  # the toy model never states a confidence
        m, _ = evaluate_model(model, tok, rows, confidence_method="verbal", max_new_tokens=6, progress=False)
    assert m["n"] == 0 and m["ece"] is None and m["n_no_confidence"] == 4
    with pytest.raises(RlcalError, match="empty"):
        evaluate_model(model, tok, [], progress=False)


def test_cli_eval_end_to_end(toy_model, qa_file, loaded, tmp_path, capsys):
    from rlcal.data.qa import load_qa_dataset
    from rlcal.evaluation.evaluate import evaluate_model

    out = tmp_path / "eval"
    args = [
        "--model",
        toy_model,
        "--data",
        qa_file,
        "--split-filter",
        "eval",
        "--max-new-tokens",
        8,
        "--batch-size",
        7,
    ]
    assert run_cli("eval", *args, "--out", out) == 0
    assert "ECE" in capsys.readouterr().out
    metrics = load_json(out / "metrics.json")
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 48 and metrics["source"]["model"] == toy_model
    assert (out / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left
    # the CLI and the library give the same numbers (the callback relies on the same function)
    model, tok = loaded
    lib, _ = evaluate_model(model, tok, load_qa_dataset(str(qa_file)), max_new_tokens=8, batch_size=7, progress=False)
    assert_close({k: v for k, v in metrics.items() if k != "source"}, lib)
    # `rlcal score` on the predictions file regrades the responses and reproduces the per-threshold numbers, and on
    # the t = 0 rows the calibration numbers: the two commands share one schema and one grader.
    assert run_cli("score", out / "predictions.jsonl", "--out", tmp_path / "score.json") == 0
    assert_close(load_json(tmp_path / "score.json")["per_threshold"], metrics["per_threshold"])
    t0 = tmp_path / "t0.jsonl"
    t0.write_text("".join(json.dumps(p) + "\n" for p in preds if p["threshold"] == 0))
    assert run_cli("score", t0, "--out", tmp_path / "score_t0.json") == 0
    scored = load_json(tmp_path / "score_t0.json")
    assert_close(
        {k: scored[k] for k in ("ece", "ece_equal_mass", "mce", "brier", "auroc")},
        {k: metrics[k] for k in ("ece", "ece_equal_mass", "mce", "brier", "auroc")},
    )


def test_cli_eval_chat_format_and_custom_columns(toy_model, tmp_path):
    data = tmp_path / "qa.csv"
    data.write_text("q,gold\n" + "".join(f"{person(i)},48\n" for i in range(3)))
    out = tmp_path / "chat"
    assert (
        run_cli(
            "eval",
            "--model",
            toy_model,
            "--data",
            data,
            "--question-column",
            "q",
            "--answer-column",
            "gold",
            "--format",
            "chat",
            "--thresholds",
            "0.5",
            "--out",
            out,
            "--max-new-tokens",
            4,
        )
        == 0
    )
    metrics = load_json(out / "metrics.json")
    assert metrics["settings"]["format"] == "chat" and set(metrics["per_threshold"]) == {"0", "0.5"}


def make_adapter(model_dir: str, out: Path, size: str | None = None, layers: int | None = None) -> Path:
    """A LoRA adapter for the model in `model_dir`, or for a model of another `size` / number of `layers`."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlcal.world.toymodel import tiny_config

    if size is None and layers is None:
        model = AutoModelForCausalLM.from_pretrained(model_dir)
    else:
        config = tiny_config(AutoTokenizer.from_pretrained(model_dir), size=size or "nano")
        config.num_hidden_layers = layers or config.num_hidden_layers
        model = AutoModelForCausalLM.from_config(config)
    config = LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(out)
    return out


def test_cli_eval_with_lora_adapter(toy_model, qa_file, tmp_path):
    adapter = make_adapter(toy_model, tmp_path / "adapter")
    base_out, lora_out = tmp_path / "base", tmp_path / "lora"
    common = ["--data", qa_file, "--thresholds", "0", "--max-new-tokens", 6]
    assert run_cli("eval", "--model", toy_model, *common, "--out", base_out) == 0
    assert run_cli("eval", "--model", toy_model, "--adapter", adapter, *common, "--bootstrap", 0, "--out", lora_out) == 0
    assert "ci" in load_json(base_out / "metrics.json")["per_threshold"]["0"]  # intervals by default
    assert "ci" not in load_json(lora_out / "metrics.json")["per_threshold"]["0"]  # --bootstrap 0: none
    base = [json.loads(x)["answer_prob"] for x in (base_out / "predictions.jsonl").read_text().splitlines()]
    lora = [json.loads(x)["answer_prob"] for x in (lora_out / "predictions.jsonl").read_text().splitlines()]
    assert base != pytest.approx(lora, rel=1e-3)  # the adapter is really applied


def test_cli_eval_bad_input(toy_model, qa_file, tmp_path, capsys):
    def fails(*argv, match):
        out = tmp_path / "never"
        assert run_cli("eval", *argv, "--out", out) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rlcal eval: error:")]
        assert len(errors) == 1 and match in errors[0], errors  # one clear line
        assert not out.exists()  # nothing written

    base = ["--model", toy_model]
    wrong_size = make_adapter(toy_model, tmp_path / "adapter_tiny", size="tiny")
    fails(*base, "--data", qa_file, "--adapter", wrong_size, match="does not match")
    deeper = make_adapter(toy_model, tmp_path / "adapter_3_layers", layers=3)  # same shapes, one layer too many
    fails(*base, "--data", qa_file, "--adapter", deeper, match="does not match")
    fails(*base, "--data", qa_file, "--adapter", tmp_path, match="no LoRA adapter")
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"question": "Q?", "gold": "x"}) + "\n")
    fails(*base, "--data", no_answer, match="missing column")
    fails(*base, "--data", qa_file, "--split-filter", "test", match="no rows")
    fails(*base, "--data", qa_file, "--thresholds", "0.5,1", match="threshold")
    fails(*base, "--data", qa_file, "--thresholds=-0.2", match="threshold")
    fails("--model", tmp_path / "nope", "--data", qa_file, match="model not found")
    fails(*base, "--data", tmp_path / "nope.jsonl", match="not found")
    fails(*base, "--data", qa_file, "--batch-size", 0, match="batch-size")
    fails(*base, "--data", qa_file, "--bootstrap", -1, match="--bootstrap")
    from transformers import AutoTokenizer

    plain_tok = AutoTokenizer.from_pretrained(toy_model)
    plain_tok.chat_template = None
    plain_tok.save_pretrained(tmp_path / "tok")
    fails(*base, "--tokenizer", tmp_path / "tok", "--data", qa_file, "--format", "chat", match="chat template")


def test_a_hub_model_id_is_tried_and_an_unreachable_one_is_one_clear_error(tmp_path, qa_file):
    """`--model org/name` goes to the Hub (not rejected as a missing folder); offline, that fails in one line."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    argv = ["eval", "--model", "nobody/no-such-model", "--data", str(qa_file), "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, "-m", "rlcal.cli", *argv], capture_output=True, text=True, env=env, timeout=120
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "could not load model nobody/no-such-model" in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


# ---- the QA task of `rlcal eval`: flags derived from QATask, and --recipe ----------------------------------------

CUSTOM_INSTRUCTION = "Only answer if you are over {t_percent} sure; a wrong answer costs {penalty_points}."


def eval_args(*argv):
    import argparse

    from rlcal.evaluation.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([str(a) for a in argv] + ["--out", "unused"])


def write_split_qa(path: Path) -> Path:
    """Questions 0-5 for training (split rl_train), 6-11 held out (split eval)."""
    rows = [{"question": person(i), "answer": "48", "split": "rl_train" if i < 6 else "eval"} for i in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_recipe(path: Path, qa: Path, output_dir: Path, data=None, reward=None, calibration=None) -> Path:
    import yaml

    raw = {
        "model": {"model_name_or_path": "some/base-model"},
        "data": {"source": str(qa), "split_filter": "rl_train", **(data or {})},
        "reward": {"name": "confidence_target", "threshold": {"choice": [0.0, 0.5, 0.75, 0.9]}, **(reward or {})},
        "training": {
            "output_dir": str(output_dir),
            "num_generations": 2,
            "per_device_train_batch_size": 2,
            "scale_rewards": "batch",
        },
        "calibration": {"data": str(qa), "split_filter": "eval", **(calibration or {})},
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_the_eval_parser_exposes_exactly_the_task_fields():
    import argparse
    from dataclasses import fields

    from rlcal.data.task import TASK_FIELDS, QATask
    from rlcal.evaluation.command import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    group = next(g for g in parser._action_groups if g.title.startswith("QA task"))
    actions = {a.dest: a for a in group._group_actions}
    assert set(actions) == set(TASK_FIELDS) | {"question_column", "answer_column", "aliases_column"}
    for f in fields(QATask):
        assert actions[f.name].help.startswith(f.metadata["help"])  # one help text, the dataclass's
    # every spelling README.md and docs/ use keeps working
    args = eval_args(
        *("--data", "qa.jsonl", "--split", "validation", "--subset", "rc", "--split-filter", "eval"),
        *("--question-column", "q", "--answer-column", "answer.value", "--aliases-column", "answer.aliases"),
        *("--format", "chat", "--system-prompt", "S", "--grader", "contains", "--max-samples", 3),
        *("--weight-column", "popularity", "--instruction", "I {t}", "--instruction-t0", "I0"),
        *("--template", "{instruction}: {question}", "--abstain-phrases", "pass", "no idea", "--split-column", "part"),
    )
    assert vars(eval_args("--source", "qa.jsonl", "--prompt-format", "chat")).items() >= {
        "source": "qa.jsonl",
        "prompt_format": "chat",
    }.items()
    from rlcal.evaluation.command import eval_task

    task = eval_task(args)
    assert task.columns == {"question": "q", "answer": "answer.value", "aliases": "answer.aliases"}
    assert (task.subset, task.split, task.max_samples) == ("rc", "validation", 3)
    assert task.abstain_phrases == ["pass", "no idea"] and task.split_column == "part"
    assert task.prompt_template().render("Q", 0.5) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "I 0.5: Q"},
    ]


@pytest.mark.parametrize("fmt", ["plain", "chat"])
def test_eval_with_the_recipe_reproduces_the_training_prompts_byte_for_byte(tmp_path, fmt):
    from rlcal.data.task import read_recipe_file
    from rlcal.evaluation.command import eval_task
    from rlcal.training.callbacks import CalibrationHook
    from rlcal.training.config import load_recipe
    from rlcal.training.train import load_train_dataset

    qa = write_split_qa(tmp_path / "qa.jsonl")
    data = {"instruction": CUSTOM_INSTRUCTION, "instruction_t0": "Best guess, please.", "prompt_format": fmt}
    data["template"] = "### {instruction}\nQ: {question}\nA:"
    if fmt == "chat":
        data["system_prompt"] = "You are terse."
    path = write_recipe(tmp_path / "r.yaml", qa, tmp_path / "run", data=data, reward={"abstain_phrases": ["no idea"]})
    recipe = load_recipe(path)
    train = load_train_dataset(recipe)  # what GRPO trains on: prompts rendered with each row's sampled t
    task = eval_task(eval_args("--recipe", path), read_recipe_file(path))
    assert len({row["threshold"] for row in train}) > 1
    for row in train:
        assert task.prompt_template().render(row["question"], row["threshold"]) == row["prompt"]
    expected = "### Only answer if you are over 75% sure; a wrong answer costs 3 points.\nQ: Q?\nA:"
    rendered = task.prompt_template().render("Q?", 0.75)
    assert rendered == expected if fmt == "plain" else rendered[-1]["content"] == expected
    # the eval set is the calibration callback's held-out set, built as `rlcal train` builds the callback
    hook = CalibrationHook(recipe.calibration, recipe.task().prompt_template(), recipe.task().answer_grader())
    assert task.load()["question"] == hook.dataset["question"] == [person(i) for i in range(6, 12)]
    assert task.prompt_template() == hook.template
    grade = task.answer_grader()
    assert grade.__getstate__() == hook.grader.__getstate__() == {"grader": "exact", "abstain_phrases": ("no idea",)}
    assert grade("No idea.", "48") == "abstain" and grade("I don't know", "48") == "wrong"


def test_eval_flags_override_the_recipe(tmp_path):
    from rlcal.data.task import read_recipe_file
    from rlcal.evaluation.command import eval_task

    qa = write_split_qa(tmp_path / "qa.jsonl")
    data = {"instruction": CUSTOM_INSTRUCTION, "template": "### {instruction}\nQ: {question}\nA:"}
    path = write_recipe(tmp_path / "r.yaml", qa, tmp_path / "run", data=data, calibration={"max_samples": 4})
    raw = read_recipe_file(path)
    task = eval_task(eval_args("--recipe", path), raw)
    assert (task.source, task.split_filter, task.max_samples) == (str(qa), "eval", 4)
    assert task.instruction == CUSTOM_INSTRUCTION
    task = eval_task(
        eval_args(
            *("--recipe", path, "--instruction", "Sure above {t}?", "--abstain-phrases", "pass"),
            *("--split-filter", "null", "--max-samples", 2, "--answer-column", "gold"),
        ),
        raw,
    )
    assert (task.instruction, task.template) == ("Sure above {t}?", data["template"])  # the rest stays the recipe's
    assert (task.split_filter, task.max_samples, task.abstain_phrases) == (None, 2, ["pass"])
    assert task.columns == {"answer": "gold"} and task.source == str(qa)
    # another eval set: none of the calibration section's row settings apply, the prompt still does
    other = write_qa(tmp_path / "other.jsonl")
    task = eval_task(eval_args("--recipe", path, "--data", other), raw)
    assert (task.source, task.split_filter, task.max_samples) == (str(other), None, None)
    assert task.instruction == CUSTOM_INSTRUCTION


def test_eval_model_defaults(tmp_path):
    from rlcal.evaluation.command import eval_model

    qa = write_split_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    path = write_recipe(tmp_path / "r.yaml", qa, run)
    import yaml

    raw = yaml.safe_load(path.read_text())
    with pytest.raises(RlcalError, match="no trained model in"):
        eval_model(eval_args("--recipe", path), raw)
    run.mkdir()
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "run/warmup/model"}))
    assert eval_model(eval_args("--recipe", path), raw) == ("run/warmup/model", str(run))  # the base it trained on
    assert eval_model(eval_args("--recipe", path, "--model", "base"), raw) == ("base", None)  # the base model alone
    assert eval_model(eval_args("--adapter", run)) == ("run/warmup/model", str(run))
    (run / "adapter_config.json").unlink()
    (run / "config.json").write_text("{}")  # full fine-tuning (use_peft: false) saves the whole model
    assert eval_model(eval_args("--recipe", path), raw) == (str(run), None)
    with pytest.raises(RlcalError, match="give --model"):
        eval_model(eval_args("--data", qa))


def test_eval_recipe_errors_are_one_line_exit_2(tmp_path, capsys):
    qa = write_split_qa(tmp_path / "qa.jsonl")
    out = tmp_path / "never"
    typo = write_recipe(tmp_path / "typo.yaml", qa, tmp_path / "run", data={"instrution": "x"})
    no_held_out = write_recipe(tmp_path / "no_cal.yaml", qa, tmp_path / "run", calibration={"data": None})
    bad_grader = write_recipe(tmp_path / "grader.yaml", qa, tmp_path / "run", reward={"grader": "fuzzy"})
    untrained = write_recipe(tmp_path / "untrained.yaml", qa, tmp_path / "not_trained")
    cases = [
        (["--recipe", tmp_path / "missing.yaml"], "recipe not found"),
        (["--recipe", typo], "unknown key in data section: 'instrution' (did you mean 'instruction'?)"),
        (["--recipe", no_held_out, "--model", "m"], "calibration.data is not set, so the recipe names no eval set"),
        (["--recipe", bad_grader, "--model", "m"], "reward: unknown grader 'fuzzy'"),
        (["--recipe", untrained], "no trained model in"),
        (["--data", qa], "give --model"),
        (["--model", "m"], "no eval set: give --data"),
        (["--model", "m", "--data", qa, "--max-samples", 0], "max_samples must be > 0"),
        (["--model", "m", "--data", qa, "--template", "{question} {x}"], "bad placeholder"),
    ]
    for argv, message in cases:
        assert run_cli("eval", *argv, "--out", out) == 2, argv
        errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], (argv, errors)
        assert not out.exists()


def test_cli_eval_with_the_recipe_end_to_end(toy_model, tmp_path):
    """`rlcal eval --recipe` evaluates the model the recipe trained (here: full weights in output_dir) with the
    recipe's prompts and grading, exactly as the same settings typed as flags do; the recipe's abstain phrase
    ("48", the toy model's usual reply) really reaches the grader."""
    import shutil

    qa = write_split_qa(tmp_path / "qa.jsonl")
    run = tmp_path / "run"
    shutil.copytree(toy_model, run)
    data = {"instruction": CUSTOM_INSTRUCTION}
    path = write_recipe(tmp_path / "r.yaml", qa, run, data=data, reward={"abstain_phrases": ["48"]})
    common = ["--thresholds", "0,0.5", "--max-new-tokens", 6]
    flags = ["--model", run, "--data", qa, "--split-filter", "eval", "--instruction", CUSTOM_INSTRUCTION]
    with pytest.warns(UserWarning, match="no answered question"):  # every t = 0 reply abstains under this grading
        assert run_cli("eval", "--recipe", path, *common, "--out", tmp_path / "recipe") == 0
        assert run_cli("eval", *flags, "--abstain-phrases", "48", *common, "--out", tmp_path / "flags") == 0
    assert run_cli("eval", *flags, *common, "--out", tmp_path / "default_grading") == 0
    by_recipe = (tmp_path / "recipe" / "predictions.jsonl").read_text()
    assert by_recipe == (tmp_path / "flags" / "predictions.jsonl").read_text()
    metrics = load_json(tmp_path / "recipe" / "metrics.json")
    assert metrics["source"] == {
        "model": str(run),
        "adapter": None,
        "data": str(qa),
        "split_filter": "eval",
        "recipe": str(path),
    }
    t0 = [json.loads(line) for line in by_recipe.splitlines() if json.loads(line)["threshold"] == 0]
    assert len(t0) == 6 and {p["response"].strip() for p in t0} == {"48"}
    assert {p["outcome"] for p in t0} == {"abstain"}  # "48" is an abstention under this recipe's grading
    default = [json.loads(x) for x in (tmp_path / "default_grading" / "predictions.jsonl").read_text().splitlines()]
    assert {p["outcome"] for p in default if p["threshold"] == 0} == {"correct"}


def test_the_readme_recipe_eval_is_the_command_it_replaces():
    """README's real-model eval now reads the recipe instead of retyping its settings: both resolve to the same
    questions, prompts and grading (resolved only: no download)."""
    from rlcal.data.task import read_recipe_file
    from rlcal.evaluation.command import eval_task

    root = Path(__file__).resolve().parents[1]
    recipe = root / "recipes/qwen2.5-0.5b/grpo/config_confidence_target_trivia_qa.yaml"
    system = "You are a careful assistant. Follow the scoring rule in the question."  # what README used to retype
    new = eval_task(eval_args("--recipe", recipe, "--max-samples", 2000), read_recipe_file(recipe))
    old = eval_task(
        eval_args(
            *("--data", "mandarjoshi/trivia_qa", "--subset", "rc.nocontext", "--split", "validation"),
            *("--answer-column", "answer.value", "--aliases-column", "answer.aliases", "--format", "chat"),
            *("--max-samples", 2000, "--system-prompt", system),
        )
    )
    old.columns = {"question": "question", **old.columns}  # the recipe spells out the default question column
    assert new == old
    assert new.prompt_template().render("Q?", 0.9) == old.prompt_template().render("Q?", 0.9)
