"""chipfit's serving model against published measured serving throughput (signed errors per row).

Run: .venv/bin/python benchmarks/serving_published.py [--quick]
Writes benchmarks/results/serving_published.md.

Rows: benchmarks/data/published/llm_serving.csv (sources per row; README.md there says how they were
chosen). A row is predicted when its input and output lengths are published: the TensorRT-LLM performance
overview's max-throughput runs (trtllm-bench, synthetic fixed lengths, every request queued at once) are
simulated offline with the table's request counts (perf-overview.md, "$num_requests"), on the row's chips,
tensor/pipeline split and precision. MLPerf Llama-2-70B Offline rows with a stated precision are
simulated offline with lengths drawn (seeded) from normal distributions fitted to the dataset: input
mean 222 and standard deviation 172 tokens (the per-sample table `mlperf_llama2_70b_lengths.csv`, a copy
of openshift-psap/performance-dashboard's summary of the 24,576 samples), output mean the README's 294.45
tokens per sample with the table's output standard deviation (172); the normal shape (clipped to >= 1)
and 3,000 requests are assumptions. Fixed lengths at the means instead predict 1.66x of the H100 row:
how long the longest outputs keep a draining batch decides these throughputs. The other MLPerf rows (server scenario, no
precision, other models) are listed as not predicted.

Assumed, for every row alike (no per-row setting): the scheduler's limits (2,048 sequences, an 8,192-token
budget: trtllm-bench picks its own per run and does not print them), the KV cache in FP8 for FP8 and FP4
checkpoints (ModelOpt's quantized checkpoints; the table does not state it), and chipfit's default 90 % of
memory for the engine (the overview used 0.90 or 0.95).

Target (issue 21): every row within 0.67x-1.5x of published, median absolute error within 20 %.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.serve import get_llm
from chipfit.serve.api import serve
from chipfit.serve.sim import Lengths, Scheduler, Workload

DATA = Path(__file__).resolve().parent / "data" / "published" / "llm_serving.csv"
# trtllm-bench's request counts per (input, output) (perf-overview.md, "Preparing a Dataset")
REQUESTS = {(128, 2048): 3000, (1000, 1000): 3000, (2048, 128): 3000, (5000, 500): 1500, (128, 128): 30000,
            (1000, 2000): 1500, (2048, 2048): 1500, (500, 2000): 3000}  # fmt: skip
SCHED = Scheduler(token_budget=8192, max_seqs=2048)  # assumed (see the docstring)


LENGTHS = DATA.with_name("mlperf_llama2_70b_lengths.csv")
MLPERF_REQUESTS = 3000  # assumed (the dataset holds 24,576; the throughput is a steady state)


def mlperf_lengths() -> tuple[float, float, float]:
    """(input mean, input std, output std) of the per-sample table."""
    rows = list(csv.DictReader(LENGTHS.open()))
    i = [int(r["input_length"]) for r in rows]
    o = [int(r["output_length"]) for r in rows]
    return statistics.mean(i), statistics.pstdev(i), statistics.pstdev(o)


def mlperf_row(row: dict[str, str]) -> bool:
    return (row["model"] == "llama-2-70b" and row["scenario"] == "offline" and bool(row["precision"])
            and not row["input_len"])  # fmt: skip


def predict(row: dict[str, str], quick: bool) -> float:
    if mlperf_row(row):
        mi, si, so = mlperf_lengths()
        i_len, o_len = f"normal:{mi:.0f}:{si:.0f}", f"normal:{float(row['output_len']):g}:{so:.0f}"
        n = MLPERF_REQUESTS
    else:
        i_len, o_len = row["input_len"], row["output_len"]
        n = REQUESTS.get((int(i_len), int(o_len)), 1500)
    if quick:
        n = max(64, n // 10)
    prec = row["precision"] or "bf16"
    kv = "fp8" if prec in ("fp8", "fp4") else "bf16"
    tp = int(row["tp"]) if row["tp"] else None
    pp = int(row["pp"]) if row["pp"] else None
    w = Workload(Lengths.parse(i_len), Lengths.parse(o_len), n)
    r = serve(get_llm(row["model"]), row["device"], w, chips=int(row["chips"]), tp=tp, pp=pp, precision=prec,
              kv_precision=kv, scheduler=SCHED)  # fmt: skip
    return r.output_tokens_per_s


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a tenth of the requests (a smoke run)")
    args = ap.parse_args()
    rows = list(csv.DictReader(DATA.open()))
    done, skipped = [], []
    t0 = time.perf_counter()
    for row in rows:
        if (not row["input_len"] or not row["output_len"]) and not mlperf_row(row):
            skipped.append(row)
            continue
        pred = predict(row, args.quick)
        pub = float(row["output_tokens_per_s"])
        done.append((row, pred, pub, pred / pub))
    wall = time.perf_counter() - t0
    errs = [abs(r - 1) for *_, r in done]
    in_band = sum(1 for *_, r in done if 0.67 <= r <= 1.5)
    med = statistics.median(errs) if errs else float("nan")
    lines = [
        "# Serving: chipfit against published measurements", "",
        f"Command: `{command_line()}`", f"Machine: {machine()}", "",
        f"{len(done)} rows predicted in {wall:.0f} s; {len(skipped)} not predicted (server scenario, or the "
        "precision or the lengths not published in what we read).", "",
        f"- within 0.67x-1.5x: **{in_band} of {len(done)}** (target: all)",
        f"- median absolute error: **{med:.1%}** (target: at most 20 %)",
        f"- signed: median ratio {statistics.median(r for *_, r in done):.2f}" if done else "", "",
        "| model | device | chips | TP | precision | input | output | published tok/s | chipfit tok/s | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for row, pred, pub, r in done:
        i = row["input_len"] or "normal {:.0f} ± {:.0f}".format(*mlperf_lengths()[:2])
        lines.append(f"| {row['model']} | {row['device']} | {row['chips']} | {row['tp'] or '-'} | {row['precision']} "
                     f"| {i} | {row['output_len']} | {pub:,.0f} | {pred:,.0f} | {r:.2f} |")  # fmt: skip
    lines += ["", "Not predicted:", ""]
    lines += [f"- {r['model']} on {r['chips']} x {r['device']} ({r['scenario']}, {r['source']})" for r in skipped]
    lines += ["", "Assumptions: see the script's docstring (scheduler limits, FP8 KV cache for FP8/FP4 checkpoints)."]
    out = write_result("serving_published.md", "\n".join(lines) + "\n")
    print(f"{in_band}/{len(done)} in band, median |error| {med:.1%}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
