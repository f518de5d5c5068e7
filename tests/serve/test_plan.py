"""plan --serve: the cheapest configuration that meets the objectives, what the bound rules out, the
frontier, the report; errors in one line."""

from __future__ import annotations

import json
from itertools import pairwise
from pathlib import Path

import pytest

from chipfit.cli import main
from chipfit.hardware import get_device
from chipfit.serve import get_llm
from chipfit.serve.api import Slo, serve
from chipfit.serve.html import SERVE_CHARTS, render_serve_html
from chipfit.serve.plan import plan_serving
from chipfit.serve.sim import Lengths, Workload

W = Workload(Lengths.parse("512"), Lengths.parse("128"), 96)
DEVICES = [get_device(n) for n in ("h100-sxm", "a100-sxm", "l4", "mi300x")]


@pytest.fixture(scope="module")
def plan():  # type: ignore[no-untyped-def]
    return plan_serving(get_llm("llama-3.1-8b"), DEVICES, W, chips=(1, 2), precisions=("bf16", "fp8", "w4a16"),
                        slo=Slo(ttft_ms=3000, tpot_ms=60))  # fmt: skip


def test_the_recommendation_is_the_cheapest_that_meets_the_objectives(plan) -> None:  # type: ignore[no-untyped-def]
    best = plan.best
    assert best is not None and best.meets_slo
    usd = best.usd_per_million_output_tokens
    for r in plan.results:
        if r.meets_slo and r.usd_per_million_output_tokens is not None:
            assert usd <= r.usd_per_million_output_tokens
    # what the bound ruled out could not have been cheaper
    for _conf, why in plan.skipped:
        if why.startswith("at best $"):
            assert float(why.split("$")[1].split()[0]) >= usd - 1e-9
    # fp8 is never tried on the A100 (no FP8 matrix unit), nor fp16 where bf16 runs
    assert not any(r.device.name == "a100-sxm" and r.precision.requested == "fp8" for r in plan.results)
    assert plan.reasons()[0].startswith(f"{best.chips} x {best.device.name}")
    assert any(x.startswith("quality:") for x in plan.reasons())


def test_sized_at_the_most_clients_that_meet_the_objectives(plan) -> None:  # type: ignore[no-untyped-def]
    best = plan.best
    c = best.workload.concurrency
    assert c >= 1
    bigger = serve(best.cfg, best.device, Workload(W.input_len, W.output_len, max(32, 6 * c), best.workload.arrivals,
                   2 * c), chips=best.chips, tp=best.split.tp, pp=best.split.pp, precision=best.precision.requested,
                   slo=plan.slo)  # fmt: skip
    if 2 * c <= best.scheduler.max_seqs and bigger.sim.peak_running >= 2 * c:
        assert not bigger.meets_slo


def test_the_frontier_trades_users_for_chips(plan) -> None:  # type: ignore[no-untyped-def]
    f = plan.frontier
    assert len(f) >= 3
    assert all(a.output_tokens_per_s_per_chip < b.output_tokens_per_s_per_chip for a, b in pairwise(f))
    assert f[0].tokens_per_s_per_user > f[-1].tokens_per_s_per_user
    html = render_serve_html(plan)
    assert all(f"data-chart='{k}'" in html for k in SERVE_CHARTS) and "<script" not in html


def test_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "serve.html"
    args = ["plan", "llama-3.1-8b", "--serve", "--devices", "h100-sxm,l4", "--chips", "1", "--precisions",
            "bf16,fp8", "--input-len", "256", "--output-len", "64", "--requests", "48", "--tpot-ms", "80"]  # fmt: skip
    assert main([*args, "--json", "--html", str(out)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["best"]["meets_slo"] and d["best"]["device"] in ("h100-sxm", "l4") and d["frontier"]
    assert "serving frontier" in out.read_text()
    assert main(args) == 0
    assert "Recommendation" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-len", "8", "--output-len", "8"], "--input-len goes with --serve"),
        (["--serve", "--input-len", "8", "--output-len", "8", "--train"], "--train does not apply to plan --serve"),
        (["--serve", "--input-len", "8", "--output-len", "8", "--precisions", "bf17"], "unknown precision 'bf17'"),
        (["--serve", "--input-len", "8", "--output-len", "8", "--chips", "0"], "comma-separated positive integers"),
    ],
)
def test_errors_are_one_line(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "llama-3.1-8b", "--devices", "l4", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
