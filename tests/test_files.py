"""rlcal.files: atomic writes leave either the old file or the new one, with the mode a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from rlcal.errors import RlcalError
from rlcal.files import atomic_write_text, file_mode


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
