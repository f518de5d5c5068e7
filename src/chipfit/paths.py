"""Where chipfit keeps what it makes once and reuses: compiled kernels, trained weights."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from chipfit.errors import InputError

__all__ = ["atomic_path", "cache_dir", "check_output_path", "read_data_file", "write_text_atomic"]

T = TypeVar("T")


_NOT_FILES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device"),
              (stat.S_ISBLK, "a device"), (stat.S_ISSOCK, "a socket"))  # fmt: skip


def _target(path: str | Path) -> tuple[Path, os.stat_result | None]:
    """The file `path` names (through a symlink) and its stat, refusing what is not a file."""
    p = Path(path)
    if p.is_symlink():
        p = p.resolve()
    try:
        st = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        st = None
    if st is not None:
        what = next((w for test, w in _NOT_FILES if test(st.st_mode)), None)
        if what is not None:
            raise InputError(f"{path} is {what}, not a file: give the path of a file to write")
    return p, st


def check_output_path(path: str | Path) -> None:
    """Refuse, before any work is done, an output path that cannot be written: not a file, under
    something that is not a folder, or in a folder this user cannot write."""
    p, _st = _target(path)
    ancestor = p.parent if str(p.parent) else Path(".")
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"cannot write {path}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: no write permission in {ancestor}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, it replaces `path` in one
    rename, else it is removed. A reader never sees a half-written file and a failed write leaves
    what was there. A symlink is written through (its target is replaced, the link stays); an
    existing file keeps its permissions (a new one gets the umask's); a directory, FIFO, device
    or socket is refused with a ValueError before anything is written."""
    p, st = _target(path)
    parent = p.parent if str(p.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{p.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        if st is not None:
            mode = stat.S_IMODE(st.st_mode)
        else:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.chmod(tmp, mode)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write text to `path` atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def cache_dir(sub: str) -> Path:
    """$CHIPFIT_CACHE_DIR/sub, else $XDG_CACHE_HOME/chipfit/sub (~/.cache/chipfit/sub); a temp dir
    when that is not writable."""
    env = os.environ.get("CHIPFIT_CACHE_DIR")
    base = Path(env) if env else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "chipfit"
    d = base / sub
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError:
        d = Path(tempfile.gettempdir()) / "chipfit" / sub
        d.mkdir(parents=True, exist_ok=True)
    return d


def read_data_file(path: str | Path, parse: Callable[[str], T], what: str, syntax: str) -> T:
    """`parse(text)` of a user's file, with one-line errors naming the file: unreadable (`what` it was
    meant to be), or not valid `syntax` (JSON, TOML: their decode errors are ValueErrors)."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise InputError(f"{p}: cannot read {what} ({e.strerror or e})") from None
    try:
        return parse(text)
    except ValueError as e:
        raise InputError(f"{p}: not valid {syntax}: {e}") from None
