"""Confidence extraction: the generation-pass answer probability equals an independent teacher-forced forward pass
(left padding, early <eos> and all), the answer span, agreement sampling, verbal confidence, chat prompts."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from test_evaluate import person, toy_qa_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlcal.core.prompts import PromptTemplate
from rlcal.evaluation.confidence import (
    MIN_SHARED_PREFIX,
    answer_span_length,
    encode_prompts,
    greedy_generate,
    prefix_batches,
    sample_agreement,
    shared_prefix_length,
    teacher_forced_logprobs,
    verbal_confidence,
)


@pytest.fixture(scope="module")
def toy_path(tiny_model_dir, tmp_path_factory) -> str:
    return toy_qa_model(tiny_model_dir, str(tmp_path_factory.mktemp("toy_qa")))


@pytest.fixture(scope="module")
def toy(toy_path):
    return AutoModelForCausalLM.from_pretrained(toy_path).eval(), AutoTokenizer.from_pretrained(toy_path)


@pytest.fixture(scope="module")
def random_model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def mixed_prompts(n: int = 6) -> list[str]:
    """Prompts of different lengths (t = 0 and t > 0 instructions, 1- and 2-digit names): batches need padding."""
    template = PromptTemplate()
    return [template.render(person(i * 7), t) for i in range(n) for t in (0.0, 0.9)]


def reference_logprob(model, prompt: list[int], completion: list[int]) -> float:
    """Sum of log p(completion token | prefix), one unpadded forward pass: no batching, no cache, no generate."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return sum(float(logprobs[len(prompt) - 1 + j, tok]) for j, tok in enumerate(completion))


@pytest.mark.parametrize("which", ["toy", "random_model"])
def test_answer_prob_equals_teacher_forced_forward_pass(which, request):
    model, tok = request.getfixturevalue(which)
    prompt_ids = encode_prompts(tok, mixed_prompts())
    assert len({len(p) for p in prompt_ids}) > 1  # really padded
    gens = greedy_generate(model, tok, prompt_ids, max_new_tokens=8, batch_size=5)
    if which == "toy":  # the trained model stops early, so finished rows sit next to running ones in a batch
        assert any(g.completion_ids[-1] == tok.eos_token_id and len(g.completion_ids) < 8 for g in gens)
        assert any("don't know" in g.response for g in gens)
    for p, g in zip(prompt_ids, gens, strict=True):
        expected = reference_logprob(model, p, g.completion_ids[: g.span])
        assert g.logprob == pytest.approx(expected, abs=1e-4)
        assert g.answer_prob == pytest.approx(math.exp(expected), rel=1e-4)
        assert g.answer_prob_norm == pytest.approx(math.exp(expected / g.span), rel=1e-4)
        assert 0.0 < g.answer_prob <= g.answer_prob_norm <= 1.0
    # The batched forward-pass helper agrees too (it is what the benchmark checks generation scores against).
    forced = teacher_forced_logprobs(
        model, prompt_ids, [g.completion_ids for g in gens], batch_size=4, pad_id=tok.pad_token_id
    )
    for g, lps in zip(gens, forced, strict=True):
        assert lps == pytest.approx(g.token_logprobs, abs=1e-4)


def test_generation_is_greedy_and_batch_independent(toy):
    model, tok = toy
    prompt_ids = encode_prompts(tok, mixed_prompts(4))
    batched = greedy_generate(model, tok, prompt_ids, max_new_tokens=8, batch_size=8)
    single = greedy_generate(model, tok, prompt_ids, max_new_tokens=8, batch_size=1)
    assert [g.completion_ids for g in batched] == [g.completion_ids for g in single]
    assert [g.answer_prob for g in batched] == pytest.approx([g.answer_prob for g in single], rel=1e-4)
    # greedy: each generated token is the argmax of the teacher-forced distribution
    g, p = single[0], prompt_ids[0]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([p + g.completion_ids])).logits[0]
    assert logits[len(p) - 1 : len(p) - 1 + len(g.completion_ids)].argmax(-1).tolist() == g.completion_ids


def test_full_span_scores_every_token_up_to_eos(toy):
    model, tok = toy
    prompt_ids = encode_prompts(tok, mixed_prompts(2))
    gens = greedy_generate(model, tok, prompt_ids, max_new_tokens=8, answer_span="full")
    assert all(g.span == len(g.completion_ids) for g in gens)
    with pytest.raises(ValueError, match="answer_span"):
        greedy_generate(model, tok, prompt_ids, answer_span="word")


# ---- shared prefixes ---------------------------------------------------------------------------------------------


def test_shared_prefix_length_hand_worked():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[7, 8, 9], [7, 8, 9]]) == 2  # identical rows keep their last token to run
    assert shared_prefix_length([[1, 2], [3, 2]]) == 0
    assert shared_prefix_length([[5]]) == 0 and shared_prefix_length([]) == 0


@given(st.lists(st.lists(st.integers(0, 3), min_size=1, max_size=12), min_size=1, max_size=40), st.integers(1, 9))
def test_prefix_batches_cover_every_prompt_once_with_a_true_prefix(rows, batch_size):
    seen = []
    for batch, shared in prefix_batches(rows, batch_size):
        assert 1 <= len(batch) <= batch_size
        assert shared == 0 or shared >= MIN_SHARED_PREFIX
        assert all(len(rows[i]) > shared and rows[i][:shared] == rows[batch[0]][:shared] for i in batch)
        seen += batch
    assert sorted(seen) == list(range(len(rows)))


def sweep_prompts(n: int = 8) -> list[str]:
    """A threshold sweep: per t one long instruction shared by every question, names of 1-3 digits (so the rows'
    own tokens differ in length and are padded after the prefix)."""
    template = PromptTemplate()
    return [template.render(person(i * 37), t) for t in (0.0, 0.5, 0.9) for i in range(n)]


