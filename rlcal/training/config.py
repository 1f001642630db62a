"""Training recipes: YAML sections parsed into dataclasses, CLI overrides, validation before any model loads.

    from rlcal.training.config import load_recipe
    recipe = load_recipe("recipes/toy/grpo/config_confidence_target.yaml", ["--training.learning_rate", "5e-5"])
    recipe.training            # a trl.GRPOConfig (RLOOConfig when `trainer: rloo`, PPOConfig when `trainer: ppo`)
    print(recipe.to_yaml())    # the resolved recipe (what `rlcal train --dry-run` prints)

A recipe is a YAML mapping with these sections (every key optional except `model.model_name_or_path`,
`data.source` and, for GRPO, `training.scale_rewards`):

    trainer: grpo               # grpo | rloo (TRL's RLOOTrainer) | ppo (PPO with a value head, rlcal.training.ppo)
    resume: auto                # auto (newest checkpoint in output_dir) | never | path/to/checkpoint
    model:       ModelArguments      - trl.ModelConfig (model_name_or_path, dtype, use_peft, lora_*, load_in_4bit)
                                       + pretrain_recipe (build the toy model when the model dir is missing)
    data:        DataArguments       - source, split, subset, columns, split_filter, prompt template
    reward:      RewardArguments     - name, threshold sampler spec, grader, abstain phrases
                 (data + reward.grader/abstain_phrases = the QA task, `rlcal.data.task.QATask`: `recipe.task()`)
    warmup:      WarmupArguments     - optional SFT warm-up that teaches the answer/"I don't know" format
    training:    trl.GRPOConfig / trl.RLOOConfig fields (PPOConfig: GRPOConfig + PPO's gamma, lam, kl_coef, ...)
    wandb:       WandbArguments      - project, entity, name, tags, mode
    calibration: rlcal.training.callbacks.CalibrationEvalConfig

Parsing is TRL's: each section goes through `trl.TrlParser` (an `HfArgumentParser`), the YAML values become the
parser defaults and CLI flags override them, so types and help texts come from the dataclasses. CLI keys are
`--section.key value` (`--training.learning_rate 1e-5`); a bare `--key value` goes to `training` when it is a
trainer field, else to the one section that has it. Unknown keys, in YAML or on the command line, are errors
that name them (with a did-you-mean). Every problem is raised as one `RlcalError` before any model is loaded.
"""

from __future__ import annotations

import enum
import math
import os
import typing
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from trl import GRPOConfig, ModelConfig, RLOOConfig, TrlParser

from rlcal.common.errors import RlcalError
from rlcal.common.recipes import find_recipe
from rlcal.core.rewards import REWARD_FORMS, REWARDS
from rlcal.core.thresholds import ThresholdSampler
from rlcal.data.task import (
    GRADING_FIELDS,
    PROMPT_FIELDS,
    FieldGroup,
    GradingSpec,
    PromptSpec,
    QASource,
    QATask,
    read_recipe_file,
    unknown_keys_error,
)
from rlcal.training.callbacks import CalibrationEvalConfig

VALUE_HEADS = ("shared",)
TOP_LEVEL_KEYS = ("trainer", "resume")
ANSWER_TARGETS = ("self", "sample", "gold")  # warmup.answer_target
WANDB_MODES = ("online", "offline", "disabled")


def _parse_mapping(value: Any, what: str) -> Any:
    """CLI values for dict-typed fields arrive as strings: read them as YAML (`{answer: answer.value}`, `0.75`)."""
    if isinstance(value, str):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"{what}: cannot parse {value!r} as YAML: {exc}") from None
    return value


