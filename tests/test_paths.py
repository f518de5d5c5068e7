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


def test_an_existing_file_keeps_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "plan.csv"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_text_atomic(target, "new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o640


def test_a_symlink_is_written_through_to_its_target(tmp_path: Path) -> None:
    real = tmp_path / "real.html"
    real.write_text("old")
    link = tmp_path / "report.html"
    link.symlink_to(real)
    write_text_atomic(link, "new")
    assert link.is_symlink() and link.resolve() == real and real.read_text() == "new"


def test_directories_fifos_and_devices_are_refused_untouched(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for path, what in [(tmp_path, "a directory"), (fifo, "a FIFO")]:
        with pytest.raises(ValueError, match=f"is {what}, not a file"):
            write_text_atomic(path, "x")
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still a FIFO, not replaced by a regular file
    node = tmp_path / "full"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # a /dev/full twin, in the test's own folder
    except PermissionError:  # not root: the real device node, which the check refuses before writing
        node = Path("/dev/full")
    with pytest.raises(ValueError, match="is a device, not a file"):
        write_text_atomic(node, "x")
    assert stat.S_ISCHR(node.stat().st_mode)


def test_the_cli_refuses_a_device_as_output_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from chipfit.cli import main

    argv = [
        "plan",
        "mlp",
        "--devices",
        "h100-sxm",
        "--precisions",
        "bf16",
        "--batch-sizes",
        "1",
        "--csv",
        str(tmp_path),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a directory, not a file" in err
