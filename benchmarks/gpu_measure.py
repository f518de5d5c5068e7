"""Measure GEMM, conv, attention and elementwise kernels on a GPU (or, for testing the path, the CPU).

Run on the device machine (H200), bringing the JSON back through $OUT:
    python benchmarks/gpu_measure.py --device cuda --out "$OUT"
then commit it as benchmarks/data/h200/measure.json and run benchmarks/gpu_compare.py.
Timing: CUDA events (perf_counter on CPU), warm-up runs, median of repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median_seconds, write_result

GEMMS = [
    (8192, 8192, 8192), (4096, 4096, 4096), (2048, 2048, 2048), (1000, 1000, 1000), (4095, 4097, 4096),
    (1, 4096, 4096), (16, 4096, 4096), (128, 11008, 4096), (2048, 11008, 4096), (65536, 1024, 1024),
    (512, 512, 32768), (1, 8192, 28672),
]  # fmt: skip
QUICK_GEMMS = [(64, 64, 64), (1, 128, 256), (100, 60, 70)]
DTYPES = ["float32", "tfloat32", "bfloat16", "float16", "float8_e4m3fn"]


def _timer(device: str) -> Callable[[Callable[[], Any], int], float]:
    def cuda_time(fn: Callable[[], Any], repeats: int) -> float:
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        return statistics.median(times)

    def cpu_time(fn: Callable[[], Any], repeats: int) -> float:
        return median_seconds(fn, repeats, warmup=1)

    return cuda_time if device == "cuda" else cpu_time


def _gemm_fn(m: int, n: int, k: int, dtype: str, device: str) -> Callable[[], Any] | None:
    torch.backends.cuda.matmul.allow_tf32 = dtype == "tfloat32"
    if dtype == "float8_e4m3fn":
        if device != "cuda":
            return None
        a = torch.randn(m, k, device=device).to(torch.float8_e4m3fn)
        b = torch.randn(n, k, device=device).to(torch.float8_e4m3fn).t()  # column-major B for _scaled_mm
        one = torch.ones((), device=device)
        return lambda: torch._scaled_mm(a, b, scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    dt = torch.float32 if dtype in ("float32", "tfloat32") else getattr(torch, dtype)
    a, b = torch.randn(m, k, device=device, dtype=dt), torch.randn(k, n, device=device, dtype=dt)
    return lambda: torch.mm(a, b)


def measure(device: str, quick: bool) -> list[dict[str, Any]]:
    timer = _timer(device)
    repeats = 3 if quick else 20
    rows: list[dict[str, Any]] = []
    for m, n, k in QUICK_GEMMS if quick else GEMMS:
        for dtype in DTYPES:
            fn = _gemm_fn(m, n, k, dtype, device)
            if fn is None:
                continue
            rows.append({"kind": "gemm", "m": m, "n": n, "k": k, "dtype": dtype, "seconds": timer(fn, repeats)})
    dt = torch.bfloat16 if device == "cuda" else torch.float32
    convs = (
        [(8, 64, 64, 56, 3), (8, 256, 64, 56, 1)]
        if quick
        else [(64, 64, 64, 56, 3), (64, 256, 64, 56, 1), (64, 3, 64, 224, 7)]
    )
    for b, cin, cout, hw, k in convs:
        x = torch.randn(b, cin, hw, hw, device=device, dtype=dt).to(memory_format=torch.channels_last)
        w = torch.randn(cout, cin, k, k, device=device, dtype=dt).to(memory_format=torch.channels_last)
        s = timer(lambda x=x, w=w, p=k // 2: torch.nn.functional.conv2d(x, w, padding=p), repeats)
        rows.append(
            {"kind": "conv", "batch": b, "cin": cin, "cout": cout, "hw": hw, "k": k, "dtype": str(dt)[6:], "seconds": s}
        )
    for b, h, s_len, d in [(1, 4, 64, 32)] if quick else [(8, 16, 2048, 128), (1, 32, 4096, 128)]:
        q = torch.randn(b, h, s_len, d, device=device, dtype=dt)
        sec = timer(lambda q=q: torch.nn.functional.scaled_dot_product_attention(q, q, q, is_causal=False), repeats)
        rows.append(
            {
                "kind": "attention",
                "batch": b,
                "heads": h,
                "seq": s_len,
                "head_dim": d,
                "dtype": str(dt)[6:],
                "seconds": sec,
            }
        )
    for n in [1 << 16] if quick else [1 << 24, 1 << 28]:
        x = torch.randn(n, device=device, dtype=dt)
        rows.append(
            {
                "kind": "gelu",
                "n": n,
                "dtype": str(dt)[6:],
                "seconds": timer(lambda x=x: torch.nn.functional.gelu(x), repeats),
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--out", default=".", help="folder for measure.json (written atomically)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes, few repeats (tests the path)")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; use --device cpu to exercise the script")
    rows = measure(args.device, args.quick)
    meta = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}  # fmt: skip
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    path = write_result(str(out / "measure.json"), json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {path} ({len(rows)} measurements)")


if __name__ == "__main__":
    main()
