"""A test-only entry point for multi-process training: `python -m rlcal.train` plus per-rank records.

    RLCAL_PROBE_DIR=/tmp/probe accelerate launch --multi_gpu --num_processes 2 tests/distributed_probe.py \
        --config RECIPE.yaml

tests/test_distributed.py launches it; it is not a test module (no test_ prefix) and not part of rlcal, so the
production code carries no test hooks. Each process writes, into $RLCAL_PROBE_DIR:
- `rewards_rank<R>.jsonl`: one line per reward call made by TRL (step, prompts, thresholds, graded outcomes,
  rewards): what this process's reward function saw;
- `writes_rank<R>.json`: every path this process opened for writing, created or renamed into (from Python's audit
  hooks: `open`, `os.mkdir`, `os.rename`, `os.replace`), to check that only the main process writes outputs.

With RLCAL_PROBE_EXIT_AT_STEP=K every process ends at once (`os._exit`, no clean-up: a kill) when step K + 1
begins, i.e. after step K ran but before it could be saved unless K is a save step.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

PROBE = Path(os.environ["RLCAL_PROBE_DIR"])
RANK = int(os.environ.get("RANK", "0"))
WRITES: list[str] = []
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def _record_writes(event: str, args: tuple) -> None:
    """Audit hook: remember every path written (the probe's own files are left out by the test)."""
    path = None
    if event == "open":
        target, mode, flags = args
        writing = any(c in mode for c in "wax+") if isinstance(mode, str) else bool((flags or 0) & WRITE_FLAGS)
        path = target if writing else None
    elif event == "os.mkdir":
        path = args[0]
    elif event in ("os.rename", "os.replace"):
        path = args[1]
    if isinstance(path, str | bytes | os.PathLike):
        WRITES.append(os.path.abspath(os.fsdecode(path)))


def _dump_writes() -> None:
    (PROBE / f"writes_rank{RANK}.json").write_text(json.dumps(sorted(set(WRITES))))


class RecordingReward:
    """The real rlcal reward, recording each TRL call (not the warm-up's probe calls: those pass no trainer_state)."""

    def __init__(self, inner) -> None:
        self.inner, self.__name__ = inner, inner.__name__
        self.path = PROBE / f"rewards_rank{RANK}.jsonl"

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, prompts=None, completions=(), **columns):
        rewards = self.inner(prompts=prompts, completions=completions, **columns)
        state = columns.get("trainer_state")
        if state is not None:
            graded = {k: v for k, v in columns.items() if k in ("answer", "aliases", "question")}
            record = {
                "rank": RANK,
                "step": state.global_step + 1,  # the step these completions train
                "prompts": list(prompts),
                "threshold": list(columns["threshold"]),
                "completions": list(completions),
                "outcomes": self.inner.outcomes(list(completions), **graded),
                "rewards": list(rewards),
            }
            with self.path.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        return rewards


def main() -> int:
    from rlcal.training import train as train_mod

    sys.addaudithook(_record_writes)
    real_rewards, real_callbacks = train_mod.build_reward_funcs, train_mod.build_callbacks
    train_mod.build_reward_funcs = lambda recipe: [RecordingReward(r) for r in real_rewards(recipe)]
    exit_at = os.environ.get("RLCAL_PROBE_EXIT_AT_STEP")
    if exit_at:
        from transformers import TrainerCallback

        class Kill(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                if state.global_step == int(exit_at):
                    _dump_writes()
                    os._exit(137)

        train_mod.build_callbacks = lambda recipe: [*real_callbacks(recipe), Kill()]
    try:
        return train_mod.main(sys.argv[1:])
    finally:
        _dump_writes()


if __name__ == "__main__":
    sys.exit(main())
