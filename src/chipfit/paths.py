"""Where chipfit keeps what it makes once and reuses: compiled kernels, trained weights."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["cache_dir"]


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
