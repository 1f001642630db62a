"""Tests for rlcal.world.pretrain and the toy tokenizer/model: recipe loading, a short pretraining run whose loss falls,
offline reload through the Auto classes, caching in `ensure_pretrained`, and input errors."""

from __future__ import annotations

import json
import re
import typing
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcal.cli import main
from rlcal.common.errors import RlcalError
from rlcal.core.grading import is_abstention
from rlcal.world.corpus import WorldConfig
from rlcal.world.pretrain import DONE_MARKER, PretrainConfig, ensure_pretrained, is_pretrained, load_pretrain_config

REPO = Path(__file__).resolve().parents[1]
TOY_RECIPE = REPO / "recipes/toy/pretrain.yaml"


def write_recipe(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- recipe loading ---------------------------------------------------------------------------------------------


def test_toy_recipe_loads_with_documented_paths():
    config = load_pretrain_config(TOY_RECIPE)
    assert config.world_dir == "outputs/toy/world"
    assert config.output_dir == "outputs/toy/pretrained"
    assert config.world_config() == WorldConfig()  # the recipe spells out the defaults
    assert config.learning_rate == pytest.approx(3e-3)


def test_world_fields_mirror_world_config():
    world_fields = {f"world_{f.name}": f for f in fields(WorldConfig)}
    pretrain_fields = {
        f.name: f for f in fields(PretrainConfig) if f.name.startswith("world_") and f.name != "world_dir"
    }
    assert set(world_fields) == set(pretrain_fields)
    hints_w, hints_p = typing.get_type_hints(WorldConfig), typing.get_type_hints(PretrainConfig)
    defaults = PretrainConfig()
    for name, f in world_fields.items():
        assert hints_p[name] == hints_w[f.name], name
        assert getattr(defaults, name) == getattr(WorldConfig(), f.name), name


def test_overrides_and_yaml_strings_are_typed(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", "learning_rate: 1e-3\nepochs: 2\nworld_people: 50\n")
    config = load_pretrain_config(recipe, ["--batch_size", "8", "--world_families", "birthday", "birthplace"])
    assert config.learning_rate == 1e-3 and isinstance(config.learning_rate, float)  # YAML reads 1e-3 as a string
    assert config.batch_size == 8 and config.epochs == 2.0 and config.world_people == 50
    assert config.world_config().families == ["birthday", "birthplace"]


@pytest.mark.parametrize(
    "text, overrides, message",
    [
        ("learning_rat: 0.1\nbogus: 1\n", [], "unknown keys bogus, learning_rat"),
        ("epochs: 1\n", ["--no_such_key", "3"], "no_such_key"),
        ("epochs: 1\n", ["--batch_size", "many"], "batch_size"),
        ("batch_size: 0\n", [], "batch_size=0"),
        ("learning_rate: fast\n", [], "learning_rate.*invalid float value"),
        ("progress: 3\n", [], "progress must be bool"),
        ("model_size: huge\n", [], "model_size must be one of"),
        ("world_people: 0\n", [], "people must be > 0"),
        ("- a\n- b\n", [], "must be a YAML mapping"),
        ("a: [\n", [], "not valid YAML"),
    ],
)
def test_bad_recipes_are_one_clear_error(tmp_path, capsys, text, overrides, message):
    recipe = write_recipe(tmp_path / "r.yaml", text)
    with pytest.raises(RlcalError, match=message):
        load_pretrain_config(recipe, overrides)
    assert main(["pretrain", str(recipe), *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert message.split()[0].split(".")[0] in err and len(err.splitlines()) == 1


def test_missing_recipe(tmp_path, capsys):
    assert main(["pretrain", str(tmp_path / "nope.yaml")]) == 2
    assert "recipe not found" in capsys.readouterr().err


def test_unwritable_output_dir_fails_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("")
    recipe = write_recipe(tmp_path / "r.yaml", f"world_dir: {tmp_path / 'world'}\noutput_dir: {blocker / 'model'}\n")
    assert main(["pretrain", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot write to output directory" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "world").exists()


def test_refuses_to_overwrite_a_non_model_directory(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    config = PretrainConfig(
        world_dir=str(tmp_path / "w"), output_dir=str(precious), world_people=20, world_mentions=20
    )
    with pytest.raises(RlcalError, match="refusing to overwrite"):
        ensure_pretrained(config)
    assert (precious / "notes.txt").read_text() == "keep me"


# ---- tokenizer --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world_tokenizer(tiny_world_dir):
    from rlcal.world.corpus import read_corpus
    from rlcal.world.toymodel import build_tokenizer

    return build_tokenizer(read_corpus(tiny_world_dir), vocab_size=400)


def test_digits_are_one_token_each(world_tokenizer):
    tokens = world_tokenizer.tokenize("Answer: 31-12")
    digits = [t for t in tokens if any(c.isdigit() for c in t)]
    assert digits == ["3", "1", "1", "2"]
    # the prompt's tokens are a prefix of prompt + answer, so teacher forcing scores exactly the answer tokens
    prompt = world_tokenizer("Question: When?\nAnswer:")["input_ids"]
    assert world_tokenizer("Question: When?\nAnswer: 03-07")["input_ids"][: len(prompt)] == prompt


@settings(max_examples=40, deadline=None)
@given(st.text(max_size=60))
def test_tokenizer_round_trip(world_tokenizer, text):
    ids = world_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert world_tokenizer.decode(ids) == text


# ---- pretraining ------------------------------------------------------------------------------------------------


def test_short_pretraining_lowers_loss_and_reloads_offline(pretrained_nano_dir, tiny_world_dir, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = Path(pretrained_nano_dir)
    log = [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]
    assert len(log) >= 4
    assert log[-1]["loss"] < 0.6 * log[0]["loss"]
    assert (path / "loss.png").stat().st_size > 0
    done = json.loads((path / DONE_MARKER).read_text())
    assert done["steps"] == 150 and done["world"]["singleton_rate"] > 0

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    assert tokenizer.tokenize("07")[-2:] == ["0", "7"]
    assert tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    # It has learned the format: after "Answer:" comes a number-led answer or "I don't know", then end of text.
    # 150 steps leave the dates rough ("1108-0.") and which questions get a clean "DD-MM" changes with the CPU's
    # float summation order (one question was date-shaped on one machine, not on another), so the check is over
    # 16 questions: every reply digit-led or an abstention (a model that has not learned the format writes words),
    # and several of them date-shaped (9 of 16 where the single-question check failed).
    qa = [json.loads(line) for line in (Path(tiny_world_dir) / "qa.jsonl").read_text().splitlines()]
    from rlcal.core.prompts import PromptTemplate

    replies = []
    for row in qa[:16]:
        batch = tokenizer(PromptTemplate().render(row["question"], 0.0), return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=8, do_sample=False)
        replies.append(tokenizer.decode(out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True).strip())
    assert all(r[:1].isdigit() or is_abstention(r) for r in replies), replies
    assert sum(bool(re.match(r"\d{1,2}-\d{1,2}", r)) or is_abstention(r) for r in replies) >= 4, replies


def test_ensure_pretrained_caches_and_redoes_unfinished_runs(tmp_path, tiny_world_dir, monkeypatch):
    import rlcal.world.pretrain as P

    config = PretrainConfig(
        world_dir=str(tmp_path / "world"),
        world_people=30,
        world_mentions=40,
        output_dir=str(tmp_path / "model"),
        model_size="nano",
        vocab_size=320,
        max_steps=3,
        batch_size=8,
        progress=False,
        num_threads=1,
    )
    calls = []
    real = P.pretrain
    monkeypatch.setattr(P, "pretrain", lambda c: calls.append(c) or real(c))
    first = ensure_pretrained(config)
    assert calls and is_pretrained(config) and (first / "config.json").exists()
    ensure_pretrained(config)
    assert len(calls) == 1  # cached
    (first / DONE_MARKER).unlink()  # as if interrupted before the marker was written
    ensure_pretrained(config)
    assert len(calls) == 2
    config.num_threads, config.progress = 2, True  # how a run looks is not what it produces: still cached
    assert is_pretrained(config)
    config.learning_rate = 1e-4  # different settings: retrain
    assert not is_pretrained(config)
    # from a recipe path too, with paths in the recipe
    recipe = write_recipe(
        tmp_path / "r.yaml",
        f"world_dir: {tmp_path / 'world'}\nworld_people: 30\nworld_mentions: 40\noutput_dir: {tmp_path / 'model'}\n"
        "model_size: nano\nvocab_size: 320\nmax_steps: 3\nbatch_size: 8\nprogress: false\nnum_threads: 1\n",
    )
    assert ensure_pretrained(recipe) == first
    assert len(calls) == 2
    assert not list(tmp_path.glob(".*"))  # no staging or set-aside folder left behind


def test_a_new_world_format_invalidates_cached_models(tmp_path, monkeypatch):
    import rlcal.world.pretrain as P

    config = PretrainConfig(world_dir=str(tmp_path / "w"), output_dir=str(tmp_path / "m"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / DONE_MARKER).write_text(json.dumps({"config": P._fingerprint(config)}))
    assert is_pretrained(config)
    monkeypatch.setattr(P, "WORLD_FORMAT_VERSION", P.WORLD_FORMAT_VERSION + 1)  # the corpus text changed
    assert not is_pretrained(config)
