"""Derive the NVIDIA GPUs' fixed GEMM-kernel costs from published op-level kernel times, and check them
on rows the fit never saw.

Run: .venv/bin/python benchmarks/fit_gemm_latency.py
Writes benchmarks/results/fit_gemm_latency.md.

A tiled GEMM kernel costs its work (tile and wave quantized, `cost.units.tiled_time`) plus two fixed
parts: `compute.kernel_latency_s`, paid once per kernel (launch to first tile, the last tile's write
back), and `compute.wave_latency_s`, a wave of tiles' pipeline fill before its first K step and its
accumulators' drain after the last: exposed once at each end, and on every further wave whose work is
shorter than it (fill + work + (waves - 1) * max(work, fill)). Neither is printed on a datasheet.
Both are read off the one op-level sweep that covers the mid-size regime: XLA's GPU matmul table
(benchmarks/data/published/OPLEVEL.md), median CUPTI kernel times, launch excluded.

Fit: the sm_90 (H100) rows only, minimising the median absolute relative error (the fidelity target's
own measure) over a grid: the kernel and wave latencies on the 16-bit rows, then TF32's own wave
latency on the TF32 rows (its kernels pay far more per wave: XLA's TF32 GEMMs take 2-3x the BF16 time
at mid sizes, where the peak ratio is 2x). Held out: the sm_100 (B200) rows, FP8 included (a format
the fit never saw), and every row from the other sources. No MLPerf or whole-model number is used.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.hardware import Device, get_device
from chipfit.hardware.device import FrozenMap
from fidelity_published import DATA, WALL_CLOCK_HINTS, gemm_kernel_s

FIT_DEVICE = "h100-sxm"  # sm_90 in XLA's table
XLA = "XLA dot"
KERNEL_US = (4.0, 4.25, 4.5, 4.75, 5.0)
WAVE_US = (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
TF32_WAVE_US = (1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)


def kernel_rows() -> list[dict[str, str]]:
    """The kernel-time rows (launch excluded) on catalog devices."""
    rows = []
    for r in csv.DictReader((DATA / "gemm_timings.csv").open()):
        if not r["time_us"] or any(h in r["library"] + r["note"] for h in WALL_CLOCK_HINTS):
            continue
        rows.append(r)
    return rows


def with_latency(dev: Device, kernel_s: float, wave_s: float, tf32_wave_s: float | None) -> Device:
    per_format = FrozenMap({} if tf32_wave_s is None else {"tfloat32": tf32_wave_s})
    c = dataclasses.replace(
        dev.compute, kernel_latency_s=kernel_s, wave_latency_s=wave_s, wave_latency_format_s=per_format
    )
    return dataclasses.replace(dev, compute=c)


def errors(rows: list[dict[str, str]], dev: Device | None = None) -> list[float]:
    """predicted / measured - 1 per row, on `dev` (a variant of the row's device) or the catalog's device."""
    out = []
    for r in rows:
        m, n, k, b = (int(r[x]) for x in ("m", "n", "k", "batch"))
        pred = gemm_kernel_s(dev or r["device"], r["dtype"], m, n, k, b)
        out.append(pred / (float(r["time_us"]) * 1e-6) - 1)
    return out


def mae(errs: list[float]) -> float:
    return statistics.median(abs(e) for e in errs)


def fit(rows: list[dict[str, str]]) -> tuple[float, float, float, list[tuple[float, float, float]]]:
    base = get_device(FIT_DEVICE)
    fit_rows = [r for r in rows if r["device"] == FIT_DEVICE and r["library"].startswith(XLA)]
    wide = [r for r in fit_rows if r["dtype"] in ("bf16", "fp16")]
    tf32 = [r for r in fit_rows if r["dtype"] == "tf32"]
    grid = []
    for kl, wl in itertools.product(KERNEL_US, WAVE_US):
        grid.append((mae(errors(wide, with_latency(base, kl * 1e-6, wl * 1e-6, None))), kl, wl))
    _, kl, wl = min(grid)
    tgrid = [(mae(errors(tf32, with_latency(base, kl * 1e-6, wl * 1e-6, t * 1e-6))), t) for t in TF32_WAVE_US]
    _, tw = min(tgrid)
    return kl, wl, tw, [(e, a, b) for e, a, b in sorted(grid)[:5]]


def report(
    rows: list[dict[str, str]], kl: float, wl: float, tw: float, top: list[tuple[float, float, float]], s: float
) -> str:
    lines = [
        "# GEMM kernel and wave latency, fitted on sm_90 and checked on held-out rows",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        __doc__.split("\n\n", 2)[2].strip(),
        "",
        f"## Fit ({FIT_DEVICE}, XLA table rows; {s:.0f} s)",
        "",
        f"- kernel latency: **{kl:g} us** per kernel",
        f"- wave latency: **{wl:g} us** per wave (every format but TF32)",
        f"- TF32 wave latency: **{tw:g} us** per wave",
        "",
        f"The catalog ({FIT_DEVICE}): {_catalog_line(kl, wl, tw)}",
        "",
        "Best five (kernel us, wave us) on the 16-bit fit rows by median absolute error:",
        "",
        "| kernel us | wave us | median absolute error |",
        "|---:|---:|---:|",
    ]
    lines += [f"| {a:g} | {b:g} | {e:.1%} |" for e, a, b in top]
    lines += [
        "",
        "## Every kernel-time row, by device and data type: catalog before the wave term, and after",
        "",
        "Before: the catalog's devices with no wave term. After: the catalog as it is (the fitted figures on",
        f"the NVIDIA GPUs). The fit saw only the {FIT_DEVICE} XLA rows; every other row is held out.",
        "",
        "| device | dtype | rows | in the fit | median abs error before | after | median signed after |",
        "|---|---|---:|---|---:|---:|---:|",
    ]
    groups: dict[tuple[str, str], list[dict[str, str]]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["dtype"]), []).append(r)
    held_before, held_after, all_before, all_after = [], [], [], []
    for (dev_name, dtype), rs in sorted(groups.items(), key=lambda x: -len(x[1])):
        dev = get_device(dev_name)
        before = errors(rs, with_latency(dev, dev.compute.kernel_latency_s, 0.0, None))
        after = errors(rs)
        in_fit = [r["device"] == FIT_DEVICE and r["library"].startswith(XLA) for r in rs]
        for e0, e1, f in zip(before, after, in_fit, strict=True):
            all_before.append(e0)
            all_after.append(e1)
            if not f:
                held_before.append(e0)
                held_after.append(e1)
        fit_txt = "yes" if all(in_fit) else ("part" if any(in_fit) else "no")
        lines.append(
            f"| {dev_name} | {dtype} | {len(rs)} | {fit_txt} | {mae(before):.0%} | {mae(after):.0%} "
            f"| {statistics.median(after):+.0%} |"
        )
    lines += [
        "",
        f"Held-out rows ({len(held_after)}): median absolute error {mae(held_before):.1%} before, "
        f"**{mae(held_after):.1%} after**.",
        f"All rows ({len(all_after)}): {mae(all_before):.1%} before, **{mae(all_after):.1%} after**.",
        "",
    ]
    return "\n".join(lines)


def _catalog_line(kl: float, wl: float, tw: float) -> str:
    c = get_device(FIT_DEVICE).compute
    have = (c.kernel_latency_s * 1e6, c.wave_latency_s * 1e6, c.wave_latency("tfloat32") * 1e6)
    same = all(abs(a - b) < 1e-9 for a, b in zip(have, (kl, wl, tw), strict=True))
    txt = f"kernel {have[0]:g} us, wave {have[1]:g} us, TF32 wave {have[2]:g} us"
    return txt + (" (the fitted figures)" if same else " (**differs from this fit: update the catalog**)")


def main() -> None:
    rows = [r for r in kernel_rows() if _in_catalog(r["device"])]
    t0 = time.perf_counter()
    kl, wl, tw, top = fit(rows)
    s = time.perf_counter() - t0
    path = write_result("fit_gemm_latency.md", report(rows, kl, wl, tw, top, s))
    print(path.read_text())


def _in_catalog(name: str) -> bool:
    from chipfit.hardware import load_catalog

    return name in load_catalog()


if __name__ == "__main__":
    main()
