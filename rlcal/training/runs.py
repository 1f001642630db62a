"""What an `output_dir` already holds, decided before any model loads: a finished run, a run to resume (with the
same settings only), damaged checkpoints to skip, or an earlier run to clear for a fresh start.

    from rlcal.training.runs import prepare_run
    plan = prepare_run(recipe)        # RlcalError if the saved run was made with other settings
    plan.finished                     # True: the same run already ended; `rlcal train` says so and exits 0
    plan.checkpoint                   # the newest *intact* checkpoint-* to resume from (damaged ones are skipped)

The rules (docs/training.md, "Re-running and resuming"):
1. `rlcal_recipe.yaml` is written when a run starts and is the run's identity. Re-running into a folder that holds
   checkpoints or a finished run compares the resolved recipe with it (a start that saved nothing is just redone); any difference in a key that can change the trained model is refused with
   one line naming the keys. Keys that cannot (`NEUTRAL_KEYS`: logging, W&B, eval cadence, where checkpoints go)
   may differ. `resume: never` asks for a fresh start: the earlier run's files are removed first.
2. A run is finished when `train_summary.json` (written last) and the final model are there: re-running it does
   nothing. A newest checkpoint that already reached `max_steps` (a run killed while saving) is finished by copying
   its model files, never by training a step past `max_steps`.
3. Every checkpoint is checked before resuming (trainer state, weights, optimizer, scheduler and RNG files present
   and not truncated); damaged ones are renamed `checkpoint-N.damaged` with a warning saying what was wrong, and
   the run resumes from the newest intact one.

Test: `pytest tests/test_runs.py`.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from rlcal.common.errors import RlcalError
from rlcal.training.config import Recipe, _plain, _world_size

logger = logging.getLogger("rlcal.training.runs")

RECIPE_FILE = "rlcal_recipe.yaml"
SUMMARY_FILE = "train_summary.json"
# Recipe keys that cannot change the trained model: a re-run may change them and still resume or count as done.
NEUTRAL_KEYS = frozenset(
    {
        "resume",
        "training.output_dir",
        "training.logging_steps",
        "training.logging_first_step",
        "training.logging_dir",
        "training.logging_strategy",
        "training.report_to",
        "training.run_name",
        "training.save_steps",
        "training.save_strategy",
        "training.save_total_limit",
        "training.log_level",
        "training.log_completions",
        "training.num_completions_to_print",
        "training.disable_tqdm",
        "calibration.every_n_steps",
        "calibration.table_rows",
    }
)
NEUTRAL_SECTIONS = ("wandb.",)
WEIGHT_FILES = ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
# What a fresh start removes: the files `rlcal train` itself writes at the top of output_dir (never warmup/, a cache
# keyed by its own settings, and nothing else the folder may hold).
RUN_FILES = (RECIPE_FILE, SUMMARY_FILE, "train_log.jsonl", "wandb_run_id.txt", "calibration", *WEIGHT_FILES)
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_DERIVED = re.compile(r"^# derived: (.*)$", re.MULTILINE)


# ---- the recipe a run was made with --------------------------------------------------------------------------


def recipe_values(recipe: Recipe) -> dict[str, Any]:
    """The resolved recipe as flat `section.key -> value`, with the process count that shapes the batch."""
    flat = {"derived.world_size": _world_size()}
    for section, values in recipe.to_dict().items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    return flat


def saved_values(text: str) -> dict[str, Any]:
    """`recipe_values` of a saved `rlcal_recipe.yaml` (its `# derived:` comment holds the process count)."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError("not a YAML mapping")
    flat: dict[str, Any] = {}
    match = _DERIVED.search(text)
    if match:
        derived = dict(item.split("=", 1) for item in match.group(1).split(", ") if "=" in item)
        if "world_size" in derived:
            flat["derived.world_size"] = int(derived["world_size"])
    for section, values in raw.items():
        if isinstance(values, dict):
            flat.update({f"{section}.{k}": v for k, v in values.items()})
        else:
            flat[section] = values
    return flat


