"""Atomic writes: results appear whole, with the permissions an ordinary file would have."""

from __future__ import annotations

import os
import stat

import pytest

from inertia.core.io import atomic_path, atomic_write_text


def test_atomic_write_gives_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "record.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "record.json").stat().st_mode) == 0o644


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "video.mp4") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
