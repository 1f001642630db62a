"""Weights & Biases for training runs: start the run with the recipe as its config, never blocking on the network.

    from rlcal.training.tracking import setup_wandb, finish_wandb
    started = setup_wandb(recipe)      # when training.report_to includes wandb; main process only
    ...                                # transformers' WandbCallback logs into this run (report_to)
    finish_wandb(started)

Mode: `wandb.mode` in the recipe, else $WANDB_MODE, else online when credentials exist and offline otherwise. Online
without credentials logs offline, and so does online when the W&B server does not answer a TCP connect within 3 s
(instead of waiting wandb's 90 s init timeout); an online start that still fails retries offline. The run id is kept in
`output_dir/wandb_run_id.txt`, so a resumed training continues the same W&B run.
"""

from __future__ import annotations

import logging
import os

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_text
from rlcal.training.config import Recipe

logger = logging.getLogger("rlcal.training.tracking")


def _wandb_host() -> str:
    from urllib.parse import urlparse

    return urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"


def _wandb_credentials() -> bool:
    """Whether a W&B API key is available (env or ~/.netrc). Only its presence is checked; it is never read out."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    import netrc
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


REACH_TIMEOUT_S = 3.0  # a reachable W&B server answers a TCP connect in well under this


def _wandb_reachable(timeout: float = REACH_TIMEOUT_S) -> bool:
    """Whether the W&B server accepts a TCP connection within `timeout` seconds. Without it, `wandb.init` online
    waits its own 90 s init timeout before failing, a stall at the start of every run on an offline node."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "api.wandb.ai", port), timeout=timeout):
            return True
    except OSError:
        return False


def setup_wandb(recipe: Recipe) -> bool:
    """Start the W&B run (main process) with the recipe as its config. Returns whether a run was started.

    Offline works without network; online without credentials falls back to offline, and an online start that
    fails (no network) retries offline instead of crashing the training. transformers' WandbCallback then reuses
    this run and adds the TrainingArguments to its config.
    """
    args = recipe.training
    if "wandb" not in (args.report_to or []):
        return False
    cfg = recipe.wandb
    mode = cfg.mode or os.environ.get("WANDB_MODE") or ("online" if _wandb_credentials() else "offline")
    if mode == "online" and not _wandb_credentials():
        logger.warning("wandb: no API key found (WANDB_API_KEY or `wandb login`); logging offline")
        mode = "offline"
    from accelerate import PartialState

    if mode == "online" and PartialState().is_main_process and not _wandb_reachable():
        logger.warning("wandb: %s is unreachable; logging offline (`wandb sync` uploads it later)", _wandb_host())
        mode = "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ["WANDB_PROJECT"] = cfg.project
    if cfg.entity:
        os.environ["WANDB_ENTITY"] = cfg.entity
    if not PartialState().is_main_process or mode == "disabled":
        return False
    import wandb

    recipe.output_dir.mkdir(parents=True, exist_ok=True)
    id_file = recipe.output_dir / "wandb_run_id.txt"
    run_id = id_file.read_text().strip() if id_file.is_file() and recipe.resume != "never" else None
    init = dict(
        project=cfg.project,
        entity=cfg.entity,
        name=cfg.name or args.run_name,
        tags=cfg.tags,
        group=cfg.group,
        config={"rlcal": recipe.to_dict()},
        dir=str(recipe.output_dir),
        id=run_id,
        resume="allow" if run_id else None,
    )
    try:
        run = wandb.init(mode=mode, **init)
    except Exception as exc:  # noqa: BLE001 - any network/auth failure must not end the training
        if mode != "online":
            raise RlcalError(f"wandb could not start ({mode}): {exc}") from exc
        logger.warning("wandb: online start failed (%s); logging offline instead", type(exc).__name__)
        os.environ["WANDB_MODE"] = "offline"
        run = wandb.init(mode="offline", **init)
    atomic_write_text(id_file, run.id)
    return True


def finish_wandb(started: bool) -> None:
    """Close the run `setup_wandb` started (flushes an offline run to disk)."""
    if started:
        import wandb

        wandb.finish()
