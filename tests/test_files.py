"""rlcal.common.files: atomic writes leave either the old file or the new one, with the mode a plain open() would give."""

from __future__ import annotations

import os
import stat

import pytest

from rlcal.common.errors import RlcalError
from rlcal.common.files import atomic_write_text, file_mode


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


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    from rlcal.common.files import publish, staging_dir

    out = tmp_path / "eval"
    with staging_dir(out) as tmp:
        (tmp / "metrics.json").write_text("{}")
        (tmp / "predictions.jsonl").write_text("")
        final = publish({"metrics": tmp / "metrics.json", "predictions": tmp / "predictions.jsonl"}, out)
    assert final == {"metrics": out / "metrics.json", "predictions": out / "predictions.jsonl"}
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl"]  # temp folder gone

    with pytest.raises(RuntimeError), staging_dir(out) as tmp:
        (tmp / "metrics.json").write_text('{"new": 1}')
        raise RuntimeError("plotting failed")
    assert (out / "metrics.json").read_text() == "{}"  # the old result survives a failed rewrite
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "predictions.jsonl"]
    with pytest.raises(RlcalError, match="--out .* exists and is not a folder"), staging_dir(final["metrics"], "--out"):
        pass
