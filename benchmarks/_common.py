"""Shared helpers for benchmarks: machine description, timing, atomic result files."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from chipfit.paths import write_text_atomic

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """One paragraph describing where a benchmark ran."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError, StopIteration):  # no /proc or no model name: keep the placeholder
        cpu = next(x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                   if x.startswith("model name"))  # fmt: skip
    import numpy
    import torch

    mem = ""
    with contextlib.suppress(OSError, StopIteration):
        kb = int(next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    versions = [f"python {platform.python_version()}", f"torch {torch.__version__}", f"numpy {numpy.__version__}"]
    for mod in ("ml_dtypes", "numba"):
        with contextlib.suppress(ImportError):
            versions.append(f"{mod} {__import__(mod).__version__}")
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        rev = ""
    return (
        f"{cpu}, {os.cpu_count()} logical cores{mem}; torch threads {torch.get_num_threads()}; "
        + ", ".join(versions)
        + (f"; chipfit at git {rev}" if rev else "")
        + f"; {time.strftime('%Y-%m-%d', time.gmtime())}"
    )


def median_seconds(fn: Callable[[], object], repeats: int = 7, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def write_result(name: str, text: str) -> Path:
    """Write benchmarks/results/<name> atomically (temp file + rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(RESULTS / name, text)  # an absolute `name` is used as is


def command_line() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])
