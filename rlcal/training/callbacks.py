"""Calibration evaluation during training: a transformers `TrainerCallback` that measures ECE and behavioral
calibration at step 0 (the base model), every N steps and at the end, and reports the drift.

Configured by the `calibration:` section of a training recipe (`CalibrationEvalConfig`); `rlcal train` adds it
to TRL's GRPOTrainer when `calibration.data` is set:

    cb = CalibrationCallback(recipe.calibration, template, AnswerGrader("exact"), "outputs/run/calibration")
    trainer = GRPOTrainer(..., callbacks=[cb]); cb.bind(trainer)      # bind: optional, faster under ZeRO-3

At `on_train_begin` it evaluates the base model (a PEFT adapter is disabled with `disable_adapter()`), then every
`every_n_steps` optimizer steps and once more at the end, with `rlcal.evaluation.evaluate.evaluate_model` (the code behind
`rlcal eval`, so the numbers are the same). Each evaluation writes `output_dir/step_<N>/` (metrics.json,
predictions.jsonl, reliability.png, sweep.png) and one line of `output_dir/history.jsonl`, and logs `calib/ece`,
`calib/ece_drift` (now - base), `calib/ece_ratio` (now / base), the per-t sweep, a reliability diagram and a
predictions table to the active W&B run (if any) and the scalars to `state.log_history`.

Under accelerate the questions are split across processes and gathered on every process; the main process writes
and logs. Generation under DeepSpeed ZeRO-3 runs on gathered parameters (TRL's `unwrap_model_for_generation` when
the trainer is bound, else `deepspeed.zero.GatheredParameters`). An evaluation that fails is logged (and recorded
in history.jsonl) and training goes on.

`CalibrationCallback` subclasses transformers' `TrainerCallback`, whose import costs seconds (it pulls in peft), so
the class is created on first access: importing this module for `CalibrationEvalConfig` stays cheap.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_text
from rlcal.core.aggregate import MAX_BINS
from rlcal.core.thresholds import DEFAULT_THRESHOLDS, check_threshold
from rlcal.data.task import HeldOutSource
from rlcal.evaluation import CONFIDENCE_METHODS
from rlcal.evaluation.compare import HEADLINE

if TYPE_CHECKING:  # the real class is built lazily by the module __getattr__ below
    from rlcal.core.grading import AnswerGrader
    from rlcal.core.prompts import PromptTemplate

logger = logging.getLogger(__name__)



@dataclass
class CalibrationEvalConfig(HeldOutSource):
    """The `calibration:` section of a recipe. `data: null` turns the hook off.

    The held-out source fields (data, split, subset, columns, split_filter, split_column, max_samples,
    weight_column) are `rlcal.data.task.HeldOutSource`'s, declared once with the training data's; prompts and
    grading are the training run's own (`Recipe.task("calibration")`), so they are not repeated here.
    """

    every_n_steps: int = field(
        default=0, metadata={"help": "Evaluate every N optimizer steps; 0 = base and end only."}
    )
    thresholds: list[float] = field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS), metadata={"help": "Confidence targets t for the sweep."}
    )
    confidence: str = field(default="answer_prob", metadata={"help": f"One of {', '.join(CONFIDENCE_METHODS)}."})
    num_samples: int = field(default=8, metadata={"help": "k sampled answers for `agreement` confidence."})
    max_new_tokens: int = field(default=16, metadata={"help": "Generation length for eval answers."})
    batch_size: int = field(default=32, metadata={"help": "Questions per generation batch (per process)."})
    n_bins: int = field(default=15, metadata={"help": "Equal-width bins for ECE."})
    answer_span: str = field(default="line", metadata={"help": "Tokens scored as the answer: line | full."})
    seed: int = field(default=0, metadata={"help": "Seed for sampled answers (`agreement`)."})
    table_rows: int = field(default=200, metadata={"help": "Prediction rows per W&B table (0 = no table)."})

    def __post_init__(self) -> None:
        super().__post_init__()  # the held-out source fields
        self.thresholds = [check_threshold(t) for t in self.thresholds]
        if self.confidence not in CONFIDENCE_METHODS:
            raise ValueError(f"calibration.confidence must be one of {CONFIDENCE_METHODS}, got {self.confidence!r}")
        if self.confidence == "critic":  # the hook evaluates the policy mid-run; the value head is read after it
            raise ValueError("calibration.confidence critic is for `rlcal eval` on a saved `trainer: ppo` run")
        if self.answer_span not in ("line", "full"):
            raise ValueError(f"calibration.answer_span must be 'line' or 'full', got {self.answer_span!r}")
        if self.table_rows < 0:
            raise ValueError("calibration.table_rows must be >= 0")
        for name in ("every_n_steps", "num_samples", "max_new_tokens", "batch_size", "n_bins"):
            value = getattr(self, name)
            if value < 0 or (value == 0 and name != "every_n_steps"):
                raise ValueError(f"calibration.{name} must be {'>= 0' if name == 'every_n_steps' else '> 0'}")
        if self.n_bins > MAX_BINS or self.num_samples > 1000:
            raise ValueError(f"calibration.n_bins must be at most {MAX_BINS} and calibration.num_samples at most 1000")


# ---- the training hook --------------------------------------------------------------------------------------------

HEADLINE_KEYS = HEADLINE  # the same headline metrics `rlcal compare` leads with
TABLE_COLUMNS = ("index", "threshold", "question", "answer", "response", "outcome", "confidence", "answer_prob")


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def calibration_scalars(metrics: Mapping[str, Any], base: Mapping[str, Any] | None) -> dict[str, float]:
    """The `calib/*` numbers logged for one evaluation: headline metrics, drift against the base evaluation, and
    per-t measured / ideal / gap values of the sweep (`calib/t0.75/answer_rate`, ...). None values are left out."""
    out: dict[str, float] = {f"calib/{k}": metrics[k] for k in HEADLINE_KEYS if _number(metrics.get(k))}
    if base is not None:
        for key in ("ece", "brier", "hallucination_rate"):
            now, then = metrics.get(key), base.get(key)
            if _number(now) and _number(then):
                out[f"calib/{key}_drift"] = now - then
        if _number(metrics.get("ece")) and _number(base.get("ece")) and base["ece"] > 0:
            out["calib/ece_ratio"] = metrics["ece"] / base["ece"]
    for t, sweep in (metrics.get("sweep") or {}).items():
        for kind, prefix in (("measured", ""), ("ideal", "ideal_"), ("gap", "gap_")):
            for key, value in sweep[kind].items():
                if _number(value):
                    out[f"calib/t{t}/{prefix}{key}"] = value
    return out


def _zero3_enabled() -> bool:
    try:
        from transformers.integrations import is_deepspeed_zero3_enabled

        if is_deepspeed_zero3_enabled():
            return True
        from accelerate.state import AcceleratorState

        if AcceleratorState._shared_state:  # only look at a state that exists; constructing one has side effects
            plugin = AcceleratorState().deepspeed_plugin
            return plugin is not None and plugin.zero_stage == 3
    except Exception:  # noqa: BLE001 - detection must never break evaluation
        return False
    return False


class CalibrationHook:
    """Calibration evaluation at the base model, every N steps and at the end of training (see module docstring).

    Use `CalibrationCallback` (this plus transformers' `TrainerCallback`). `output_dir` is the folder the
    evaluations are written into (`rlcal train` passes `<run>/calibration`). The eval set is loaded here, so a bad
    `calibration.data` fails before training starts (RlcalError).
    """

    def __init__(
        self,
        config: CalibrationEvalConfig,
        template: PromptTemplate | None = None,
        grader: AnswerGrader | None = None,
        output_dir: str | Path = "calibration",
        trainer: Any = None,
    ) -> None:
        from rlcal.core.grading import AnswerGrader
        from rlcal.core.prompts import PromptTemplate

        if config.data is None:
            raise RlcalError("calibration.data is not set: there is no eval set for the calibration callback")
        self.config = config
        self.template = template or PromptTemplate()
        self.grader = grader or AnswerGrader()
        self.output_dir = Path(output_dir)
        self.dataset = config.load(seed=config.seed)
        self.trainer = trainer
        self.base_metrics: dict[str, Any] | None = None
        self.last_step: int | None = None
        self.history: list[dict[str, Any]] = []

    def bind(self, trainer: Any) -> CalibrationHook:
        """Give the hook its trainer, so generation can use TRL's `unwrap_model_for_generation` (ZeRO-3 hooks
        removed while generating: faster than plain gathering). Optional."""
        self.trainer = trainer
        return self

    # -- events ---------------------------------------------------------------------------------------------------

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step > 0:  # resumed: the base evaluation, if any, is on disk
            if getattr(state, "is_world_process_zero", True):
                self._drop_history_after(state.global_step)
            saved = self.output_dir / "step_0" / "metrics.json"
            if saved.is_file():
                self.base_metrics = json.loads(saved.read_text())
                return
            if not self._is_peft(kwargs.get("model")):
                logger.warning("calibration: resumed without a saved base evaluation; drift will not be reported")
                return
        self._run(state, kwargs, label="base")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        every = self.config.every_n_steps
        if every and state.global_step > 0 and state.global_step % every == 0 and state.global_step != self.last_step:
            self._run(state, kwargs, label="step")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step != self.last_step:
            self._run(state, kwargs, label="final")

    # -- work -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _is_peft(model: Any) -> bool:
        peft = sys.modules.get("peft")  # a PeftModel exists only if peft was imported; importing it costs seconds
        return peft is not None and isinstance(model, peft.PeftModel)

    @contextmanager
    def _generation_model(self, model: Any) -> Iterator[Any]:
        """The model to generate with: unwrapped, with ZeRO-3 parameters gathered (every process must enter)."""
        trainer = self.trainer
        if trainer is not None and getattr(trainer, "accelerator", None) is not None:
            from trl.models import unwrap_model_for_generation

            with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator) as unwrapped:
                yield unwrapped
        elif _zero3_enabled():
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(model.parameters())):
                yield model
        else:
            yield model

    def evaluate(self, model: Any, tokenizer: Any, base: bool = False) -> tuple[dict[str, Any], list[dict]]:
        """One evaluation of `model` (with its adapter disabled if `base`); raises on failure."""
        from rlcal.evaluation.evaluate import evaluate_model

        cfg = self.config
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # multimodal processors wrap the tokenizer
        with self._generation_model(model) as gen_model:
            adapter_off = gen_model.disable_adapter() if base and self._is_peft(gen_model) else nullcontext()
            with adapter_off:
                return evaluate_model(
                    gen_model,
                    tokenizer,
                    self.dataset,
                    template=self.template,
                    thresholds=cfg.thresholds,
                    confidence_method=cfg.confidence,
                    grader=self.grader,
                    batch_size=cfg.batch_size,
                    max_new_tokens=cfg.max_new_tokens,
                    n_bins=cfg.n_bins,
                    num_samples=cfg.num_samples,
                    answer_span=cfg.answer_span,
                    seed=cfg.seed,
                    progress="calibration eval",
                )

    def _run(self, state: Any, kwargs: Mapping[str, Any], label: str) -> None:
        step = int(state.global_step)
        self.last_step = step
        main = getattr(state, "is_world_process_zero", True)
        started = time.perf_counter()
        try:
            model = kwargs.get("model")
            tokenizer = kwargs.get("processing_class") or kwargs.get("tokenizer")
            if model is None or tokenizer is None:
                raise RuntimeError("the trainer passed no model or no processing_class/tokenizer to the callback")
            metrics, predictions = self.evaluate(model, tokenizer, base=label == "base")
        except Exception as exc:  # noqa: BLE001 - an eval problem must not end a training run
            logger.exception("calibration eval at step %d (%s) failed; training continues", step, label)
            if main:
                self._append_history({"step": step, "label": label, "error": f"{type(exc).__name__}: {exc}"})
            return
        if label == "base":
            self.base_metrics = metrics
        if not main:
            return
        try:
            metrics["step"], metrics["label"] = step, label
            scalars = calibration_scalars(metrics, self.base_metrics)
            paths = write_eval_files(self.output_dir / f"step_{step}", metrics, predictions, label)
            record = {"step": step, "label": label, "seconds": round(time.perf_counter() - started, 3)}
            record["ece"] = metrics.get("ece")  # present even when undefined (null), unlike the logged scalars
            record.update({k.removeprefix("calib/"): v for k, v in scalars.items() if k.count("/") == 1})
            record["per_threshold"] = metrics.get("per_threshold")
            self._append_history(record)
            state.log_history.append({**scalars, "step": step})
            self._log_wandb(step, scalars, paths, predictions)
            logger.info(
                "calibration step %d (%s): ECE %s, drift %s",
                step,
                label,
                _fmt(scalars.get("calib/ece")),
                _fmt(scalars.get("calib/ece_drift")),
            )
        except Exception:  # noqa: BLE001
            logger.exception("calibration eval at step %d: writing or logging the results failed", step)

    def _drop_history_after(self, step: int) -> None:
        """Forget the evaluations an interrupted run made after the checkpoint this run resumes from: those steps
        are trained (and evaluated) again, so history.jsonl reads as if the run had never stopped."""
        path = self.output_dir / "history.jsonl"
        if not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").splitlines()
        kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
        if len(kept) < len(lines):
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    def _append_history(self, record: dict[str, Any]) -> None:
        self.history.append(record)
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with (self.output_dir / "history.jsonl").open("a") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        except OSError:
            logger.exception("calibration: could not append to %s", self.output_dir / "history.jsonl")

    def _log_wandb(self, step: int, scalars: dict[str, float], paths: Mapping[str, Path], predictions: list) -> None:
        try:
            import wandb
        except ImportError:
            return
        if getattr(wandb, "run", None) is None:
            return
        payload: dict[str, Any] = {**scalars, "train/global_step": step}
        try:
            for name in ("reliability", "sweep"):
                if name in paths:
                    payload[f"calib/{name}"] = wandb.Image(str(paths[name]), caption=f"step {step}")
            if self.config.table_rows:
                rows = [[p.get(c) for c in TABLE_COLUMNS] for p in predictions[: self.config.table_rows]]
                payload["calib/predictions"] = wandb.Table(columns=list(TABLE_COLUMNS), data=rows)
            wandb.log(payload)
        except Exception:  # noqa: BLE001 - offline, finished or broken runs must not stop training
            logger.exception("calibration: logging to W&B failed")


def write_eval_files(out_dir: Path, metrics: dict[str, Any], predictions: list, label: str) -> dict[str, Path]:
    from rlcal.evaluation.sweep import write_eval

    return write_eval(out_dir, metrics, predictions, title=label)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


if TYPE_CHECKING:
    CalibrationCallback = CalibrationHook
else:

    def __getattr__(name: str) -> Any:
        if name == "CalibrationCallback":
            from transformers import TrainerCallback

            cls = type(
                "CalibrationCallback",
                (CalibrationHook, TrainerCallback),
                {"__doc__": CalibrationHook.__doc__, "__module__": __name__},
            )
            globals()[name] = cls
            return cls
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
