"""Atomic file output, the one writer every rlcal command uses, and the check that a model reference names
something loadable.

    from rlcal.common.files import atomic_write_text, staged_dir
    atomic_write_text("outputs/demo/summary.json", text)        # one file: the old one or the new one, never half
    with staged_dir("outputs/eval/base", owned=EVAL_FILES) as tmp:
        (tmp / "metrics.json").write_text(...)                  # a folder: it appears (or is replaced) in one rename
        (tmp / "predictions.jsonl").write_text(...)

Single files are written to a temporary file beside the target (same filesystem) and renamed over it. A folder of
outputs is staged in a hidden sibling folder and swapped in by `replace_dir`: the old folder is renamed aside, the
new one renamed into its place, the old one deleted. On any error, KeyboardInterrupt included, the destination is
left as it was and no temporary file or folder remains. Everything gets the mode a plain `open()` / `mkdir()`
would give (the umask), not mkstemp's private 0o600. Test: `pytest tests/test_files.py`.

The checks every command runs on what the user named, before any work (docs/errors.md): `check_creatable` (an
output place can be made, probed without creating it), `check_out_dir` / `check_out_file`, `check_model_ref`,
`read_text` and `check_utf8_file` (files that must be UTF-8).
"""

from __future__ import annotations

import codecs
import os
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rlcal.common.errors import RlcalError


def check_model_ref(name: str, what: str = "model") -> None:
    """A model is a local folder or a Hugging Face id `org/name` (fetched, or found in the cache, on first use);
    anything else, such as a mistyped local path, a file, or a folder without the `config.json` (or, for a LoRA
    adapter, `adapter_config.json`) that every Hugging Face model folder has, is one clear `RlcalError` before any
    loading starts. `what` names the thing in the message ("model", "tokenizer")."""
    path = Path(name)
    if not path.exists():
        if name.startswith((".", "/", "~")) or name.count("/") != 1:
            raise RlcalError(f"{what} not found: {name} (a local folder or a Hugging Face id like Qwen/Qwen2.5-0.5B)")
        return
    if not path.is_dir():
        raise RlcalError(f"{what} {name} is a file; give the model folder (with config.json) or a Hugging Face id")
    markers = ("tokenizer_config.json", "tokenizer.json", "config.json") if what == "tokenizer" else ("config.json",)
    if not any((path / m).is_file() for m in (*markers, "adapter_config.json")):
        raise RlcalError(f"{what} folder {name} has no {markers[-1]}: it is not a saved Hugging Face {what}")


def read_text(path: str | os.PathLike[str], label: str = "") -> str:
    """The UTF-8 text of a file the user named; a missing or unreadable file, a folder, or bytes that are not
    UTF-8 are one `RlcalError` naming the file (and the line of the first bad byte)."""
    name = label or str(path)
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise RlcalError(f"{name} is a folder, not a file") from None
    except OSError as exc:
        raise RlcalError(f"cannot read {name}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RlcalError(f"{name}: {utf8_error(data, exc)}") from None


def utf8_error(data: bytes, exc: UnicodeDecodeError) -> str:
    """`not UTF-8 text (invalid start byte at line 3, byte 17)`: where `data` stops being UTF-8."""
    line = data.count(b"\n", 0, exc.start) + 1
    return f"not UTF-8 text ({exc.reason} at line {line}, byte {exc.start})"


def check_utf8_file(path: str | os.PathLike[str], label: str = "") -> None:
    """Raise an `RlcalError` naming the line if the file at `path` is not UTF-8 text (read in chunks, so a large
    data file costs one pass and little memory)."""
    name = label or str(path)
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset, lines = 0, 1
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 20):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    at = offset + exc.start
                    line = lines + chunk.count(b"\n", 0, max(exc.start, 0))
                    raise RlcalError(f"{name}: not UTF-8 text ({exc.reason} at line {line}, byte {at})") from None
                offset += len(chunk)
                lines += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise RlcalError(f"{name}: not UTF-8 text ({exc.reason} at the end of the file)") from None
    except OSError as exc:
        raise RlcalError(f"cannot read {name}: {exc.strerror or exc}") from None


def check_creatable(path: str | os.PathLike[str], label: str = "output folder", beside: bool = False) -> None:
    """Check, before any slow work, that `path` (a folder or a file) can be created or written: its nearest existing
    ancestor must be a folder in which a new entry can be made (tried with a hidden probe folder, removed at once;
    permission bits alone do not tell, e.g. for root or on a read-only mount). `beside`: the entry is made next to
    `path` (a staged folder or file renamed into place), so the probe starts at its parent. Raises an `RlcalError`
    naming `path`."""
    target = Path(os.path.abspath(path))
    probe = target.parent if beside else target
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise RlcalError(f"cannot write to {label} {path}: {probe} is a file, not a folder")
    if os.environ.get("RANK", "0") != "0":
        # A non-main process of a distributed run writes nothing, not even a probe (tests/test_distributed.py checks
        # it); the main process probes for all, and a failure there ends the launch.
        if not os.access(probe, os.W_OK | os.X_OK):
            raise RlcalError(f"cannot write to {label} {path}: permission denied")
        return
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".rlcal-probe-", dir=probe))
    except OSError as exc:
        raise RlcalError(f"cannot write to {label} {path}: {exc.strerror or exc}") from None


def check_out_file(path: str | os.PathLike[str], label: str = "--out") -> None:
    """An output file the user named: not a folder, and its folder can be created or written (`check_creatable`)."""
    if Path(path).is_dir():
        raise RlcalError(f"{label} {path} is a directory; give a file name")
    check_creatable(path, label, beside=True)


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it is to set it; put it straight back
    os.umask(umask)
    return umask


