"""Confidence of generated answers, batched: the model's own probability, agreement among samples, or a stated number.

    from rlcal.evaluation.confidence import encode_prompts, greedy_generate, sample_agreement, teacher_forced_logprobs
    ids = encode_prompts(tokenizer, prompts)                   # strings (plain) or chat message lists
    gens = greedy_generate(model, tokenizer, ids, max_new_tokens=16, batch_size=32)
    gens[0].response, gens[0].answer_prob, gens[0].answer_prob_norm
    samples = sample_generate(model, tokenizer, ids, num_samples=8, temperature=1.0)  # 8 completions per prompt
    agree = sample_agreement(model, tokenizer, ids, [g.response for g in gens], num_samples=8)

Methods (`rlcal eval --confidence ...`):
- `answer_prob` (default): the teacher-forced probability of the answer the model gave, given the prompt:
  exp(sum of the answer tokens' log-probabilities). It is read off the generation pass itself (`output_logits`:
  the raw, unprocessed logits of every decoding step) instead of a second forward pass, so it costs almost nothing;
  `teacher_forced_logprobs` computes the same numbers with a plain forward pass, for checking.
- `answer_prob_norm`: the length-normalised variant, exp(mean log-probability) (the geometric mean per token).
- `agreement`: the share of k sampled answers (temperature 1, no top-k/top-p) that equal the greedy answer after
  `rlcal.core.grading.extract_answer` + `normalize`.
- `verbal`: a confidence stated in the reply (`<confidence>0.8</confidence>`, "Confidence: 80%", "80% confident"), parsed by
  `rlcal.core.rewards.parse_confidence`; None when the reply states none.

Which tokens are "the answer" (`answer_span`): graders read the first non-empty line of a reply (or its
`<answer>` tag), so by default (`"line"`) the answer is the generated tokens up to and including the token that ends
that line: the end-of-sequence token or the first newline after some text. Its probability is then the probability
that the model writes exactly this answer and stops, not a prefix of a longer one. A reply with an `<answer>` tag,
and `answer_span="full"`, use every generated token up to and including the end-of-sequence token.

Prompts are left-padded in batches (sorted by length, so little padding is wasted); the tokenisation is TRL's
(`tokenizer(text)` for plain prompts, `apply_chat_template(..., add_generation_prompt=True)` for chat ones), so
evaluation sees exactly what training sees. Greedy generation batches prompts that begin alike instead
(`prefix_batches`): a threshold sweep renders the same instruction before every question, so each batch runs that
shared prefix once and copies its key/value cache to every row (about 2x faster on the demo's threshold sweep;
benchmarks/bench_eval.py measures it). The tokens generated are the same; log-probabilities agree to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from rlcal.core.grading import extract_answer, normalize
from rlcal.core.rewards import parse_confidence
from rlcal.evaluation import CONFIDENCE_METHODS

METHODS = CONFIDENCE_METHODS
ANSWER_SPANS = ("line", "full")


@dataclass
class Generation:
    """One greedy answer with its per-token log-probabilities under the model."""

    completion_ids: list[int]  # generated tokens, up to and including the end-of-sequence token
    response: str  # decoded completion, special tokens removed
    token_logprobs: list[float]  # log p(token | prompt, previous tokens), one per completion token
    span: int  # the first `span` completion tokens are the answer (see `answer_span`)

    @property
    def logprob(self) -> float:
        """Sum of the answer tokens' log-probabilities."""
        return float(sum(self.token_logprobs[: self.span]))

    @property
    def answer_prob(self) -> float:
        """exp(sum of log-probs): the probability of this exact answer."""
        return math.exp(self.logprob)

    @property
    def answer_prob_norm(self) -> float:
        """exp(mean of log-probs): the per-token geometric mean, which does not shrink with answer length."""
        return math.exp(self.logprob / self.span) if self.span else 1.0


# ---- tokens ------------------------------------------------------------------------------------------------------


