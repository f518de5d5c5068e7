"""Measure this machine's CPU and write a chipfit device file for it.

What is measured (torch eager, this process's thread count, float32 and bfloat16):
- GEMM throughput on a set of shapes; the best is the peak, and the kernel tile
  (tm x tn) of the tiled model is fitted to the whole set by least log-error;
- main-memory bandwidth (a large copy: bytes read + written per second) and
  last-level-cache bandwidth (a copy that fits in it), cache size from sysfs;
- vector throughput (an elementwise multiply-add on cache-resident data);
- per-op dispatch overhead (a one-element add) and per-view overhead (a view);
- each common op's own fixed cost on a tiny input (`op_probes`: gelu, layer norm, batch norm, pooling, ...),
  and what fetching one parameter through nn.Module attributes costs (eager pays it every forward);
- (not with --quick) what one call into a torch.compile'd graph costs beyond its kernels (`graph_call_s`:
  Dynamo's guards and Inductor's Python wrapper), which the compiled (`inductor`) stack pays once a step.

Every figure is the median over three whole rounds of measurement (`ROUNDS`), so one round that a busy
machine disturbed is outvoted; `spread` reports how far the rounds were apart.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from chipfit.errors import InputError, ResourceError
from chipfit.hardware.device import gemm_table_rate
from chipfit.paths import write_text_atomic

__all__ = ["GEMM_SHAPES", "CalibrationError", "calibrate", "calibrate_checked", "device_toml", "problems"]

# the measured FP32 grid the simd model interpolates (compute.gemm_table; not with --quick): M from a
# GEMV to a large batch, N and K from a narrow projection to a wide MLP
GEMM_GRID_M = (1, 4, 16, 64, 256, 1024)
GEMM_GRID_NK = (64, 256, 1024, 4096)
GEMM_SHAPES = [(2048, 2048, 2048), (1024, 1024, 1024), (512, 512, 512), (256, 1024, 1024), (64, 1024, 1024),
               (32, 4096, 1024), (8, 1024, 1024), (1, 4096, 4096), (4096, 64, 256), (128, 128, 128)]  # fmt: skip


def _time(fn: Callable[[], Any], min_s: float = 0.05, repeats: int = 5) -> float:
    """Best (minimum) seconds per call over samples long enough to time reliably: on a shared
    machine, noise only ever adds time, so the minimum is the least-disturbed estimate (timeit's advice).
    The first call is a warm-up and is never timed: it takes the page faults of freshly allocated
    outputs (a 128 MiB copy into untouched memory measured 0.6 GB/s in CI for that reason)."""
    fn()
    t = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t, 1e-7)
    if once > 4 * min_s:  # slow enough that one call is a sample; do not repeat a minute-long GEMM
        return once
    inner = max(1, int(min_s / once))
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - t) / inner)
    return min(samples)


def _cache_bytes() -> float:
    sizes = []
    base = Path("/sys/devices/system/cpu/cpu0/cache")
    for idx in base.glob("index*"):
        try:
            if (idx / "type").read_text().strip() in ("Unified", "Data"):
                text = (idx / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024**2}.get(text[-1], 1)
                sizes.append(float(text.rstrip("KM")) * mult)
        except OSError:
            continue
    return max(sizes) if sizes else 8 * 2**20


def _cpu_name() -> str:
    with contextlib.suppress(OSError):  # no /proc on this OS: fall back to platform
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


HALF_DIM_GRID = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def _fit_half_dims(rows: list[dict[str, float]], overhead: float) -> dict[str, Any]:
    """Fit peak and (m0, n0, k0) of t = overhead + 2MNK / (peak / (1 + m0/M + n0/N + k0/K)) by least
    mean absolute log error over the measured GEMMs (grid search; the measured time includes dispatch).
    The mean, not the median: a median is zero as soon as half the shapes fit, whatever the rest do."""
    best: dict[str, Any] = {"error": math.inf}
    for m0 in HALF_DIM_GRID:
        for n0 in HALF_DIM_GRID:
            for k0 in HALF_DIM_GRID:
                work = [2 * r["m"] * r["n"] * r["k"] * (1 + m0 / r["m"] + n0 / r["n"] + k0 / r["k"]) for r in rows]
                # each shape implies a peak; their median is the fitted one for these half-lengths
                peak = statistics.median(
                    w / max(r["seconds"] - overhead, 1e-12) for w, r in zip(work, rows, strict=True)
                )
                err = statistics.fmean(
                    abs(math.log((overhead + w / peak) / r["seconds"])) for w, r in zip(work, rows, strict=True)
                )
                if err < best["error"]:
                    best = {"error": err, "peak": peak, "half_dims": (m0, n0, k0)}
    return best


def op_probes() -> dict[str, tuple[Callable[[], Any], tuple[str, ...]]]:
    """Each common eager op on a tiny input, keyed by the aten op it runs (as traces name it), with the other
    ops the call dispatches (each "dispatch" or "view", what those cost is measured apart and taken off):
    its time is the op's fixed cost (dispatch, its Python wrapper, its kernel's setup), which differs by op
    far more than by size at this scale (an erf-based gelu of 16 floats costs about 7x their add on this VM)."""
    f = torch.nn.functional
    a, sq, img = torch.randn(16), torch.randn(4, 4), torch.randn(1, 4, 4, 4)
    w, b, idx, table = torch.ones(4), torch.zeros(4), torch.tensor([1, 2]), torch.randn(8, 4)
    return {
        "aten.add.Tensor": (lambda: torch.add(a, a), ()),
        "aten.sub.Tensor": (lambda: torch.sub(a, a), ()),
        "aten.mul.Tensor": (lambda: torch.mul(a, a), ()),
        "aten.div.Tensor": (lambda: torch.div(a, a), ()),
        "aten.relu.default": (lambda: torch.relu(a), ()),
        "aten.relu_.default": (lambda: torch.relu_(a), ()),
        "aten.hardtanh_.default": (lambda: f.relu6(a, inplace=True), ()),
        "aten.gelu.default": (lambda: f.gelu(a), ()),
        "aten.silu.default": (lambda: f.silu(a), ()),
        "aten.tanh.default": (lambda: torch.tanh(a), ()),
        "aten.rsqrt.default": (lambda: torch.rsqrt(a), ()),
        "aten.pow.Tensor_Scalar": (lambda: a.pow(2), ()),
        "aten._softmax.default": (lambda: torch.softmax(sq, -1), ()),
        "aten.native_layer_norm.default": (lambda: f.layer_norm(sq, (4,), w, b), ()),
        "aten.native_batch_norm.default": (lambda: f.batch_norm(img, b, w, w, b, training=False), ("dispatch",)),
        "aten.mean.dim": (lambda: img.mean((2, 3)), ()),
        "aten.max_pool2d_with_indices.default": (lambda: f.max_pool2d(img, 2), ()),
        "aten.cat.default": (lambda: torch.cat([a, a]), ()),
        "aten.clone.default": (lambda: sq.t().contiguous(), ("view",)),
        "aten.embedding.default": (lambda: f.embedding(idx, table), ()),
    }


ROUNDS = 3  # whole measurement rounds: the median of three rejects one disturbed round


def _raw(quick: bool, say: Callable[[str], None]) -> dict[str, Any]:
    """One round of raw timings (seconds, bytes per second), nothing derived yet."""
    shapes = GEMM_SHAPES[2:] if quick else GEMM_SHAPES
    gemm: dict[str, list[dict[str, float]]] = {}
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            rows = []
            # 16-bit GEMMs can be far slower than float32 on CPUs without native support: small shapes only
            for m, n, k in (
                shapes if dtype == torch.float32 else [sh for sh in shapes if sh[0] * sh[1] * sh[2] <= 2**27]
            ):
                a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
                s = _time(functools.partial(torch.mm, a, b), 0.02 if quick else 0.05)
                rows.append({"m": m, "n": n, "k": k, "seconds": s, "flops_per_s": 2 * m * n * k / s})
                say(f"gemm {str(dtype)[6:]} {m}x{n}x{k}: {2 * m * n * k / s / 1e9:.1f} GFLOP/s")
            gemm[str(dtype).replace("torch.", "")] = rows
        grid = []
        if not quick:
            for m in GEMM_GRID_M:
                for n in GEMM_GRID_NK:
                    for k in GEMM_GRID_NK:
                        a, b = torch.randn(m, k), torch.randn(k, n)
                        grid.append({"m": m, "n": n, "k": k, "seconds": _time(functools.partial(torch.mm, a, b), 0.02)})
            say(f"gemm grid: {len(grid)} FP32 shapes")
        big = torch.randn(1 << (24 if quick else 25))
        out = torch.empty_like(big)
        r: dict[str, Any] = {"gemm": gemm, "gemm_grid": grid}
        r["dram_bytes_per_s"] = 2 * big.numel() * 4 / _time(lambda: out.copy_(big))
        cache = _cache_bytes()
        small = torch.randn(int(cache / 4 / 4))  # a quarter of the cache for the source, same for the copy
        sout = torch.empty_like(small)
        r["cache_bytes_per_s"] = 2 * small.numel() * 4 / _time(lambda: sout.copy_(small))
        x = torch.randn(1 << 16)
        r["vector_ops_per_s"] = 2 * x.numel() / _time(lambda: torch.addcmul(x, x, x, value=0.5, out=sout[: x.numel()]))
        one = torch.ones(1)
        r["dispatch_overhead_s"] = _time(lambda: torch.add(one, one), 0.05)
        r["view_overhead_s"] = _time(lambda: x.view(-1), 0.05)
        ident = torch.nn.Identity()
        r["module_overhead_s"] = _time(lambda: ident(one), 0.05)
        holder = torch.nn.Linear(2, 2)
        r["param_access_s"] = _time(lambda: holder.weight, 0.05)  # nn.Module.__getattr__ finds it in _parameters
        r["op_overhead_s"] = {
            op: max(_time(fn, 0.02) - sum(r[f"{c}_overhead_s"] for c in extra), 1e-8)
            for op, (fn, extra) in op_probes().items()
        }
        w2, b2, x2 = torch.randn(2, 2), torch.randn(2), torch.randn(2, 2)
        # small but real, and on oneDNN's path: eager PyTorch sends a batch-1 3x3 convolution this small to its
        # native kernel instead (Convolution.cpp's use_mkldnn), whose per-call cost is 5-7x lower here
        cw, cx = torch.randn(8, 8, 3, 3), torch.randn(2, 8, 8, 8)
        fresh = 1 << 24  # 64 MB, above glibc's mmap threshold: every call faults in new pages
        warm_buf = torch.empty(fresh)
        r["fresh_cold_s"] = _time(lambda: torch.empty(fresh).fill_(1.0))
        r["fresh_warm_s"] = _time(lambda: warm_buf.fill_(1.0))
        conv_rows = []
        for cin, cout, k, hw, stride in (
            (64, 64, 3, 56, 1),
            (256, 64, 1, 56, 1),
            (3, 64, 7, 224, 2),
            (128, 128, 3, 28, 1),
        ):
            conv_x, conv_w = torch.randn(4, cin, hw, hw), torch.randn(cout, cin, k, k)
            sec = _time(functools.partial(torch.nn.functional.conv2d, conv_x, conv_w, stride=stride, padding=k // 2))
            ho = (hw + 2 * (k // 2) - k) // stride + 1
            conv_rows.append({"m": 4 * ho * ho, "n": cout, "k": cin * k * k, "seconds": sec})
        r["conv"] = conv_rows
        r["matmul_overhead_s"] = _time(lambda: torch.addmm(b2, x2, w2), 0.05)
        r["conv_overhead_s"] = _time(lambda: torch.nn.functional.conv2d(cx, cw, padding=1), 0.05)
    say(
        f"memory {r['dram_bytes_per_s'] / 1e9:.1f} GB/s, cache {r['cache_bytes_per_s'] / 1e9:.1f} GB/s "
        f"({cache / 2**20:.0f} MiB), vector {r['vector_ops_per_s'] / 1e9:.1f} GFLOP/s, "
        f"op overhead {r['dispatch_overhead_s'] * 1e6:.2f} us, view {r['view_overhead_s'] * 1e6:.2f} us"
    )
    r["cache_bytes"] = cache
    return r


SCALARS = ("dram_bytes_per_s", "cache_bytes_per_s", "vector_ops_per_s", "dispatch_overhead_s", "view_overhead_s",
           "module_overhead_s", "param_access_s", "fresh_cold_s", "fresh_warm_s", "matmul_overhead_s",
           "conv_overhead_s")  # fmt: skip


def _combine(rounds: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, float]]:
    """The per-figure median over rounds (every GEMM and convolution time too), and each scalar figure's
    spread: (largest - smallest) / median over the rounds."""
    med: dict[str, Any] = {k: statistics.median(r[k] for r in rounds) for k in SCALARS}
    spread = {k: (max(r[k] for r in rounds) - min(r[k] for r in rounds)) / med[k] if med[k] else 0.0 for k in SCALARS}
    med["cache_bytes"] = rounds[0]["cache_bytes"]
    med["op_overhead_s"] = {
        op: statistics.median(r["op_overhead_s"][op] for r in rounds) for op in rounds[0]["op_overhead_s"]
    }
    med["gemm"] = {}
    for dt, rows in rounds[0]["gemm"].items():
        out = []
        for i, row in enumerate(rows):
            sec = statistics.median(r["gemm"][dt][i]["seconds"] for r in rounds)
            out.append({**row, "seconds": sec, "flops_per_s": 2 * row["m"] * row["n"] * row["k"] / sec})
        med["gemm"][dt] = out
    for key in ("gemm_grid", "conv"):  # timed shapes: each shape's median seconds
        med[key] = [
            {**row, "seconds": statistics.median(r[key][i]["seconds"] for r in rounds)}
            for i, row in enumerate(rounds[0][key])
        ]
    peak = [max(x["flops_per_s"] for x in r["gemm"]["float32"]) for r in rounds]
    spread["gemm_peak_float32"] = (max(peak) - min(peak)) / statistics.median(peak)
    return med, spread


def graph_call_s(rounds: int = ROUNDS, say: Callable[[str], None] | None = None) -> float | None:
    """Seconds one call into a torch.compile'd graph costs beyond its kernels (Dynamo's guards, Inductor's
    Python wrapper): compiled stacks of 1 and of 4 Linear+ReLU layers, each layer two kernels (the library
    GEMM and a generated ReLU); the 1-layer call less one layer's share of the difference, the median over
    `rounds`. None, said, where torch.compile cannot build here (no C++ compiler for Inductor)."""
    x = torch.ones(1, 8)
    try:
        mods = {}
        with torch.inference_mode():
            for layers in (1, 4):
                net = torch.nn.Sequential(
                    *[torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()) for _ in range(layers)]
                ).eval()
                mods[layers] = torch.compile(net)
                mods[layers](x)  # compiles
    except (RuntimeError, OSError) as e:  # torch's own compile failures (a missing compiler) are RuntimeErrors
        if say is not None:
            say(f"graph call not measured: torch.compile failed here ({type(e).__name__}: {str(e).splitlines()[0]})")
        return None
    samples = []
    with torch.inference_mode():
        for _ in range(rounds):
            one, four = _time(lambda: mods[1](x), 0.05), _time(lambda: mods[4](x), 0.05)
            samples.append(max(one - (four - one) / 3, 1e-7))
    got = statistics.median(samples)
    if say is not None:
        say(f"compiled graph call {got * 1e6:.1f} us beyond its kernels")
    return got


def calibrate(
    quick: bool = False, progress: Callable[[str], None] | None = None, rounds: int = ROUNDS,
    graph_call: bool | None = None,
) -> dict[str, Any]:  # fmt: skip
    """Measure `rounds` whole rounds and keep each figure's median (a round a busy machine disturbed
    is outvoted, not averaged in); returns a dict of figures (also the input of `device_toml`), with
    `spread`: each figure's (max - min) / median over the rounds. `graph_call` (default: not `quick`):
    also measure a compiled graph's call (`graph_call_s`, a few seconds of torch.compile)."""
    say = progress or (lambda _msg: None)
    threads = torch.get_num_threads()
    runs = []
    for i in range(rounds):
        if rounds > 1:
            say(f"round {i + 1} of {rounds}")
        runs.append(_raw(quick, say))
    raw, spread = _combine(runs)
    gemm, conv_rows = raw["gemm"], raw["conv"]
    class_overhead = {"matmul": raw["matmul_overhead_s"], "conv": raw["conv_overhead_s"]}
    cold, warm = raw["fresh_cold_s"], raw["fresh_warm_s"]
    fresh = 1 << 24
    # a difference of two timings: when noise swallows it, the cost is not measurable here (left out)
    fresh_bw = fresh * 4 / (cold - warm) if cold > 1.1 * warm else None
    peaks = {dt: max(r["flops_per_s"] for r in rows) for dt, rows in gemm.items()}
    fit = _fit_half_dims(gemm["float32"], class_overhead["matmul"])
    peaks["float32"] = fit["peak"]
    m0, n0, k0 = fit["half_dims"]
    # the grid's rates net of the call's own fixed cost (the model charges it apart: class_overhead_s),
    # at most 10x the raw rate where that cost is most of a tiny GEMM's time
    table = [
        (r["m"], r["n"], r["k"], 2 * r["m"] * r["n"] * r["k"] / max(r["seconds"] - class_overhead["matmul"],
                                                                    0.1 * r["seconds"]))
        for r in raw["gemm_grid"]
    ]  # fmt: skip

    def gemm_s(m: int, n: int, k: int) -> float:
        """A GEMM's time as the device file will price a convolution's: by the measured grid where there is
        one (the simd model prices FP32 by it), else by the half-dims form."""
        if table:
            return 2 * m * n * k / gemm_table_rate(tuple(table), m, n, k)
        half: float = 2 * m * n * k / fit["peak"] * (1 + m0 / m + n0 / n + k0 / k)
        return half

    conv_eff = statistics.median(gemm_s(r["m"], r["n"], r["k"]) / r["seconds"] for r in conv_rows)
    conv_eff = min(max(conv_eff, 0.05), 2.0)  # the device file's valid range; noise can push past it
    fresh_text = f"{fresh_bw / 1e9:.1f} GB/s" if fresh_bw else "not measurable (noise)"
    say(f"conv efficiency vs the GEMM model {conv_eff:.2f}, fresh-page bandwidth {fresh_text}")
    if rounds > 1:
        wide = ", ".join(f"{k} {v:.0%}" for k, v in sorted(spread.items(), key=lambda kv: -kv[1])[:3])
        say(f"median of {rounds} rounds; widest spreads: {wide}")
    return {
        "cpu": _cpu_name(),
        "threads": threads,
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "gemm": gemm,
        "peak_ops_per_s": peaks,
        "gemm_half_dims": fit["half_dims"],
        "gemm_table": table,
        "gemm_fit_mean_log_error": fit["error"],
        "module_overhead_s": raw["module_overhead_s"],
        "param_access_s": raw["param_access_s"],
        "op_overhead_s": raw["op_overhead_s"],
        "class_overhead_s": class_overhead,
        "conv_efficiency": conv_eff,
        "fresh_alloc_bytes_per_s": fresh_bw,
        "dram_bytes_per_s": raw["dram_bytes_per_s"],
        "cache_bytes": raw["cache_bytes"],
        "cache_bytes_per_s": raw["cache_bytes_per_s"],
        "vector_ops_per_s": raw["vector_ops_per_s"],
        "dispatch_overhead_s": raw["dispatch_overhead_s"],
        "view_overhead_s": raw["view_overhead_s"],
        "memory_bytes": float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")),
        "graph_call_s": graph_call_s(rounds, say) if (not quick if graph_call is None else graph_call) else None,
        "rounds": rounds,
        "spread": spread,
    }