def file_mode() -> int:
    """The mode a plain `open(path, "w")` would give (0o666 minus the umask); mkstemp's own 0o600 would make
    reports and metrics unreadable to the other users of a shared machine."""
    return 0o666 & ~_umask()


def dir_mode() -> int:
    """The mode a plain `mkdir` would give (0o777 minus the umask); mkdtemp's own is 0o700."""
    return 0o777 & ~_umask()


def _stage_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to a new temp file beside `path` (same filesystem, so os.replace is atomic); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, file_mode())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def atomic_write_files(outputs: Sequence[tuple[str | Path, bytes]]) -> list[Path]:
    """Write several files, possibly in different folders, all or nothing: every one is staged beside its target
    first, and only when all are written are they renamed into place. An unwritable place is an `RlcalError`
    naming the path, raised before any target changes. Returns the target paths."""
    staged: list[tuple[Path, Path]] = []
    try:
        for target, data in outputs:
            target = Path(target)
            try:
                staged.append((_stage_bytes(target, data), target))
            except OSError as exc:
                raise RlcalError(f"cannot write {target}: {exc.strerror or exc}") from None
        for tmp, target in staged:
            try:
                os.replace(tmp, target)
            except OSError as exc:
                raise RlcalError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return [target for _, target in staged]


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (parent folders are created); an unwritable place is an `RlcalError`."""
    return atomic_write_files([(path, data)])[0]


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically; an unwritable place is an `RlcalError` naming the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def replace_dir(staged: str | Path, final: str | Path) -> Path:
    """Move the folder `staged` to `final` (same filesystem), replacing any folder there: the old one is renamed
    aside, the new one renamed in, the old one deleted. If the swap fails or is interrupted before the new folder
    is in place, the old one is put back, so `final` is always either the old folder or the new one."""
    staged, final = Path(staged), Path(final)
    if final.exists() and not final.is_dir():
        raise RlcalError(f"{final} exists and is not a folder")
    aside = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
    try:
        if final.exists():
            os.rename(final, aside)
        os.rename(staged, final)
    except BaseException as exc:
        if aside.exists() and not final.exists():
            os.rename(aside, final)
        if isinstance(exc, OSError):  # e.g. EBUSY: `final` is a mount point, which cannot be renamed
            raise RlcalError(f"cannot replace {final}: {exc.strerror or exc}; write to a folder inside it") from None
        raise
    finally:
        # Decided from what is on disk, not from a flag: an interrupt can land between a rename and the next line.
        if aside.exists() and final.exists() and not staged.exists():
            _remove_tree(aside)
    return final


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path, ignore_errors=True)
    except BaseException:  # interrupted half-way: finish the job, then let the interrupt through
        shutil.rmtree(path, ignore_errors=True)
        raise


Owned = Collection[str] | Callable[[Path], bool] | None


def check_out_dir(final: str | Path, owned: Owned, label: str = "output directory") -> Path:
    """Check that `final` may be (re)written as a whole, before any slow work: it is missing, empty, or holds only
    what this writer produces. `owned` is the names the writer writes (anything else there is refused, so a
    folder of other files is never deleted), a predicate on the existing folder, or None for a folder that belongs
    to the caller entirely. Returns the real path (a symlinked folder is replaced where it points)."""
    out = Path(final)
    if out.is_symlink():
        out = out.resolve()
    if out.exists() and not out.is_dir():
        raise RlcalError(f"{label} {final} exists and is not a folder")
    if out.is_dir() and os.path.ismount(out):
        raise RlcalError(f"{label} {final} is a mount point, which cannot be replaced; write to a folder inside it")
    cwd = Path.cwd().resolve()
    if out.exists() and (cwd == out.resolve() or out.resolve() in cwd.parents):
        raise RlcalError(f"{label} {final} is (or holds) the current folder; give a new or empty folder")
    # Where the staged folder will be made (beside `final`): checked now, not after the work that fills it.
    check_creatable(out, label, beside=True)
    if out.is_dir() and owned is not None:
        if callable(owned):
            if any(out.iterdir()) and not owned(out):
                raise RlcalError(f"{label} {final} exists and is not one this command wrote; refusing to overwrite it")
        else:
            others = sorted(p.name for p in out.iterdir() if p.name not in owned)
            if others:
                more = f" and {len(others) - 3} more" if len(others) > 3 else ""
                raise RlcalError(
                    f"{label} {final} holds files this command does not write ({', '.join(others[:3])}{more}); "
                    "give a new or empty folder"
                )
    return out


@contextmanager
def staged_dir(final: str | Path, *, owned: Owned, label: str = "output directory") -> Iterator[Path]:
    """A fresh hidden sibling folder of `final` to write the outputs into; when the block ends without an error it
    replaces `final` in one rename (`replace_dir`). On an error or KeyboardInterrupt inside the block it is
    deleted and `final` is untouched. `owned` and `label` are as in `check_out_dir`, which runs first; an
    unwritable place is an `RlcalError` raised before the block runs."""
    out = check_out_dir(final, owned, label)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise RlcalError(f"cannot write to {label} {final}: {exc.strerror or exc}") from None
    try:
        # The folder keeps the mode it had (or a plain mkdir's), not mkdtemp's owner-only 0o700.
        os.chmod(tmp, stat.S_IMODE(out.stat().st_mode) if out.is_dir() else dir_mode())
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            _remove_tree(tmp)
