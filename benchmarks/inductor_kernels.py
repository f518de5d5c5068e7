"""chipfit's compiled-CPU model against a real compiler: torch.compile (Inductor) on this machine.

Run: .venv/bin/python benchmarks/inductor_kernels.py [--quick] [--record]
Writes benchmarks/results/inductor_kernels.md; --record also rewrites tests/data/inductor_kernels.json,
the recording the CI test (tests/cost/test_inductor.py) compares chipfit's kernel grouping with.

For each built-in model small enough to compile here:
1. Inductor compiles it (inference, float32, eval, no_grad) and we read what it generated: the kernels
   its wrapper calls (cpp_fused_* kernels it wrote, extern_kernels.* library calls: GEMMs and
   convolutions) and the bytes its scheduler counts for the graph (metrics.num_bytes_accessed).
2. chipfit groups the same model's trace under the `inductor` stack (hardware/stacks.toml) and counts
   its kernels (matrix kernels against Inductor's library calls, the rest against its generated
   kernels) and their bytes.
3. Timing: the compiled model's measured time per step on this CPU against chipfit's prediction on a
   device file calibrated here (`chipfit calibrate`, median of its rounds), execution `inductor`.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.cost import estimate
from chipfit.cost.calibrate import calibrate, device_toml, write_device_file
from chipfit.cost.fusion import kernels
from chipfit.hardware.loader import load_devices
from chipfit.hardware.stacks import get_stack
from chipfit.models import get_model
from chipfit.paths import write_text_atomic
from chipfit.trace import trace

RECORDING = Path(__file__).resolve().parents[1] / "tests" / "data" / "inductor_kernels.json"
# (model, batch, sequence length): small enough that Inductor compiles each in well under a minute here
CASES = [("mlp", 8, None), ("digits-cnn", 8, None), ("bert-base", 1, 32), ("decoder-125m", 1, 32)]
CALL = re.compile(r"\b(cpp_fused_\w+|extern_kernels\.\w+|torch\.ops\.\w+\.\w+(?:\.\w+)?)\(")


def _best(fn: Any, inputs: list[Any], warmup: int = 3, repeats: int = 7) -> float:
    """The least seconds of one call over `repeats` timed calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        fn(*inputs)
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*inputs)
        samples.append(time.perf_counter() - t)
    return min(samples)


def inductor_kernels(name: str, batch: int, seq: int | None) -> dict[str, Any]:
    """Compile the model with Inductor; the kernels its wrapper calls, in order, and the bytes it counts."""
    import torch._inductor.metrics as metrics
    from torch._inductor.utils import run_and_get_code

    torch._logging.set_logs(inductor_metrics=True)  # turns on the scheduler's byte counting
    spec = get_model(name)
    model = spec.build().eval()
    inputs = list(spec.example_inputs(batch, seq))
    torch._dynamo.reset()
    metrics.reset()
    with torch.no_grad():
        compiled = torch.compile(model)
        t = time.perf_counter()
        _, codes = run_and_get_code(compiled, *inputs)
        compile_s = time.perf_counter() - t
        compiled_s, eager_s = _best(compiled, inputs), _best(model, inputs)
    torch._logging.set_logs()
    calls = []
    for code in codes:
        for line in code.splitlines():
            if "async_compile" in line or line.lstrip().startswith(("def ", "#", "from ", "import ")):
                continue
            m = CALL.search(line)
            if m:
                calls.append(m.group(1))
    return {
        "model": name, "batch": batch, "seq": seq, "kernels": calls,
        "generated": sum(c.startswith("cpp_fused") for c in calls),
        "library": sum(not c.startswith("cpp_fused") for c in calls),
        "bytes": int(metrics.num_bytes_accessed), "compile_s": compile_s,
        "compiled_s": compiled_s, "eager_s": eager_s,
    }  # fmt: skip


