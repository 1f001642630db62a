"""Atomic file writes (a temp file beside the target, renamed into place, so a failure never leaves a partial
file) and the check that a model reference names something loadable.

    from rlcal.common.files import atomic_write_text
    atomic_write_text("outputs/demo/summary.json", text)
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from rlcal.common.errors import RlcalError


def check_model_ref(name: str) -> None:
    """A model is a local folder or a Hugging Face id `org/name` (fetched, or found in the cache, on first use);
    anything else, such as a mistyped local path, is one clear `RlcalError` before any loading starts."""
    if not Path(name).exists() and (name.startswith((".", "/", "~")) or name.count("/") != 1):
        raise RlcalError(f"model not found: {name} (a local folder or a Hugging Face id like Qwen/Qwen2.5-0.5B)")


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give (0o666 minus the umask); mkstemp's own 0o600 would make
    reports and metrics unreadable to the other users of a shared machine."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def stage_bytes(path: Path, data: bytes) -> str:
    """Write `data` to a new temp file beside `path` (same filesystem, so os.replace is atomic); returns its name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, file_mode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; an unwritable place is an `RlcalError` naming the path."""
    path = Path(path)
    try:
        tmp = stage_bytes(path, text.encode("utf-8"))
    except OSError as exc:
        raise RlcalError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def staging_dir(out_dir: str | Path, label: str = "output path") -> Iterator[Path]:
    """A temporary folder inside `out_dir` (created if missing) for files that `publish` then moves into place
    together; it is removed on exit, so a failure half-way leaves `out_dir` as it was."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RlcalError(f"{label} {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=".tmp-"))
    except OSError as exc:
        raise RlcalError(f"cannot write to {out}: {exc.strerror or exc}") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish(files: Mapping[str, Path], out_dir: str | Path) -> dict[str, Path]:
    """Move staged files into `out_dir` under their own names; returns the final paths by the same keys."""
    final = {}
    for name, path in files.items():
        target = Path(out_dir) / path.name
        os.replace(path, target)
        final[name] = target
    return final
