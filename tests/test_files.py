"""rlcal.common.files: atomic writes leave either the old file (folder) or the new one, never a mix or a temp file,
with the mode a plain open() / mkdir() would give."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from rlcal.common.errors import RlcalError
from rlcal.common.files import (
    atomic_write_bytes,
    atomic_write_files,
    atomic_write_text,
    check_out_dir,
    file_mode,
    replace_dir,
    staged_dir,
)

OWNED = ("metrics.json", "predictions.jsonl", "plot.png")


def test_written_files_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "a" / "report.md", "hello\n")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 == file_mode()
    finally:
        os.umask(old)
    assert path.read_text() == "hello\n"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    path.write_text("old")

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_an_unwritable_place_is_one_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RlcalError, match=r"cannot write .*file/x\.md"):
        atomic_write_text(blocker / "x.md", "text")


def test_file_mode_follows_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write_bytes(tmp_path / "x.png", b"\x89PNG")
        with staged_dir(tmp_path / "eval", owned=OWNED) as tmp:
            (tmp / "metrics.json").write_text("{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "eval").stat().st_mode) == 0o750  # a plain mkdir's, not mkdtemp's 0o700


def listing(folder):
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def test_a_staged_folder_appears_whole_and_replaces_the_old_one(tmp_path):
    out = tmp_path / "eval"
    with staged_dir(out, owned=OWNED) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".eval.")  # a hidden sibling: same filesystem
        (tmp / "metrics.json").write_text("1")
        (tmp / "plot.png").write_text("old plot")
        assert not out.exists()  # nothing visible until the block ends
    assert listing(out) == {"metrics.json": "1", "plot.png": "old plot"}

    with staged_dir(out, owned=OWNED) as tmp:
        (tmp / "metrics.json").write_text("2")
        (tmp / "predictions.jsonl").write_text("")
        assert listing(out) == {"metrics.json": "1", "plot.png": "old plot"}  # the old one, untouched, meanwhile
    assert listing(out) == {"metrics.json": "2", "predictions.jsonl": ""}  # no stale plot from the earlier run
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # no temp or old folder left


@pytest.mark.parametrize("error", [RuntimeError("plotting failed"), KeyboardInterrupt()])
def test_a_failure_half_way_leaves_the_old_folder_and_no_temp(tmp_path, error):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    with pytest.raises(type(error)), staged_dir(out, owned=OWNED) as tmp:
        (tmp / "metrics.json").write_text("new")
        raise error
    assert listing(out) == {"metrics.json": "old"}
    with pytest.raises(type(error)), staged_dir(tmp_path / "fresh", owned=OWNED) as tmp:
        (tmp / "metrics.json").write_text("new")
        raise error
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # the fresh one never appeared; no temp left


@pytest.mark.parametrize("call", [0, 1])
def test_an_interrupt_during_the_swap_puts_the_old_folder_back(tmp_path, monkeypatch, call):
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("old")
    real, calls = os.rename, []

    def rename(src, dst):  # call 0 moves the old folder aside, call 1 moves the new one in
        calls.append(src)
        if len(calls) - 1 == call:
            raise KeyboardInterrupt
        real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt), staged_dir(out, owned=OWNED) as tmp:
        (tmp / "metrics.json").write_text("new")
    assert listing(out) == {"metrics.json": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]


def test_a_folder_that_cannot_be_renamed_is_one_clear_error_and_stays(tmp_path, monkeypatch):
    out = tmp_path / "mnt"
    out.mkdir()
    (out / "metrics.json").write_text("old")

    def rename(src, dst):
        raise OSError(16, "Device or resource busy")  # what renaming a mount point gives

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(RlcalError, match=r"cannot replace .*mnt: Device or resource busy"):
        with staged_dir(out, owned=OWNED) as tmp:
            (tmp / "metrics.json").write_text("new")
    assert listing(out) == {"metrics.json": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["mnt"]
    monkeypatch.setattr(os.path, "ismount", lambda path: Path(path) == out)  # caught before any work, too
    with pytest.raises(RlcalError, match=r"--out .*mnt is a mount point"):
        check_out_dir(out, OWNED, "--out")


def test_an_interrupt_while_deleting_the_old_folder_keeps_the_new_one_and_cleans_up(tmp_path, monkeypatch):
    staged, out = tmp_path / ".new", tmp_path / "model"
    for folder, text in ((staged, "new"), (out, "old")):
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "w.bin").write_text(text)
    real, calls = shutil.rmtree, []

    def rmtree(path, **kwargs):
        calls.append(path)
        if len(calls) == 1:
            raise KeyboardInterrupt
        real(path, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        replace_dir(staged, out)
    assert (out / "sub" / "w.bin").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_folder_of_other_files_is_refused_not_replaced(tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("weights")
    (out / "metrics.json").write_text("{}")
    with pytest.raises(RlcalError, match=r"--out .*train holds files this command does not write "
                                         r"\(adapter_model.safetensors\)"):  # fmt: skip
        with staged_dir(out, owned=OWNED, label="--out"):
            raise AssertionError("the block must not run")
    assert listing(out) == {"adapter_model.safetensors": "weights", "metrics.json": "{}"}
    assert [p.name for p in tmp_path.iterdir()] == ["train"]
    with pytest.raises(RlcalError, match="refusing to overwrite"):
        check_out_dir(out, lambda folder: (folder / "config.json").exists())
    with staged_dir(out, owned=None) as tmp:  # None: the caller owns the folder outright
        (tmp / "config.json").write_text("{}")
    assert listing(out) == {"config.json": "{}"}


def test_bad_destinations_are_one_clear_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RlcalError, match="--out .*file exists and is not a folder"):
        check_out_dir(blocker, OWNED, "--out")
    with pytest.raises(RlcalError, match=r"cannot write to output directory .*file/sub"):
        with staged_dir(blocker / "sub", owned=OWNED):
            raise AssertionError("the block must not run")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RlcalError, match="current folder"):
        check_out_dir(".", None)


def test_a_symlinked_folder_is_replaced_where_it_points(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with staged_dir(tmp_path / "link", owned=OWNED) as tmp:
        (tmp / "metrics.json").write_text("new")
    assert (tmp_path / "link").is_symlink() and listing(real) == {"metrics.json": "new"}


def test_several_files_are_written_all_or_nothing(tmp_path):
    first = tmp_path / "metrics.json"
    first.write_text("old")
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RlcalError, match=r"cannot write .*file/plot\.png"):
        atomic_write_files([(first, b"new"), (blocker / "plot.png", b"png")])
    assert first.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "metrics.json"]
    assert atomic_write_files([(first, b"new"), (tmp_path / "d" / "plot.png", b"png")]) == [
        first, tmp_path / "d" / "plot.png"
    ]  # fmt: skip
    assert first.read_text() == "new" and (tmp_path / "d" / "plot.png").read_bytes() == b"png"
