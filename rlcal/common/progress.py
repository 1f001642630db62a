"""What a Trainer prints (RL, warm-up SFT and pretraining alike): one progress bar per stage with the numbers that matter; the full logs go to a file.

    from rlcal.common.progress import quiet_trainer, quiet_libraries, set_process_log_levels
    with quiet_libraries(verbose=False):                  # no per-map / per-load progress bars from the libraries
        trainer = GRPOTrainer(...)
        quiet_trainer(trainer, "RL training", output_dir / "train_log.jsonl")
        trainer.train()

transformers prints every log event as a ~30-key dict (ProgressCallback, or PrinterCallback without tqdm). Here
those callbacks are swapped for `StageProgress` (a tqdm bar whose postfix shows reward mean, abstain and
hallucination rates, ECE when the calibration callback measured it, or the loss) and `JsonlLog` (each log event
as one JSON line, written by the main process only). Other `report_to` integrations (W&B) still get every log.
`verbose=True` keeps transformers' own callbacks and the libraries' bars, as before, and still writes the JSONL.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from rlcal.common.files import atomic_write_text

# (postfix label, log key): the first `rewards/<name>/mean` stands for the reward, whatever the reward's name.
POSTFIX_KEYS = (
    ("abstain", "outcomes/abstain_rate"),
    ("halluc", "outcomes/hallucination_rate"),
)
# Library messages that a user cannot act on and that repeat for every model a run loads.
NOISE_WARNINGS = (r".*`is_gradient_checkpointing` is deprecated.*",)


def _finite(value: Any) -> Any:
    """Non-finite floats as null: strict JSON readers (jq, browsers) reject NaN/Infinity."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def postfix(logs: dict[str, Any]) -> dict[str, str]:
    """The bar's postfix for one log event: reward mean, abstain and hallucination rates, or else the loss."""
    out: dict[str, str] = {}
    reward = next((k for k in logs if k.startswith("rewards/") and k.endswith("/mean")), None)
    if reward is not None:
        out["reward"] = f"{logs[reward]:.3f}"
    for label, key in POSTFIX_KEYS:
        if isinstance(logs.get(key), int | float):
            out[label] = f"{logs[key]:.3f}"
    if not out and isinstance(logs.get("loss"), int | float):
        out["loss"] = f"{logs['loss']:.4g}"
    return out


class StageProgress(TrainerCallback):
    """One tqdm bar for a training stage (main process only), its postfix updated from each log event and from the
    calibration callback's `calib/ece` entries in the trainer's log history."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar = None
        self.fields: dict[str, str] = {}
        self.seen = 0  # entries of state.log_history already looked at

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.desc, dynamic_ncols=True)
            self.seen = len(state.log_history)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self._ece(state)
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs:
            self.fields.update(postfix(logs))
            self._ece(state)
            self.bar.set_postfix(self.fields, refresh=True)

    def _ece(self, state) -> None:
        """Calibration evaluations append `calib/*` to the log history directly (no on_log event)."""
        for entry in state.log_history[self.seen :]:
            if isinstance(entry.get("calib/ece"), int | float):
                self.fields["ece"] = f"{entry['calib/ece']:.3f}"
                self.bar.set_postfix(self.fields, refresh=False)
        self.seen = len(state.log_history)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self._ece(state)
            self.bar.set_postfix(self.fields, refresh=False)
            self.bar.close()
            self.bar = None


class JsonlLog(TrainerCallback):
    """Every log event as one JSON line `{"step": ..., <the logged keys>}` (main process only).

    A fresh run starts a new file; a resumed one (`append=True`) continues the old one, so the file holds the whole
    run. Rows the interrupted run logged after the checkpoint it resumes from are dropped first: those steps are
    trained again, and the file then reads as if the run had never stopped."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.append = append

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.append:
                self.path.write_text("", encoding="utf-8")
            elif self.path.is_file():
                lines = self.path.read_text(encoding="utf-8").splitlines()
                kept = [line for line in lines if _row_step(line) <= state.global_step]
                if len(kept) < len(lines):
                    atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            row = {"step": state.global_step, **{k: _finite(v) for k, v in logs.items()}}
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row, default=str) + "\n")


def _row_step(line: str) -> float:
    """The step of one train-log row (rows that do not parse are kept: -1)."""
    try:
        return float(json.loads(line).get("step", -1))
    except (ValueError, AttributeError):
        return -1


def quiet_trainer(
    trainer: Any, stage: str, log_path: str | Path | None, verbose: bool = False, append: bool = False, bar: bool = True
) -> None:
    """Route `trainer`'s log events to `log_path` (JSONL; None: the caller keeps its own log) and, unless `verbose`,
    replace transformers' dict-printing callbacks by one `StageProgress` bar named `stage` (`bar=False`: none)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    if log_path is not None:
        trainer.add_callback(JsonlLog(log_path, append=append))
    if not verbose:
        trainer.remove_callback(ProgressCallback)
        trainer.remove_callback(PrinterCallback)
        if bar:
            trainer.add_callback(StageProgress(stage))


@contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Without `verbose`: no progress bars from datasets (each map/filter) and transformers (each weight load or
    save), and none of NOISE_WARNINGS, for the duration; restored afterwards (rlcal demo evaluates in between)."""
    if verbose:
        yield
        return
    import datasets
    from transformers.utils import logging as hf_logging

    had_datasets_bars, had_hf_bars = datasets.is_progress_bar_enabled(), hf_logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            for message in NOISE_WARNINGS:
                warnings.filterwarnings("ignore", message=message)
            yield
    finally:
        if had_datasets_bars:
            datasets.enable_progress_bars()
        if had_hf_bars:
            hf_logging.enable_progress_bar()


@contextmanager
def process_log_levels(args: Any) -> Iterator[None]:
    """Per-process log levels, as open-r1 sets them: `args.get_process_log_level()` (TrainingArguments' log_level
    on the main process, log_level_replica elsewhere) for transformers, datasets and rlcal, so in a multi-process
    run only the main process prints info. rlcal's own info lines (warm-up, resume) stay on for the main process
    unless `log_level` is set. Restored afterwards."""
    from datasets.utils import logging as ds_logging
    from transformers.utils import logging as hf_logging

    level = args.get_process_log_level()
    main = args.should_log  # the (local) main process, as TrainingArguments decides it
    rlcal_level = logging.INFO if main and args.log_level == "passive" else level
    rlcal = logging.getLogger("rlcal")
    saved = (hf_logging.get_verbosity(), ds_logging.get_verbosity(), rlcal.level)
    hf_logging.set_verbosity(level)
    ds_logging.set_verbosity(level)
    rlcal.setLevel(rlcal_level)
    try:
        yield
    finally:
        hf_logging.set_verbosity(saved[0])
        ds_logging.set_verbosity(saved[1])
        rlcal.setLevel(saved[2])
