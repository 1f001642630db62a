"""Models and tokenizers for training: the base model (built first for toy recipes), load arguments, runtime checks.

    from rlcal.training.models import ensure_model, load_model, load_tokenizer
    base = ensure_model(recipe)                  # builds the toy world + model when model.pretrain_recipe says how
    model, tokenizer = load_model(base, recipe), load_tokenizer(base, recipe)

`check_runtime(recipe)` runs the environment checks that need no model (quantization backend, calibration hook), so
`rlcal train` fails on them before anything is loaded; `zero3_enabled()` tells whether parameters are sharded.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

from rlcal.common.errors import RlcalError
from rlcal.common.files import check_creatable, check_model_ref
from rlcal.training.config import Recipe


def ensure_model(recipe: Recipe) -> str:
    """The base model path; builds the toy world + model first when `model.pretrain_recipe` says how."""
    name = recipe.model.model_name_or_path
    if recipe.model.pretrain_recipe:  # cached: only a missing or stale (other settings) model is rebuilt
        try:
            from rlcal.world.pretrain import ensure_pretrained
        except ImportError as exc:
            raise RlcalError(f"model.pretrain_recipe needs rlcal.world.pretrain, which is not available: {exc}") from exc
        from accelerate import PartialState

        with PartialState().main_process_first():  # one process builds, the others then find it cached
            ensure_pretrained(recipe.model.pretrain_recipe)  # its output_dir is model_name_or_path (validated)
    check_model_ref(name)
    return name


def trust_remote_code(recipe: Recipe) -> bool:
    return bool(getattr(recipe.training, "trust_remote_code", False))  # a trl trainer-config field


def model_init_kwargs(recipe: Recipe) -> dict[str, Any]:
    """`from_pretrained` keyword arguments from the model section; explicit `training.model_init_kwargs` win."""
    m = recipe.model
    kwargs: dict[str, Any] = {"dtype": m.dtype or "auto", "trust_remote_code": trust_remote_code(recipe)}
    if m.model_revision and m.model_revision != "main":
        kwargs["revision"] = m.model_revision
    if m.attn_implementation:
        kwargs["attn_implementation"] = m.attn_implementation
    if m.load_in_4bit or m.load_in_8bit:
        from accelerate import PartialState

        kwargs["device_map"] = {"": PartialState().local_process_index}  # each process holds its own quantized copy
    kwargs.update(recipe.training.model_init_kwargs or {})
    return kwargs


def load_tokenizer(path: str, recipe: Recipe):
    """The tokenizer as TRL's trainers use it: left padding (decoder-only generation), a pad token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(
        path, padding_side="left", truncation_side="left", trust_remote_code=trust_remote_code(recipe)
    )
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if recipe.data.prompt_format == "chat" and not tok.chat_template:
        raise RlcalError(f"data.prompt_format is chat but the tokenizer of {path} has no chat template")
    return tok


def load_model(path: str, recipe: Recipe):
    """The causal LM at `path` on this process's device (CPU when `training.use_cpu`), for the warm-up and probes."""
    import torch
    from accelerate import PartialState
    from transformers import AutoModelForCausalLM

    kwargs = model_init_kwargs(recipe)
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if recipe.training.use_cpu:
        model.to("cpu")
    elif torch.cuda.is_available() and "device_map" not in kwargs:
        model.to(PartialState().device)
    return model


@contextmanager
def eval_mode(model):
    """Generate with dropout off, then give the model back in the mode it was in (a trainer may hold it)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def zero3_enabled() -> bool:
    """Whether this run shards parameters with DeepSpeed ZeRO-3.

    `accelerate launch --config_file launch/zero3.yaml` points at `ds_configs/zero3.json` (deepspeed_config_file)
    and then exports ACCELERATE_USE_DEEPSPEED + ACCELERATE_DEEPSPEED_CONFIG_FILE, but no ZERO_STAGE variable; the
    stage is read from the JSON when the TrainingArguments (our GRPOConfig) are built, which registers it with
    transformers. So this is true once the recipe is parsed, whichever way the launch config names the stage.
    """
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


# What `rlcal train` itself puts into training.output_dir (TRL/PEFT add the adapter and tokenizer files next to
# them). A non-empty folder with none of these was not made by rlcal train, and training into it is refused.
TRAIN_MARKERS = (
    "rlcal_recipe.yaml",
    "train_log.jsonl",
    "train_summary.json",
    "wandb_run_id.txt",
    "warmup",
    "calibration",
)


def check_output_dir(recipe: Recipe) -> None:
    """training.output_dir can be created or written, and is new, empty, or an earlier output of `rlcal train`
    (its marker files or a `checkpoint-*`: resuming and re-running stay possible); anything else, such as a model
    folder or a folder of other files, is refused before any work, so that nothing of its is overwritten."""
    out = recipe.output_dir
    if out.is_dir():
        entries = [p.name for p in out.iterdir()]
        ours = [n for n in entries if n in TRAIN_MARKERS or n.startswith("checkpoint-")]
        if entries and not ours:
            shown = ", ".join(sorted(entries)[:3]) + (f" and {len(entries) - 3} more" if len(entries) > 3 else "")
            raise RlcalError(
                f"training.output_dir {out} holds files rlcal train did not write ({shown}); give a new or empty "
                "folder"
            )
    check_creatable(out, "training.output_dir")  # after the refusal: a folder of someone else's is left untouched


def check_runtime(recipe: Recipe) -> None:
    """Checks that need no model: the output folder (`check_output_dir`), quantization backends, calibration hook.
    (A warm-up under ZeRO-3 is checked by `rlcal.training.warmup.run_warmup`, which knows whether a cached warm-up
    makes it unnecessary.)"""
    check_output_dir(recipe)
    if recipe.model.load_in_4bit or recipe.model.load_in_8bit:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as exc:
            raise RlcalError("model.load_in_4bit/8bit needs bitsandbytes: pip install bitsandbytes") from exc
    if recipe.calibration.data is not None:
        try:
            from rlcal.training.callbacks import CalibrationCallback  # noqa: F401
        except ImportError as exc:
            raise RlcalError(
                "calibration.data is set but this rlcal has no CalibrationCallback; set calibration.data: null"
            ) from exc
