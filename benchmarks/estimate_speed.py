"""Estimation speed: ResNet-50 on every catalog device x 5 precisions x 6 batch sizes.

Run: .venv/bin/python benchmarks/estimate_speed.py
Writes benchmarks/results/estimate_speed.md. Target: under 10 s on this machine, with
tracing included (one trace per batch size; the trace does not depend on the device).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.cost import estimate
from chipfit.hardware import load_catalog
from chipfit.models import get_model
from chipfit.trace import trace

PRECISIONS = ["fp32", "bf16", "fp16", "fp8", "int8"]
BATCHES = [1, 2, 8, 32, 128, 256]
TARGET_S = 10.0


REPEATS = 2


def one_run(devices: list[object], spec: object) -> tuple[float, float, float, int, int]:
    """(build s, trace s, estimates s, estimates, ops per trace) of one whole run."""
    t0 = time.perf_counter()
    with FakeTensorMode(allow_non_fake_inputs=True):  # one model, as `chipfit plan` builds it
        model = spec.build()  # type: ignore[attr-defined]
        inputs = [spec.example_inputs(b) for b in BATCHES]  # type: ignore[attr-defined]
    t1 = time.perf_counter()
    traces = [trace(model, x, name="resnet50") for x in inputs]
    t2 = time.perf_counter()
    n = 0
    for tr in traces:
        for dev in devices:
            for p in PRECISIONS:
                estimate(tr, dev, p)  # type: ignore[arg-type]
                n += 1
    t3 = time.perf_counter()
    return t1 - t0, t2 - t1, t3 - t2, n, len(traces[0].records)


def main() -> None:
    devices = list(load_catalog().values())
    spec = get_model("resnet50")
    runs = [one_run(devices, spec) for _ in range(REPEATS)]
    totals = [sum(r[:3]) for r in runs]
    # the first run is what one `chipfit` command pays (torch's first-call imports included); later runs
    # in the same process find them loaded
    build_s, trace_s, est_s, n, ops = runs[0]
    total = totals[0]
    lines = [
        "# Estimation speed",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        f"ResNet-50 inference, {len(devices)} catalog devices x {len(PRECISIONS)} precisions "
        f"({', '.join(PRECISIONS)}) "
        f"x {len(BATCHES)} batch sizes ({', '.join(map(str, BATCHES))}) = {n} estimates "
        f"of {ops} ops each. The table is the first run in a fresh process, as one `chipfit` command pays it "
        f"(torch's first-call imports included); the same run repeated in the process took "
        f"{', '.join(f'{t:.2f}' for t in totals[1:])} s.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        f"| build the model and 6 batches of inputs (fake tensors) | {build_s:.2f} |",
        f"| trace (6 batch sizes) | {trace_s:.2f} |",
        f"| {n} estimates | {est_s:.2f} |",
        f"| total | {total:.2f} |",
        "",
        f"Target: under {TARGET_S:g} s: {'met' if total < TARGET_S else f'MISSED by {total - TARGET_S:.1f} s'}.",
        "",
    ]
    print("\n".join(lines))
    write_result("estimate_speed.md", "\n".join(lines))


if __name__ == "__main__":
    main()