def encode_prompts(tokenizer: Any, prompts: Sequence[str | list[dict[str, str]]]) -> list[list[int]]:
    """Token ids of each prompt, tokenised the way TRL's GRPOTrainer does it."""
    out: list[list[int]] = []
    for prompt in prompts:
        if isinstance(prompt, str):
            out.append(list(tokenizer(prompt)["input_ids"]))
        else:
            encoded = tokenizer.apply_chat_template(
                prompt, add_generation_prompt=True, tokenize=True, return_dict=True
            )
            out.append(list(encoded["input_ids"]))
    return out


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every id that ends generation: the model's generation config (chat models list several) and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, getattr(tokenizer, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    return ids


def pad_token_id(model: Any, tokenizer: Any) -> int:
    """The tokenizer's pad id, else the model's, else an end-of-sequence id (positions are masked anyway)."""
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(model.generation_config, "pad_token_id", None)):
        if isinstance(value, int):
            return value
    eos = sorted(eos_token_ids(model, tokenizer))
    if not eos:
        raise ValueError("the tokenizer has neither a pad nor an end-of-sequence token")
    return eos[0]


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def left_pad(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded input ids and attention mask for decoder-only generation."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Indices in batches of similar length (longest first, so running out of memory shows up at once)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


# Below this many shared tokens a batch runs as a plain left-padded batch: the extra forward pass costs more than
# it saves.
MIN_SHARED_PREFIX = 8


def shared_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least one token of its own (the last
    prompt token must go through the model with the rest of the batch to give the first generated token's logits)."""
    if not rows:
        return 0
    limit = max(min(len(r) for r in rows) - 1, 0)
    first = rows[0]
    for k in range(limit):
        if any(r[k] != first[k] for r in rows):
            return k
    return limit


def prefix_batches(prompt_ids: Sequence[Sequence[int]], batch_size: int) -> Iterator[tuple[list[int], int]]:
    """(indices, shared prefix length) in batches of prompts sorted by their tokens, so that prompts which begin
    alike (one instruction, many questions) land in one batch; the length is 0 where it is under
    `MIN_SHARED_PREFIX`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(prompt_ids)), key=lambda i: list(prompt_ids[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        shared = shared_prefix_length([prompt_ids[i] for i in batch]) if len(batch) > 1 else 0
        yield batch, shared if shared >= MIN_SHARED_PREFIX else 0


def _prefix_keywords(model: Any) -> tuple[str, dict[str, Any]]:
    """The keyword a model's forward takes its key/value cache by (`cache` in recent transformers, `past_key_values`
    before), and `logits_to_keep=1` where the forward accepts it (the prefix pass needs no logits; remote-code
    models may not know the argument). Read off the model under a PEFT wrapper, which forwards either."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    parameters = inspect.signature(base.forward).parameters
    keyword = "cache" if "cache" in parameters else "past_key_values"
    return keyword, {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}


@torch.no_grad()
def _prefix_inputs(
    model: Any, rows: Sequence[Sequence[int]], shared: int, pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, dict[str, Any]]:
    """Inputs for `generate` with the first `shared` tokens already in the cache: ids and mask cover prefix + the
    rows' own tokens, left-padded *after* the prefix. The pads in the middle are masked, and generation takes
    positions from the mask's running count, so every real token sits where it would without the prefix cache."""
    from transformers import DynamicCache

    prefix = torch.tensor([list(rows[0][:shared])], dtype=torch.long, device=device)
    cache = DynamicCache(config=model.config)
    keyword, extra = _prefix_keywords(model)
    model(input_ids=prefix, use_cache=True, **extra, **{keyword: cache})
    cache.batch_repeat_interleave(len(rows))
    tails, tail_mask = left_pad([r[shared:] for r in rows], pad_id, device)
    ids = torch.cat([prefix.expand(len(rows), -1), tails], dim=1)
    mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long, device=device), tail_mask], dim=1)
    return ids, mask, {keyword: cache}