@dataclass
class ModelArguments(ModelConfig):
    """The `model:` section: TRL's ModelConfig (LoRA via `use_peft` + `lora_*`, 4-bit via `load_in_4bit`)."""

    use_peft: bool = field(default=True, metadata={"help": "Train a LoRA adapter (PEFT) instead of all weights."})
    lora_target_modules: list[str] | None = field(
        default_factory=lambda: ["all-linear"], metadata={"help": "LoRA target modules (`all-linear` = every Linear)."}
    )
    pretrain_recipe: str | None = field(
        default=None,
        metadata={
            "help": "Toy models: a `rlcal pretrain` recipe that builds the world and the model when "
            "`model_name_or_path` does not exist yet (cached for later runs)."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.model_name_or_path:
            raise ValueError("model_name_or_path is required (a Hugging Face model id or a local directory)")
        if self.dtype not in (None, "auto", "float32", "bfloat16", "float16"):
            raise ValueError(f"dtype must be auto, float32, bfloat16 or float16, got {self.dtype!r}")
        if self.lora_r <= 0 or self.lora_alpha <= 0 or not (0.0 <= self.lora_dropout < 1.0):
            raise ValueError("lora_r and lora_alpha must be > 0 and lora_dropout in [0, 1)")


@dataclass
class DataArguments(PromptSpec, QASource):
    """The `data:` section: which QA rows to train on and how each becomes a confidence-target prompt.

    Its fields are declared once in `rlcal.data.task` (`QASource` + `PromptSpec`, shared with `rlcal eval` and the
    calibration section); `Recipe.task()` adds the reward section's grading to give the whole `QATask`.
    """


@dataclass
class _RewardShape(FieldGroup):
    # Declared in a base ahead of GradingSpec only so that the section keeps listing name and threshold first.
    name: str = field(default="confidence_target", metadata={"help": f"One of {', '.join(REWARDS)}."})
    threshold: dict | str | None = field(
        default=None,
        metadata={
            "help": "Confidence-target sampler: a number (fixed t) or {choice: [...]} / {uniform: [lo, hi]} / "
            "{beta: [a, b]}, with optional cap/decimals. Default: {choice: [0.5, 0.75, 0.9]}."
        },
    )
    threshold_draws: int = field(
        default=1,
        metadata={
            "help": "Confidence targets drawn per training question: each question appears this many times, each "
            "with its own t (so the warm-up and RL see the same question on both sides of its confidence)."
        },
    )
    form: str = field(
        default="paper",
        metadata={
            "help": "confidence_target only: `paper` (+1 / 0 / -t/(1-t)) or `bounded` (+1 correct, 2t-1 abstain, "
            "-1 wrong: the same optimal policy, answer iff P(correct) > t, with rewards in [-1, 1] at every t)."
        },
    )


@dataclass
class RewardArguments(GradingSpec, _RewardShape):
    """The `reward:` section: the calibrated reward, how confidence targets t are drawn per example, and the
    grading (`grader`, `abstain_phrases`: `rlcal.data.task.GradingSpec`, shared with evaluation)."""

    def __post_init__(self) -> None:
        if self.name not in REWARDS:
            raise ValueError(f"unknown reward {self.name!r}; choose from {', '.join(REWARDS)}")
        super().__post_init__()  # grader and abstain phrases
        if isinstance(self.threshold_draws, bool) or not isinstance(self.threshold_draws, int):
            raise ValueError(f"reward.threshold_draws must be an integer, got {self.threshold_draws!r}")
        if not 1 <= self.threshold_draws <= 1000:
            raise ValueError(f"reward.threshold_draws must be in [1, 1000], got {self.threshold_draws}")
        if self.form not in REWARD_FORMS:
            raise ValueError(f"reward.form must be one of {', '.join(REWARD_FORMS)}, got {self.form!r}")
        if self.form != "paper" and self.name != "confidence_target":
            raise ValueError(f"reward.form {self.form!r} applies to confidence_target only, not {self.name!r}")
        spec = _parse_mapping(self.threshold, "threshold")
        self.threshold = {"choice": [0.5, 0.75, 0.9]} if spec is None else spec
        self.sampler()  # t >= 1, bad weights, unknown sampler keys: all fail here

    def sampler(self) -> ThresholdSampler:
        return ThresholdSampler.from_spec(self.threshold)

    def reward_kwargs(self) -> dict[str, Any]:
        extra = {"form": self.form} if self.name == "confidence_target" else {}
        return {"grader": self.grader, "abstain_phrases": self.abstain_phrases, **extra}


@dataclass
class WarmupArguments:
    """The `warmup:` section: a short SFT stage before RL so that "I don't know" is a behaviour RL can reinforce.

    A model that was only pretrained never abstains, so every completion in a GRPO group earns the same kind of
    reward and the group has no advantage signal. The warm-up fine-tunes on the confidence-target prompts with
    targets that are the model's own greedy answer (no new knowledge) or an abstention.
    """

    steps: int = field(default=0, metadata={"help": "SFT optimizer steps before RL; 0 turns the warm-up off."})
    num_examples: int = field(default=512, metadata={"help": "Training rows used to build warm-up targets."})
    abstain_on: str = field(
        default="wrong",
        metadata={
            "help": 'Which rows get an "I don\'t know" target: `wrong` (rows the base model answers wrongly, '
            "each with probability abstain_fraction), `below_threshold` (rows whose base-model answer probability "
            "is <= the row's t: the reference policy, t-aware; each with probability abstain_fraction) or "
            "`random` (a random abstain_fraction of all rows)."
        },
    )
    abstain_fraction: float = field(default=0.5, metadata={"help": "Probability/share of abstention targets."})
    answer_target: str = field(
        default="self",
        metadata={
            "help": "Target for the other rows: `self` (the base model's greedy answer), `sample` (one answer "
            "sampled from the base model at temperature 1: fine-tuning on its own samples leaves its answer "
            "distribution, hence its calibration at t = 0, where it was; greedy targets sharpen it) or `gold`."
        },
    )
    abstain_text: str = field(default="I don't know.", metadata={"help": "The abstention target text."})
    state_confidence: bool = field(
        default=False,
        metadata={
            "help": "Append the base model's own probability of each answer target as `, 70% confident` "
            "(the stated-confidence route: train with reward `brier`, evaluate with --confidence verbal --policy "
            "posthoc). Needs max_new_tokens and training.max_completion_length long enough for the tag."
        },
    )
    use_peft: bool = field(
        default=True,
        metadata={"help": "Warm up a LoRA (settings of the model section) and merge it; false = all weights."},
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "SFT learning rate."})
    batch_size: int = field(default=16, metadata={"help": "SFT per-device batch size."})
    max_new_tokens: int = field(default=16, metadata={"help": "Greedy answer length when building `self` targets."})
    probe_prompts: int = field(
        default=0,
        metadata={
            "help": "Before RL (and before/after the warm-up) sample num_generations completions for this many "
            "prompts and report the fraction of groups with zero reward variance; 0 = skip."
        },
    )

    def __post_init__(self) -> None:
        if self.steps < 0 or self.num_examples <= 0 or self.batch_size <= 0 or self.max_new_tokens <= 0:
            raise ValueError("steps must be >= 0; num_examples, batch_size and max_new_tokens must be > 0")
        if self.probe_prompts < 0:
            raise ValueError("probe_prompts must be >= 0")
        if self.abstain_on not in ("wrong", "below_threshold", "random"):
            raise ValueError(f"abstain_on must be `wrong`, `below_threshold` or `random`, got {self.abstain_on!r}")
        if self.answer_target not in ANSWER_TARGETS:
            raise ValueError(f"answer_target must be one of {', '.join(ANSWER_TARGETS)}, got {self.answer_target!r}")
        if not (0.0 <= self.abstain_fraction <= 1.0):
            raise ValueError(f"abstain_fraction must be in [0, 1], got {self.abstain_fraction}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ValueError("learning_rate must be > 0")


@dataclass
class WandbArguments:
    """The `wandb:` section (used when `training.report_to` includes wandb)."""

    project: str = field(default="rlcal", metadata={"help": "W&B project."})
    entity: str | None = field(default=None, metadata={"help": "W&B entity (team or user)."})
    name: str | None = field(default=None, metadata={"help": "Run name (default: training.run_name)."})
    tags: list[str] | None = field(default=None, metadata={"help": "Run tags."})
    group: str | None = field(default=None, metadata={"help": "Run group (e.g. one per sweep)."})
    mode: str | None = field(
        default=None,
        metadata={
            "help": "online | offline | disabled. Default: $WANDB_MODE, else online when credentials exist and "
            "offline otherwise (never blocks on a missing network)."
        },
    )

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in WANDB_MODES:
            raise ValueError(f"mode must be one of {', '.join(WANDB_MODES)}, got {self.mode!r}")


@dataclass
class PPOConfig(GRPOConfig):
    """The `training:` section of `trainer: ppo`: TRL's GRPOConfig (generation, vLLM, logging, checkpoints, and
    `epsilon` / `epsilon_high` as the policy clip range) plus PPO's own knobs. Run by `rlcal.training.ppo`.

    A rollout is the generation batch, per_device_train_batch_size x processes x gradient_accumulation_steps x
    num_mini_batches completions; each of its num_mini_batches minibatches is one optimizer step, ppo_epochs times
    over (TRL's steps_per_generation and num_iterations, set from these). GRPO's advantage knobs (scale_rewards,
    loss_type, beta) play no part: the critic is the baseline and the KL to the reference sits in the reward.
    """

    gamma: float = field(default=1.0, metadata={"help": "PPO: discount per completion token (GAE's gamma)."})
    lam: float = field(default=0.95, metadata={"help": "PPO: GAE's lambda (1 = Monte-Carlo returns, 0 = TD(0))."})
    kl_coef: float = field(
        default=0.05,
        metadata={
            "help": "PPO: weight of the per-token KL penalty -kl_coef * (log p - log p_ref) in the reward; the "
            "reference is the model with its LoRA adapter disabled."
        },
    )
    cliprange_value: float = field(
        default=0.2, metadata={"help": "PPO: how far a value may move from its rollout value before it is clipped."}
    )
    vf_coef: float = field(default=0.1, metadata={"help": "PPO: weight of the value loss in the total loss."})
    ppo_epochs: int = field(default=4, metadata={"help": "PPO: passes over each rollout."})
    num_mini_batches: int = field(
        default=1, metadata={"help": "PPO: optimizer steps per pass over a rollout (the rollout is split this way)."}
    )
    whiten_advantages: bool = field(
        default=True, metadata={"help": "PPO: normalise the advantages of each rollout to mean 0, std 1."}
    )
    value_head: str = field(
        default="shared",
        metadata={
            "help": "PPO: the critic. `shared`: a scalar linear head on the policy's last hidden state (the LoRA "
            "trunk is shared), saved beside the adapter as value_head.safetensors."
        },
    )

    def __post_init__(self) -> None:
        if not (0.0 <= self.gamma <= 1.0 and 0.0 <= self.lam <= 1.0):
            raise ValueError(f"gamma and lam must be in [0, 1], got {self.gamma} and {self.lam}")
        if self.kl_coef < 0 or self.vf_coef < 0 or self.cliprange_value <= 0:
            raise ValueError("kl_coef and vf_coef must be >= 0 and cliprange_value > 0")
        if self.ppo_epochs < 1 or self.num_mini_batches < 1:
            raise ValueError(
                f"ppo_epochs and num_mini_batches must be >= 1, got {self.ppo_epochs}, {self.num_mini_batches}"
            )
        if self.value_head not in VALUE_HEADS:
            raise ValueError(
                f"value_head must be one of {', '.join(VALUE_HEADS)} (a separate critic model is not implemented), "
                f"got {self.value_head!r}"
            )
        if self.beta != 0.0:
            raise ValueError("PPO puts the KL to the reference in the reward: set kl_coef, not beta")
        steps = self.num_mini_batches * self.gradient_accumulation_steps
        if self.num_iterations not in (1, self.ppo_epochs) or self.steps_per_generation not in (None, steps):
            raise ValueError("PPO sets num_iterations and steps_per_generation: set ppo_epochs and num_mini_batches")
        if self.generation_batch_size is not None:
            raise ValueError("PPO's rollout size comes from num_mini_batches: leave generation_batch_size unset")
        self.num_iterations, self.steps_per_generation = self.ppo_epochs, steps
        # Under DDP the value head runs in a hook, so its output is not among the forward's outputs: DDP's search for
        # unused parameters (Trainer's default for a PEFT model) would mark the head unused, then see its gradient.
        # Every trainable parameter gets a gradient at every PPO step, so no search is needed.
        if self.ddp_find_unused_parameters:
            raise ValueError("trainer ppo needs ddp_find_unused_parameters false (its value head runs in a hook)")
        self.ddp_find_unused_parameters = False
        single = self.num_generations == 1  # allowed: the critic, not a group of siblings, is PPO's baseline
        if single:
            # GRPOConfig refuses one generation; give it a group size that divides the generation batch, then undo.
            if self.per_device_train_batch_size * steps < 2:
                raise ValueError("PPO whitens advantages over a rollout: it needs >= 2 completions per process")
            self.num_generations = self.per_device_train_batch_size * steps
            self.num_generations_eval = self.num_generations_eval or 1
        super().__post_init__()
        if single:
            self.num_generations = 1


TRAINERS: dict[str, type] = {"grpo": GRPOConfig, "rloo": RLOOConfig, "ppo": PPOConfig}
# The advantage-scaling knob each trainer must have set explicitly (see docs/training.md for why it matters); PPO
# has none: it whitens the GAE advantages of each rollout (training.whiten_advantages).
SCALING_KEY = {"grpo": "scale_rewards", "rloo": "normalize_advantages"}


SECTIONS: dict[str, type] = {
    "model": ModelArguments,
    "data": DataArguments,
    "reward": RewardArguments,
    "warmup": WarmupArguments,
    "wandb": WandbArguments,
    "calibration": CalibrationEvalConfig,
}


@dataclass
class Recipe:
    """A parsed, validated training recipe."""

    model: ModelArguments
    data: DataArguments
    reward: RewardArguments
    warmup: WarmupArguments
    wandb: WandbArguments
    calibration: CalibrationEvalConfig
    training: Any  # trl.GRPOConfig | trl.RLOOConfig
    trainer: str = "grpo"
    resume: str = "auto"
    path: str | None = None
    explicit: dict[str, set[str]] = field(default_factory=dict)  # keys set by the YAML or the CLI, per section
    notes: list[str] = field(default_factory=list)  # adjustments made while resolving (e.g. CPU fallback)

    def to_dict(self, full: bool = True) -> dict[str, Any]:
        """The resolved recipe as plain data. Sections list every field; `training` lists the keys the recipe or
        CLI set (plus resolution adjustments), so the dump re-loads as a recipe with the same result."""
        out: dict[str, Any] = {"trainer": self.trainer, "resume": self.resume}
        for name in SECTIONS:
            section = getattr(self, name)
            keys = [f.name for f in fields(section) if f.init]
            if not full:
                keys = [k for k in keys if k in self.explicit.get(name, ())]
            out[name] = {k: _plain(getattr(section, k)) for k in keys}
        out["training"] = {k: _plain(getattr(self.training, k)) for k in sorted(self.explicit.get("training", ()))}
        return out

    def to_yaml(self) -> str:
        derived = {
            "generation_batch_size": getattr(self.training, "generation_batch_size", None),
            "steps_per_generation": getattr(self.training, "steps_per_generation", None),
            "world_size": _world_size(),
        }
        header = f"# rlcal recipe resolved from {self.path or '<dict>'}\n"
        header += "".join(f"# note: {n}\n" for n in self.notes)
        header += "# derived: " + ", ".join(f"{k}={v}" for k, v in derived.items()) + "\n"
        header += "# training: other trl fields keep their TRL defaults\n"
        return header + yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True, width=119)

    @property
    def output_dir(self) -> Path:
        return Path(self.training.output_dir)

    def task(self, section: str = "data") -> QATask:
        """The QA task this recipe trains on (`data:` + the reward's grading), or with section="calibration" the
        one its calibration callback evaluates: the same prompt and grading on `calibration:`'s held-out source
        (`rlcal eval --recipe` builds the same from the YAML via `QATask.from_recipe`)."""
        if section == "data":
            source = self.data.source_fields()
        elif section == "calibration":
            if self.calibration.data is None:
                raise RlcalError("calibration.data is not set: the recipe has no held-out eval set")
            source = self.calibration.source_fields()
        else:
            raise ValueError(f"section must be 'data' or 'calibration', got {section!r}")
        prompt = {k: getattr(self.data, k) for k in PROMPT_FIELDS}
        return QATask(**source, **prompt, **{k: getattr(self.reward, k) for k in GRADING_FIELDS})


def _plain(value: Any) -> Any:
    """Make a config value YAML-safe (enums -> value, tuples -> lists)."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class _SectionParser(TrlParser):
    """TrlParser whose argparse errors become RlcalErrors and that never expands abbreviations."""

    def __init__(self, section: str, dataclass_type: type) -> None:
        self.section = section
        super().__init__(dataclass_type, allow_abbrev=False, add_help=False)

    def error(self, message: str):  # argparse calls this on bad values; we want one line and exit 2, not usage
        raise RlcalError(f"{self.section}: {message}")


def _init_fields(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.init]


def _split_cli(overrides: Sequence[str]) -> list[tuple[str, list[str]]]:
    """['--a.b', '1', '--c=2', '--flag'] -> [('a.b', ['1']), ('c', ['2']), ('flag', [])]."""
    items: list[tuple[str, list[str]]] = []
    for token in overrides:
        if token.startswith("--") and len(token) > 2:
            key, eq, value = token[2:].partition("=")
            items.append((key.replace("-", "_") if "." not in key else key, [value] if eq else []))
        elif items:
            items[-1][1].append(token)
        else:
            raise RlcalError(f"expected --key value overrides, got {token!r}")
    return items


def _route_cli(items: list[tuple[str, list[str]]], trainer_cls: type) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Assign each CLI override to its section: `section.key` explicitly, a bare key by lookup."""
    section_fields = {name: set(_init_fields(cls)) for name, cls in SECTIONS.items()}
    section_fields["training"] = set(_init_fields(trainer_cls))
    routed: dict[str, list[str]] = {name: [] for name in section_fields}
    top: dict[str, Any] = {}
    for key, values in items:
        if key in TOP_LEVEL_KEYS:
            if len(values) != 1:
                raise RlcalError(f"--{key} takes one value")
            top[key] = values[0]
            continue
        if "." in key:
            section, _, sub = key.partition(".")
            if section not in section_fields:
                raise RlcalError(f"unknown section {section!r} in --{key}; sections: {', '.join(section_fields)}")
        elif key in section_fields["training"]:
            section, sub = "training", key  # TRL convention: bare flags are trainer arguments
        else:
            owners = [name for name, names in section_fields.items() if key in names]
            if not owners:
                every = sorted(set().union(*section_fields.values()) | set(TOP_LEVEL_KEYS))
                raise unknown_keys_error("the command line", [key], every, "overrides")
            if len(owners) > 1:
                raise RlcalError(f"--{key} is ambiguous; write --{owners[0]}.{key} (or {', '.join(owners[1:])})")
            section, sub = owners[0], key
        # `--key=value` for one value: argparse would take `-1e-4` (or any value starting with "-") for a flag.
        routed[section] += [f"--{sub}={values[0]}"] if len(values) == 1 else [f"--{sub}", *values]
    return routed, top


def _parse_section(
    section: str, cls: type, values: Mapping[str, Any], cli: list[str], adjust=None
) -> tuple[Any, set[str]]:
    """YAML values as parser defaults, CLI flags on top, then the dataclass (whose __post_init__ validates)."""
    if not isinstance(values, Mapping):
        raise RlcalError(f"section {section!r} must be a mapping, got {type(values).__name__}")
    known = _init_fields(cls)
    unknown = [k for k in values if k not in known]
    if unknown:
        raise unknown_keys_error(section, unknown, known, "section")
    parser = _SectionParser(section, cls)
    parser.set_defaults_with_config(**values)
    namespace, remaining = parser.parse_known_args(cli)
    if remaining:
        flags = [r[2:].partition("=")[0] for r in remaining if r.startswith("--")] or remaining
        raise unknown_keys_error(section, flags, known, "overrides")
    kwargs = {k: v for k, v in vars(namespace).items() if k in known}
    cli_keys = {a[2:].partition("=")[0] for a in cli if a.startswith("--")}
    hints = typing.get_type_hints(cls)  # not f.type: HfArgumentParser rewrites it (Optional[str] -> str)
    optional = {name for name in known if type(None) in typing.get_args(hints.get(name))}
    for key in cli_keys & optional:  # `--key null` unsets an optional value (argparse would keep the string)
        if kwargs.get(key) == "null":  # not "none": `--report_to none` is a real value
            kwargs[key] = None
    explicit = set(values) | cli_keys
    explicit = {k[3:] if k.startswith("no_") and k[3:] in known else k for k in explicit}
    if adjust is not None:
        explicit |= adjust(kwargs, explicit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # transformers' gradient_checkpointing rename chatter
            return cls(**kwargs), explicit
    except (ValueError, TypeError) as exc:
        raise RlcalError(f"{section}: {exc}") from None


def has_accelerator() -> bool:
    """A CUDA/XPU/MPS device is present (TRL's bf16 default and gradient checkpointing assume one)."""
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    if xpu is not None and xpu.is_available():
        return True
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _check_generation_batch(kwargs: dict[str, Any], trainer: str = "grpo") -> None:
    """num_generations must divide the generation batch: say so in rlcal's words before TRL says it in its own."""
    g = kwargs.get("num_generations")
    if not g:
        return
    if g < 2 and trainer != "ppo":  # PPO's baseline is its critic: one completion per prompt is enough
        raise RlcalError(f"training.num_generations must be >= 2 (GRPO compares completions of a prompt), got {g}")
    world = _world_size()
    if kwargs.get("generation_batch_size"):
        batch, how = kwargs["generation_batch_size"], "generation_batch_size"
    else:
        steps = kwargs.get("steps_per_generation") or kwargs.get("gradient_accumulation_steps") or 1
        batch = kwargs["per_device_train_batch_size"] * world * steps
        steps_name = "steps_per_generation" if kwargs.get("steps_per_generation") else "gradient_accumulation_steps"
        how = (
            f"per_device_train_batch_size {kwargs['per_device_train_batch_size']} x {world} processes x "
            f"{steps_name} {steps}"
        )
        if trainer == "ppo" and not kwargs.get("steps_per_generation"):  # PPOConfig sets it from num_mini_batches
            batch *= kwargs.get("num_mini_batches") or 1
            how += f" x num_mini_batches {kwargs.get('num_mini_batches') or 1}"
    if batch % g:
        raise RlcalError(f"training.num_generations ({g}) must divide the generation batch ({how} = {batch})")


def _training_adjust(notes: list[str], trainer: str = "grpo"):
    """Resolve CPU runs: TRL defaults to bf16, which TrainingArguments rejects without an accelerator."""

    def adjust(kwargs: dict[str, Any], explicit: set[str]) -> set[str]:
        _check_generation_batch(kwargs, trainer)
        if has_accelerator() or kwargs.get("use_cpu"):
            if kwargs.get("use_cpu") and kwargs.get("bf16") is None:
                kwargs["bf16"] = False
                return {"bf16"}
            return set()
        changed = {"use_cpu": True, "bf16": False, "fp16": False}
        if kwargs.get("bf16") or kwargs.get("fp16"):
            notes.append("no GPU found: training on CPU in float32 (use_cpu=true, bf16=false)")
        kwargs.update(changed)
        return set(changed)

    return adjust


def load_recipe_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Read a recipe YAML file into a mapping (errors name the file)."""
    return read_recipe_file(path)


def parse_recipe(raw: Mapping[str, Any], overrides: Sequence[str] = (), path: str | None = None) -> Recipe:
    """Parse and validate a recipe mapping plus `--key value` overrides. Loads no model and no data."""
    raw = dict(raw)
    allowed = set(SECTIONS) | {"training", *TOP_LEVEL_KEYS}
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise unknown_keys_error("the recipe", unknown, sorted(allowed), "(top level)")
    items = _split_cli(overrides)
    trainer = next((v[0] for k, v in items if k == "trainer" and v), raw.get("trainer", "grpo"))
    if trainer not in TRAINERS:
        raise RlcalError(f"trainer must be one of {', '.join(TRAINERS)}, got {trainer!r}")
    trainer_cls = TRAINERS[trainer]
    routed, top = _route_cli(items, trainer_cls)
    resume = str(top.get("resume", raw.get("resume", "auto")))

    parsed: dict[str, Any] = {}
    explicit: dict[str, set[str]] = {}
    for name, cls in SECTIONS.items():
        parsed[name], explicit[name] = _parse_section(name, cls, raw.get(name) or {}, routed[name])
    notes: list[str] = []
    training_raw = dict(raw.get("training") or {})
    scaling = SCALING_KEY.get(trainer)
    training, explicit["training"] = _parse_section(
        "training", trainer_cls, training_raw, routed["training"], adjust=_training_adjust(notes, trainer)
    )
    if scaling and scaling not in explicit["training"]:
        raise RlcalError(
            f"training.{scaling} must be set explicitly: per-group std scaling changes what the calibrated reward "
            f"optimises (see docs/training.md); for confidence targets use `batch` or `none`"
            if trainer == "grpo"
            else f"training.{scaling} must be set explicitly (true or false); see docs/training.md"
        )
    recipe = Recipe(
        trainer=trainer, resume=resume, training=training, path=path, explicit=explicit, notes=notes, **parsed
    )
    validate(recipe)
    return recipe


def load_recipe(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """Read, parse and validate a recipe file (see the module docstring)."""
    found = find_recipe(path)
    return parse_recipe(load_recipe_dict(found), overrides, path=str(found))


def validate(recipe: Recipe) -> None:
    """Cross-section checks that no single dataclass can make. Raises RlcalError."""
    args = recipe.training
    if recipe.resume not in ("auto", "never") and not Path(recipe.resume).is_dir():
        raise RlcalError(f"resume must be auto, never or an existing checkpoint directory, got {recipe.resume!r}")
    if recipe.trainer == "grpo" and args.scale_rewards not in ("group", "batch", "none"):
        raise RlcalError(f"training.scale_rewards must be group, batch or none, got {args.scale_rewards!r}")
    if recipe.trainer == "grpo" and args.scale_rewards == "group" and recipe.reward.name == "confidence_target":
        recipe.notes.append(
            "scale_rewards=group rescales each prompt's rewards to unit std, which flips the sign of the "
            "answer-vs-abstain gradient for P(correct) just below t (docs/training.md); prefer batch or none"
        )
    thresholds_used = recipe.reward.name == "confidence_target"
    sampler = recipe.reward.sampler()
    if thresholds_used and sampler.kind == "fixed" and sampler.value == 0:
        recipe.notes.append("confidence_target with t = 0 is the 0-1 reward: abstaining never pays")
    _check_training_numbers(args)
    if args.max_completion_length is not None and args.max_completion_length <= 0:
        raise RlcalError("training.max_completion_length must be > 0")
    if args.temperature <= 0:
        raise RlcalError("training.temperature must be > 0 (GRPO samples completions)")
    if recipe.trainer == "ppo" and not recipe.model.use_peft:
        raise RlcalError("trainer ppo needs model.use_peft: its reference policy is the model with the adapter off")
    if recipe.model.load_in_4bit and not recipe.model.use_peft:
        raise RlcalError("model.load_in_4bit needs model.use_peft: a 4-bit base model can only be trained via LoRA")
    if args.use_vllm:  # checked even where a CPU run then switches vLLM off: a GPU run must not be the first to see it
        _check_vllm(args)
    if args.use_vllm and not has_accelerator():
        recipe.notes.append("use_vllm needs a GPU; it is switched off for this CPU run")
        args.use_vllm = False
    if recipe.warmup.steps and recipe.model.load_in_4bit:
        raise RlcalError(
            "warmup merges its LoRA into the base model, which a 4-bit model cannot do; set warmup.steps 0"
        )
    if recipe.model.pretrain_recipe:
        _check_pretrain_recipe(recipe)
    if any(r == "wandb" for r in (args.report_to or [])) and recipe.wandb.mode == "disabled":
        recipe.notes.append("wandb.mode is disabled: nothing will be logged to W&B")


def _check_training_numbers(args: Any) -> None:
    """Trainer numbers that transformers and torch accept at parse time but fail on (or silently misuse) only after
    the model, the warm-up or the first step: a negative learning rate is torch's `Invalid learning rate` at
    optimizer creation, a zero batch size a DataLoader error, a negative logging_steps never logs."""

    def number(name: str) -> float:
        value = getattr(args, name)
        return value if isinstance(value, int | float) and not isinstance(value, bool) else math.nan

    lr = number("learning_rate")
    if not (math.isfinite(lr) and lr >= 0):  # 0 is allowed: the step-time benchmarks train with frozen weights
        raise RlcalError(f"training.learning_rate must be a number >= 0, got {args.learning_rate!r}")
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
        if not number(name) >= 1:
            raise RlcalError(f"training.{name} must be >= 1, got {getattr(args, name)!r}")
    steps, epochs = number("max_steps"), number("num_train_epochs")
    if steps == 0 or steps < -1:
        raise RlcalError(f"training.max_steps must be >= 1 (or -1: train num_train_epochs epochs), got {args.max_steps}")
    if steps == -1 and not (math.isfinite(epochs) and epochs > 0):
        raise RlcalError(f"training.num_train_epochs must be > 0 when max_steps is -1, got {args.num_train_epochs}")
    for name in ("logging_steps", "save_steps", "eval_steps"):
        value = getattr(args, name, None)
        if value is not None and not number(name) > 0:
            raise RlcalError(f"training.{name} must be > 0 (a step count, or a fraction of the run below 1), got {value}")
    for name in ("warmup_steps", "weight_decay", "max_grad_norm", "beta"):
        if getattr(args, name, None) is not None and not number(name) >= 0:
            raise RlcalError(f"training.{name} must be >= 0, got {getattr(args, name)!r}")
    for name in ("seed", "data_seed"):  # transformers' set_seed hands it to numpy, which takes 0 to 2**32 - 1
        value = getattr(args, name, None)
        if value is not None and not 0 <= number(name) < 2**32:
            raise RlcalError(f"training.{name} must be from 0 to 2**32 - 1, got {value}")
    ratio = getattr(args, "warmup_ratio", None)
    if ratio is not None and not 0 <= number("warmup_ratio") <= 1:
        raise RlcalError(f"training.warmup_ratio must be in [0, 1], got {ratio!r}")


VLLM_MODES = ("colocate", "server")


def _check_vllm(args: Any) -> None:
    """The vLLM settings TRL only reads once vLLM starts (on a GPU): mode and memory share."""
    if args.vllm_mode not in VLLM_MODES:
        raise RlcalError(f"training.vllm_mode must be one of {', '.join(VLLM_MODES)}, got {args.vllm_mode!r}")
    share = args.vllm_gpu_memory_utilization
    if args.vllm_mode == "colocate" and not 0 < share <= 1:
        raise RlcalError(f"training.vllm_gpu_memory_utilization must be in (0, 1], got {share}")


def _check_pretrain_recipe(recipe: Recipe) -> None:
    """The pretrain recipe must produce the model and the data this recipe trains on (paths from the same cwd)."""
    from rlcal.world.pretrain import load_pretrain_config

    # Resolved once here (relative to this recipe, or shipped with rlcal), so the run builds from the same file.
    recipe.model.pretrain_recipe = str(find_recipe(recipe.model.pretrain_recipe, recipe.path))
    pretrain = load_pretrain_config(recipe.model.pretrain_recipe)
    if Path(pretrain.output_dir).resolve() != Path(recipe.model.model_name_or_path).resolve():
        raise RlcalError(
            f"model.model_name_or_path ({recipe.model.model_name_or_path}) is not what model.pretrain_recipe "
            f"builds ({pretrain.output_dir})"
        )
    world_qa = Path(pretrain.world_dir) / "qa.jsonl"
    if Path(recipe.data.source).resolve() != world_qa.resolve():
        raise RlcalError(
            f"data.source ({recipe.data.source}) is not the world that model.pretrain_recipe builds ({world_qa})"
        )
