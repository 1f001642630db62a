"""Local tokenizer and tiny causal LMs, built from scratch with no downloads.

    from rlcal.world.toymodel import build_tokenizer, build_tiny_model, save_tiny_model
    tok = build_tokenizer(corpus_lines, vocab_size=1024)          # BPE, one token per digit, chat template
    model = build_tiny_model(tok, size="tiny", family="llama")    # ~0.8M parameters, random init
    save_tiny_model(model, tok, "out/tiny")                       # AutoModelForCausalLM/AutoTokenizer load it offline

The tokenizer is a byte-level BPE trained with `tokenizers` (digits split one per token, so dates and numbers
compose), with <pad>/<bos>/<eos> and a minimal chat template so chat-format recipes run on the toy model too.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
CHAT_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ '<eos>' if m['role'] == 'assistant' }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

# name -> (hidden, layers, heads, intermediate). Parameter counts at vocab 1024 with tied embeddings.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "nano": (64, 2, 2, 128),  # ~0.1M: unit tests
    # ~0.8M: the default toy model. 3 layers, not 4: on 2 CPU threads it trains 1.5x faster (15k vs 10k tokens/s),
    # which keeps the default world + pretraining under 3 minutes, and it memorises as well (docs/world.md).
    "tiny": (128, 3, 4, 384),
    "small": (256, 6, 8, 768),  # ~5M
    "base": (512, 8, 8, 1536),  # ~25M
}
FAMILIES = ("llama", "qwen2")


def build_tokenizer(texts: Iterable[str], vocab_size: int = 1024, model_max_length: int = 512):
    """Train a byte-level BPE tokenizer on `texts`; returns a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ValueError(f"vocab_size must be >= 300 (256 bytes + specials + merges), got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tokenizer.decoder = decoders.ByteLevel()
    specials = [PAD, BOS, EOS, UNK, *CHAT_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=list(CHAT_TOKENS),
        model_max_length=model_max_length,
        padding_side="left",  # decoder-only generation pads on the left
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(tokenizer: Any, size: str = "tiny", family: str = "llama", max_position_embeddings: int = 512):
    """A transformers config for a tiny causal LM sized by name (see SIZES)."""
    from transformers import LlamaConfig, Qwen2Config

    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; choose from {', '.join(SIZES)}")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")
    hidden, layers, heads, intermediate = SIZES[size]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    if family == "llama":
        return LlamaConfig(**common)
    return Qwen2Config(**common)


def build_tiny_model(tokenizer: Any, size: str = "tiny", family: str = "llama", seed: int = 0):
    """A randomly initialised tiny causal LM (float32) matching `tokenizer`."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(tokenizer, size, family), dtype=torch.float32)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def save_tiny_model(model: Any, tokenizer: Any, out_dir: str | Path) -> Path:
    """Save model + tokenizer as an HF directory that the Auto classes load offline."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def count_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())
