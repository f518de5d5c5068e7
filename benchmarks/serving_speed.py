"""How long chipfit's serving commands take on this machine (issue 21's speed targets).

Run: .venv/bin/python benchmarks/serving_speed.py
Writes benchmarks/results/serving_speed.md.

Each command runs as a user runs it (a fresh `chipfit` process, imports included), three times; the
median wall time is reported. Targets: `chipfit serve llama-2-70b --device h100-sxm --chips 8 --offline`
under 10 s; `plan --serve` for a 70B model over the whole catalog under 60 s.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result

CHIPFIT = str(Path(sys.executable).with_name("chipfit"))
CASES = [
    ("serve 70B on 8 x H100, offline (1,000 requests of 1024/1024, split searched)", 10.0,
     ["serve", "llama-2-70b", "--device", "h100-sxm", "--chips", "8", "--offline", "--json"]),
    ("plan --serve 70B over the whole catalog, TTFT p99 <= 2 s, TPOT p99 <= 100 ms (1024/256)", 60.0,
     ["plan", "llama-2-70b", "--serve", "--input-len", "1024", "--output-len", "256", "--ttft-ms", "2000",
      "--tpot-ms", "100", "--json"]),
    ("plan --serve 70B over the whole catalog, offline (1024/1024)", 60.0,
     ["plan", "llama-2-70b", "--serve", "--json"]),
]  # fmt: skip


def main() -> int:
    lines = ["# Serving commands' speed", "", f"Command: `{command_line()}`", f"Machine: {machine()}", "",
             "| case | target s | median s (3 runs) | met |", "|---|---|---|---|"]  # fmt: skip
    for name, target, argv in CASES:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([CHIPFIT, *argv], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        lines.append(f"| {name} | {target:g} | {med:.1f} | {'yes' if med < target else 'no'} |")
        print(f"{name}: {med:.1f} s (target {target:g})")
    write_result("serving_speed.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
