"""serve(): the deployment's figures from the simulation, by hand; the split search; the errors."""

from __future__ import annotations

import math

import pytest

from chipfit.errors import InputError
from chipfit.hardware import get_device
from chipfit.hardware.pricing import Pricing
from chipfit.serve import get_llm, serving_memory
from chipfit.serve.api import Slo, candidate_splits, serve
from chipfit.serve.sim import Arrivals, Lengths, Workload

W = Workload(Lengths.parse("512"), Lengths.parse("128"), 200)


def test_the_deployment_figures_by_hand() -> None:
    cfg = get_llm("llama-3.1-8b")
    r = serve(cfg, "h100-sxm", W, chips=2, tp=1, pp=1)
    assert r.replicas == 2 and r.split.chips == 1
    assert r.sim.output_tokens == 100 * 128  # each replica serves half the requests
    assert r.output_tokens_per_s == pytest.approx(2 * 100 * 128 / r.sim.makespan_s)
    assert r.output_tokens_per_s_per_chip == pytest.approx(r.output_tokens_per_s / 2)
    price = Pricing().quote(get_device("h100-sxm"))
    assert price is not None
    usd = r.usd_per_million_output_tokens
    assert usd == pytest.approx(2 * price.usd_per_hour / 3600 / r.output_tokens_per_s * 1e6)
    assert r.joules_per_output_token == pytest.approx(r.sim.energy_j / (100 * 128))  # offline: never idle
    mem = serving_memory(cfg, 80e9, "bfloat16", "bfloat16")
    assert r.max_concurrency == 2 * mem.max_sequences(640)
    d = r.as_dict()
    for key in ("output_tokens_per_s", "output_tokens_per_s_per_chip", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50",
                "tpot_ms_p99", "request_latency_ms_mean", "max_concurrency", "tp", "pp",
                "usd_per_million_output_tokens", "joules_per_output_token"):  # fmt: skip
        assert key in d
    assert d["ttft_ms_p99"] >= d["ttft_ms_p50"] > 0 and d["tpot_ms_p99"] >= d["tpot_ms_p50"] > 0


def test_the_search_keeps_the_fastest_split_it_simulated() -> None:
    cfg = get_llm("llama-2-13b")
    r = serve(cfg, "h100-sxm", W, chips=4)
    simulated = [why for _, why in r.tried if why.endswith("tokens/s")]
    assert all(float(w.split()[0].replace(",", "")) <= r.output_tokens_per_s for w in simulated)
    pruned = [why for _, why in r.tried if "not simulated" in why]
    for why in pruned:  # ruled out by a bound below the winner
        assert float(why.split()[2].replace(",", "")) < r.output_tokens_per_s
    fixed = serve(cfg, "h100-sxm", W, chips=4, tp=2, pp=2)
    assert (fixed.split.tp, fixed.split.pp, fixed.replicas) == (2, 2, 1)
    assert fixed.output_tokens_per_s <= r.output_tokens_per_s * 1.0001


def test_tensor_parallel_stays_inside_the_fast_domain() -> None:
    dev = get_device("h100-sxm")
    cfg = get_llm("llama-3.1-405b")
    splits = candidate_splits(cfg, dev, 16)
    domain = dev.interconnect.domain_chips if dev.interconnect else 1
    assert splits and all(s.tp <= domain for s in splits)
    assert any(s.pp == 2 and s.tp == 8 for s in splits)


def test_without_chips_the_fewest_that_hold_the_model() -> None:
    cfg = get_llm("llama-2-70b")  # 138 GB of BF16 weights: not on one 80 GB H100
    r = serve(cfg, "h100-sxm", Workload(Lengths.parse("256"), Lengths.parse("32"), 20))
    assert r.chips == 2
    fp8 = serve(cfg, "h200-sxm", Workload(Lengths.parse("256"), Lengths.parse("32"), 20), precision="fp8")
    assert fp8.chips == 1  # 69 GB at FP8 on a 141 GB H200


def test_an_slo_the_deployment_misses_says_so() -> None:
    cfg = get_llm("llama-3.1-8b")
    work = Workload(Lengths.parse("1024"), Lengths.parse("64"), 100, Arrivals.RATE, rate_per_s=5.0, seed=1)
    loose = serve(cfg, "h100-sxm", work, chips=1, slo=Slo(ttft_ms=5000, tpot_ms=500))
    assert loose.meets_slo and loose.slo_attainment == 1.0
    assert loose.goodput_requests_per_s == pytest.approx(100 / loose.sim.makespan_s)
    tight = serve(cfg, "h100-sxm", work, chips=1, slo=Slo(tpot_ms=0.5))
    assert not tight.meets_slo and tight.slo_attainment == 0.0 and tight.goodput_requests_per_s == 0.0
    # an online run waits for requests: idle power is in the energy
    assert loose.energy_j > loose.sim.energy_j
    assert loose.output_tokens_per_s == pytest.approx(100 * 64 / loose.sim.makespan_s)
    assert loose.output_tokens_per_s < 5.0 * 64 * 1.2  # no more than the requests that arrive


def test_what_cannot_run_is_named() -> None:
    with pytest.raises(InputError, match="no matrix unit for fp8; its matrix unit runs"):
        serve(get_llm("llama-3.1-8b"), "a100-sxm", W, chips=1, precision="fp8")
    with pytest.raises(InputError, match="does not fit on l4"):
        serve(get_llm("llama-3.1-405b"), "l4", W, chips=1)
    with pytest.raises(InputError, match="does not divide --chips 8"):
        serve(get_llm("llama-3.1-8b"), "h100-sxm", W, chips=8, tp=1, pp=3)
    with pytest.raises(InputError, match="must be > 0 milliseconds"):
        Slo(ttft_ms=0)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "deepseek-v2-lite", "gpt-j-6b", "llama-3.1-70b"])
def test_every_family_serves(name: str) -> None:
    r = serve(get_llm(name), "h200-sxm", Workload(Lengths.parse("256"), Lengths.parse("64"), 64), chips=8)
    assert r.output_tokens_per_s > 0 and math.isfinite(r.joules_per_output_token)
    assert r.sim.output_tokens * r.replicas >= 64 * 64
