"""How much learning signal a policy gives GRPO: the share of prompt groups whose completions all earn one reward.

    from rlcal.training.probe import probe_group_variance, probe_settings
    stats = probe_group_variance(model, tokenizer, dataset, reward, **probe_settings(recipe))
    stats["frac_reward_zero_std"]       # 1.0 = every group has zero advantage: GRPO learns nothing

Completions are sampled with the evaluation's generation path (`rlcal.evaluation.confidence.sample_generate`: the
same prompt tokenisation as TRL, batching and stop tokens as `greedy_generate`) and the recipe's sampling settings.
"""

from __future__ import annotations

from typing import Any

from rlcal.training.config import Recipe


def probe_group_variance(
    model,
    tokenizer,
    dataset,
    reward,
    num_prompts: int,
    num_generations: int,
    temperature: float,
    max_new_tokens: int,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    batch_size: int = 32,
) -> dict[str, float]:
    """Sample `num_generations` completions for `num_prompts` rows as GRPO would and measure the learning signal:
    `frac_reward_zero_std` (groups whose rewards are all equal: zero advantage everywhere) plus outcome rates."""
    from tqdm.auto import tqdm

    from rlcal.core.rewards import outcome_stats
    from rlcal.evaluation.confidence import encode_prompts, sample_generate
    from rlcal.training.models import eval_mode

    rows = dataset.shuffle(seed=seed).select(range(min(num_prompts, len(dataset))))
    prompt_ids = encode_prompts(tokenizer, rows["prompt"])
    with eval_mode(model), tqdm(total=len(prompt_ids), desc="probe", leave=False) as bar:
        samples = sample_generate(
            model,
            tokenizer,
            prompt_ids,
            num_samples=num_generations,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k or 0,
            on_batch=bar.update,
        )
    completions = [c for group in samples for c in group]
    columns = {name: [v for v in rows[name] for _ in range(num_generations)] for name in rows.column_names}
    prompts = columns.pop("prompt")
    rewards = reward(prompts=prompts, completions=completions, **columns)
    groups = [rewards[i : i + num_generations] for i in range(0, len(rewards), num_generations)]
    zero = sum(1 for g in groups if max(g) - min(g) <= 1e-6)
    grade = getattr(reward, "outcomes", None)  # rlcal rewards expose their grading; other callables may not
    stats = outcome_stats(grade(completions, **columns), columns.get("threshold")) if grade else {}
    return {
        "prompts": len(groups),
        "num_generations": num_generations,
        "frac_reward_zero_std": zero / len(groups),
        "reward_mean": sum(rewards) / len(rewards),
        **stats,
    }


def probe_settings(recipe: Recipe) -> dict[str, Any]:
    """`probe_group_variance` keyword arguments: the recipe's probe size and GRPO's own sampling settings."""
    a = recipe.training
    return {
        "num_prompts": recipe.warmup.probe_prompts,
        "num_generations": a.num_generations,
        "temperature": a.temperature,
        "max_new_tokens": a.max_completion_length or 32,
        "top_p": a.top_p,
        "top_k": a.top_k or 0,
        "seed": a.seed,
    }


LOG_KEYS = ("prompts", "frac_reward_zero_std", "reward_mean", "abstain_rate", "hallucination_rate")


def format_stats(stats: dict[str, Any], keys: tuple[str, ...] = LOG_KEYS) -> str:
    """`key=value, ...` of the probe numbers that matter (all of them are in the summary), floats to 3 decimals."""
    shown = [(k, stats[k]) for k in keys if k in stats]
    return ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown)
