"""Ctrl-C during a plan whose pricing runs in worker processes (issue 18): one line, status 130,
no worker left behind, no partial output file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import chipfit.plan.sweep
    sweep = sys.modules["chipfit.plan.sweep"]  # the module (the package exports a function of that name)

    ready = Path(sys.argv[1])

    def slow_price(trace, task):  # a worker that is busy when Ctrl-C comes
        ready.write_text("pricing")
        time.sleep(600)

    sweep.price = slow_price  # forked workers inherit it
    from chipfit.cli import main
    sys.exit(main(["plan", "mlp", "--devices", "a100-sxm,h100-sxm,t4,l4", "--batch-sizes", "1,8",
                   "--workers", "2", "--csv", sys.argv[2]]))
    """
)


def _ours(marker: str) -> list[int]:
    pids = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                    pids.append(int(pid))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs /proc to find leftover workers")
def test_ctrl_c_stops_the_workers_and_writes_nothing(tmp_path: Path) -> None:
    marker = f"CHIPFIT_INTERRUPT_TEST={os.getpid()}"
    env = {**os.environ, "CHIPFIT_INTERRUPT_TEST": str(os.getpid())}
    ready, csv = tmp_path / "ready", tmp_path / "plan.csv"
    p = subprocess.Popen([sys.executable, "-c", DRIVER, str(ready), str(csv)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert p.poll() is None, p.communicate()
            assert time.monotonic() < deadline, "no worker started pricing"
            time.sleep(0.05)
        os.killpg(p.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
        _out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode == 130
    assert err.decode() == "chipfit: interrupted\n"
    assert not csv.exists()
    deadline = time.monotonic() + 10
    while _ours(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _ours(marker) == []  # no worker outlives the command