def changed_keys(recipe: Recipe, saved: dict[str, Any]) -> list[str]:
    """The result-changing keys whose value differs between `recipe` and a saved run's `saved_values`."""
    now = recipe_values(recipe)
    trl_fields = {f.name: f for f in fields(recipe.training)}
    out = []
    for key in sorted(set(now) | set(saved)):
        if key in NEUTRAL_KEYS or key.startswith(NEUTRAL_SECTIONS):
            continue
        ours, theirs = now.get(key), saved.get(key)
        name = key.removeprefix("training.")
        if key.startswith("training.") and name in trl_fields:
            # only the training keys a recipe sets are saved: one it leaves out has TRL's default
            ours = _plain(getattr(recipe.training, name))
            if key not in saved:
                default = trl_fields[name].default
                theirs = None if default is MISSING else _plain(default)
        if not _same(ours, theirs):
            out.append(key)
    return out


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool) and not isinstance(b, bool):
        return float(a) == float(b)  # YAML reads 1e-2 back as a float, 1.0 as 1.0; 2 == 2.0 here
    return a == b


# ---- checkpoints -----------------------------------------------------------------------------------------------


def checkpoints(output_dir: Path) -> list[Path]:
    """`checkpoint-N` folders in output_dir, newest (highest N) first."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True)]


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is unusable (truncated, bad header), or None. Reads the header only."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            return f"{path.name} is truncated ({size} bytes)"
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            return f"{path.name} is truncated (header of {n} bytes, file of {size})"
        try:
            header = json.loads(handle.read(n))
        except (ValueError, UnicodeDecodeError):
            return f"{path.name} has an unreadable header"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if 8 + n + max(ends, default=0) != size:
        return f"{path.name} is truncated ({size} bytes, its header describes {8 + n + max(ends, default=0)})"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """Why a torch.save file (a zip archive) is unusable, or None. Small files get their CRCs checked too."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if path.stat().st_size < 256 * 2**20 else None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"{path.name} is damaged ({type(exc).__name__}: {exc})"
    return f"{path.name} is damaged (bad CRC in {bad})" if bad else None


def checkpoint_problem(path: Path) -> str | None:
    """What is wrong with a checkpoint folder, in a few words, or None if it can be resumed from."""
    state = path / "trainer_state.json"
    try:
        step = json.loads(state.read_text(encoding="utf-8"))["global_step"]
        if not isinstance(step, int):
            raise TypeError
    except FileNotFoundError:
        return "trainer_state.json is missing"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
        return "trainer_state.json is unreadable"
    weights = [path / name for name in WEIGHT_FILES if (path / name).is_file()]
    if not weights:
        return f"no model weights ({' or '.join(WEIGHT_FILES[:2])})"
    for file in sorted(path.glob("*.safetensors")):  # the weights, shards, and any head saved beside them
        if problem := _safetensors_problem(file):
            return problem
    deepspeed = any(p.is_dir() and p.name.startswith("global_step") for p in path.iterdir())
    required = () if deepspeed else ("optimizer.pt", "scheduler.pt")  # ZeRO keeps them in global_step*/
    for name in required:
        if not (path / name).is_file():
            return f"{name} is missing"
    for file in [*(path / n for n in required), *sorted(path.glob("rng_state*.pth"))]:
        if problem := _torch_file_problem(file):
            return problem
    return None


def checkpoint_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "trainer_state.json").read_text(encoding="utf-8"))


def newest_intact_checkpoint(output_dir: Path, main_process: bool = True) -> str | None:
    """The newest checkpoint that passes `checkpoint_problem`; damaged newer ones are set aside (renamed
    `checkpoint-N.damaged`, by the main process) with a warning. RlcalError when checkpoints exist but none is
    intact."""
    found = checkpoints(output_dir)
    damaged = []
    for path in found:
        problem = checkpoint_problem(path)
        if problem is None:
            if damaged:
                logger.warning("resuming from %s, the newest intact checkpoint", path.name)
            return str(path)
        damaged.append(f"{path.name}: {problem}")
        logger.warning("checkpoint %s is damaged (%s); set aside as %s.damaged", path.name, problem, path.name)
        if main_process:
            aside = path.with_name(path.name + ".damaged")
            if aside.exists():
                shutil.rmtree(aside)
            path.rename(aside)  # out of TRL's checkpoint rotation and of the next run's search
    if damaged:
        raise RlcalError(
            f"no intact checkpoint in {output_dir} ({'; '.join(damaged)}); set resume: never to start afresh"
        )
    return None


# ---- the plan --------------------------------------------------------------------------------------------------


@dataclass
class RunPlan:
    """What `rlcal train` does with `output_dir` (see the module docstring)."""

    output_dir: Path
    finished: bool = False  # the same run already ended: nothing to do
    checkpoint: str | None = None  # resume from here
    final_checkpoint: bool = False  # `checkpoint` already reached max_steps: finish from it without training
    fresh: bool = False  # an earlier run was cleared