class _TokenText:
    """Decoded text of single tokens, cached: used to find where the answer line ends."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.cache.get(token_id)
        if text is None:
            text = self.cache[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text


def answer_span_length(token_ids: Sequence[int], token_text: Callable[[int], str], eos_ids: set[int]) -> int:
    """How many leading tokens make up the first answer line, including the token that ends it (EOS or newline)."""
    seen_text = False
    for j, tid in enumerate(token_ids):
        if tid in eos_ids:
            return j + 1
        text = token_text(tid)
        if "\n" in text and (seen_text or text.split("\n", 1)[0].strip()):
            return j + 1
        seen_text = seen_text or bool(text.strip())
    return len(token_ids)


def _until_eos(token_ids: list[int], eos_ids: set[int]) -> list[int]:
    for j, tid in enumerate(token_ids):
        if tid in eos_ids:
            return token_ids[: j + 1]
    return token_ids


# ---- generation --------------------------------------------------------------------------------------------------


def generation_config(model: Any, pad_id: int, eos_ids: set[int], **kwargs: Any):
    from transformers import GenerationConfig

    return GenerationConfig(
        pad_token_id=pad_id,
        eos_token_id=sorted(eos_ids) or None,
        bos_token_id=getattr(model.generation_config, "bos_token_id", None),
        use_cache=True,  # trainers switch the config's use_cache off for gradient checkpointing
        **kwargs,
    )


@torch.no_grad()
def _generation_setup(model: Any, tokenizer: Any, **options: Any) -> tuple[Any, int, set[int], Any]:
    """(device, pad id, eos ids, generation config) shared by greedy and sampled generation."""
    pad_id, eos_ids = pad_token_id(model, tokenizer), eos_token_ids(model, tokenizer)
    return model_device(model), pad_id, eos_ids, generation_config(model, pad_id, eos_ids, **options)


def greedy_generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 16,
    batch_size: int = 32,
    answer_span: str = "line",
    on_batch: Callable[[int], Any] | None = None,
    share_prefix: bool = True,
) -> list[Generation]:
    """Greedy answers for every prompt, with the log-probability of each generated token.

    Log-probabilities are log_softmax of the raw logits at each decoding step (`output_logits=True`), i.e. exactly
    what a teacher-forced forward pass over prompt + answer gives, without the second pass. `on_batch(n)` is called
    after each batch of n prompts (progress bars). `share_prefix` batches prompts that begin alike and runs their
    common prefix once (`prefix_batches`); False: length-sorted batches, every prompt run in full.
    """
    if answer_span not in ANSWER_SPANS:
        raise ValueError(f"answer_span must be one of {ANSWER_SPANS}, got {answer_span!r}")
    if not prompt_ids:
        return []
    device, pad_id, eos_ids, config = _generation_setup(
        model,
        tokenizer,
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        output_logits=True,
        return_dict_in_generate=True,
    )
    token_text = _TokenText(tokenizer)
    results: list[Generation | None] = [None] * len(prompt_ids)
    if share_prefix:
        batches = prefix_batches(prompt_ids, batch_size)
    else:
        batches = ((b, 0) for b in length_sorted_batches([len(p) for p in prompt_ids], batch_size))
    for batch, shared in batches:
        rows = [prompt_ids[i] for i in batch]
        if shared:
            ids, mask, cache = _prefix_inputs(model, rows, shared, pad_id, device)
        else:
            (ids, mask), cache = left_pad(rows, pad_id, device), {}
        out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **cache)
        new_tokens = out.sequences[:, ids.shape[1] :]
        # Per step: logit of the chosen token minus logsumexp, in float32; never materialises [batch, steps, vocab].
        logprobs = torch.stack(
            [
                step.float().gather(1, new_tokens[:, k : k + 1]).squeeze(1) - torch.logsumexp(step.float(), dim=-1)
                for k, step in enumerate(out.logits)
            ],
            dim=1,
        ).cpu()
        new_tokens = new_tokens.cpu()
        for row, i in enumerate(batch):
            completion = _until_eos(new_tokens[row].tolist(), eos_ids)
            response = tokenizer.decode(completion, skip_special_tokens=True)
            if answer_span == "full" or "<answer>" in response.lower():
                span = len(completion)
            else:
                span = answer_span_length(completion, token_text, eos_ids)
            results[i] = Generation(completion, response, logprobs[row, : len(completion)].tolist(), span)
        if on_batch is not None:
            on_batch(len(batch))
    return results  # type: ignore[return-value]


def _fork_rng(device: torch.device):
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def sample_agreement(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    reference_responses: Sequence[str],
    num_samples: int = 8,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    seed: int = 0,
    temperature: float = 1.0,
    on_batch: Callable[[int], Any] | None = None,
) -> list[float]:
    """Share of `num_samples` sampled answers per prompt that match the reference (greedy) answer after
    `extract_answer` + `normalize`. Sampling draws from the model's own distribution (no top-k/top-p) and is seeded
    without disturbing the caller's random state (a training run keeps its own RNG stream): `sample_generate`."""
    if len(reference_responses) != len(prompt_ids):
        raise ValueError("one reference response per prompt is needed")
    samples = sample_generate(
        model, tokenizer, prompt_ids, num_samples, max_new_tokens, batch_size, seed, temperature, on_batch=on_batch
    )
    references = [normalize(extract_answer(r)) for r in reference_responses]
    return [
        sum(normalize(extract_answer(s)) == ref for s in texts) / num_samples
        for texts, ref in zip(samples, references, strict=True)
    ]


