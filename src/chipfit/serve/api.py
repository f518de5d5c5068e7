"""Serve a language model on a deployment: its memory, its iterations' cost, a simulated workload, and
what a million output tokens cost in money and energy.

`serve` runs one deployment (a device, a chip count, a split, precisions) through the simulator; given no
split it tries every split the chips allow (`candidate_splits`) and keeps the best: the one that meets the
latency objectives with the most output tokens per second (when none meets them, the one closest to).
The objectives are on the 99th percentiles of TTFT and TPOT, as MLPerf Inference's LLM server scenarios
state theirs (Llama-2-70B: TTFT <= 2 s, TPOT <= 200 ms at p99; mlcommons/inference, language/llama2-70b).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from chipfit.cost.collectives import Fabric
from chipfit.errors import InputError
from chipfit.hardware import Device, get_device
from chipfit.hardware.precision import Precision, short_label
from chipfit.hardware.pricing import PriceQuote, Pricing
from chipfit.serve.config import LlmConfig
from chipfit.serve.memory import ServingMemory, serving_memory
from chipfit.serve.sim import Scheduler, SimResult, Workload, simulate
from chipfit.serve.step import Batch, Engine, Split, check_split

__all__ = ["ServingResult", "Slo", "candidate_splits", "serve"]

MAX_DEFAULT_CHIPS = 64  # without --chips: the fewest of 1, 2, 4, ... up to this that hold the model


@dataclass(frozen=True)
class Slo:
    """Latency objectives at the 99th percentile (None: no objective)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def __post_init__(self) -> None:
        for name, v in (("ttft", self.ttft_ms), ("tpot", self.tpot_ms)):
            if v is not None and not v > 0:
                raise InputError(f"--{name}-ms must be > 0 milliseconds, got {v}")

    @property
    def any(self) -> bool:
        return self.ttft_ms is not None or self.tpot_ms is not None

    def met_by(self, sim: SimResult) -> bool:
        ttft, tpot = sim.ttft_s(99) * 1e3, sim.tpot_s(99) * 1e3
        return (self.ttft_ms is None or ttft <= self.ttft_ms) and (
            self.tpot_ms is None or math.isnan(tpot) or tpot <= self.tpot_ms
        )

    def describe(self) -> str:
        parts = [f"TTFT p99 <= {self.ttft_ms:g} ms" if self.ttft_ms is not None else "",
                 f"TPOT p99 <= {self.tpot_ms:g} ms" if self.tpot_ms is not None else ""]  # fmt: skip
        return " and ".join(p for p in parts if p) or "none"


