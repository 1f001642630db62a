"""Pretrain the tiny causal LM from scratch on the embedded world's corpus (cross-entropy, transformers Trainer).

    rlcal pretrain recipes/toy/pretrain.yaml                          # world + tokenizer + model, ~3 min on 2 CPUs
    rlcal pretrain recipes/toy/pretrain.yaml --epochs 5 --output_dir outputs/quick

    from rlcal.world.pretrain import ensure_pretrained
    model_dir = ensure_pretrained("recipes/toy/pretrain.yaml")      # cached: trains only if not done yet

Steps: build the world into `world_dir` (reused if world.json there was built from the same `world_*` settings),
train a BPE tokenizer (one token per digit, chat template; trained with one-off names so no person gets a token
of their own), build a randomly initialised tiny Llama/Qwen2 (`model_size`, `model_family`) and train it with
cross-entropy on a stream of `epochs` passes over the corpus, each with its own brand-new people
(`rlcal.world.corpus.fresh_documents`: without them the model grows confidently wrong about unseen people), one
document per sequence (no packing, so training matches how prompts are seen at evaluation). The result is an HF
directory that `AutoModelForCausalLM` / `AutoTokenizer.from_pretrained` load offline, with `train_log.jsonl`,
`loss.png` and `pretrain_done.json` (written last: a directory without it is unfinished and `ensure_pretrained`
redoes it). The model is written to a hidden sibling directory that replaces `output_dir` in one rename when
complete (`rlcal.common.files.staged_dir`).

Recipe keys are the fields of `PretrainConfig` (YAML); `--key value` on the command line overrides them; unknown
keys are an error. Cross-entropy to near convergence is what makes the base model calibrated (Kalai et al. 2025).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import sys
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_bytes, check_creatable, check_out_dir, read_text, staged_dir
from rlcal.common.recipes import find_recipe
from rlcal.world.corpus import FORMAT_VERSION as WORLD_FORMAT_VERSION
from rlcal.world.corpus import (
    WORLD_FILES,
    WorldConfig,
    build_world,
    fresh_documents,
    load_world_stats,
    read_corpus,
    tokenizer_documents,
    world_matches,
)

DONE_MARKER = "pretrain_done.json"
DEFAULT_WORLD = WorldConfig()


@dataclass
class PretrainConfig:
    """A pretraining recipe: the world to build (`world_*`, as in `rlcal world build`) and how to train on it."""

    # -- world (fields mirror WorldConfig with a `world_` prefix; tests keep them in sync)
    world_dir: str = field(default="outputs/toy/world", metadata={"help": "Where the world is built (or reused)."})
    world_people: int = field(default=DEFAULT_WORLD.people, metadata={"help": "World: number of people."})
    world_mentions: int = field(default=DEFAULT_WORLD.mentions, metadata={"help": "World: fact mentions."})
    world_zipf: float = field(default=DEFAULT_WORLD.zipf, metadata={"help": "World: Zipf exponent."})
    world_zipf_offset: float = field(default=DEFAULT_WORLD.zipf_offset, metadata={"help": "World: Zipf offset."})
    world_seed: int = field(default=DEFAULT_WORLD.seed, metadata={"help": "World: random seed."})
    world_families: list[str] = field(
        default_factory=lambda: list(DEFAULT_WORLD.families), metadata={"help": "World: QA families."}
    )
    world_qa_format_share: float = field(
        default=DEFAULT_WORLD.qa_format_share, metadata={"help": "World: share of mentions in prompt format."}
    )
    world_question_share: float = field(
        default=DEFAULT_WORLD.question_share, metadata={"help": "World: share of bare Question/Answer mentions."}
    )
    world_thresholds: list[float] = field(
        default_factory=lambda: list(DEFAULT_WORLD.thresholds), metadata={"help": "World: t in prompt documents."}
    )
    world_fresh_share: float = field(
        default=DEFAULT_WORLD.fresh_share, metadata={"help": "World: brand-new people per epoch / mentions."}
    )
    world_idk_share: float = field(
        default=DEFAULT_WORLD.idk_share, metadata={"help": "World: brand-new people's 'I don't know' share."}
    )
    world_qa_people: int = field(default=DEFAULT_WORLD.qa_people, metadata={"help": "World: people in qa.jsonl."})
    world_eval_fraction: float = field(default=DEFAULT_WORLD.eval_fraction, metadata={"help": "World: eval share."})
    world_pattern_examples: int = field(
        default=DEFAULT_WORLD.pattern_examples, metadata={"help": "World: corpus examples per pattern family."}
    )
    world_pattern_questions: int = field(
        default=DEFAULT_WORLD.pattern_questions, metadata={"help": "World: QA questions per pattern family."}
    )
    world_forecast_towns: int = field(
        default=DEFAULT_WORLD.forecast_towns, metadata={"help": "World: towns of the forecast family."}
    )
    world_forecast_observations: int = field(
        default=DEFAULT_WORLD.forecast_observations, metadata={"help": "World: corpus weather reports per town."}
    )
    world_forecast_questions: int = field(
        default=DEFAULT_WORLD.forecast_questions, metadata={"help": "World: forecast questions per town."}
    )
    # -- model and tokenizer
    output_dir: str = field(default="outputs/toy/pretrained", metadata={"help": "Where the HF model dir goes."})
    model_family: str = field(default="llama", metadata={"help": "llama | qwen2"})
    model_size: str = field(default="tiny", metadata={"help": "nano | tiny | small | base (rlcal.world.toymodel.SIZES)."})
    vocab_size: int = field(default=1024, metadata={"help": "BPE vocabulary size (>= 300)."})
    max_seq_len: int = field(default=128, metadata={"help": "Longer documents are truncated (counted in the log)."})
    # -- training
    epochs: int = field(default=16, metadata={"help": "Passes over the corpus (each with fresh brand-new people)."})
    max_steps: int = field(default=-1, metadata={"help": "If > 0, stop after this many steps."})
    learning_rate: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "transformers scheduler name."})
    warmup_ratio: float = field(default=0.05, metadata={"help": "Share of steps for linear warmup."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    batch_size: int = field(default=16, metadata={"help": "Documents per step."})
    seed: int = field(default=0, metadata={"help": "Seed for model init and data order."})
    num_threads: int = field(
        default=0,
        metadata={
            "help": "torch CPU threads; 0 = auto (all cores if idle, fewer if other jobs run). The thread count "
            "changes the order of floating-point sums, so the weights are bit-identical only for the same count "
            "(recorded as `threads` in pretrain_done.json): set it for bit-for-bit reproducible runs."
        },
    )
    logging_steps: int = field(default=25, metadata={"help": "Log the loss every N steps."})
    progress: bool = field(default=True, metadata={"help": "Show a tqdm progress bar."})
    verbose: bool = field(
        default=False, metadata={"help": "Print every log dict (transformers' default) instead of one progress bar."}
    )

    def __post_init__(self) -> None:
        _coerce_types(self)
        from rlcal.world.toymodel import FAMILIES, SIZES

        if self.model_family not in FAMILIES:
            raise RlcalError(f"model_family must be one of {', '.join(FAMILIES)}, got {self.model_family!r}")
        if self.model_size not in SIZES:
            raise RlcalError(f"model_size must be one of {', '.join(SIZES)}, got {self.model_size!r}")
        checks = {
            # upper bounds: far above a toy model's needs, below what exhausts memory or runs for days
            "vocab_size": 300 <= self.vocab_size <= 1_000_000,
            "max_seq_len": 8 <= self.max_seq_len <= 65_536,
            "epochs": 0 < self.epochs <= 100_000,
            "learning_rate": self.learning_rate > 0 and math.isfinite(self.learning_rate),
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": 0 < self.batch_size <= 1_000_000,
            "seed": self.seed >= 0,
            "num_threads": self.num_threads >= 0,
            "logging_steps": self.logging_steps > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise RlcalError("invalid pretrain config: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))
        self.world_config()  # validate the world part now, not after minutes of work

    def world_config(self) -> WorldConfig:
        """The `WorldConfig` described by the `world_*` fields."""
        return WorldConfig(**{f.name: getattr(self, f"world_{f.name}") for f in fields(WorldConfig)})


def _coerce_types(config: Any) -> None:
    """YAML values bypass argparse's type conversion (and YAML reads `1e-3` as a string): convert scalars to the
    declared int/float/bool types, with an error naming the field when that is impossible."""
    hints = typing.get_type_hints(type(config))
    for f in fields(config):
        kind, value = hints[f.name], getattr(config, f.name)
        try:
            if kind is float and not isinstance(value, float):
                if isinstance(value, bool):
                    raise ValueError
                setattr(config, f.name, float(value))
            elif kind is int and not isinstance(value, int):
                number = float(value)
                if not number.is_integer():
                    raise ValueError
                setattr(config, f.name, int(number))
            elif kind is bool and not isinstance(value, bool):
                text = str(value).lower()
                if text not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                setattr(config, f.name, text in ("true", "1", "yes"))
            elif kind is str and not isinstance(value, str):
                raise ValueError
        except (TypeError, ValueError):
            raise RlcalError(f"{f.name} must be {getattr(kind, '__name__', kind)}, got {value!r}") from None


def load_pretrain_config(path: str | Path, overrides: list[str] | None = None) -> PretrainConfig:
    """Read a pretraining recipe (YAML mapping of `PretrainConfig` fields) and apply `--key value` overrides."""
    import yaml
    from trl import TrlParser

    path = find_recipe(path)  # as given, else the recipe shipped with rlcal (rlcal.common.recipes)
    try:
        recipe = yaml.safe_load(read_text(path)) or {}
    except yaml.YAMLError as exc:
        raise RlcalError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(recipe, dict):
        raise RlcalError(f"{path}: a recipe must be a YAML mapping of settings, got {type(recipe).__name__}")
    known = {f.name for f in fields(PretrainConfig)} | {"env"}  # `env`: environment variables (TrlParser)
    unknown = sorted(set(recipe) - known)
    if unknown:
        raise RlcalError(f"{path}: unknown keys {', '.join(unknown)} (see `rlcal pretrain --help`)")

    class _Parser(TrlParser):
        def error(self, message: str) -> typing.NoReturn:  # argparse would print usage and exit
            raise RlcalError(f"invalid recipe value or override: {message}")

    parser = _Parser(PretrainConfig)
    try:
        (config,) = parser.parse_args_and_config(["--config", str(path), *(overrides or [])])
    except ValueError as exc:  # unknown command-line keys
        raise RlcalError(str(exc)) from None
    return config


# ---- training -------------------------------------------------------------------------------------------------------


def _tokenize_corpus(tokenizer: Any, docs: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Token ids per document (+ eos, so the model learns to stop after an answer); truncated to max_len."""
    encoded = tokenizer(docs, add_special_tokens=False)["input_ids"]
    out, truncated = [], 0
    for ids in encoded:
        ids = ids + [tokenizer.eos_token_id]
        if len(ids) > max_len:
            truncated += 1
            ids = ids[:max_len]
        out.append(ids)
    return out, truncated


