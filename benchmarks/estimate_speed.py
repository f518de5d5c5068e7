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


def main() -> None:
    devices = list(load_catalog().values())
    spec = get_model("resnet50")
    t0 = time.perf_counter()
    traces = []
    for b in BATCHES:
        with FakeTensorMode(allow_non_fake_inputs=True):
            model, inputs = spec.build(), spec.example_inputs(b)
        traces.append(trace(model, inputs, name="resnet50"))
    t_trace = time.perf_counter() - t0
    n = 0
    for tr in traces:
        for dev in devices:
            for p in PRECISIONS:
                estimate(tr, dev, p)
                n += 1
    total = time.perf_counter() - t0
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
        f"of {len(traces[0].records)} ops each.",
        "",
        "| stage | seconds |",
        "|---|---:|",
        f"| trace (6 batch sizes) | {t_trace:.2f} |",
        f"| {n} estimates | {total - t_trace:.2f} |",
        f"| total | {total:.2f} |",
        "",
        f"Target: under {TARGET_S:g} s: {'met' if total < TARGET_S else f'MISSED by {total - TARGET_S:.1f} s'}.",
        "",
    ]
    print("\n".join(lines))
    write_result("estimate_speed.md", "\n".join(lines))


if __name__ == "__main__":
    main()
