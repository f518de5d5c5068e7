"""The serving quality probe over the catalog: chipfit's small decoder language model's perplexity under
each device x precision policy (by emulation), and under each KV-cache format.

Run: .venv/bin/python benchmarks/serving_quality.py
Writes benchmarks/results/serving_quality.md.

Chips whose policies are the same numbers (the same formats, accumulation and scaling) share one
measurement. The probe is chipfit.models.tinylm (byte-level, 3 layers, trained here on standard-library
docstrings): the changes measure the formats' rounding on a trained language model, not the served
model's own quality change.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.hardware import list_devices
from chipfit.serve.plan import DEFAULT_SERVE_PRECISIONS, runs_on_matrix_unit
from chipfit.serve.quality import measure_quality
from chipfit.serve.step import KV_PRECISIONS


def main() -> int:
    t0 = time.perf_counter()
    rows = []
    for dev in list_devices():
        runnable = [p for p in DEFAULT_SERVE_PRECISIONS if runs_on_matrix_unit(dev, p)]
        if "bf16" in runnable and "fp16" in runnable:
            runnable.remove("fp16")
        for p in runnable:
            rows.append(measure_quality(dev.name, p, "bf16"))
    kv = [measure_quality("h100-sxm", "bf16", k) for k in KV_PRECISIONS]
    wall = time.perf_counter() - t0
    base = rows[0].perplexity_fp32
    lines = ["# Serving quality probe: perplexity under each chip's numerics", "", f"Command: `{command_line()}`",
             f"Machine: {machine()}", "", f"FP32 perplexity of the probe on its held-out text: {base:.4f}; "
             f"{len(rows)} device x precision policies measured in {wall:.0f} s (equal policies share one run).", "",
             "## KV-cache formats (H100, BF16 compute)", "", "| KV cache | perplexity | change |",
             "|---|---|---|"]  # fmt: skip
    lines += [f"| {q.kv_precision} | {q.perplexity:.4f} | {q.change:+.2%} |" for q in kv]
    lines += ["", "## Devices x precisions (BF16 KV cache)", "", "| device | precision | perplexity | change |",
              "|---|---|---|---|"]  # fmt: skip
    lines += [f"| {q.device} | {q.precision} | {q.perplexity:.4f} | {q.change:+.2%} |" for q in rows]
    write_result("serving_quality.md", "\n".join(lines) + "\n")
    print(f"{len(rows)} rows in {wall:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