@torch.no_grad()
def sample_generate(
    model: Any,
    tokenizer: Any,
    prompt_ids: Sequence[Sequence[int]],
    num_samples: int = 1,
    max_new_tokens: int = 16,
    batch_size: int = 32,
    seed: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    on_batch: Callable[[int], Any] | None = None,
) -> list[list[str]]:
    """`num_samples` sampled completions per prompt (decoded, cut at end-of-sequence), in prompt order: the same
    batching, padding and stop tokens as `greedy_generate`. `top_k=0` / `top_p=1.0` mean no truncation. Seeded
    without disturbing the caller's random state, like `sample_agreement`."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if not prompt_ids:
        return []
    device, pad_id, eos_ids, config = _generation_setup(
        model,
        tokenizer,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        num_return_sequences=num_samples,
    )
    out: list[list[str]] = [[] for _ in prompt_ids]
    with _fork_rng(device):
        torch.manual_seed(seed)
        for batch in length_sorted_batches([len(p) for p in prompt_ids], batch_size):
            ids, mask = left_pad([prompt_ids[i] for i in batch], pad_id, device)
            sequences = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            new_tokens = sequences[:, ids.shape[1] :].cpu()
            for row, i in enumerate(batch):
                samples = new_tokens[row * num_samples : (row + 1) * num_samples]
                out[i] = [tokenizer.decode(_until_eos(s.tolist(), eos_ids), skip_special_tokens=True) for s in samples]
            if on_batch is not None:
                on_batch(len(batch))
    return out


def verbal_confidence(responses: Sequence[str]) -> list[float | None]:
    """The confidence each reply states, in [0, 1], or None."""
    return [parse_confidence(r) for r in responses]


@torch.no_grad()
def teacher_forced_logprobs(
    model: Any,
    prompt_ids: Sequence[Sequence[int]],
    completion_ids: Sequence[Sequence[int]],
    batch_size: int = 32,
    pad_id: int = 0,
) -> list[list[float]]:
    """log p(completion token | prompt, earlier completion tokens) for each pair, from one forward pass per batch
    (right-padded, so every real token keeps its position). The reference that `greedy_generate` must agree with."""
    if len(prompt_ids) != len(completion_ids):
        raise ValueError("prompt_ids and completion_ids differ in length")
    device = model_device(model)
    out: list[list[float]] = [[] for _ in prompt_ids]
    lengths = [len(p) + len(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
    for batch in length_sorted_batches(lengths, batch_size):
        rows = [list(prompt_ids[i]) + list(completion_ids[i]) for i in batch]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, : len(row)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        for r, i in enumerate(batch):
            start, n = len(prompt_ids[i]), len(completion_ids[i])
            if n == 0:
                continue
            step_logits = logits[r, start - 1 : start + n - 1].float()
            targets = ids[r, start : start + n].to(step_logits.device)
            lp = step_logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(step_logits, dim=-1)
            out[i] = lp.cpu().tolist()
    return out
