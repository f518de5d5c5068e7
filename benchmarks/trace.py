"""Tracing time and peak resident memory, each case in a fresh process.

Run: .venv/bin/python benchmarks/trace.py
Writes benchmarks/results/trace.md. Target: a Llama-style 70B decoder traces in
under 30 s and 2 GiB resident memory on this machine. Time includes building the
model on fake tensors; RSS is the child process's peak (ru_maxrss), interpreter
and torch import included.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result

CASES = [
    ("resnet50", "inference", 32, None, False),
    ("resnet50", "training", 32, None, False),
    ("bert-base", "inference", 8, 128, False),
    ("bert-base", "training", 8, 128, False),
    ("decoder-7b", "inference", 1, 2048, False),
    ("decoder-7b", "inference", 1, 2048, True),
    ("decoder-7b", "training", 1, 2048, False),
    ("decoder-70b", "inference", 1, 2048, False),
    ("decoder-70b", "inference", 1, 2048, True),
    ("decoder-70b", "training", 1, 2048, False),
]
TARGET_S, TARGET_GIB = 30.0, 2.0


def one(name: str, mode: str, batch: int, seq: int | None, decode: bool) -> dict[str, float]:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from chipfit.models import get_model
    from chipfit.trace import trace

    t = time.perf_counter()
    spec = get_model(name)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(batch, seq, decode)
    tr = trace(model, inputs, mode=mode, optimizer="adam" if mode == "training" else None, name=name)
    seconds = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    return {"seconds": seconds, "rss_bytes": rss, "ops": len(tr.records), "flops": tr.flops,
            "footprint_bytes": tr.footprint.total_bytes}  # fmt: skip


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--one":
        name, mode, batch, seq, decode = sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6] == "1"
        print(json.dumps(one(name, mode, batch, None if seq == "-" else int(seq), decode)))
        return
    lines = [
        "# Tracing time and memory",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        "Each case runs in a fresh process: time is model build on fake tensors plus `chipfit.trace`; RSS is the",
        "process's peak resident set (Python, torch and chipfit imports included). Training uses Adam.",
        "",
        "| model | mode | batch | seq | ops | TFLOP | footprint GB | seconds | peak RSS GiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    worst70: list[str] = []
    for name, mode, batch, seq, decode in CASES:
        cmd = [sys.executable, __file__, "--one", name, mode, str(batch), str(seq or "-"), "1" if decode else "0"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        label = f"{mode} (decode step)" if decode else mode
        row = (
            f"| {name} | {label} | {batch} | {seq or '-'} | {r['ops']:,} | {r['flops'] / 1e12:,.2f} "
            f"| {r['footprint_bytes'] / 1e9:,.1f} | {r['seconds']:.1f} | {r['rss_bytes'] / 2**30:.2f} |"
        )
        print(row, flush=True)
        lines.append(row)
        if name == "decoder-70b":
            ok = r["seconds"] < TARGET_S and r["rss_bytes"] / 2**30 < TARGET_GIB
            worst70.append(
                f"{label}: {r['seconds']:.1f} s, {r['rss_bytes'] / 2**30:.2f} GiB ({'met' if ok else 'MISSED'})"
            )
    lines += ["", f"Target (70B decoder < {TARGET_S:g} s and < {TARGET_GIB:g} GiB): " + "; ".join(worst70) + ".", ""]
    print(f"wrote {write_result('trace.md', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
