"""The RL training data: QA rows with a confidence target t per row and the prompt that states it.

    from rlcal.training.data import load_train_dataset, first_prompt_report
    ds = load_train_dataset(recipe)          # columns question, answer, aliases, threshold, prompt (+ the source's)
    print(first_prompt_report(recipe))       # what `rlcal train --dry-run` shows; loads data, never a model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.training.config import Recipe


def _local_source_missing(source: str) -> bool:
    from rlcal.data.qa import LOCAL_FORMATS

    return Path(source).suffix.lower() in LOCAL_FORMATS and not Path(source).is_file()


def load_train_dataset(recipe: Recipe):
    """The RL dataset: QA rows with `threshold` (t, sampled per row with the training seed) and `prompt`."""
    from rlcal.data.qa import prepare_prompts

    d = recipe.data
    ds = d.load(seed=recipe.training.seed)  # the QA-task spec's loader: the same rows rlcal eval --recipe reads
    draws = recipe.reward.threshold_draws
    if draws > 1:  # each question `draws` times, each copy with its own t (sampled below)
        ds = ds.select([i for i in range(len(ds)) for _ in range(draws)])
    ds = prepare_prompts(ds, d.prompt_template(), recipe.reward.sampler(), seed=recipe.training.seed)
    empty = sum(1 for a in ds["answer"] if not str(a).strip())
    if empty == len(ds):
        raise RlcalError(f"{d.source}: every answer is empty; check data.columns (answer -> {d.columns})")
    return ds


def first_prompt(recipe: Recipe) -> tuple[Any, float, str]:
    """(prompt, t, where it came from) for the first training row; a placeholder when the data is not built yet."""
    d = recipe.data
    if _local_source_missing(d.source) and recipe.model.pretrain_recipe:
        t = recipe.reward.sampler().sample(1, seed=recipe.training.seed)[0]
        prompt = d.prompt_template().render("<question from the world, built on first run>", t)
        return prompt, t, f"{d.source} (not built yet: the first run builds it via {recipe.model.pretrain_recipe})"
    ds = load_train_dataset(recipe)
    return ds[0]["prompt"], ds[0]["threshold"], f"{d.source} ({len(ds)} rows)"


def first_prompt_report(recipe: Recipe) -> str:
    """The first training prompt as `--dry-run` shows it (loads the data, never a model)."""
    prompt, t, where = first_prompt(recipe)
    shown = prompt if isinstance(prompt, str) else json.dumps(prompt, indent=2, ensure_ascii=False)
    return f"# first prompt (t = {t}) from {where}:\n{shown}"