def device_toml(m: dict[str, Any], name: str = "this-cpu") -> str:
    """A catalog entry for the measured CPU (units in names, every group sourced as measured)."""
    src = f"measured: chipfit calibrate on {m['date']}, {m['cpu']}, {m['threads']} threads, torch {m['torch']}"
    units = m["threads"]
    peak16 = m["peak_ops_per_s"]["bfloat16"]
    m0, n0, k0 = m["gemm_half_dims"]
    clock = m["peak_ops_per_s"]["float32"] / (2 * units * 16 * 16)
    cls = ", ".join(f"{k} = {v:.6g}" for k, v in m["class_overhead_s"].items())
    ops = ", ".join(f'"{k}" = {v:.6g}' for k, v in m.get("op_overhead_s", {}).items())
    param = m.get("param_access_s")
    param_line = f"param_access_s = {param:.6g}" if param is not None else "# parameter access not measured"
    fresh = m.get("fresh_alloc_bytes_per_s")
    fresh_line = f"fresh_alloc_bytes_per_s = {fresh:.6g}" if fresh else "# fresh-page cost not measurable in this run"
    table = m.get("gemm_table")
    table_line = (
        "gemm_table = [" + ", ".join(f"[{a}, {b}, {c}, {r:.6g}]" for a, b, c, r in table) + "]\n"
        f'gemm_table_source = "{src}: {len(table)} FP32 torch.mm shapes, less the matmul call\'s fixed cost"'
        if table
        else "# FP32 GEMM grid not measured (chipfit calibrate without --quick measures it)"
    )
    graph = m.get("graph_call_s")
    graph_line = (
        f"graph_call_s = {graph:.6g}\ngraph_call_source = \"{src}: torch.compile'd 1- and 4-layer Linear+ReLU "
        'stacks, the call beyond its kernels"'
        if graph
        else "# compiled graph call not measured (chipfit calibrate without --quick measures it)"
    )
    return f"""# Generated by `chipfit calibrate`: this machine's CPU as a chipfit device.
[{name}]
display_name = "{m["cpu"]} ({m["threads"]} threads, measured)"
vendor = "this machine"
family = "cpu"
year = {m["date"][:4]}
process_nm = 7
description = "Calibrated by chipfit: GEMM, memory, vector and dispatch figures measured with torch eager"
source = "{src}; process node assumed 7 nm"

[{name}.compute]
peak_ops_per_s = {{ float32 = {m["peak_ops_per_s"]["float32"]:.6g}, bfloat16 = {peak16:.6g} }}
source = "{src}: GEMM model fitted to {len(m["gemm"]["float32"])} shapes \
(mean log error {m["gemm_fit_mean_log_error"]:.3f})"
matmul_efficiency = 1.0
efficiency_source = "{src}: the fitted peak and half-performance lengths carry the efficiency"
vector_ops_per_s = {m["vector_ops_per_s"]:.6g}
vector_source = "{src}: addcmul on cache-resident data"
units = {units}
dispatch_overhead_s = {m["dispatch_overhead_s"]:.6g}
overhead_source = "{src}: one-element torch.add"
view_overhead_s = {m["view_overhead_s"]:.6g}
module_overhead_s = {m["module_overhead_s"]:.6g}
class_overhead_s = {{ {cls} }}
op_overhead_s = {{ {ops} }}
{param_line}
gemm_half_dims = [{m0}, {n0}, {k0}]
{table_line}
class_efficiency = {{ conv = {m["conv_efficiency"]:.4g} }}
{fresh_line}
{graph_line}

[{name}.matrix_units.simd]
kind = "simd"
count = {units}
rows = 16
cols = 16
depth = 1
clock_hz = {clock:.6g}
source = "derived: nominal 16x16 FP32 lanes per thread; the clock is what the fitted FP32 peak implies"

[{name}.memory.dram]
kind = "dram"
capacity_bytes = {m["memory_bytes"]:.6g}
bandwidth_bytes_per_s = {m["dram_bytes_per_s"]:.6g}
source = "{src}: large copy, bytes read + written per second"

[{name}.memory.cache]
kind = "sram"
capacity_bytes = {m["cache_bytes"]:.6g}
bandwidth_bytes_per_s = {m["cache_bytes_per_s"]:.6g}
source = "{src}: copy within the last-level cache (size from sysfs)"

[{name}.power]
tdp_w = 50
source = "assumed: power is not measurable from inside this machine"

[{name}.support]
stack = "inductor"
execution = "eager"
unsupported_format = "vector"
source = "assumed: formats without a fast GEMM run at the vector rate"
"""


