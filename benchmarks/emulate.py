"""Emulation: speed against plain FP32 eager, and accuracy per device x precision on real data.

Run: .venv/bin/python benchmarks/emulate.py [--quick]
Writes benchmarks/results/emulate.md.

Speed: median wall time of one forward pass at batch 32 (digits-cnn on 8x8 digits; minilm on
the built-in sentences, padded to the longest of the first 32), FP32 eager vs the same pass
inside one `chipfit.emulate` context held across passes, as `evaluate` runs it. Target: <= 3x.
Accuracy: digits-cnn top-1 on the 450-image held-out split, minilm mean cosine similarity to
FP32 over 240 sentences, for every catalog device x every precision it runs (natively or by its
compiler's cast; one row per distinct format).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.cli.emulate_cmd import grid
from chipfit.emulate import emulate, evaluate, policy_for
from chipfit.models import get_model

TARGET = 3.0
MIN_TIMED_S = 0.5  # the FP32 passes of each row add up to at least this much time
WARMUP_PASSES = 3
SPEED_CASES = [
    ("a100-sxm", "tf32", None),
    ("a100-sxm", "bf16", None),
    ("tpu-v5e", "bf16", None),
    ("h100-sxm", "fp8", None),
    ("t4", "int8", None),
    ("b200", "fp4", None),
]
# the optional narrow-accumulator model (emulate(..., accumulate=...)): no catalog policy uses it by
# default; timed against the same 3x line, outside the target (see docs/emulate.md)
CHUNKED_CASES = [("h100-sxm", "fp8", "fp8-promote-128")]


def _quartiles(xs: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(xs, n=4)
    return q[0], q[2]


def speed(name: str, cases: list[tuple[str, str, str | None]], min_pairs: int, min_time_s: float) -> list[str]:
    """FP32 and emulated passes timed in alternation inside one emulate context (the FP32 pass
    under `run.paused()`), so drift in the shared machine's speed hits both sides alike.
    Ratio: the median of the per-pair ratios (emulated pass / the FP32 pass next to it); spread:
    their quartiles."""
    spec = get_model(name)
    assert spec.pretrained is not None and spec.eval_data is not None
    model = spec.pretrained().eval()
    inputs = spec.eval_data(32)[0][0]
    rows = []

    def timed() -> float:
        t = time.perf_counter()
        model(*inputs)
        return time.perf_counter() - t

    with torch.no_grad():
        one = min(timed() for _ in range(3))
        pairs = max(min_pairs, math.ceil(min_time_s / one))
        for dev, prec, acc in cases:
            base_t: list[float] = []
            emu_t: list[float] = []
            with emulate(device=dev, precision=prec, accumulate=acc) as run:
                for _ in range(WARMUP_PASSES):
                    timed()
                    with run.paused():
                        timed()
                for _ in range(pairs):
                    with run.paused():
                        base_t.append(timed())
                    emu_t.append(timed())
            base, emu = statistics.median(base_t), statistics.median(emu_t)
            pair_ratios = [e / b for b, e in zip(base_t, emu_t, strict=True)]
            ratio = statistics.median(pair_ratios)
            lo, hi = _quartiles(pair_ratios)
            ok = "yes" if ratio <= TARGET else f"no ({ratio / TARGET:.2f}x over)"
            rows.append(
                f"| {name} | {dev} {prec}{' + ' + acc if acc else ''} | {pairs} | {base * 1e3:.2f} | {emu * 1e3:.2f} "
                f"| {ratio:.2f} | {lo:.2f}-{hi:.2f} | {ok} |"
            )
    return rows


def accuracy(name: str, limit: int | None) -> tuple[str, list[str]]:
    spec = get_model(name)
    assert spec.pretrained is not None and spec.eval_data is not None
    model = spec.pretrained()
    data = spec.eval_data(32)
    if limit:
        data = data[:limit]
    policies = grid(["all"], ["all"], [])
    ev = evaluate(model, data, spec.metric, policies=policies)
    rows = []
    for r, p in zip(ev.rows, policies, strict=True):
        d = p.describe()
        ins = f"FP32 ({p.matrix_fallback})" if p.matrix_fallback else str(d["a"])
        if spec.metric == "top1":
            value, delta = f"{100 * r.value:.2f} %", f"{100 * r.delta:+.2f} pt"
        else:
            value, delta = f"{r.value:.6f}", f"{r.delta:+.2e}"
        rows.append(f"| {r.device} | {r.precision} | {ins} | {p.output} | {value} | {delta} | {r.fallback_ops} |")
    fp32 = f"{100 * ev.fp32:.2f} %" if spec.metric == "top1" else f"{ev.fp32:.6f}"
    return f"FP32: {fp32} over {ev.items} items", rows


def accumulation_rows(limit: int | None) -> list[str]:
    spec = get_model("minilm")
    assert spec.pretrained is not None and spec.eval_data is not None
    model = spec.pretrained()
    data = spec.eval_data(32)[: limit or None]
    pols = [policy_for("h100-sxm", "fp8", accumulate=a) for a in ("fp32", "fp8-promote-128", "fp8-fast-accum")]
    pols.append(policy_for("v100-sxm", "fp16", accumulate="fp16"))
    ev = evaluate(model, data, "cosine", policies=pols)
    return [
        f"| {p.name} | {p.accumulate.describe()} | {r.value:.6f} | {r.delta:+.2e} |"
        for r, p in zip(ev.rows, pols, strict=True)
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repeats and batches (for the tests)")
    ap.add_argument("--results-name", default="emulate.md")
    args = ap.parse_args()
    min_pairs = 3 if args.quick else 51
    min_time_s = 0.02 if args.quick else MIN_TIMED_S
    limit = 1 if args.quick else None
    lines = [
        "# Emulation: speed and accuracy",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        "## Speed: emulated forward vs FP32 eager, batch 32",
        "",
        "FP32 and emulated passes alternate, each timed alone, inside one emulate context held across "
        "passes (as `evaluate` runs), the FP32 pass under `run.paused()`; the first "
        f"{WARMUP_PASSES} of each are not timed. Pairs: at least {min_pairs}, and enough that the FP32 passes "
        f"add up to {min_time_s:g} s. Ratio = median over pairs of emulated pass / FP32 pass; spread = "
        f"quartiles of those ratios; the ms columns are each side's median. Target: <= {TARGET:g}x.",
        "",
        "| model | policy | pairs | FP32 ms | emulated ms | ratio | spread | within target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("digits-cnn", "minilm"):
        lines += speed(name, SPEED_CASES, min_pairs, min_time_s)
    lines += [
        "",
        "### Optional: narrow-accumulator model (outside the target)",
        "",
        '`emulate(..., accumulate="fp8-promote-128")` adds the chunked-accumulation model to the fp8 policy; '
        "no catalog policy uses it by default. Its exact chunk sums need float64: "
        "`benchmarks/gemm_floor.py` (results/gemm_floor.md) times the chunked GEMM alone next to that floor. "
        "Same protocol, same 3x line for comparison:",
        "",
        "| model | policy | pairs | FP32 ms | emulated ms | ratio | spread | within 3x |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in ("digits-cnn", "minilm"):
        lines += speed(name, CHUNKED_CASES, min_pairs, min_time_s)
    head = "| device | precision | matrix inputs | output | {m} | vs FP32 | fallback op calls |"
    for name, title in (("digits-cnn", "digits-cnn: top-1 on the held-out split"),
                        ("minilm", "minilm: mean cosine similarity to FP32, 240 sentences")):  # fmt: skip
        summary, rows = accuracy(name, limit)
        metric = "top-1" if name == "digits-cnn" else "cosine"
        lines += ["", f"## {title}", "", summary, "", head.format(m=metric), "|---|---|---|---|---|---|---|", *rows]
    lines += [
        "",
        "## minilm: accumulation precision",
        "",
        "| policy | accumulation | cosine | vs FP32 |",
        "|---|---|---|---|",
        *accumulation_rows(limit),
        "",
    ]
    path = write_result(args.results_name, "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
