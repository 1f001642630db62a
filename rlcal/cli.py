"""The `rlcal` command line: one entry point, one sub-command per module.

    rlcal score preds.jsonl --out metrics.json      # score any model's predictions
    rlcal world build --out world/                  # build the embedded synthetic world
    rlcal pretrain recipes/toy/pretrain.yaml        # pretrain the tiny LM on it
    rlcal singleton-rate world/mentions.jsonl       # Good-Turing singleton rate + Theorem 2 bound
    rlcal train RECIPE.yaml [--key value ...]       # GRPO with calibrated rewards
    rlcal eval --model PATH --data FILE --out DIR   # calibration + behavioral-calibration sweep
    rlcal compare A/metrics.json B/metrics.json     # ECE drift between two checkpoints
    rlcal demo                                      # the paper's claims, end to end
    rlcal --version

Each sub-command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`; modules are
imported lazily so `rlcal score` never pays for torch. Errors meant for users are raised as `RlcalError` and
printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rlcal.common.errors import RlcalError

# name -> (module, one-line help). Imported only when the sub-command runs.
COMMANDS: dict[str, tuple[str, str]] = {
    "score": ("rlcal.evaluation.score", "Score predictions (JSONL): ECE, Brier, AUROC and per-threshold abstention metrics."),
    "world": ("rlcal.world.corpus", "Build the embedded synthetic arbitrary-facts world."),
    "pretrain": ("rlcal.world.pretrain", "Pretrain the tiny causal LM on the world corpus."),
    "singleton-rate": ("rlcal.world.singleton", "Singleton rate of a QA file and the Theorem 2 lower bound."),
    "train": ("rlcal.training.train", "GRPO/RLOO training with calibrated rewards from a recipe YAML."),
    "eval": ("rlcal.evaluation.command", "Evaluate calibration and behavioral calibration of a checkpoint."),
    "compare": ("rlcal.evaluation.compare", "Compare two metrics.json files: the calibration drift."),
    "demo": ("rlcal.demo", "Reproduce the paper's claims end to end on the embedded world."),
}


def _load(command: str):
    module_name = COMMANDS[command][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise RlcalError(f"`rlcal {command}` is not available in this version of rlcal") from exc
        raise


def one_line(exc: BaseException) -> str:
    """The error message on one line, whatever it quotes (a column name or a recipe key may hold a newline)."""
    return " ".join(str(exc).splitlines()).strip() or type(exc).__name__


def version() -> str:
    """rlcal's version, from the installed package metadata (pyproject.toml is the one place it is written); a
    source checkout run without installing reads its pyproject.toml."""
    try:
        return importlib.metadata.version("rlcal")
    except importlib.metadata.PackageNotFoundError:
        pass
    try:
        import tomllib  # Python >= 3.11

        pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
        return str(tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["version"])
    except (ImportError, OSError, KeyError, ValueError):
        return "unknown"


class _SubParser(argparse.ArgumentParser):
    """A sub-command's parser whose usage errors are one line (`rlcal score: error: argument --bins: invalid int
    value: 'x' (see rlcal score --help)`, exit 2) like every other bad input, not usage text plus a message."""

    def error(self, message: str):  # argparse calls this on a bad or missing argument
        raise RlcalError(f"{message} (see `{self.prog} --help`)")


def _top_parser() -> argparse.ArgumentParser:
    """Help, usage and --version only: sub-commands are dispatched by name, so their modules (and torch) load only
    when they run."""
    listing = "\n".join(f"  {name:<16} {help_text}" for name, (_, help_text) in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="rlcal",
        usage="rlcal [-h] [--version] COMMAND [ARGS ...]",
        description=__doc__.split("\n\n")[0],
        epilog=f"commands:\n{listing}\n\nRun `rlcal COMMAND --help` for the options of one command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        _top_parser().print_help(sys.stderr)
        return 2
    if argv[0] in ("-h", "--help"):
        _top_parser().print_help()
        return 0
    if argv[0] == "--version":
        print(f"rlcal {version()}")
        return 0
    command = argv[0]
    if command not in COMMANDS:
        what = "option" if command.startswith("-") else "command"
        print(f"rlcal: error: unknown {what} {command!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    try:
        module = _load(command)
        sub = _SubParser(prog=f"rlcal {command}", description=COMMANDS[command][1])
        module.add_arguments(sub)
        args = sub.parse_args(argv[1:])
        return int(module.run(args) or 0)
    except RlcalError as exc:
        print(f"rlcal {command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlcal {command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `rlcal ... | head`: the reader left; not an error worth a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
