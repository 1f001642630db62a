"""`trainer: ppo`: PPO with a value head, as a thin subclass of TRL's GRPOTrainer (TRL 1.x ships no PPOTrainer).

    trainer = build_trainer(recipe, model_path, dataset, reward_funcs)   # recipe.trainer == "ppo" (rlcal.training.trainers)
    trainer.train()                    # saves value_head.safetensors beside the adapter and in every checkpoint
    rlcal train recipes/toy/ppo/config_confidence_target.yaml

GRPOTrainer keeps doing what it does: sampling (vLLM included), the reward functions with their dataset columns,
the PEFT adapter, logging, checkpoints. This class changes two things:
- after each rollout (`_generate_and_score_completions`) it scores the completions once more under the current
  policy, with the value head reading the last hidden state, and under the reference policy (the same model with
  its LoRA adapter disabled), then turns the rewards into per-token advantages and returns
  (`rlcal.training.ppo_math`: KL-penalised token rewards, GAE, whitening);
- the loss (`compute_loss`) is PPO's clipped policy loss plus vf_coef x the clipped value loss.
The value head is a `torch.nn.Linear(hidden, 1)` registered on the PEFT model, so the optimizer trains it and DDP
syncs it like the adapter; it is saved as value_head.safetensors + value_head.json (the reward scale, for `rlcal
eval --confidence critic`: rlcal.evaluation.critic) by `save_model`, hence in every checkpoint too, and loaded back
on resume. It starts at zero: the first values are 0 and the seeded random streams stay those of GRPO.

Log-probabilities come from TRL's own fused LM head (`_get_per_token_logps_and_entropies`, temperature-scaled as
in GRPO), which returns no hidden states, so a forward hook on the decoder runs the value head on its last hidden
state, inside the model's forward (where DDP sees the head used). TRL's private methods used here are checked
against the installed TRL when the class is built (`check_hooks`), which raises RlcalError on a TRL that changed
them. Text-only; not under ZeRO-3; with vLLM,
GRPO's importance-sampling correction of the sampler/trainer mismatch is not applied to the PPO loss.
"""

from __future__ import annotations

import inspect
from contextlib import contextmanager, nullcontext
from typing import Any

import torch

from rlcal.common.errors import RlcalError
from rlcal.evaluation.critic import load_value_head, save_value_head
from rlcal.training import ppo_math

VALUE_HEAD_MODULE = "rlcal_value_head"
# TRL private methods this module overrides or calls, with the leading parameters (after self) it relies on.
PRIVATE_HOOKS = {
    "_generate_and_score_completions": ("inputs",),
    "_get_per_token_logps_and_entropies": (
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
    ),
}


def check_hooks(base: type) -> None:
    """RlcalError unless `base` (TRL's GRPOTrainer) has the private methods of PRIVATE_HOOKS with those leading
    parameters (further ones must have defaults). `_calculate_rewards` is checked by `with_group_metric`."""
    import trl

    for name, expected in PRIVATE_HOOKS.items():
        method = getattr(base, name, None)
        where = f"{base.__name__} of the installed TRL {getattr(trl, '__version__', 'unknown')}"
        if not callable(method):
            raise RlcalError(f"{where} has no {name}, which trainer ppo uses; install trl 1.16 (pyproject.toml)")
        params = list(inspect.signature(method).parameters.values())[1:]
        names = tuple(p.name for p in params[: len(expected)])
        extra = [p.name for p in params[len(expected) :] if p.default is inspect.Parameter.empty]
        if names != expected or extra:
            raise RlcalError(
                f"{where} has {name}({', '.join(p.name for p in params)}); trainer ppo needs {name}"
                f"({', '.join(expected)}, ...); install trl 1.16 (pyproject.toml)"
            )


