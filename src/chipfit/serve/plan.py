"""Plan a language model's serving: devices x chip counts x precisions x splits, the cheapest
configuration that meets the latency objectives, its serving frontier, and the reasons in words.

Each configuration (a device, a chip count, a precision the chip's matrix unit runs) is first bounded:
its best split's decode-only throughput (`api.decode_bound`) gives a floor on its $ per million output
tokens. Configurations are then simulated cheapest floor first, and the sweep stops once the next floor
exceeds the best simulated cost that meets the objectives: what is left cannot win. With objectives,
a configuration is served at the largest number of concurrent clients (1, 2, 4, ... per replica, up to
the scheduler's sequence cap) whose p99 TTFT and TPOT still meet them, the load a deployment would be
sized for; without, offline (all requests queued: its maximum throughput).

The frontier of the recommended configuration is the same deployment at 1, 2, 4, ... clients per
replica: output tokens/s per chip against tokens/s each user sees (1 / TPOT), the chart serving stacks'
performance pages draw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chipfit.errors import InputError
from chipfit.hardware import Device
from chipfit.hardware.precision import How, resolve_precision
from chipfit.hardware.pricing import Pricing
from chipfit.serve.api import (
    ServingResult,
    Slo,
    candidate_splits,
    decode_bound,
    engine_memory,
    longest_request,
    prefill_floor_s,
    serve,
)  # fmt: skip
from chipfit.serve.config import LlmConfig
from chipfit.serve.sim import Arrivals, Scheduler, Workload
from chipfit.serve.step import Engine, Split, default_kv, kv_format

__all__ = ["DEFAULT_SERVE_CHIPS", "DEFAULT_SERVE_PRECISIONS", "FrontierPoint", "ServePlan", "plan_serving"]

DEFAULT_SERVE_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "w8a16", "w4a16", "fp4")
DEFAULT_SERVE_CHIPS = (1, 2, 4, 8)
PLAN_REQUESTS = 200  # requests per simulated configuration (the user's --requests overrides)


@dataclass(frozen=True)
class Candidate:
    device: Device
    chips: int
    precision: str
    split: Split  # the split with the highest bound
    usd_floor: float  # $ per million output tokens at the bound (inf: unpriced)
    bound_tokens_per_s: float
    bound_seqs: int  # the batch per replica the bound is at

    @property
    def replicas(self) -> int:
        return self.chips // self.split.chips

    def describe(self) -> str:
        return f"{self.chips} x {self.device.name} {self.precision} ({self.split.describe()})"


@dataclass(frozen=True)
class FrontierPoint:
    clients: int
    output_tokens_per_s_per_chip: float
    tokens_per_s_per_user: float
    ttft_ms_p99: float
    tpot_ms_p99: float
    meets_slo: bool


@dataclass(frozen=True)
class ServePlan:
    model: str
    workload: Workload
    slo: Slo
    results: tuple[ServingResult, ...]  # simulated, cheapest first
    skipped: tuple[tuple[str, str], ...]  # (configuration, why it was not simulated)
    frontier: tuple[FrontierPoint, ...] = field(default=())
    quality: str = ""

    @property
    def best(self) -> ServingResult | None:
        ok = [r for r in self.results if r.meets_slo and r.usd_per_million_output_tokens is not None]
        return min(ok, key=lambda r: (_usd(r), r.chips)) if ok else None

    def reasons(self) -> list[str]:
        b = self.best
        if b is None:
            met = [r for r in self.results if r.meets_slo]
            why = "none of the simulated configurations meets " + self.slo.describe()
            if met:
                why = "the configurations that meet the objectives have no price on the chosen basis"
            return [why]
        out = [
            f"{label(b)} is the cheapest that meets {self.slo.describe()}: ${_usd(b):.3f} per million output "
            f"tokens, {b.output_tokens_per_s:,.0f} output tokens/s ({b.output_tokens_per_s_per_chip:,.0f} a chip), "
            f"TTFT p99 {b.sim.ttft_s(99) * 1e3:,.0f} ms, TPOT p99 {b.sim.tpot_s(99) * 1e3:,.1f} ms"
        ]
        others = sorted((r for r in self.results if r is not b and r.meets_slo and r.price is not None), key=_usd)
        if others:
            o = others[0]
            out.append(f"next: {label(o)} at ${_usd(o):.3f} (+{_usd(o) / _usd(b) - 1:.0%})")
        missed = [r for r in self.results if not r.meets_slo]
        if missed:
            m = min(missed, key=lambda r: _usd(r))
            out.append(f"cheaper per token but missing the objectives: {label(m)} (TPOT p99 "
                       f"{m.sim.tpot_s(99) * 1e3:,.1f} ms, TTFT p99 {m.sim.ttft_s(99) * 1e3:,.0f} ms)")  # fmt: skip
        if b.workload.arrivals is Arrivals.CONCURRENCY and self.slo.any:
            out.append(f"sized at {b.workload.concurrency} concurrent clients, the most whose p99 latencies meet "
                       "the objectives")  # fmt: skip
        if self.skipped:
            out.append(f"{len(self.skipped)} configuration(s) not simulated: their decode-only bound could not beat "
                       "the recommendation, or they cannot run (see skipped)")  # fmt: skip
        out.append(self.quality)
        return [x for x in out if x]

    def as_dict(self) -> dict[str, Any]:
        b = self.best
        return {
            "model": self.model, "workload": self.workload.describe(),
            "slo": {"ttft_ms_p99": self.slo.ttft_ms, "tpot_ms_p99": self.slo.tpot_ms},
            "best": None if b is None else b.as_dict(), "reasons": self.reasons(),
            "configurations": [_row(r) for r in self.results],
            "skipped": [{"configuration": c, "why": w} for c, w in self.skipped],
            "frontier": [vars(p) for p in self.frontier], "quality": self.quality,
        }  # fmt: skip


def label(r: ServingResult) -> str:
    return f"{r.chips} x {r.device.name} {r.precision.requested} ({r.split.describe()} x {r.replicas})"


def _usd(r: ServingResult) -> float:
    u = r.usd_per_million_output_tokens
    return math.inf if u is None else u


def _row(r: ServingResult) -> dict[str, Any]:
    d = r.as_dict()
    keep = ("device", "chips", "tp", "pp", "expert_parallel", "replicas", "precision", "kv_format", "workload",
            "output_tokens_per_s", "output_tokens_per_s_per_chip", "tokens_per_s_per_user", "ttft_ms_p99",
            "tpot_ms_p99", "meets_slo", "usd_per_million_output_tokens", "joules_per_output_token")  # fmt: skip
    return {k: d[k] for k in keep}


def runs_on_matrix_unit(dev: Device, precision: str) -> bool:
    try:
        p = resolve_precision(dev, precision)
    except InputError:
        return False
    return p.how not in (How.VECTOR, How.HOST)


def _candidates(
    cfg: LlmConfig, devices: Sequence[Device], chips: Sequence[int], precisions: Sequence[str], kv: str,
    work: Workload, slo: Slo, sched: Scheduler, pricing: Pricing, skipped: list[tuple[str, str]],
) -> list[Candidate]:  # fmt: skip
    """Every configuration that runs, with its best split's bound; those that cannot run or cannot meet the
    objectives even alone go to `skipped` with why."""
    out = []
    tpot = None if slo.tpot_ms is None else slo.tpot_ms / 1e3
    for dev in devices:
        quote = pricing.quote(dev)
        runnable = [p for p in dict.fromkeys(precisions) if runs_on_matrix_unit(dev, p)]
        if "bf16" in runnable and "fp16" in runnable:  # a chip runs one 16-bit format: fp16 only without bf16
            runnable.remove("fp16")
        for prec in runnable:
            for n in chips:
                best: tuple[float, int, Split] | None = None
                why = "does not fit (its weights and one request's KV cache)"
                for sp in candidate_splits(cfg, dev, n):
                    try:
                        eng = Engine.build(cfg, dev, prec, _kv(dev, kv), sp)
                    except InputError:
                        continue
                    mem = engine_memory(cfg, dev, eng, sched)
                    if mem.kv_pages < math.ceil(longest_request(work) / sched.page_tokens):
                        continue
                    if slo.ttft_ms is not None and (t := prefill_floor_s(eng, work, sched)) * 1e3 > slo.ttft_ms:
                        why = f"a prompt alone takes {t * 1e3:,.0f} ms to prefill, over the TTFT objective"
                        continue
                    tps, seqs = decode_bound(eng, mem, work, sched, tpot)
                    if seqs == 0:
                        why = "one sequence's decode step alone exceeds the TPOT objective"
                        continue
                    tps *= n // sp.chips
                    if best is None or tps > best[0]:
                        best = (tps, seqs, sp)
                name = f"{n} x {dev.name} {prec}"
                if best is None:
                    skipped.append((name, why))
                    continue
                usd = math.inf if quote is None else quote.usd_per_hour * n / 3600 / best[0] * 1e6
                out.append(Candidate(dev, n, prec, best[2], usd, best[0], best[1]))
    return sorted(out, key=lambda c: (c.usd_floor, -c.bound_tokens_per_s))


def _kv(dev: Device, kv: str) -> str:
    return default_kv(dev, kv or None)


def _sized(
    cfg: LlmConfig, c: Candidate, work: Workload, slo: Slo, kv: str, sched: Scheduler, pricing: Pricing
) -> ServingResult:
    """The candidate served offline (no objectives, or the user's own arrivals), or else at the most
    concurrent clients whose p99s meet the objectives: searched from the bound's batch, doubling while
    they meet them and halving while they do not."""
    sp = c.split
    kw: dict[str, Any] = dict(chips=c.chips, tp=sp.tp, pp=sp.pp, expert_parallel=sp.expert_parallel,
                              precision=c.precision, kv_precision=_kv(c.device, kv), slo=slo, scheduler=sched,
                              pricing=pricing)  # fmt: skip
    if not slo.any or work.arrivals is not Arrivals.OFFLINE:
        return serve(cfg, c.device, work, **kw)

    def at(clients: int) -> ServingResult:
        w = replace(work, arrivals=Arrivals.CONCURRENCY, concurrency=clients, requests=max(32, 3 * clients))
        return serve(cfg, c.device, w, **kw)

    per = max(1, c.bound_seqs)
    r = at(per * c.replicas)
    if r.meets_slo:
        while per * 2 <= sched.max_seqs and r.sim.peak_running >= per:
            up = at(per * 2 * c.replicas)
            if not up.meets_slo:
                break
            per, r = per * 2, up
        return r
    while per > 1:
        per //= 2
        r = at(per * c.replicas)
        if r.meets_slo:
            return r
    return r


def frontier(r: ServingResult, pricing: Pricing, limit: int = 256) -> tuple[FrontierPoint, ...]:
    """The deployment of `r` at 1, 2, 4, ... clients per replica (its split fixed)."""
    pts = []
    per = 1
    while per <= min(limit, r.scheduler.max_seqs):
        n = per * r.replicas
        w = replace(r.workload, arrivals=Arrivals.CONCURRENCY, concurrency=n, requests=max(4 * n, 32))
        x = serve(r.cfg, r.device, w, chips=r.chips, tp=r.split.tp, pp=r.split.pp,
                  expert_parallel=r.split.expert_parallel, precision=r.precision.requested,
                  kv_precision=_kv(r.device, ""), slo=r.slo, scheduler=r.scheduler, pricing=pricing)  # fmt: skip
        pts.append(FrontierPoint(n, x.output_tokens_per_s_per_chip, x.tokens_per_s_per_user, x.sim.ttft_s(99) * 1e3,
                                 x.sim.tpot_s(99) * 1e3, x.meets_slo))  # fmt: skip
        if x.sim.peak_running < per:  # the cache holds no more at once
            break
        per *= 2
    return tuple(pts)


def plan_serving(
    cfg: LlmConfig,
    devices: Sequence[Device],
    work: Workload,
    *,
    chips: Sequence[int] = DEFAULT_SERVE_CHIPS,
    precisions: Sequence[str] = DEFAULT_SERVE_PRECISIONS,
    kv_precision: str = "",
    slo: Slo | None = None,
    scheduler: Scheduler | None = None,
    pricing: Pricing | None = None,
    with_frontier: bool = True,
) -> ServePlan:
    slo = slo or Slo()
    sched = scheduler or Scheduler()
    pricing = pricing or Pricing()
    skipped: list[tuple[str, str]] = []
    cands = _candidates(cfg, devices, chips, precisions, kv_precision, work, slo, sched, pricing, skipped)
    if not cands:
        eg = f"{skipped[0][0]}: {skipped[0][1]}" if skipped else "no device runs the precisions"
        raise InputError(f"{cfg.name} runs on none of the {len(skipped)} configurations swept (e.g. {eg}); "
                         "try more chips (--chips), narrower precisions or looser objectives")  # fmt: skip
    results: list[ServingResult] = []
    best_usd = math.inf
    seen: dict[tuple[str, str, Split], Candidate] = {}
    for c in sorted(cands, key=lambda c: c.chips):  # replicas of a smaller deployment: its figures, scaled
        key = (c.device.name, c.precision, c.split)
        if key in seen:
            k = c.replicas // seen[key].replicas
            skipped.append((c.describe(), f"{k} x the deployment {seen[key].describe()}: the same $ per token and "
                            f"latencies at {k} x its throughput"))  # fmt: skip
        else:
            seen[key] = c
    cands = [c for c in cands if seen[(c.device.name, c.precision, c.split)] is c]
    for c in cands:
        if c.usd_floor >= best_usd:
            floor = f"at best ${c.usd_floor:.3f} per million tokens"
            skipped.append((c.describe(), f"{floor}, above the recommendation's ${best_usd:.3f}"))
            continue
        if math.isinf(c.usd_floor) and best_usd < math.inf:
            skipped.append((c.describe(), "no price on the chosen basis"))
            continue
        r = _sized(cfg, c, work, slo, kv_precision, sched, pricing)
        results.append(r)
        if r.meets_slo:
            best_usd = min(best_usd, _usd(r))
    results.sort(key=lambda r: (_usd(r), r.chips))
    p = ServePlan(cfg.name, work, slo, tuple(results), tuple(skipped))
    fr = frontier(p.best, pricing) if with_frontier and p.best is not None else ()
    return replace(p, frontier=fr, quality=quality_note(p.best))


def quality_note(r: ServingResult | None) -> str:
    """What the recommended precision costs in quality: measured by emulation on chipfit's small decoder
    language model (`serve.quality`), or why there is no measurement."""
    if r is None:
        return ""
    from chipfit.serve.quality import measure_quality
    from chipfit.serve.step import KV_PRECISIONS

    kv = next((k for k in KV_PRECISIONS if kv_format(k) == r.kv_format), None)
    prec = r.precision.requested
    if kv is None:
        return f"quality: no measured change for {prec}: the KV cache's format {r.kv_format} has no emulation"
    try:
        q = measure_quality(r.device.name, prec, kv)
    except InputError as e:
        return f"quality: no measured change for {prec} on {r.device.name}: {e}"
    return "quality: " + q.describe()
