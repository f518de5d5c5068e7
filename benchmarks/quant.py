"""Quantization: chipfit's recipes and mixed precision vs torch.ao, on real data, in one run.

Run: .venv/bin/python benchmarks/quant.py [--quick]
Writes benchmarks/results/quant.md.

- all-MiniLM-L6-v2 (the built-in `minilm`): calibration on sentences 1-64, evaluation on
  sentences 65-240 (176) for every method alike; mean and minimum cosine similarity of each
  sentence's embedding to FP32. torch.ao: `quantize_dynamic(model, {nn.Linear}, qint8)` with
  its default qconfig (per-tensor weights) and with `per_channel_dynamic_qconfig`.
  Targets: chipfit's default recipe beats torch.ao's default; the sensitivity-guided mixed
  precision (levels int4 -> int8 -> bf16 on a100-sxm, budget 0.99) reaches >= 0.99 mean cosine.
- digits-cnn: top-1 on the 450 held-out images per recipe, calibrated on 512 training images.
  Target: static INT8 PTQ drops <= 0.5 point.
- QDQ ONNX export: onnxruntime's output vs chipfit's for the static INT8 recipes.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.models import minilm as M
from chipfit.models.digits import digits_cnn_pretrained, load_digits_data
from chipfit.quant import quantize_
from chipfit.quant.export import export_onnx, run_onnx
from chipfit.quant.search import search

os.environ.setdefault("HF_HUB_OFFLINE", "1")
MINILM_RECIPES = ["int8", "int8-entropy", "int8-minmax", "int8-percentile", "int8-mse", "int8-smoothquant",
                  "int8-weight-only", "int4-weight-only", "w4a8", "int4", "fp8", "mxfp8", "mxfp4", "nvfp4"]  # fmt: skip
DIGITS_RECIPES = ["int8", "int8-entropy", "int8-minmax", "int8-percentile", "int8-mse", "int8-smoothquant",
                  "int8-weight-only", "int4-weight-only", "w4a8", "int4", "fp8", "mxfp8", "mxfp4", "nvfp4"]  # fmt: skip


def minilm_section(quick: bool) -> list[str]:
    base = M.minilm_model().eval()
    texts = list(M.sentences())
    calib = [M.tokenize(texts[i : i + 32]) for i in range(0, 64, 32)]
    evalb = [M.tokenize(texts[i : i + 32]) for i in range(64, 96 if quick else 240, 32)]
    with torch.no_grad():
        refs = [base(*b) for b in evalb]

    def cos(m: nn.Module) -> tuple[float, float]:
        with torch.no_grad():
            c = torch.cat([nn.functional.cosine_similarity(m(*b), r, dim=1) for b, r in zip(evalb, refs, strict=True)])
        return float(c.mean()), float(c.min())

    rows = []

    def row(name: str, how: str, m: nn.Module, seconds: float) -> None:
        mean, low = cos(m)
        rows.append(f"| {name} | {how} | {mean:.6f} | {low:.6f} | {seconds:.1f} |")

    import torch.ao.quantization as tq

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = time.perf_counter()
        ao = tq.quantize_dynamic(copy.deepcopy(base), {nn.Linear}, dtype=torch.qint8)
        row("torch.ao quantize_dynamic", "defaults (per-tensor weights)", ao, time.perf_counter() - t)
        ao_default = cos(ao)[0]
        t = time.perf_counter()
        ao = tq.quantize_dynamic(copy.deepcopy(base), {nn.Linear: tq.per_channel_dynamic_qconfig}, dtype=torch.qint8)
        row("torch.ao quantize_dynamic", "per_channel_dynamic_qconfig", ao, time.perf_counter() - t)
    default_mean = 0.0
    for r in MINILM_RECIPES[:3] if quick else MINILM_RECIPES:
        t = time.perf_counter()
        m = quantize_(copy.deepcopy(base), r, calibrate=calib)
        row(f"chipfit {r}" + (" (default)" if r == "int8" else ""), _describe(m), m, time.perf_counter() - t)
        if r == "int8":
            default_mean = cos(m)[0]

    def mean_cos(m: nn.Module) -> float:
        return cos(m)[0]

    t = time.perf_counter()
    res = search(base, mean_cos, device="a100-sxm", budget=0.99, sample=calib[0], calibrate=calib)
    assert res.model is not None
    levels = {lv: list(res.choice.values()).count(lv) for lv in ("int4", "int8", "bf16")}
    how = ", ".join(f"{n} layers {lv}" for lv, n in levels.items() if n)
    row("chipfit mixed precision", f"search on a100-sxm, budget 0.99: {how}", res.model, time.perf_counter() - t)
    mixed_mean = res.metric
    lines = [
        "## all-MiniLM-L6-v2: cosine similarity to FP32",
        "",
        f"Calibration: sentences 1-64; evaluation: sentences 65-{96 if quick else 240}. Seconds: quantize "
        "(calibration included; for the search, the whole search).",
        "",
        "| method | configuration | mean cosine | min cosine | seconds |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"- chipfit default (int8) mean {default_mean:.6f} vs torch.ao default {ao_default:.6f}: "
        + ("beats it." if default_mean > ao_default else "does NOT beat it."),
        f"- mixed precision mean {mixed_mean:.6f}: "
        + ("meets" if mixed_mean >= 0.99 else "misses")
        + " the 0.99 target.",
        "- mixed precision search: estimated latency on a100-sxm (cost model, batch 32 of the calibration "
        f"sentences) {res.latency_s * 1e3:.4f} ms; all-bf16 {res.reference['all-bf16']['latency_s'] * 1e3:.4f} ms "
        f"({res.speedup_vs('bf16'):.2f}x), all-int8 {res.reference['all-int8']['latency_s'] * 1e3:.4f} ms "
        f"({res.speedup_vs('int8'):.2f}x); energy saving vs bf16 {res.energy_saving_vs('bf16'):+.1%}, "
        f"vs int8 {res.energy_saving_vs('int8'):+.1%}. all-int4 alone reaches "
        f"{res.reference['all-int4']['metric']:.6f}.",
        "",
    ]
    return lines


def _describe(m: nn.Module) -> str:
    from chipfit.quant import layers

    ql = next(iter(layers(m).values()))
    w = ql.wq.spec.describe() if ql.wq else "float"
    a = ql.aq.spec.describe() if ql.aq else "float"
    return f"W {w}; A {a}" + ("; SmoothQuant 0.5" if ql.smooth is not None else "")


def digits_section(quick: bool) -> list[str]:
    d = load_digits_data()
    base = digits_cnn_pretrained().eval()
    calib = [d.x_train[i : i + 64] for i in range(0, 512, 64)]

    def top1(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(d.x_test).argmax(-1) == d.y_test).float().mean())

    fp32 = top1(base)
    rows = []
    for r in DIGITS_RECIPES[:3] if quick else DIGITS_RECIPES:
        m = quantize_(copy.deepcopy(base), r, calibrate=calib)
        v = top1(m)
        static = r.startswith("int8-") and r != "int8-weight-only"
        verdict = ("yes" if fp32 - v <= 0.005 else "NO") if static else "-"
        rows.append(f"| {r} | {_describe(m)} | {100 * v:.2f} % | {100 * (v - fp32):+.2f} pt | {verdict} |")
    return [
        "## digits-cnn: top-1 on the 450 held-out images",
        "",
        f"FP32: {100 * fp32:.2f} %. Calibration: 512 training images. Target for static INT8 PTQ: drop <= 0.5 point.",
        "",
        "| recipe | configuration | top-1 | vs FP32 | static INT8 within target |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]


def export_section() -> list[str]:
    d = load_digits_data()
    base = digits_cnn_pretrained().eval()
    calib = [d.x_train[i : i + 64] for i in range(0, 512, 64)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in ("int8-entropy", "int8-percentile", "int8-smoothquant", "int8-weight-only", "fp8"):
            m = quantize_(copy.deepcopy(base), r, calibrate=calib)
            path = export_onnx(m, (d.x_test[:8],), Path(tmp) / f"{r}.onnx")
            with torch.no_grad():
                ours = m(d.x_test)
            got = run_onnx(path, (d.x_test,))  # chipfit's default: optimizations off for FP8 graphs only
            on = float((run_onnx(path, (d.x_test,), optimize=True) - ours).abs().max())
            off = float((run_onnx(path, (d.x_test,), optimize=False) - ours).abs().max())
            diff = float((got - ours).abs().max())
            agree = float((got.argmax(-1) == ours.argmax(-1)).float().mean())
            top = float((got.argmax(-1) == d.y_test).float().mean())
            rows.append(f"| digits-cnn | {r} | {diff:.3g} | {on:.3g} | {off:.3g} | {float(ours.abs().max()):.3g} "
                        f"| {100 * agree:.2f} % | {100 * top:.2f} % |")  # fmt: skip
    return [
        "## QDQ ONNX export: onnxruntime vs chipfit",
        "",
        "Same 450 images. Stated tolerance (tests/quant): max |diff| <= 1 % of max |output| and top-1 agreement "
        ">= 99 %. torch running the exported QDQ layers (its fake-quantize ops) equals chipfit bit for bit "
        "(tests/quant/test_search_export.py), so the differences arise inside onnxruntime; with no activation "
        "rounding (weight-only) they stay at FP32 summation-order size. Not yet traced further. FP8 graphs "
        "(opset 19) run with onnxruntime's graph optimizations off: with them on, onnxruntime 1.32 changes "
        "FP8 QDQ results (see docs/quant.md).",
        "",
        "| model | recipe | max abs diff (run_onnx default) | optimizations on | optimizations off | max abs output "
        "| argmax agreement | onnxruntime top-1 |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer recipes and sentences (for the tests)")
    ap.add_argument("--results-name", default="quant.md")
    args = ap.parse_args()
    torch.manual_seed(0)
    lines = ["# Quantization: chipfit vs torch.ao, on real data", "", f"Command: `{command_line()}`", "",
             f"Machine: {machine()}", ""]  # fmt: skip
    lines += minilm_section(args.quick)
    lines += digits_section(args.quick)
    lines += export_section()
    path = write_result(args.results_name, "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