@pytest.fixture(scope="module")
def qwen2_model(tiny_model_dir):
    from rlcal.world.toymodel import build_tiny_model

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return build_tiny_model(tok, size="nano", family="qwen2", seed=1).eval(), tok


@pytest.fixture(scope="module")
def lora_model(toy_path):
    from peft import LoraConfig, get_peft_model

    model, tok = AutoModelForCausalLM.from_pretrained(toy_path), AutoTokenizer.from_pretrained(toy_path)
    torch.manual_seed(0)  # get_peft_model changes the model in place: its own copy, not the `toy` fixture's
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return peft_model.eval(), tok


@pytest.mark.parametrize("which", ["toy", "random_model", "qwen2_model", "lora_model"])
def test_prefix_cache_generates_what_full_prompts_do(which, request):
    model, tok = request.getfixturevalue(which)
    prompt_ids = encode_prompts(tok, sweep_prompts())
    batches = list(prefix_batches(prompt_ids, 8))
    assert any(shared for _, shared in batches)  # the cached path really runs
    assert any(len({len(prompt_ids[i]) for i in b}) > 1 for b, shared in batches if shared)  # ... with pads inside
    cached = greedy_generate(model, tok, prompt_ids, max_new_tokens=6, batch_size=8)
    full = greedy_generate(model, tok, prompt_ids, max_new_tokens=6, batch_size=8, share_prefix=False)
    assert [g.completion_ids for g in cached] == [g.completion_ids for g in full]
    for c, f in zip(cached, full, strict=True):
        assert c.token_logprobs == pytest.approx(f.token_logprobs, abs=1e-4)
    # and both equal an unbatched, uncached forward pass
    for p, g in list(zip(prompt_ids, cached, strict=True))[::5]:
        assert g.logprob == pytest.approx(reference_logprob(model, p, g.completion_ids[: g.span]), abs=1e-4)


# ---- answer span -------------------------------------------------------------------------------------------------

EOS = 0
PIECES = {1: "12", 2: " 48", 3: "\n", 4: "\n\n", 5: "ab\n", 6: "\nQ", 7: " ", 8: "x"}


def text_of(ids):
    return "".join(PIECES[i] for i in ids if i != EOS)


def test_answer_span_examples():
    span = lambda ids: answer_span_length(ids, PIECES.__getitem__, {EOS})  # noqa: E731
    assert span([2, EOS, 3]) == 2  # " 48<eos>": the stop token belongs to the answer
    assert span([2, 3, 8, 8]) == 2  # " 48\n" then a rambling continuation that is not scored
    assert span([3, 4, 2, 1, 3, 8]) == 5  # leading blank lines are skipped, the answer line ends at its newline
    assert span([5, 8]) == 1  # "ab\n": text and the newline in one token
    assert span([6, 8, 3]) == 3  # "\nQ": the newline before any text does not end the answer
    assert span([2, 1, 8]) == 3  # no newline, no eos: everything generated


@given(st.lists(st.sampled_from(sorted(PIECES) + [EOS]), min_size=1, max_size=12))
def test_answer_span_keeps_the_graded_line(ids):
    from rlcal.core.grading import extract_answer

    n = answer_span_length(ids, lambda i: PIECES.get(i, ""), {EOS})
    assert 1 <= n <= len(ids)
    full = ids[: ids.index(EOS)] if EOS in ids else ids
    # the first non-empty line, which the grader reads, is entirely inside the scored span
    assert extract_answer(text_of(ids[:n])) == extract_answer(text_of(full))
    if n < len(ids) and ids[n - 1] != EOS:  # the span stopped early only at a newline after answer text
        assert "\n" in PIECES[ids[n - 1]] and text_of(ids[:n]).strip()


# ---- agreement, verbal, chat -------------------------------------------------------------------------------------


def test_agreement_shares_and_rng_isolation(toy):
    model, tok = toy
    prompt_ids = encode_prompts(tok, [PromptTemplate().render(person(i), 0.0) for i in range(3)])
    greedy = [g.response for g in greedy_generate(model, tok, prompt_ids, max_new_tokens=6)]
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    shares = sample_agreement(model, tok, prompt_ids, greedy, num_samples=6, max_new_tokens=6, seed=1)
    assert torch.equal(torch.rand(3), expected_next)  # sampling did not move the caller's RNG
    assert all(s in {k / 6 for k in range(7)} for s in shares)
    assert shares == sample_agreement(model, tok, prompt_ids, greedy, num_samples=6, max_new_tokens=6, seed=1)
    # near-zero temperature samples the greedy answer every time; a reference nobody says is never matched
    cold = sample_agreement(model, tok, prompt_ids, greedy, num_samples=3, max_new_tokens=6, temperature=1e-6)
    assert cold == [1.0, 1.0, 1.0]
    assert sample_agreement(model, tok, prompt_ids, ["zebra"] * 3, num_samples=3, max_new_tokens=6) == [0.0] * 3


def test_verbal_confidence():
    assert verbal_confidence(["48 <confidence>0.8</confidence>", "Confidence: 65%", "48"]) == [0.8, 0.65, None]


def test_chat_prompts_use_the_chat_template(random_model):
    model, tok = random_model
    messages = PromptTemplate(format="chat", system_prompt="Be brief.").render(person(3), 0.75)
    (ids,) = encode_prompts(tok, [messages])
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids).endswith("<|assistant|>\n")
    (gen,) = greedy_generate(model, tok, [ids], max_new_tokens=4)
    assert gen.answer_prob == pytest.approx(
        math.exp(reference_logprob(model, ids, gen.completion_ids[: gen.span])), rel=1e-4
    )
