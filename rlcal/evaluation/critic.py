"""The PPO critic as a confidence: the value head `trainer: ppo` saves, read at the end of the t = 0 prompt.

    from rlcal.evaluation.critic import load_critic, critic_values
    critic = load_critic("outputs/toy/ppo_binary")           # value_head.safetensors (+ value_head.json)
    values = critic_values(model, critic, prompt_ids)         # V(prompt), in reward units
    confidences = [critic.confidence(v) for v in values]      # in [0, 1]
    rlcal eval --adapter outputs/toy/ppo_binary --confidence critic [--policy posthoc]

Files (written by `save_value_head`, which rlcal.training.ppo calls beside the adapter and in every checkpoint):
`value_head.safetensors` holds the head's `weight` (1 x hidden) and `bias`; `value_head.json` the reward scale the
critic learnt, `value_correct` and `value_wrong`: the reward of a correct and of a wrong answer at the t = 0 prompt.

Which value, and why the end of the prompt: there V(prompt) is the critic's prediction of the reward the policy
will get for this question before any token is written, i.e. a property of the question and of what the model
knows, available without generating, and the state the critic is trained on at every rollout (the value of the
first completion token's state). At the t = 0 prompt answering is always optimal, so V = P(correct) x value_correct
+ (1 - P(correct)) x value_wrong, and `Critic.confidence` inverts that: (V - value_wrong) / (value_correct -
value_wrong), clipped to [0, 1]. (The value after the answer would instead grade one particular answer; with
gamma = 1 it converges to that answer's reward, not to a probability.) Caveats: V is the expected reward of the
*sampling* policy (temperature 1) minus the small KL penalty, while `rlcal eval` answers greedily; and the scale
is only meaningful for rewards that depend on the outcome alone (binary, confidence_target), not on a stated
confidence (brier, log_score), for which the JSON has no scale and `load_critic` refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError

VALUE_HEAD_FILE = "value_head.safetensors"
VALUE_HEAD_META = "value_head.json"


def save_value_head(head: Any, directory: str | os.PathLike, scale: dict[str, float] | None = None) -> Path:
    """Write the head (a torch Linear(hidden, 1)) to directory/value_head.safetensors and the reward scale, if
    known, to value_head.json. Returns the safetensors path."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / VALUE_HEAD_FILE
    save_file({k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}, str(path))
    meta = {"hidden_size": int(head.weight.shape[1]), **(scale or {})}
    (directory / VALUE_HEAD_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def load_value_head(head: Any, directory: str | os.PathLike) -> None:
    """Load directory/value_head.safetensors into `head` (RlcalError when the file is missing)."""
    from safetensors.torch import load_file

    path = Path(directory) / VALUE_HEAD_FILE
    if not path.is_file():
        raise RlcalError(f"{path} not found: {directory} was not saved by trainer ppo (no value head)")
    head.load_state_dict(load_file(str(path), device=str(head.weight.device)))


@dataclass
class Critic:
    """A loaded value head and the reward scale that turns its values into confidences."""

    head: Any  # torch.nn.Linear(hidden, 1)
    value_correct: float
    value_wrong: float

    def confidence(self, value: float) -> float:
        """(V - value_wrong) / (value_correct - value_wrong), clipped to [0, 1] (see the module docstring)."""
        share = (value - self.value_wrong) / (self.value_correct - self.value_wrong)
        return min(1.0, max(0.0, share))


def load_critic(directory: str | os.PathLike, device: Any = "cpu") -> Critic:
    """The critic saved in `directory` (a trainer-ppo output or checkpoint); RlcalError when there is none or its
    reward has no outcome scale."""
    import torch

    directory = Path(directory)
    meta_path = directory / VALUE_HEAD_META
    if not (directory / VALUE_HEAD_FILE).is_file() or not meta_path.is_file():
        raise RlcalError(
            f"--confidence critic needs a value head: {directory} has no {VALUE_HEAD_FILE} / {VALUE_HEAD_META} "
            "(train with `trainer: ppo` and pass its output as --adapter)"
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    correct, wrong = meta.get("value_correct"), meta.get("value_wrong")
    if correct is None or wrong is None or correct == wrong:
        reward = meta.get("reward", "its reward")
        raise RlcalError(f"the critic in {directory} was trained on {reward}, whose values are no confidence scale")
    head = torch.nn.Linear(int(meta["hidden_size"]), 1)
    load_value_head(head, directory)
    return Critic(head.to(device).eval(), float(correct), float(wrong))


def _decoder(model: Any) -> Any:
    """The transformer body whose output (the last hidden state, after the final norm) the value head reads; under
    PEFT its layers carry the LoRA adapter, so calling it runs the adapted model without the LM head."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.base_model


def critic_values(
    model: Any, critic: Critic, prompt_ids: Sequence[Sequence[int]], batch_size: int = 32, pad_id: int = 0
) -> list[float]:
    """V(prompt) for each prompt: the value head on the last hidden state at the prompt's last token, the state
    from which training valued the first completion token. Prompts are left-padded in length-sorted batches."""
    import torch

    from rlcal.evaluation.confidence import left_pad, length_sorted_batches, model_device

    values = [0.0] * len(prompt_ids)
    device = model_device(model)
    for batch in length_sorted_batches([len(p) for p in prompt_ids], batch_size):
        ids, mask = left_pad([prompt_ids[i] for i in batch], pad_id, device)
        with torch.no_grad():
            states = _decoder(model)(input_ids=ids, attention_mask=mask).last_hidden_state[:, -1]
            head = critic.head
            out = head(states.to(head.weight.device, head.weight.dtype)).squeeze(-1).tolist()
        for i, v in zip(batch, out, strict=True):
            values[i] = float(v)
    return values
