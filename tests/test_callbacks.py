"""The calibration training callback: fires at step 0 (base model, adapter disabled), every N steps and at the
end inside a real transformers Trainer; its base metrics equal a standalone evaluation; W&B logging; failures are
logged, not raised; resume; questions split over two processes and gathered."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
from test_evaluate import assert_close, toy_qa_model, write_qa

from rlcal.common.errors import RlcalError
from rlcal.core.grading import AnswerGrader
from rlcal.core.prompts import PromptTemplate
from rlcal.training.callbacks import CalibrationEvalConfig

EVAL = dict(thresholds=[0.0, 0.75], max_new_tokens=6, batch_size=8, table_rows=5)


@pytest.fixture(scope="module")
def toy_model(tiny_model_dir, tmp_path_factory) -> str:
    return toy_qa_model(tiny_model_dir, str(tmp_path_factory.mktemp("toy_qa")))


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_qa(tmp_path_factory.mktemp("qa") / "qa.jsonl", n=7)  # odd: shards of 4 and 3 (+1 padding)


def make_callback(qa_file: Path, out: Path, **overrides):
    from rlcal.training.callbacks import CalibrationCallback

    config = CalibrationEvalConfig(data=str(qa_file), **{**EVAL, **overrides})
    return CalibrationCallback(config, PromptTemplate(), AnswerGrader(), str(out))


def standalone(model, tok, qa_file: Path) -> dict:
    from rlcal.data.qa import load_qa_dataset
    from rlcal.evaluation.evaluate import evaluate_model

    config = CalibrationEvalConfig(**EVAL)
    metrics, _ = evaluate_model(
        model,
        tok,
        load_qa_dataset(str(qa_file)),
        thresholds=config.thresholds,
        max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size,
        progress=False,
    )
    return metrics


def lora(model):
    from peft import LoraConfig, get_peft_model

    # Random (non-zero) B matrices: the adapter changes the model from step 0, so disabling it is observable.
    return get_peft_model(
        model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )


def history(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]


def test_callback_in_a_trainer_run(toy_model, qa_file, tmp_path, monkeypatch):
    import datasets
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForLanguageModeling,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(toy_model)
    base = standalone(AutoModelForCausalLM.from_pretrained(toy_model), tok, qa_file)
    model = lora(AutoModelForCausalLM.from_pretrained(toy_model))
    adapter_on = standalone(model, tok, qa_file)
    assert adapter_on["reliability"] != base["reliability"]  # the adapter really changes the model

    logged = []  # a stand-in W&B run: records what the callback logs
    fake = types.SimpleNamespace(
        run=object(),
        log=logged.append,
        Image=lambda path, caption=None: ("image", Path(path).name),
        Table=lambda columns, data: ("table", columns, data),
    )
    monkeypatch.setitem(sys.modules, "wandb", fake)

    out = tmp_path / "calibration"
    callback = make_callback(qa_file, out, every_n_steps=2)
    assert isinstance(callback, TrainerCallback)
    texts = [PromptTemplate().render(f"When was Person {i} born?", 0.0) + " 48" for i in range(8)]
    train = datasets.Dataset.from_dict(dict(tok(texts)))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=5e-2,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False),
        processing_class=tok,
        callbacks=[callback],
    )
    trainer.train()

    runs = history(out)
    assert [(r["step"], r["label"]) for r in runs] == [(0, "base"), (2, "step"), (3, "final")]
    assert all("error" not in r for r in runs)
    # step 0 is the base model (adapter disabled), and matches a standalone evaluation of it
    step0 = json.loads((out / "step_0" / "metrics.json").read_text())
    assert_close({k: v for k, v in step0.items() if k not in ("step", "label")}, base)
    for step in (0, 2, 3):
        for name in ("metrics.json", "predictions.jsonl", "reliability.png", "sweep.png"):
            assert (out / f"step_{step}" / name).is_file()
    final = json.loads((out / "step_3" / "metrics.json").read_text())
    assert runs[2]["ece_drift"] == pytest.approx(final["ece"] - base["ece"])
    if base["ece"]:
        assert runs[2]["ece_ratio"] == pytest.approx(final["ece"] / base["ece"])
    assert runs[0]["ece_drift"] == 0.0
    # the same scalars went to W&B (with images and a table) and to the trainer's log history
    assert [entry["train/global_step"] for entry in logged] == [0, 2, 3]
    last = logged[-1]
    assert last["calib/ece"] == pytest.approx(final["ece"])
    assert last["calib/ece_drift"] == pytest.approx(final["ece"] - base["ece"])
    assert ("calib/ece_ratio" in last) == (base["ece"] > 0)
    assert last["calib/t0.75/answer_rate"] == final["per_threshold"]["0.75"]["answer_rate"]
    assert last["calib/reliability"] == ("image", "reliability.png")
    assert last["calib/predictions"][0] == "table" and len(last["calib/predictions"][2]) == 5
    calib_logs = [e for e in trainer.state.log_history if "calib/ece" in e]
    assert [e["step"] for e in calib_logs] == [0, 2, 3]
    assert any("loss" in e for e in trainer.state.log_history)  # training itself went on normally
    assert model.training  # evaluation restored training mode


def trainer_state(step: int = 0):
    from transformers import TrainerControl, TrainerState, TrainingArguments

    state = TrainerState()
    state.global_step = step
    return TrainingArguments(output_dir="unused", report_to=[]), state, TrainerControl()


def test_failing_eval_is_logged_and_training_goes_on(toy_model, qa_file, tmp_path, caplog):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(toy_model)

    def broken_generate(*args, **kwargs):
        raise RuntimeError("CUDA out of memory (simulated)")

    model.generate = broken_generate
    out = tmp_path / "cal"
    callback = make_callback(qa_file, out, every_n_steps=1)
    args, state, control = trainer_state()
    with caplog.at_level(logging.ERROR, logger="rlcal.training.callbacks"):
        callback.on_train_begin(
            args, state, control, model=model, processing_class=AutoTokenizer.from_pretrained(toy_model)
        )
        state.global_step = 1
        callback.on_step_end(args, state, control, model=model)  # no tokenizer passed: also just logged
    assert "calibration eval at step 0 (base) failed" in caplog.text and "out of memory" in caplog.text
    assert [r["step"] for r in history(out)] == [0, 1]
    assert "out of memory" in history(out)[0]["error"] and "processing_class" in history(out)[1]["error"]
    assert not (out / "step_0").exists()


def test_resume_reuses_the_saved_base_evaluation(qa_file, tmp_path):
    out = tmp_path / "cal"
    (out / "step_0").mkdir(parents=True)
    (out / "step_0" / "metrics.json").write_text(json.dumps({"ece": 0.05}))
    callback = make_callback(qa_file, out)
    args, state, control = trainer_state(step=40)
    callback.on_train_begin(args, state, control)  # no model: evaluating would fail, loading must not
    assert callback.base_metrics == {"ece": 0.05} and not (out / "history.jsonl").exists()


def test_config_and_construction_errors(tmp_path, qa_file):
    with pytest.raises(ValueError, match="answer_span"):
        CalibrationEvalConfig(answer_span="word")
    with pytest.raises(ValueError, match="threshold"):
        CalibrationEvalConfig(thresholds=[0.5, 1.0])
    with pytest.raises(RlcalError, match="not found"):
        make_callback(tmp_path / "missing.jsonl", tmp_path)
    with pytest.raises(RlcalError, match="calibration.data"):
        from rlcal.training.callbacks import CalibrationCallback

        CalibrationCallback(CalibrationEvalConfig(), PromptTemplate(), AnswerGrader(), str(tmp_path))


def test_nested_eval_data_is_mapped_with_columns(tmp_path):
    """Real datasets (TriviaQA) nest the answer; `calibration.columns` maps it as `data.columns` does."""
    nested = tmp_path / "nested.jsonl"
    rows = [{"q": f"Q{i}?", "answer": {"value": f"a{i}", "aliases": [f"A{i}"]}} for i in range(3)]
    nested.write_text("".join(json.dumps(r) + "\n" for r in rows))
    columns = "{question: q, answer: answer.value, aliases: answer.aliases}"  # as given on the command line
    callback = make_callback(nested, tmp_path / "out", columns=columns)
    assert callback.config.columns == {"question": "q", "answer": "answer.value", "aliases": "answer.aliases"}
    ds = callback.dataset
    assert ds["question"] == ["Q0?", "Q1?", "Q2?"] and ds["answer"] == ["a0", "a1", "a2"]
    assert ds["aliases"] == [["A0"], ["A1"], ["A2"]]
    with pytest.raises(ValueError, match="columns can map question, answer and aliases only"):
        CalibrationEvalConfig(columns={"context": "ctx"})


def test_held_out_rows_are_chosen_like_training_rows(tmp_path):
    """The held-out source fields are the training data's (`rlcal.data.task.QARows`), `split_column` included,
    which the calibration section could not set before they were shared."""
    qa = tmp_path / "qa.jsonl"
    rows = [{"question": f"Q{i}?", "answer": "a", "part": "eval" if i % 3 else "train"} for i in range(9)]
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    callback = make_callback(qa, tmp_path / "out", split_filter="eval", split_column="part", max_samples=4)
    assert callback.dataset["question"] == ["Q1?", "Q2?", "Q4?", "Q5?"]
    assert CalibrationEvalConfig().max_samples == 256  # the callback's own default: it evaluates many times
    with pytest.raises(ValueError, match="max_samples must be > 0"):
        CalibrationEvalConfig(max_samples=0)


def test_importing_the_config_stays_cheap():
    code = "import sys, rlcal.training.callbacks; assert 'transformers' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


WORKER = textwrap.dedent(
    """
    import json, sys, types
    from accelerate import PartialState

    state = PartialState(cpu=True)  # 2 CPU processes (gloo), from the RANK/WORLD_SIZE/MASTER_* environment
    assert state.num_processes == 2, state
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from rlcal.training.callbacks import CalibrationEvalConfig, CalibrationHook  # the callback's logic, minus TrainerCallback

    model_dir, qa, out, settings = sys.argv[1:5]
    hook = CalibrationHook(CalibrationEvalConfig(data=qa, **json.loads(settings)), None, None, out)
    ts = types.SimpleNamespace(global_step=0, is_world_process_zero=state.is_main_process, log_history=[])
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    hook.on_train_begin(None, ts, None, model=model, processing_class=tok)
    print("rank", state.process_index, "done", hook.base_metrics["n_questions"])
    """
)


def test_two_processes_split_and_gather(toy_model, qa_file, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "cal"
    settings = json.dumps({k: v for k, v in EVAL.items()})
    env_common = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "OMP_NUM_THREADS": "1",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), toy_model, str(qa_file), str(out), settings],
            env={**env_common, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(logs)
    assert "rank 0 done 7" in logs[0] and "rank 1 done 7" in logs[1]  # every process got all 7 questions back
    preds = [json.loads(x) for x in (out / "step_0" / "predictions.jsonl").read_text().splitlines()]
    assert [p["index"] for p in preds] == [i for i in range(7) for _ in (0, 1)]  # in order, padding dropped
    gathered = json.loads((out / "step_0" / "metrics.json").read_text())
    base = standalone(
        AutoModelForCausalLM.from_pretrained(toy_model), AutoTokenizer.from_pretrained(toy_model), qa_file
    )
    # shards batch differently from one process, so floats agree to rounding, counts exactly
    assert_close(
        {k: v for k, v in gathered.items() if k not in ("step", "label", "auroc")},
        {k: v for k, v in base.items() if k != "auroc"},
        rel=1e-4,
    )
