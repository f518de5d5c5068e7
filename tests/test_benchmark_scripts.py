"""The GPU measurement and comparison scripts, exercised on the CPU (the same code path the H200 run takes)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_measure_and_compare_on_cpu(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(BENCH / "gpu_measure.py"), "--device", "cpu", "--quick", "--out", str(tmp_path)],
        check=True,
    )
    data = json.loads((tmp_path / "measure.json").read_text())
    kinds = {r["kind"] for r in data["rows"]}
    assert kinds == {"gemm", "conv", "attention", "gelu"} and all(r["seconds"] > 0 for r in data["rows"])
    # fp8 needs a GPU (torch._scaled_mm): on the CPU the other four GEMM dtypes are measured
    assert {r["dtype"] for r in data["rows"] if r["kind"] == "gemm"} == {"float32", "tfloat32", "bfloat16", "float16"}

    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_compare", BENCH / "gpu_compare.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.compare(data, "xeon-8480")
    assert len(rows) == len(data["rows"])
    for r in rows:
        assert r["predicted_s"] > 0
        assert r["error"] == (r["predicted_s"] - r["measured_s"]) / r["measured_s"]
    out = tmp_path / "cmp.md"
    argv = [sys.executable, str(BENCH / "gpu_compare.py"), "--data", str(tmp_path / "measure.json"),
            "--device", "xeon-8480", "--results-name", str(out)]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True)
    assert "Median |error| on GEMM-dominated cases" in out.read_text()