def chipfit_kernels(name: str, batch: int, seq: int | None) -> dict[str, Any]:
    spec = get_model(name)
    tr = trace(spec.build().eval(), list(spec.example_inputs(batch, seq)))
    ks = kernels(tr, get_stack("inductor"))
    recs = estimate(tr, "xeon-8480", "fp32", execution="inductor")  # any device: only the grouping is read
    library = sum(k.kind in ("matrix", "attention") for k in ks)
    return {
        "kernels": len(ks), "library": library, "generated": len(ks) - library, "trace_ops": len(tr.records),
        "bytes": int(sum(r.bytes for r in recs.rows)), "eager_bytes": int(sum(r.bytes for r in tr.records)),
        "names": [tr.records[k.members[0]].op.split(".")[1] + ("" if len(k.members) == 1 else f"+{len(k.members) - 1}")
                  for k in ks],
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the first three models, a quick calibration")
    ap.add_argument("--record", action="store_true", help="rewrite tests/data/inductor_kernels.json")
    args = ap.parse_args()
    torch.manual_seed(0)
    cases = CASES[:3] if args.quick else CASES
    t0 = time.perf_counter()
    cal = calibrate(quick=args.quick, graph_call=True)  # the compiled step pays the graph call it measures
    with tempfile.TemporaryDirectory() as d:
        f = write_device_file(device_toml(cal, "this-cpu"), Path(d) / "this-cpu.toml")
        dev = load_devices([f], env=False)["this-cpu"]
    cal_s = time.perf_counter() - t0
    rows = []
    for name, b, s in cases:
        ind = inductor_kernels(name, b, s)
        ours = chipfit_kernels(name, b, s)
        spec = get_model(name)
        tr = trace(spec.build().eval(), list(spec.example_inputs(b, s)))
        pred_c = estimate(tr, dev, "fp32", execution="inductor").latency_s
        pred_e = estimate(tr, dev, "fp32", execution="eager").latency_s
        rows.append({"model": name, "batch": b, "seq": s, "inductor": ind, "chipfit": ours,
                     "predicted_compiled_s": pred_c, "predicted_eager_s": pred_e})  # fmt: skip
    lines = [
        "# chipfit's compiled-CPU model against torch.compile (Inductor)",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        f"Calibration: `chipfit calibrate{' --quick' if args.quick else ''}` here (with the compiled graph call), "
        f"median of {cal['rounds']} rounds, {cal_s:.0f} s; graph call "
        + (f"{cal['graph_call_s'] * 1e6:.1f} us" if cal.get("graph_call_s") else "not measured")
        + "; widest spreads "
        + ", ".join(f"{k} {v:.0%}" for k, v in sorted(cal["spread"].items(), key=lambda kv: -kv[1])[:3])
        + ".",
        "",
        "## Kernels: what Inductor generated against chipfit's `inductor` stack",
        "",
        "Library calls: Inductor's extern_kernels (GEMMs, convolutions, attention) against chipfit's matrix and "
        "attention kernels. Generated: Inductor's cpp_fused kernels against chipfit's fused pointwise kernels. "
        "Bytes: the scheduler's count for the graph (metrics.num_bytes_accessed) against the bytes of chipfit's "
        "kernels (each reads its inputs once, writes what leaves it), float32.",
        "",
        "| model | batch | trace ops | Inductor library | chipfit matrix | Inductor generated | chipfit pointwise | "
        "Inductor MB | chipfit MB | eager-trace MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        i, c = r["inductor"], r["chipfit"]
        lines.append(
            f"| {r['model']} | {r['batch']} | {c['trace_ops']} | {i['library']} | {c['library']} | {i['generated']} | "
            f"{c['generated']} | {i['bytes'] / 1e6:.2f} | {c['bytes'] / 1e6:.2f} | {c['eager_bytes'] / 1e6:.2f} |"
        )
    lines += ["", "## Time per step on this CPU", "",
              "| model | batch | measured eager ms | predicted eager ms | error | measured compiled ms | "
              "predicted compiled ms | error | Inductor compile s |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    errs = []
    for r in rows:
        i = r["inductor"]
        ec, ee = r["predicted_compiled_s"] / i["compiled_s"] - 1, r["predicted_eager_s"] / i["eager_s"] - 1
        errs.append(ec)
        lines.append(
            f"| {r['model']} | {r['batch']} | {i['eager_s'] * 1e3:.3f} | {r['predicted_eager_s'] * 1e3:.3f} | "
            f"{ee:+.0%} | {i['compiled_s'] * 1e3:.3f} | {r['predicted_compiled_s'] * 1e3:.3f} | {ec:+.0%} | "
            f"{i['compile_s']:.0f} |"
        )
    med = statistics.median(abs(e) for e in errs)
    lines += ["", f"Median absolute error of the compiled prediction: {med:.0%}.", "",
              "Kernel lists (Inductor's wrapper calls, in order; chipfit's kernels named by their first op, +N fused):",
              ""]  # fmt: skip
    for r in rows:
        lines += [f"- {r['model']}: Inductor: {', '.join(r['inductor']['kernels'])}",
                  f"  chipfit: {', '.join(r['chipfit']['names'])}"]  # fmt: skip
    write_result("inductor_kernels.md", "\n".join(lines) + "\n")
    if args.record:
        fields = ("kernels", "generated", "library", "bytes")
        keep = [{"model": r["model"], "batch": r["batch"], "seq": r["seq"], **{k: r["inductor"][k] for k in fields}}
                for r in rows]  # fmt: skip
        RECORDING.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(RECORDING, json.dumps({"torch": torch.__version__, "cases": keep}, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