def _plot_loss(log: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in log if "loss" in row]
    losses = [row["loss"] for row in log if "loss" in row]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, losses, lw=0.8, alpha=0.35, label="logged loss")
    # Length-grouped batches alternate between prompt documents (predictable instructions, low loss) and prose.
    window = max(1, min(10, len(losses) // 5))
    smooth = [
        sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1])
        for i in range(len(losses))
    ]
    ax.plot(steps, smooth, lw=1.8, label=f"moving average ({window} logs)")
    ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_yscale("log")
    ax.set_title("Tiny LM pretraining on the world corpus")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def _is_model_dir(path: Path) -> bool:
    return (path / DONE_MARKER).exists() or (path / "config.json").exists()


def _check_output(output_dir: Path) -> None:
    """Refuse to replace a non-model directory, and check that the model can be written (before any slow work)."""
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())) and not _is_model_dir(output_dir):
        raise RlcalError(f"{output_dir} exists and is not a model directory; refusing to overwrite it")
    check_creatable(output_dir, "output directory", beside=True)  # probes without creating any folder


def _busy_cores() -> float:
    """How many other runnable tasks there are now (Linux: /proc/loadavg, median of a few samples), else the
    1-minute load average (which lags: it stays high for a minute after a job ends)."""
    try:
        samples = []
        for _ in range(5):
            with open("/proc/loadavg", encoding="ascii") as handle:
                samples.append(int(handle.read().split()[3].split("/")[0]) - 1)  # minus this process
            time.sleep(0.05)
        return float(sorted(samples)[len(samples) // 2])
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:  # pragma: no cover - neither is available on this platform
            return 0.0


def auto_threads() -> int:
    """CPU threads for training: every core on an idle machine, fewer when other jobs are running.

    Intra-op threads that compete with other processes for the same cores spin at every barrier; measured on a
    2-core machine with ~3 other jobs: 2 threads trained at ~80 tokens/s, 1 thread at ~7,000 tokens/s.
    """
    cores = os.cpu_count() or 1
    return max(1, cores - math.ceil(_busy_cores() - 0.5))


def pretrain(config: PretrainConfig) -> Path:
    """Build (or reuse) the world, train tokenizer + tiny LM on its corpus, save an HF model dir; returns its path."""
    output_dir = Path(config.output_dir)
    _check_output(output_dir)  # fail fast, before the slow imports
    check_out_dir(config.world_dir, WORLD_FILES, "world_dir")  # the world is (re)built there first
    import torch

    threads = torch.get_num_threads()
    use = config.num_threads or auto_threads()
    if not config.num_threads and use < (os.cpu_count() or 1):
        # Fewer threads train faster on a busy machine but sum in another order: other weights than an idle run's
        # (measured: benchmark seed 2 pretrained with 1 thread and with 2 gave different models from one world).
        print(f"pretrain: {use} of {os.cpu_count()} CPU threads (other jobs are running); the weights differ from a "
              "run with another thread count: set num_threads for bit-identical reruns", file=sys.stderr)
    torch.set_num_threads(use)
    try:
        # The model is written into a hidden sibling folder that replaces output_dir in one rename when complete.
        with staged_dir(output_dir, owned=None) as partial:
            summary = _pretrain(config, partial)
    finally:
        torch.set_num_threads(threads)  # process-wide setting: leave it as it was
    print(
        f"pretrained {output_dir}: {summary['steps']} steps, final loss {summary['final_loss']}, "
        f"{summary['train_seconds']:.0f}s training (~{summary['tokens_per_second']} tokens/s)"
    )
    return output_dir


def _pretrain(config: PretrainConfig, partial: Path) -> dict[str, Any]:
    import datasets
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from rlcal.common.progress import quiet_trainer
    from rlcal.world.toymodel import build_tiny_model, build_tokenizer, count_parameters

    start = time.perf_counter()
    world = config.world_config()
    if world_matches(config.world_dir, world):
        stats = load_world_stats(config.world_dir)
        print(f"world: reusing {config.world_dir}")
    else:
        stats = build_world(world, config.world_dir)
        print(f"world: built {config.world_dir}")
    world_seconds = time.perf_counter() - start

    corpus = read_corpus(config.world_dir)
    # The training stream: the corpus once per epoch plus that epoch's brand-new people (see fresh_documents).
    docs = [doc for epoch in range(config.epochs) for doc in (*corpus, *fresh_documents(world, epoch))]
    tokenizer = build_tokenizer(
        tokenizer_documents(world, corpus), vocab_size=config.vocab_size, model_max_length=config.max_seq_len
    )
    ids, truncated = _tokenize_corpus(tokenizer, docs, config.max_seq_len)
    n_tokens = sum(len(x) for x in ids)
    model = build_tiny_model(tokenizer, size=config.model_size, family=config.model_family, seed=config.seed)
    n_params = count_parameters(model)
    print(
        f"training stream: {config.epochs} x {len(corpus)} corpus documents + {len(docs) - config.epochs * len(corpus)} "
        f"about brand-new people = {n_tokens} tokens ({truncated} truncated); tokenizer: {len(tokenizer)} "
        f"tokens; model: {config.model_family}/{config.model_size}, {n_params / 1e6:.2f}M parameters"
    )

    train_set = datasets.Dataset.from_dict({"input_ids": ids, "length": [len(x) for x in ids]})
    args = TrainingArguments(
        output_dir=str(partial / "trainer"),
        per_device_train_batch_size=config.batch_size,
        num_train_epochs=1,  # the epochs are in the stream
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,  # a float in [0, 1) is a ratio of the total steps
        weight_decay=config.weight_decay,
        # Batches of similar length waste little on padding (prompt documents are ~4x longer than prose).
        train_sampling_strategy="group_by_length",
        logging_steps=config.logging_steps,
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        use_cpu=not torch.cuda.is_available(),
        disable_tqdm=not config.progress,
        dataloader_num_workers=0,
    )
    # Pads are masked out of the loss; eos (a different id) is learned.
    collator = DataCollatorForLanguageModeling(tokenizer, mlm=False)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the Trainer's CPU/AMP chatter is not for users here
    try:
        trainer = Trainer(model=model, args=args, train_dataset=train_set, data_collator=collator)
        # The loss log is written below (train_log.jsonl, loss.png); the terminal gets one bar, not a dict a log.
        quiet_trainer(trainer, "pretraining", None, verbose=config.verbose, bar=config.progress)
        result = trainer.train()
    finally:
        hf_logging.set_verbosity(verbosity)
    train_seconds = result.metrics.get("train_runtime", 0.0)
    log = [row for row in trainer.state.log_history if "loss" in row]

    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    shutil.rmtree(partial / "trainer", ignore_errors=True)
    (partial / "train_log.jsonl").write_text("".join(json.dumps(row) + "\n" for row in log), encoding="utf-8")
    if log:
        _plot_loss(log, partial / "loss.png")
    summary = {
        "config": _fingerprint(config),
        "world": {k: stats.get(k) for k in ("singleton_rate", "singleton_rate_target", "missing_mass", "n_records")},
        "parameters": n_params,
        "stream_tokens": n_tokens,
        "truncated_documents": truncated,
        "steps": trainer.state.global_step,
        "final_loss": log[-1]["loss"] if log else None,
        "train_loss": result.training_loss,
        "world_seconds": round(world_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "tokens_per_second": round(n_tokens * float(trainer.state.epoch or 0) / train_seconds)
        if train_seconds
        else None,
        "stream_documents": len(docs),
        "threads": torch.get_num_threads(),
    }
    (partial / DONE_MARKER).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


# Settings that change how a run looks or how fast it goes, not what it produces: not part of the cache key.
_NOT_IN_FINGERPRINT = ("num_threads", "progress", "verbose", "logging_steps")


def _fingerprint(config: PretrainConfig) -> dict[str, Any]:
    # The world's format version too: the same settings give another corpus when the world's text changes.
    settings = {k: v for k, v in asdict(config).items() if k not in _NOT_IN_FINGERPRINT}
    return {**settings, "world_format_version": WORLD_FORMAT_VERSION}


def is_pretrained(config: PretrainConfig) -> bool:
    """True if `config.output_dir` holds a finished model trained from exactly this config."""
    marker = Path(config.output_dir) / DONE_MARKER
    try:
        done = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return done.get("config") == _fingerprint(config)


def ensure_pretrained(config_or_recipe_path: PretrainConfig | str | Path) -> Path:
    """The pretrained model directory, building the world and pretraining only if it is missing, unfinished, or
    was trained from different settings. Used by training recipes to bootstrap a fresh checkout."""
    config = (
        config_or_recipe_path
        if isinstance(config_or_recipe_path, PretrainConfig)
        else load_pretrain_config(config_or_recipe_path)
    )
    if is_pretrained(config):
        return Path(config.output_dir)
    return pretrain(config)


# ---- command line ---------------------------------------------------------------------------------------------------


def _fields_help() -> str:
    lines = ["recipe keys (YAML, or --key value overrides):"]
    for f in fields(PretrainConfig):
        default = f.default_factory() if callable(f.default_factory) else f.default  # type: ignore[misc]
        lines.append(f"  {f.name:<24} {f.metadata.get('help', '')} (default: {default})")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _fields_help()
    parser.add_argument("recipe", help="Pretraining recipe YAML (e.g. recipes/toy/pretrain.yaml).")
    parser.add_argument("overrides", nargs=argparse.REMAINDER, help="--key value pairs overriding the recipe.")


def run(args: argparse.Namespace) -> int:
    config = load_pretrain_config(args.recipe, args.overrides)
    pretrain(config)
    return 0
