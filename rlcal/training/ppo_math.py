"""The PPO arithmetic on token sequences, apart from any trainer: KL-penalised rewards, GAE, whitening, clipped losses.

    from rlcal.training import ppo_math as pm
    rewards = pm.kl_penalty_rewards(scores, logps, ref_logps, mask, kl_coef=0.05)   # (B, T) per-token rewards
    advantages, returns = pm.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    advantages = pm.whiten(advantages, mask)
    loss = pm.clipped_policy_loss(new_logps, logps, advantages, mask, 0.2, 0.2)[0] \
        + vf_coef * pm.clipped_value_loss(new_values, values, returns, mask, 0.2)[0]

Every tensor is (batch, completion tokens) with a 0/1 `mask` of the tokens that exist (the completion mask; padding
is 0). Masked positions are treated as absent, not as zero-reward steps: GAE skips them, and they get advantage and
return 0 and no weight in any mean. This is the formulation of TRL's former PPOTrainer (per-token KL reward, the
score at the last token, GAE with gamma/lam, whitened advantages, clipped policy and value losses), which TRL 1.x
no longer ships; `rlcal.training.ppo` runs it inside TRL's GRPOTrainer. Tests: tests/test_ppo.py.
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of `x` over the positions where `mask` is 1 (0 when there are none)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def kl_penalty_rewards(
    scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Per-token rewards: -kl_coef * (logp - ref_logp) at every token, plus the sequence's score (B,) at its last
    existing token. logp - ref_logp is the per-token sample of KL(policy || reference): its mean over sampled tokens
    is the KL, so the penalty keeps the policy near the reference in expectation (the InstructGPT reward)."""
    mask = mask.to(logps.dtype)
    rewards = -kl_coef * (logps - ref_logps) * mask
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, -1).max(dim=1).values  # index of the last real token, -1 if none
    has_token = last >= 0
    rows = torch.arange(mask.size(0), device=mask.device)[has_token]
    rewards[rows, last[has_token]] += scores[has_token].to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: (advantages, returns), both (B, T), 0 where masked.

    delta_t = r_t + gamma * V_{t+1} - V_t and A_t = delta_t + gamma * lam * A_{t+1}, where t+1 is the next real token
    (masked positions are skipped) and V, A after the last real token are 0 (the episode ends there). The returns
    A_t + V_t are the value targets."""
    mask_b = mask.bool()
    next_value = torch.zeros_like(values[:, 0])
    next_adv = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv = delta + gamma * lam * next_adv
        m = mask_b[:, t]
        advantages[:, t] = torch.where(m, adv, 0.0)
        next_value = torch.where(m, values[:, t], next_value)  # a masked token passes the later state through
        next_adv = torch.where(m, adv, next_adv)
    returns = (advantages + values) * mask.to(values.dtype)
    return advantages, returns


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked positions (population variance), 0 elsewhere. With fewer than two real
    tokens there is no spread to divide by: the values are only centred."""
    m = mask.to(x.dtype)
    count = m.sum()
    mean = (x * m).sum() / count.clamp(min=1.0)
    centred = (x - mean) * m
    if count < 2:
        return centred
    var = (centred**2).sum() / count
    return centred * torch.rsqrt(var + eps)


def clipped_policy_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped surrogate: mean over real tokens of max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)), with
    r = exp(logp - old_logp). Returns (loss, the share of real tokens where the clipped term won)."""
    ratio = torch.exp(logps - old_logps)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).to(logps.dtype), mask)


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss: 0.5 * mean over real tokens of max((V - R)^2, (V_clip - R)^2), where V_clip moves
    at most `cliprange` from the rollout's value. Returns (loss, the share of real tokens where the clipped term won)."""
    clipped_values = old_values + torch.clamp(values - old_values, -cliprange, cliprange)
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    return loss, masked_mean((clipped > unclipped).to(values.dtype), mask)
