"""Loading a model for evaluation: any Hugging Face causal LM (local folder or Hub id), optionally with a LoRA adapter
checked against it, on the requested device and dtype.

    from rlcal.evaluation.models import load_model
    model, tokenizer = load_model("outputs/toy/pretrained", adapter=None, device="auto", dtype="auto")
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import check_model_ref

# ---- model loading -----------------------------------------------------------------------------------------------


def _adapter_key_mismatch(model: Any, adapter: str) -> str | None:
    """None if the adapter's saved tensors are exactly those the model has for it; else a short description."""
    from peft.utils import get_peft_model_state_dict, load_peft_weights

    saved = set(load_peft_weights(adapter, device="cpu"))
    expected = set(get_peft_model_state_dict(model))
    if saved == expected:
        return None
    missing, unexpected = sorted(expected - saved), sorted(saved - expected)
    parts = [f"{len(missing)} adapter tensors missing (e.g. {missing[0]})"] if missing else []
    parts += [f"{len(unexpected)} tensors with no place in the model (e.g. {unexpected[0]})"] if unexpected else []
    return "; ".join(parts)


def check_device(device: str) -> None:
    """`--device` is auto, cpu, cuda, cuda:N, mps or xpu[:N], and present on this machine: an `RlcalError` now,
    not an assertion from torch after the data has loaded."""
    import torch

    if device == "auto":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise RlcalError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}") from None
    kind = parsed.type
    if kind == "cpu":
        return
    backend = {"cuda": torch.cuda, "xpu": getattr(torch, "xpu", None), "mps": getattr(torch.backends, "mps", None)}
    module = backend.get(kind)
    if module is None:
        raise RlcalError(f"--device must be auto, cpu, cuda, cuda:N or mps, got {device!r}")
    if not module.is_available():
        raise RlcalError(f"--device {device}: no {kind.upper()} device on this machine (use --device cpu or auto)")
    count = module.device_count() if hasattr(module, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise RlcalError(f"--device {device}: this machine has {count} {kind} device(s) (0 to {count - 1})")


def check_adapter_ref(adapter: str) -> None:
    """A LoRA adapter is a folder with adapter_config.json (checked before the base model is loaded)."""
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise RlcalError(f"no LoRA adapter at {adapter} (adapter_config.json not found)")


def load_model(
    model_path: str,
    adapter: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    tokenizer_path: str | None = None,
):
    """Load a causal LM (+ tokenizer, + optional LoRA adapter) for evaluation; every failure is one RlcalError."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_model_ref(model_path)
    if device == "auto":
        from accelerate import PartialState

        device = str(PartialState().device)
    if dtype == "auto":
        use_bf16 = device.startswith("cuda") and torch.cuda.is_bf16_supported()
        torch_dtype = torch.bfloat16 if use_bf16 else torch.float32
    else:
        torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path or model_path)
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch_dtype)
    except Exception as exc:
        raise RlcalError(f"could not load model {model_path}: {str(exc).splitlines()[0]}") from exc
    if adapter is not None:
        from peft import PeftModel

        check_adapter_ref(adapter)
        config_file = Path(adapter) / "adapter_config.json"
        try:
            made_for = json.loads(config_file.read_text()).get("base_model_name_or_path")
        except (OSError, ValueError):
            made_for = None
        hint = f" (the adapter was made for {made_for})" if made_for and made_for != model_path else ""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # peft warns about missing keys; we raise on them below
                model = PeftModel.from_pretrained(model, adapter)
            mismatch = _adapter_key_mismatch(model, adapter)
        except Exception as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[:2]) if first else type(exc).__name__
            raise RlcalError(f"adapter {adapter} does not match model {model_path}{hint}: {detail[:300]}") from exc
        if mismatch:
            raise RlcalError(f"adapter {adapter} does not match model {model_path}{hint}: {mismatch}")
    if tokenizer.pad_token_id is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token  # batched generation needs a pad id; padded positions are masked
    model.to(device)
    model.eval()
    return model, tokenizer