def problems(m: dict[str, Any], name: str = "this-cpu") -> list[str]:
    """What is wrong with a set of measurements, in words ([] when nothing): a figure the catalog
    loader would reject (outside its valid range), or figures that contradict each other the way
    a disturbed measurement does (a GEMM peak below the elementwise vector rate). A cache copy
    slower than the DRAM copy is not one: it is what a misreported cache size gives (this VM
    reports 480 MiB of L3), not noise."""
    import tempfile

    from chipfit.hardware.loader import CatalogError, load_devices

    out = []
    if m["peak_ops_per_s"]["float32"] < m["vector_ops_per_s"]:
        out.append(f"float32 GEMM peak {m['peak_ops_per_s']['float32'] / 1e9:.3g} GFLOP/s below the vector rate "
                   f"{m['vector_ops_per_s'] / 1e9:.3g} GFLOP/s")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        probe = Path(d) / "calibrate-check.toml"
        probe.write_text(device_toml(m, name))
        try:
            load_devices([probe], env=False)
        except CatalogError as e:
            out.append(str(e).replace(str(probe) + ": ", ""))
    return out


def calibrate_checked(
    quick: bool = False, name: str = "this-cpu", attempts: int = 3, progress: Callable[[str], None] | None = None
) -> tuple[dict[str, Any], str]:
    """`calibrate`, re-measured while `problems` finds something (a busy machine disturbs a run), up
    to `attempts` runs; (measurements, device TOML) that the loader accepts, or a CalibrationError
    saying what stayed wrong. Nothing is written here."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
        raise InputError(f"device name {name!r}: use letters, digits, '-' and '_' (like h100-sxm)")
    say = progress or (lambda _msg: None)
    found: list[str] = []
    for i in range(attempts):
        m = calibrate(quick=quick, progress=progress)
        found = problems(m, name)
        if not found:
            m["attempts"] = i + 1
            return m, device_toml(m, name)
        say(f"re-measuring ({i + 1} of {attempts} runs disturbed): {'; '.join(found)}")
    raise CalibrationError(
        f"the measurements stayed inconsistent over {attempts} runs ({'; '.join(found)}): the machine is too busy "
        "to calibrate now; nothing was written"
    )


class CalibrationError(ResourceError):
    """Calibration could not get consistent measurements on this machine."""


def write_device_file(text: str, path: str | Path) -> Path:
    """Atomic write: temp file in the same folder, then rename."""
    return write_text_atomic(path, text)
