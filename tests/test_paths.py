"""Atomic writes: all or nothing, and the permissions a new file would get."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from chipfit.paths import atomic_path, write_text_atomic


def test_write_replaces_whole_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.md"
    write_text_atomic(target, "one")
    write_text_atomic(target, "two")
    assert target.read_text() == "two"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~mask
    assert [p.name for p in target.parent.iterdir()] == ["out.md"]


def test_a_failed_write_keeps_what_was_there(tmp_path: Path) -> None:
    target = tmp_path / "keep.txt"
    target.write_text("precious")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "precious" and [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
