"""The TRL trainers rlcal trains with: GRPOTrainer / RLOOTrainer plus a per-group zero-variance metric and monitor
(and `trainer: ppo`, a GRPOTrainer subclass in rlcal.training.ppo).

    from rlcal.training.trainers import build_trainer, trainer_class
    trainer = build_trainer(recipe, model_path, dataset, reward_funcs, callbacks)   # LoRA, reward, recipe args
    trainer.train(resume_from_checkpoint=prepare_run(recipe).checkpoint)            # rlcal.training.runs

`trainer_class("grpo")` is TRL's GRPOTrainer logging one more number, `groups/frac_reward_zero_std`, through an
override of TRL's private `_calculate_rewards`; because that method is private, the override checks at class-build
time that the installed TRL still has it with the parameters rlcal calls, and raises RlcalError otherwise.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.training.config import Recipe

logger = logging.getLogger("rlcal.training.trainers")

GROUP_ZERO_STD = "groups/frac_reward_zero_std"
ZERO_STD_WARN = 0.9  # warn when at least this share of groups has identical rewards in the first logs
# The parameters (after self) of TRL's private GRPOTrainer/RLOOTrainer._calculate_rewards that the override calls.
REWARDS_HOOK_PARAMS = ("inputs", "prompts", "completions", "completion_ids_list")


def _trl_version() -> str:
    try:
        import trl

        return trl.__version__
    except Exception:  # noqa: BLE001 - only for the error message
        return "unknown"


def check_rewards_hook(base: type) -> None:
    """RlcalError unless `base._calculate_rewards(self, inputs, prompts, completions, completion_ids_list)` exists
    (further parameters must have defaults): the private TRL method rlcal's trainers override."""
    method = getattr(base, "_calculate_rewards", None)
    where = f"{base.__name__} of the installed TRL {_trl_version()}"
    if not callable(method):
        raise RlcalError(f"{where} has no _calculate_rewards, which rlcal overrides; install trl 1.16 (pyproject.toml)")
    params = list(inspect.signature(method).parameters.values())[1:]  # drop self
    names = tuple(p.name for p in params[: len(REWARDS_HOOK_PARAMS)])
    extra = [p.name for p in params[len(REWARDS_HOOK_PARAMS) :] if p.default is inspect.Parameter.empty]
    if names != REWARDS_HOOK_PARAMS or extra:
        found = ", ".join(p.name for p in params)
        raise RlcalError(
            f"{where} has _calculate_rewards({found}); rlcal overrides it as _calculate_rewards"
            f"({', '.join(REWARDS_HOOK_PARAMS)}); install trl 1.16 (pyproject.toml)"
        )


def with_group_metric(base: type) -> type:
    """`base` (a TRL GRPOTrainer or RLOOTrainer class) logging `groups/frac_reward_zero_std` (see trainer_class)."""
    check_rewards_hook(base)

    class Trainer(base):
        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            mode = "train" if self.model.training else "eval"
            g = self.num_generations if mode == "train" else self.num_generations_eval
            weights = self.reward_weights.to(rewards_per_func.device)
            rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)  # gathered over processes, in groups
            if g > 1 and rewards.numel() % g == 0:
                grouped = rewards.view(-1, g)
                spread = grouped.max(dim=1).values - grouped.min(dim=1).values
                self._metrics[mode][GROUP_ZERO_STD].append((spread <= 1e-6).float().mean().item())
            return rewards_per_func

    Trainer.__name__ = Trainer.__qualname__ = f"Rlcal{base.__name__}"
    return Trainer


def trainer_class(name: str) -> type:
    """TRL's GRPOTrainer / RLOOTrainer, logging one more number: `groups/frac_reward_zero_std`; for "ppo", the
    GRPOTrainer subclass of `rlcal.training.ppo` (PPO with a value head).

    That is the share of prompt groups whose completions all got the same reward, so every advantage in the group
    is zero and the prompt teaches nothing. TRL's own `frac_reward_zero_std` is this number for
    scale_rewards group/none and for RLOO, but under `scale_rewards: batch` it tests the std of the whole batch
    (almost never zero), which would hide a dead learning signal; this one is per group whatever the scaling.
    """
    from trl import GRPOTrainer, RLOOTrainer

    if name == "ppo":
        from rlcal.training.ppo import ppo_trainer_class

        return ppo_trainer_class(with_group_metric(GRPOTrainer))

    return with_group_metric(GRPOTrainer if name == "grpo" else RLOOTrainer)


def zero_std_monitor(patience: int = 3):
    """A TrainerCallback that warns when the run starts without a learning signal: the first `patience` logs all
    show at least 90 % of prompt groups with identical rewards. (Late in a run a high value is normal: a converged
    policy gives the same answer every time.)"""
    from transformers import TrainerCallback

    class ZeroVarianceMonitor(TrainerCallback):
        def __init__(self) -> None:
            self.patience, self.seen = patience, 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            frac = (logs or {}).get(GROUP_ZERO_STD)
            if frac is None or self.seen >= self.patience or not state.is_world_process_zero:
                return
            self.seen = self.seen + 1 if frac >= ZERO_STD_WARN else self.patience  # one good log: stop watching
            if self.seen == self.patience and frac >= ZERO_STD_WARN:
                logger.warning(
                    "%.0f%% of prompt groups have identical rewards (groups/frac_reward_zero_std) since the start: "
                    "almost no learning signal. Use warmup.steps or more num_generations (docs/training.md).",
                    100 * frac,
                )

    return ZeroVarianceMonitor()


def build_trainer(recipe: Recipe, model_path: str, dataset, reward_funcs: list[Any], callbacks: list[Any] = ()):
    """The TRL trainer for the recipe (GRPOTrainer, RLOOTrainer or rlcal's PPO one) with LoRA and the calibrated
    reward."""
    from trl import get_peft_config, get_quantization_config

    from rlcal.training.models import load_tokenizer, model_init_kwargs

    args = recipe.training
    args.model_init_kwargs = model_init_kwargs(recipe)
    trainer = trainer_class(recipe.trainer)(
        model=model_path,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset,
        processing_class=load_tokenizer(model_path, recipe),
        callbacks=list(callbacks),
        peft_config=get_peft_config(recipe.model),
        quantization_config=get_quantization_config(recipe.model),
    )
    for callback in callbacks:
        if hasattr(callback, "bind"):  # the calibration hook generates faster under ZeRO-3 when it has the trainer
            callback.bind(trainer)
    return trainer
