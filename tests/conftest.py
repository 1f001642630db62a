"""Shared fixtures: a tiny local model + tokenizer (built in seconds, no network) for every test that needs one."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_collection_modifyitems(config, items) -> None:
    """Skip `@pytest.mark.gpu` tests on a machine without a CUDA GPU (torch is imported only if there are any)."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in gpu_items:
        item.add_marker(skip)


def toy_corpus(n_people: int = 200) -> list[str]:
    """Prompt-shaped text for training the fixture tokenizer: questions, dates, abstentions, all thresholds."""
    from rlcal.core.prompts import PromptTemplate

    plain, chat = PromptTemplate(), PromptTemplate(format="chat")
    lines = []
    for i in range(n_people):
        question = f"When was Person {i} born?"
        for t in (0.0, 0.5, 0.75, 0.9):
            lines.append(f"{plain.render(question, t)} {i % 28 + 1:02d}-{i % 12 + 1:02d}")
        lines.append(chat.render(question, 0.75)[-1]["content"])
    return lines + ["I don't know.", "IDK", "<answer>", "</answer>", "<confidence>0.8</confidence>"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """Path of a saved nano Llama (~0.1M parameters, random init) + BPE tokenizer with a chat template."""
    from rlcal.world.toymodel import build_tiny_model, build_tokenizer, save_tiny_model

    tokenizer = build_tokenizer(toy_corpus(), vocab_size=512)
    model = build_tiny_model(tokenizer, size="nano", family="llama", seed=0)
    return str(save_tiny_model(model, tokenizer, tmp_path_factory.mktemp("tiny_model")))


@pytest.fixture(scope="session")
def tiny_world_dir(tmp_path_factory) -> str:
    """Path of a small built world (120 people, 240 birthday mentions; corpus.txt, qa.jsonl, mentions.jsonl,
    world.json), built in well under a second."""
    from rlcal.world.corpus import WorldConfig, build_world

    out = tmp_path_factory.mktemp("tiny_world")
    build_world(WorldConfig(people=120, mentions=240, seed=0), out)
    return str(out)


@pytest.fixture(scope="session")
def pretrained_nano_dir(tmp_path_factory, tiny_world_dir) -> str:
    """Path of a nano Llama briefly pretrained (150 steps, ~10 s) on `tiny_world_dir`'s corpus, with its
    tokenizer: it already speaks the prompt format ("Answer: DD-MM"), but knows few facts."""
    from rlcal.world.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("pretrained_nano") / "model"
    config = PretrainConfig(
        world_dir=tiny_world_dir,
        world_people=120,
        world_mentions=240,
        output_dir=str(out),
        model_size="nano",
        vocab_size=400,
        max_steps=150,
        batch_size=16,
        learning_rate=1e-2,
        progress=False,
        logging_steps=10,
        num_threads=1,  # tests may share the CPU with other processes: one thread avoids OpenMP oversubscription
    )
    return str(pretrain(config))