def _has_model(output_dir: Path) -> bool:
    return any((output_dir / name).is_file() for name in WEIGHT_FILES)


def previous_run(output_dir: Path) -> bool:
    return (output_dir / RECIPE_FILE).is_file() or bool(checkpoints(output_dir))


def check_same_settings(recipe: Recipe) -> None:
    """RlcalError naming the keys that differ from the run saved in output_dir (if any)."""
    path = recipe.output_dir / RECIPE_FILE
    if not path.is_file():
        return
    try:
        saved = saved_values(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise RlcalError(f"{path} is unreadable ({exc}); set resume: never to start afresh") from None
    changed = changed_keys(recipe, saved)
    if changed:
        listed = ", ".join(changed[:8]) + (f" and {len(changed) - 8} more" if len(changed) > 8 else "")
        raise RlcalError(
            f"{recipe.output_dir} holds a run made with other settings ({listed} differ from its {RECIPE_FILE}); "
            "use another output_dir, or set resume: never to start afresh (removes that run)"
        )


def clear_run(output_dir: Path) -> list[str]:
    """Remove the files an earlier `rlcal train` wrote at the top of output_dir; returns their names."""
    removed = []
    for path in [
        *checkpoints(output_dir),
        *output_dir.glob("checkpoint-*.damaged"),
        *(output_dir / n for n in RUN_FILES),
    ]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        else:
            continue
        removed.append(path.name)
    return removed


def prepare_run(recipe: Recipe, main_process: bool = True) -> RunPlan:
    """Decide what to do with output_dir (module docstring). Every process calls it; only `main_process` changes
    files (renames damaged checkpoints, clears a run on a fresh start) — callers then wait for everyone."""
    out = recipe.output_dir
    plan = RunPlan(out)
    if recipe.resume == "never":
        if previous_run(out):
            plan.fresh = True
            if main_process:
                logger.warning("resume: never: removing the earlier run in %s (%s)", out, ", ".join(clear_run(out)))
        return plan
    if checkpoints(out) or (out / SUMMARY_FILE).is_file():  # a start that saved nothing has nothing to protect
        check_same_settings(recipe)
    if (out / SUMMARY_FILE).is_file() and _has_model(out):
        plan.finished = True
        return plan
    if recipe.resume != "auto":  # an explicit checkpoint path: validate it, no fallback
        problem = checkpoint_problem(Path(recipe.resume))
        if problem:
            raise RlcalError(f"resume checkpoint {recipe.resume} is damaged: {problem}")
        plan.checkpoint = recipe.resume
    else:
        plan.checkpoint = newest_intact_checkpoint(out, main_process)
    if plan.checkpoint is not None:
        state = checkpoint_state(plan.checkpoint)
        plan.final_checkpoint = 0 < int(state.get("max_steps") or 0) <= int(state["global_step"])
    return plan


def finish_from_checkpoint(checkpoint: str | Path, output_dir: Path) -> list[str]:
    """Copy a final checkpoint's model files (what `trainer.save_model` wrote into it) to output_dir."""
    skip = re.compile(
        r"^(optimizer\.pt|scheduler\.pt|rng_state.*\.pth|trainer_state\.json|training_args\.bin|latest"
        r"|zero_to_fp32\.py|global_step\d+)$"
    )
    copied = []
    for path in sorted(Path(checkpoint).iterdir()):
        if path.is_file() and not skip.match(path.name):
            shutil.copy2(path, output_dir / path.name)
            copied.append(path.name)
    return copied


def whole_run_train_loss(log_history: list[dict[str, Any]], resumed_at: int, resumed_loss: float, end: int) -> float:
    """The mean training loss over the whole run after a resume. The trainer's own `train_loss` covers only the
    steps after `resumed_at`; the steps before come from the logged `loss` values (each the mean over the steps
    since the previous log, rounded to 4 digits by transformers), weighted by the steps each covers."""
    total, steps, last = 0.0, 0, 0
    for row in log_history:
        step = row.get("step")
        if "loss" in row and isinstance(step, int) and last < step <= resumed_at:
            total, steps, last = total + row["loss"] * (step - last), steps + step - last, step
    after = max(end - resumed_at, 0)
    return (total + resumed_loss * after) / max(steps + after, 1)
