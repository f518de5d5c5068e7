"""Planner speed: ResNet-50 over the whole catalog x 5 precisions x 6 batch sizes, and the 70B
decoder, each one `plan()` call (tracing included), built on fake tensors as `chipfit plan` does,
on each backend: local (the default process pool), serial (this process) and ray (a local Ray
instance, started before the clock; its start-up is reported apart). The plans must be equal.

Run: .venv/bin/python benchmarks/plan.py
Writes benchmarks/results/plan.md. Targets (the default backend): ResNet-50 < 10 s, decoder-70b < 30 s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from torch._subclasses.fake_tensor import FakeTensorMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.hardware import list_devices
from chipfit.models import get_model
from chipfit.plan import plan

CASES = [
    ("resnet50", ("fp32", "bf16", "fp16", "fp8", "int8"), (1, 2, 4, 8, 16, 32), (1,), 10.0),
    ("decoder-70b", ("bf16", "fp8", "int8"), (1, 8), (1, 2, 4, 8), 30.0),
]


BACKENDS = ("local", "serial", "ray")


def main() -> None:
    import ray

    devices = [d.name for d in list_devices()]
    t = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - t
    rows = []
    for name, precs, batches, chips, target in CASES:
        spec = get_model(name)
        fake = FakeTensorMode(allow_non_fake_inputs=True)
        with fake:
            model = spec.build()

        def inputs(b: int, spec=spec, fake=fake):  # type: ignore[no-untyped-def]
            with fake:
                return spec.example_inputs(b)

        seconds, plans = {}, {}
        for backend in BACKENDS:
            t = time.perf_counter()
            p = plan(model, inputs, name=name, devices=devices, precisions=precs, batches=batches, chips=chips,
                     backend=backend)  # fmt: skip
            seconds[backend] = time.perf_counter() - t
            plans[backend] = p.as_dict()
            assert p.best is not None
        same = all(v == plans["serial"] for v in plans.values())
        s = seconds["local"]
        ok = "yes" if s < target else f"no ({s / target:.2f}x over)"
        rows.append(
            f"| {name} | {len(devices)} x {len(precs)} x {len(batches)} x chips {list(chips)} | {len(p.rows)} "
            f"| {s:.1f} | {seconds['serial']:.1f} | {seconds['ray']:.1f} | {seconds['serial'] / s:.2f} "
            f"| {'yes' if same else 'NO'} | < {target:g} | {ok} | {p.best.label()} |"
        )
    ray.shutdown()
    text = "\n".join(
        [
            "# Planner speed",
            "",
            f"Command: `{command_line()}`",
            "",
            f"Machine: {machine()}",
            "",
            "One `plan()` call per model and backend (tracing once per batch size in the driver, the cost model "
            "per configuration, scale-out per chip count); objective cost, no accuracy measurement. Seconds are "
            f"wall time; the target applies to the default backend (local). Ray's start-up, {ray_start:.1f} s, "
            "is outside its column.",
            "",
            "| model | devices x precisions x batches x chips | configurations | local s | serial s | ray s "
            "| serial / local | plans equal | target | met | recommended |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    )
    print(write_result("plan.md", text).read_text())


if __name__ == "__main__":
    main()
