"""Every recipe in recipes/ parses and validates (real-model ones without loading weights or data), and each one
says at the top how to launch it."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import pytest

from rlcal.training.config import load_recipe
from rlcal.world.pretrain import load_pretrain_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").rglob("*.yaml"))
TRAIN_RECIPES = [p for p in RECIPES if p.name != "pretrain.yaml"]


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_there_are_toy_and_real_model_recipes():
    names = {rel(p) for p in TRAIN_RECIPES}
    assert {"recipes/toy/grpo/config_confidence_target.yaml", "recipes/toy/grpo/config_binary.yaml"} <= names
    assert {"recipes/toy/ppo/config_confidence_target.yaml", "recipes/toy/ppo/config_binary.yaml"} <= names
    assert any("llama3.1-8b" in n and "zero3" in n for n in names)
    assert any("qwen2.5-0.5b" in n for n in names) and any("qwen2.5-7b" in n for n in names)


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=rel)
def test_training_recipe_parses_and_validates(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes use paths relative to the repository root
    recipe = load_recipe(rel(path))
    assert recipe.trainer in ("grpo", "rloo", "ppo")
    if recipe.trainer == "ppo":  # GAE advantages, whitened per rollout; the critic is the baseline
        assert recipe.training.whiten_advantages and recipe.training.num_generations >= 1
    else:
        scaling = "scale_rewards" if recipe.trainer == "grpo" else "normalize_advantages"
        assert scaling in recipe.explicit["training"]  # the advantage scaling is a deliberate choice in every recipe
        assert recipe.training.num_generations >= 2
    assert recipe.output_dir.parts[0] == "outputs"
    if "toy" in path.parts:
        # on a fresh checkout the toy model is built by the pretrain recipe the training recipe names
        assert recipe.model.pretrain_recipe == "recipes/toy/pretrain.yaml"
        assert recipe.calibration.data == recipe.data.source and recipe.calibration.split_filter == "eval"
    else:
        assert recipe.model.dtype == "bfloat16" and recipe.model.use_peft


@pytest.mark.parametrize("path", TRAIN_RECIPES, ids=rel)
def test_recipe_header_shows_its_launch_command(path):
    header = [line for line in path.read_text().splitlines() if line.startswith("#")][:8]
    text = "\n".join(header)
    assert rel(path) in text, "the launch command must name the recipe itself"
    assert re.search(r"rlcal train|accelerate launch|sbatch", text)
    for config in re.findall(r"launch/[\w.]+\.(?:yaml|sh)", text):
        assert (ROOT / config).is_file(), config


def test_ppo_toy_recipes_match_their_grpo_twins():
    """Same data, reward, warm-up and completion budget as the GRPO recipe of the same name; only the trainer differs."""
    for name in ("config_binary.yaml", "config_confidence_target.yaml"):
        ppo, grpo = load_recipe(ROOT / "recipes/toy/ppo" / name), load_recipe(ROOT / "recipes/toy/grpo" / name)
        for section in ("model", "data", "reward"):
            assert getattr(ppo, section) == getattr(grpo, section), section
        # calibration evals as often per completion: every 100 PPO steps (2 per rollout) = every 50 GRPO steps
        assert replace(ppo.calibration, every_n_steps=50) == grpo.calibration
        assert ppo.warmup.steps == grpo.warmup.steps and ppo.warmup.abstain_on == grpo.warmup.abstain_on
        assert ppo.warmup.abstain_fraction == grpo.warmup.abstain_fraction
        completions = {
            r.trainer: r.training.max_steps // r.training.num_iterations * r.training.generation_batch_size
            for r in (ppo, grpo)
        }
        assert completions["ppo"] == completions["grpo"]


def test_the_pretrain_recipe_parses():
    config = load_pretrain_config(ROOT / "recipes/toy/pretrain.yaml")
    toy = load_recipe(ROOT / "recipes/toy/grpo/config_confidence_target.yaml")
    # the training recipe's model and data are exactly what the pretrain recipe produces
    assert toy.model.model_name_or_path == config.output_dir
    assert toy.data.source == f"{config.world_dir}/qa.jsonl"