@dataclass(frozen=True)
class ServingResult:
    """One deployment's simulated serving: `replicas` data-parallel copies of `split` on `chips` chips."""

    cfg: LlmConfig
    device: Device
    chips: int
    split: Split
    precision: Precision
    kv_format: str
    workload: Workload
    scheduler: Scheduler
    memory: ServingMemory
    sim: SimResult  # one replica's share of the workload
    slo: Slo
    price: PriceQuote | None
    tried: tuple[tuple[Split, str], ...] = field(default=())  # other splits and their outcome, in words

    @property
    def model(self) -> str:
        return self.cfg.name

    @property
    def replicas(self) -> int:
        return self.chips // self.split.chips

    @property
    def output_tokens_per_s(self) -> float:
        return self.replicas * self.sim.output_tokens_per_s

    @property
    def output_tokens_per_s_per_chip(self) -> float:
        return self.output_tokens_per_s / self.chips

    @property
    def tokens_per_s_per_user(self) -> float:
        """What one user sees while their output streams: 1 / median TPOT."""
        tpot = self.sim.tpot_s(50)
        return 1 / tpot if tpot > 0 else math.inf

    @property
    def max_concurrency(self) -> int:
        """Sequences of the workload's mean input + output whose caches the deployment holds at once."""
        ctx = math.ceil(self.workload.input_len.mean + self.workload.output_len.mean)
        return self.replicas * self.memory.max_sequences(ctx)

    @property
    def energy_j(self) -> float:
        """One replica's energy over its run: its iterations, and idle power while it waited for requests."""
        idle = self.split.chips * self.device.power.idle_w * (self.sim.makespan_s - self.sim.busy_s)
        return self.sim.energy_j + idle

    @property
    def joules_per_output_token(self) -> float:
        return self.energy_j / self.sim.output_tokens

    @property
    def usd_per_million_output_tokens(self) -> float | None:
        if self.price is None:
            return None
        return self.price.usd_per_hour * self.chips / 3600 / self.output_tokens_per_s * 1e6

    @property
    def meets_slo(self) -> bool:
        return self.slo.met_by(self.sim)

    @property
    def slo_attainment(self) -> float:
        met = self.sim.meets(_s(self.slo.ttft_ms), _s(self.slo.tpot_ms))
        return sum(met) / len(met)

    @property
    def goodput_requests_per_s(self) -> float:
        """Requests per second that met both objectives (DistServe's goodput), the whole deployment."""
        met = self.sim.meets(_s(self.slo.ttft_ms), _s(self.slo.tpot_ms))
        return self.replicas * sum(met) / self.sim.makespan_s

    def notes(self) -> list[str]:
        """What the numbers rest on, in words."""
        m, s, sim = self.memory, self.sim, self.sim
        out = [
            f"{self.replicas} replica(s) of {self.split.describe()}; each chip holds {m.weights_bytes / 1e9:.1f} GB "
            f"of weights ({short_label(self.precision.weights)}) and {m.kv_tokens:,} tokens of KV cache "
            f"({short_label(self.kv_format)}, {m.kv_bytes_per_token / 1e3:.1f} kB a token)",
            f"scheduler: up to {self.scheduler.max_seqs} sequences and {self.scheduler.token_budget:,} tokens an "
            f"iteration (chunked prefill); at most {s.peak_running} ran at once",
        ]
        if sim.preemptions:
            out.append(f"the KV cache filled: {sim.preemptions} preemption(s), each recomputing its sequence")
        if self.split.pp > 1:
            out.append(f"pipeline parallel: {self.split.pp} micro-batches in flight, one per stage")
        if self.price is None:
            out.append(f"{self.device.name} has no price on the chosen basis: no $ per token")
        else:
            out.append(f"price: {self.price.describe()}")
        return out

    def as_dict(self) -> dict[str, Any]:
        s = self.sim
        usd = self.usd_per_million_output_tokens
        return {
            "model": self.model, "device": self.device.name, "chips": self.chips, "tp": self.split.tp,
            "pp": self.split.pp, "expert_parallel": self.split.expert_parallel, "replicas": self.replicas,
            "precision": self.precision.requested, "weight_format": self.precision.weights,
            "compute_format": self.precision.format, "kv_format": self.kv_format,
            "workload": self.workload.describe(), "requests": len(s.requests) * self.replicas,
            "output_tokens_per_s": self.output_tokens_per_s,
            "output_tokens_per_s_per_chip": self.output_tokens_per_s_per_chip,
            "tokens_per_s_per_user": self.tokens_per_s_per_user,
            "ttft_ms_p50": s.ttft_s(50) * 1e3, "ttft_ms_p99": s.ttft_s(99) * 1e3,
            "tpot_ms_p50": s.tpot_s(50) * 1e3, "tpot_ms_p99": s.tpot_s(99) * 1e3,
            "request_latency_ms_mean": s.latency_mean_s * 1e3,
            "max_concurrency": self.max_concurrency, "peak_running_per_replica": s.peak_running,
            "preemptions": s.preemptions, "iterations": s.iterations, "makespan_s": s.makespan_s,
            "slo": {"ttft_ms_p99": self.slo.ttft_ms, "tpot_ms_p99": self.slo.tpot_ms},
            "meets_slo": self.meets_slo, "slo_attainment": self.slo_attainment,
            "goodput_requests_per_s": self.goodput_requests_per_s,
            "usd_per_million_output_tokens": usd,
            "joules_per_output_token": self.joules_per_output_token,
            "price": None if self.price is None else self.price.as_dict(),
            "memory_per_chip": self.memory.as_dict(),
            "notes": self.notes(),
            "splits_tried": [{"split": sp.describe(), "outcome": why} for sp, why in self.tried],
        }  # fmt: skip


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1e3


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def candidate_splits(cfg: LlmConfig, device: Device, chips: int) -> list[Split]:
    """Every split a replica on some divisor of `chips` can run: tensor parallel inside the fast domain
    (heads divide), pipeline parallel across stages, and for a mixture of experts expert parallelism too."""
    fabric = Fabric.of(device)
    out = []
    for tp in _divisors(chips):
        if tp > 1 and not fabric.within_domain(tp):
            continue
        for pp in _divisors(chips // tp):
            if pp > 1 and fabric.reach(tp * pp):
                continue
            for ep in (False, True) if cfg.moe and tp > 1 else (False,):
                sp = Split(tp, pp, ep)
                try:
                    check_split(cfg, sp)
                except InputError:
                    continue
                out.append(sp)
    return out


def engine_memory(cfg: LlmConfig, dev: Device, eng: Engine, sched: Scheduler) -> ServingMemory:
    s = eng.split
    return serving_memory(
        cfg, dev.main_memory.capacity_bytes, eng.precision.weights, eng.kv_format, tp=s.tp, pp=s.pp,
        expert_parallel=s.expert_parallel, token_budget=sched.token_budget,
    )  # fmt: skip


def longest_request(work: Workload) -> int:
    return work.input_len.longest + work.output_len.longest


def serve(
    cfg: LlmConfig,
    device: str | Device,
    work: Workload,
    *,
    chips: int | None = None,
    tp: int | None = None,
    pp: int | None = None,
    expert_parallel: bool | None = None,
    precision: str = "bf16",
    kv_precision: str = "bf16",
    slo: Slo | None = None,
    scheduler: Scheduler | None = None,
    pricing: Pricing | None = None,
    device_files: Sequence[str] = (),
) -> ServingResult:
    """Simulate serving `work` on `device`. Splits not fixed by tp/pp/expert_parallel are searched."""
    dev = get_device(device, device_files) if isinstance(device, str) else device
    slo = slo or Slo()
    sched = scheduler or Scheduler()
    quote = (pricing or Pricing()).quote(dev)
    if chips is None:
        fixed = (tp or 1) * (pp or 1)
        counts = [fixed] if tp and pp else [c for c in _pow2(MAX_DEFAULT_CHIPS) if c % fixed == 0]
    else:
        counts = [chips]
    why_not: list[str] = []
    for n in counts:
        splits = [s for s in candidate_splits(cfg, dev, n) if _matches(s, tp, pp, expert_parallel)]
        if (tp is not None or pp is not None) and not splits:  # a split the search would not pick: say why
            sp = Split(tp or 1, pp or 1, bool(expert_parallel))
            if n % sp.chips:
                raise InputError(f"tp={sp.tp} x pp={sp.pp} = {sp.chips} chips does not divide --chips {n}")
            check_split(cfg, sp)
            Engine.build(cfg, dev, precision, kv_precision, sp)  # the fabric's reach
            splits = [sp]
        results: list[ServingResult] = []
        tried: list[tuple[Split, str]] = []
        runnable = []
        for sp in splits:
            eng = Engine.build(cfg, dev, precision, kv_precision, sp)
            mem = engine_memory(cfg, dev, eng, sched)
            if mem.kv_pages < math.ceil(longest_request(work) / sched.page_tokens):
                tried.append((sp, _no_fit(mem, longest_request(work))))
                continue
            runnable.append((decode_bound(eng, mem, work, sched)[0] * (n // sp.chips), sp, eng, mem))
        runnable.sort(key=lambda x: -x[0])  # the most promising first, so the rest can be ruled out unsimulated
        for bound, sp, eng, mem in runnable:
            lead = max(results, key=_rank) if results else None
            if lead is not None and lead.meets_slo and bound < lead.output_tokens_per_s:
                tried.append((sp, f"at most {bound:,.0f} tokens/s (decode-only bound), below the best: not simulated"))
                continue
            sim = simulate(eng, work.share(n // sp.chips), mem.kv_pages, sched)
            results.append(ServingResult(
                cfg=cfg, device=dev, chips=n, split=sp, precision=eng.precision, kv_format=eng.kv_format,
                workload=work, scheduler=sched, memory=mem, sim=sim, slo=slo, price=quote,
            ))  # fmt: skip
        if results:
            best = max(results, key=_rank)
            for r in results:
                if r is not best:
                    tried.append((r.split, _outcome(r)))
            return replace(best, tried=tuple(tried))
        why_not.append(f"{n} chip(s): " + ("; ".join(f"{s.describe()} {w}" for s, w in tried) or "no split runs"))
    raise InputError(f"{cfg.name} at {precision} does not fit on {dev.name}: " + " | ".join(why_not[-2:]))


def decode_bound(
    eng: Engine, mem: ServingMemory, work: Workload, sched: Scheduler, tpot_s: float | None = None
) -> tuple[float, int]:
    """(an upper bound on one replica's output tokens/s, the batch it is at): the largest batch its cache
    and scheduler hold, all decoding at the shortest context the workload reaches (the prompt), no prefill
    at all; with a TPOT objective, the largest such batch whose iteration alone meets it (0, 0: not even
    one sequence does). An iteration's time grows with its batch and context, so no schedule of `work`
    that meets the objective beats it."""
    ctx = work.input_len.shortest + 1
    most = min(sched.max_seqs, sched.token_budget, mem.kv_pages // math.ceil(ctx / sched.page_tokens))
    most = max(1, min(most, work.requests))

    def step_s(b: int) -> float:
        return eng.iteration(Batch(decode_seqs=b, decode_context=b * ctx, sampled=b)).seconds

    if tpot_s is not None and step_s(most) > tpot_s:
        if step_s(1) > tpot_s:
            return 0.0, 0
        lo, hi = 1, most  # step_s(lo) meets it, step_s(hi) does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if step_s(mid) <= tpot_s else (lo, mid)
        most = lo
    return most / step_s(most), most


def prefill_floor_s(eng: Engine, work: Workload, sched: Scheduler) -> float:
    """The shortest TTFT any request of `work` can see: its prompt prefilled alone, in budget-sized chunks."""
    left = work.input_len.shortest
    done, secs = 0, 0.0
    while left > 0:
        q = min(left, sched.token_budget)
        done += q
        left -= q
        secs += eng.iteration(Batch.of([(q, done)], sampled=0 if left else 1)).seconds
    return secs


def _pow2(limit: int) -> list[int]:
    return [2**i for i in range(int(math.log2(limit)) + 1)]


def _matches(s: Split, tp: int | None, pp: int | None, ep: bool | None) -> bool:
    return (tp is None or s.tp == tp) and (pp is None or s.pp == pp) and (ep is None or s.expert_parallel == ep)


def _rank(r: ServingResult) -> tuple[bool, float, float]:
    return (r.meets_slo, r.slo_attainment if not r.meets_slo else 1.0, r.output_tokens_per_s)


def _no_fit(mem: ServingMemory, tokens: int) -> str:
    if mem.kv_budget_bytes <= 0:
        return (f"does not fit: {mem.weights_bytes / 1e9:.1f} GB of weights a chip, "
                f"{(mem.capacity_bytes - mem.reserve_bytes) / 1e9:.1f} GB usable")  # fmt: skip
    return f"holds {mem.kv_tokens:,} KV tokens a chip, fewer than one {tokens:,}-token request"


def _outcome(r: ServingResult) -> str:
    slo = "" if not r.slo.any else (" (meets the SLO)" if r.meets_slo else " (misses the SLO)")
    return f"{r.output_tokens_per_s:,.0f} tokens/s{slo}"