def reward_scale(reward_funcs: list, weights: list[float]) -> dict[str, Any]:
    """The reward of a correct and of a wrong answer at the t = 0 prompt (how `rlcal eval --confidence critic` turns
    values into confidences), for a single rlcal reward that depends on the outcome alone; else no scale."""
    from rlcal.core.grading import CORRECT, WRONG
    from rlcal.core.rewards import BrierReward, LogScoreReward

    if len(reward_funcs) != 1 or not hasattr(reward_funcs[0], "score"):
        return {}
    reward, weight = reward_funcs[0], float(weights[0])
    meta: dict[str, Any] = {"reward": repr(reward)}
    if not isinstance(reward, BrierReward | LogScoreReward):  # those score a stated confidence, not the outcome
        meta["value_correct"] = weight * reward.score(CORRECT, 0.0, "")
        meta["value_wrong"] = weight * reward.score(WRONG, 0.0, "")
    return meta


def ppo_trainer_class(base: type) -> type:
    """`base` (TRL's GRPOTrainer, with rlcal's group metric: `trainers.trainer_class("ppo")`) training PPO with a
    value head (see the module docstring)."""
    check_hooks(base)

    class RlcalPPOTrainer(base):
        def __init__(self, *args, **kwargs) -> None:
            from rlcal.training.models import zero3_enabled

            if zero3_enabled():
                raise RlcalError("trainer ppo does not run under ZeRO-3 (its value head is not sharded); use ZeRO-2")
            super().__init__(*args, **kwargs)
            model = self.accelerator.unwrap_model(self.model)
            if not hasattr(model, "disable_adapter"):
                raise RlcalError("trainer ppo needs a LoRA adapter (model.use_peft): the reference policy is the "
                                 "model with the adapter disabled")
            head = torch.nn.Linear(model.config.get_text_config().hidden_size, 1)
            torch.nn.init.zeros_(head.weight)
            torch.nn.init.zeros_(head.bias)
            model.add_module(VALUE_HEAD_MODULE, head.to(next(model.parameters()).device))
            self._rollout_rewards: torch.Tensor | None = None

        @property
        def value_head(self) -> torch.nn.Linear:
            return getattr(self.accelerator.unwrap_model(self.model), VALUE_HEAD_MODULE)

        # ---- rollout -------------------------------------------------------------------------------------------

        def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            self._rollout_rewards = rewards_per_func  # all processes' rows, in order: sliced per process below
            return rewards_per_func

        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            args, mode = self.args, "train" if self.model.training else "eval"
            input_ids, attention_mask, mask = _sequences(out)
            n = input_ids.size(0)
            weights = self.reward_weights.to(self._rollout_rewards.device)
            scores = (self._rollout_rewards * weights.unsqueeze(0)).nansum(dim=1)  # an unscorable row scores 0
            scores = scores[self.accelerator.process_index * n : (self.accelerator.process_index + 1) * n]
            batch_size = args.per_device_train_batch_size if mode == "train" else args.per_device_eval_batch_size
            with torch.no_grad():
                logps, values, _ = self._score(self.model, input_ids, attention_mask, mask, batch_size)
                with self.accelerator.unwrap_model(self.model).disable_adapter():
                    ref_logps, _, _ = self._score(self.model, input_ids, attention_mask, mask, batch_size, False)
            rewards = ppo_math.kl_penalty_rewards(scores.to(logps.device), logps, ref_logps, mask, args.kl_coef)
            advantages, returns = ppo_math.gae(rewards, values, mask, args.gamma, args.lam)
            if args.whiten_advantages:
                advantages = ppo_math.whiten(advantages, mask)
            out.update(old_per_token_logps=logps, old_values=values, advantages=advantages, returns=returns)
            metrics = self._metrics[mode]
            metrics["kl"].append(self._mean(ppo_math.masked_mean(logps - ref_logps, mask)))
            metrics["ppo/values_mean"].append(self._mean(ppo_math.masked_mean(values, mask)))
            metrics["ppo/returns_mean"].append(self._mean(ppo_math.masked_mean(returns, mask)))
            return out

        # ---- loss ----------------------------------------------------------------------------------------------

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if return_outputs:
                raise ValueError("trainer ppo does not return outputs from compute_loss")
            input_ids, attention_mask, mask = _sequences(inputs)
            logps, values, entropies = self._score(model, input_ids, attention_mask, mask, entropy=True)
            policy_loss, clipfrac = ppo_math.clipped_policy_loss(
                logps, inputs["old_per_token_logps"], inputs["advantages"], mask, self.epsilon_low, self.epsilon_high
            )
            value_loss, value_clipfrac = ppo_math.clipped_value_loss(
                values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
            )
            loss = policy_loss + self.args.vf_coef * value_loss
            mode = "train" if self.model.training else "eval"
            metrics = self._metrics[mode]
            metrics["ppo/policy_loss"].append(self._mean(policy_loss))
            metrics["ppo/value_loss"].append(self._mean(value_loss))
            metrics["ppo/clipfrac"].append(self._mean(clipfrac))
            metrics["ppo/value_clipfrac"].append(self._mean(value_clipfrac))
            metrics["entropy"].append(self._mean(ppo_math.masked_mean(entropies, mask)))
            # Trainer does not rescale for accumulation here (GRPOTrainer turns that off), so scale as GRPO does
            return loss / (self.current_gradient_accumulation_steps if mode == "train" else 1.0)

        def _score(self, model, input_ids, attention_mask, mask, batch_size=None, with_values=True, entropy=False):
            """(per-token log-probs, values or None, entropies or None) of the completion tokens, (B, T) each."""
            logits_to_keep = mask.size(1)
            values: list[torch.Tensor] = []
            with self._values_in_forward(values, logits_to_keep) if with_values else nullcontext():
                logps, entropies, _ = self._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size, compute_entropy=entropy
                )
            return logps, torch.cat(values, dim=0) if with_values else None, entropies

        @contextmanager
        def _values_in_forward(self, store: list, logits_to_keep: int):
            """While open, every forward of the model also runs the value head on the decoder's last hidden state
            and appends the (B, T) values to `store`. Inside the forward (a hook on the decoder), not after it:
            DDP only syncs the gradients of parameters that its forward used."""
            head = self.value_head

            def hook(module, args, output):
                # V(s_t) reads the state before completion token t: the hidden state that also predicts it
                states = output[0][:, -logits_to_keep - 1 : -1]
                store.append(head(states.to(head.weight.dtype)).squeeze(-1))

            decoder = self.accelerator.unwrap_model(self.model).get_base_model().base_model
            handle = decoder.register_forward_hook(hook)
            try:
                yield
            finally:
                handle.remove()

        def _mean(self, value: torch.Tensor) -> float:
            return self.accelerator.gather(value.detach().float().reshape(1)).mean().item()

        # ---- saving and resuming -------------------------------------------------------------------------------

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            super().save_model(output_dir, _internal_call)  # Trainer's checkpoints save through here too
            if self.args.should_save:
                scale = reward_scale(self.reward_funcs, self.reward_weights.tolist())
                save_value_head(self.value_head, output_dir or self.args.output_dir, scale)

        def train(self, resume_from_checkpoint=None, *args, **kwargs):
            checkpoint = resume_from_checkpoint
            if checkpoint is True:
                from transformers.trainer_utils import get_last_checkpoint

                checkpoint = get_last_checkpoint(self.args.output_dir)
            if checkpoint:
                load_value_head(self.value_head, checkpoint)
            return super().train(resume_from_checkpoint, *args, **kwargs)

    return RlcalPPOTrainer


def _sequences(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(prompt + completion ids, their attention mask, the completion-token mask) of a GRPO rollout batch."""
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    mask = batch["completion_mask"] if "tool_mask" not in batch else batch["completion_mask"] * batch["tool_mask"]
    return input_ids, attention_mask, mask
