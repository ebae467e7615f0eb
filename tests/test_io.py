"""landscape._io: all-or-nothing writes."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from landscape._io import atomic_write, atomic_write_text


def test_replaces_the_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("old")
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.txt"]


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    path = tmp_path / "table.txt"
    path.write_text("old")

    def disk_full(tmp):
        tmp.write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, disk_full, fsync=True)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.txt"]


def test_new_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "ckpt.pt", lambda tmp: tmp.write_bytes(b"x"), fsync=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
