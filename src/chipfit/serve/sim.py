"""Continuous batching with chunked prefill: a discrete-event simulation of a serving engine's iterations.

The scheduler is vLLM V1's (`vllm/v1/core/sched/scheduler.py` in vllm-project/vllm), as SGLang and
TensorRT-LLM's in-flight batching also run: every iteration has a token budget (max_num_batched_tokens)
and a cap on running sequences (max_num_seqs). Running sequences are served first, in the order they
were admitted: one token each when decoding, the rest of their prompt (up to what is left of the budget)
when prefilling, so a long prompt is cut into chunks. Waiting requests are then admitted first come first
served while the budget, the sequence cap and the KV cache's free pages allow. A sequence holds a page for
every started `page_tokens` of its cache; when a running sequence needs a page and none is free, the most
recently admitted sequence is preempted, its pages freed, and it is recomputed later from its prompt and
the tokens it had generated (vLLM's recompute preemption). Whenever a sequence's cache catches up with
every token it knows, the iteration samples its next token: the first one ends its prefill (TTFT).

Each iteration's duration comes from the engine's cost model (`serve.step.Engine.iteration`), the clock
advances by it, and requests arrive offline (all at once), from a fixed number of clients that each send
the next request when the last one finishes (closed loop), or as a seeded Poisson process. Deterministic
for a seed: the same inputs give the same numbers.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from chipfit.errors import InputError
from chipfit.serve.memory import PAGE_TOKENS
from chipfit.serve.step import Batch, IterationCost

__all__ = ["Arrivals", "Lengths", "RequestTimes", "Scheduler", "Shape", "SimResult", "Workload", "simulate"]

MAX_ITERATIONS = 2_000_000  # a guard: a schedule that makes no progress is a bug, not a long run


class Arrivals(StrEnum):
    OFFLINE = "offline"  # every request queued at time 0: the deployment's maximum throughput
    CONCURRENCY = "concurrency"  # a fixed number of clients, each sending its next request when served
    RATE = "rate"  # Poisson arrivals at a mean rate


class Shape(StrEnum):
    FIXED = "fixed"
    UNIFORM = "uniform"  # integers drawn uniformly from [low, high]
    NORMAL = "normal"  # a normal distribution's draws, rounded and clipped to >= 1


@dataclass(frozen=True)
class Lengths:
    """Token lengths of requests' prompts or outputs: `1024`, `uniform:512:1536` or `normal:1024:256`."""

    shape: Shape
    a: float  # fixed: the length; uniform: the low end; normal: the mean
    b: float = 0.0  # uniform: the high end; normal: the standard deviation

    def __post_init__(self) -> None:
        if self.a < 1 or (self.shape is Shape.UNIFORM and self.b < self.a) or self.b < 0:
            raise InputError(f"lengths {self.describe()}: lengths are >= 1 (uniform: low <= high; normal: std >= 0)")

    @classmethod
    def parse(cls, text: str, what: str = "length") -> Lengths:
        parts = str(text).split(":")
        shapes = ", ".join(f"'{s}'" for s in Shape)
        bad = InputError(f"{what} {text!r}: give N, uniform:LOW:HIGH or normal:MEAN:STD (shapes: {shapes})")
        try:
            nums = [float(x) for x in parts[1:]] if len(parts) > 1 else [float(int(parts[0]))]
            shape = Shape(parts[0]) if len(parts) > 1 else Shape.FIXED
        except ValueError:
            raise bad from None
        if len(nums) != (1 if shape is Shape.FIXED else 2):
            raise bad
        return cls(shape, *nums)

    @property
    def mean(self) -> float:
        return (self.a + self.b) / 2 if self.shape is Shape.UNIFORM else self.a

    @property
    def shortest(self) -> int:
        """The shortest length a draw gives."""
        return 1 if self.shape is Shape.NORMAL else math.ceil(self.a)

    @property
    def longest(self) -> int:
        """The longest length a draw gives (normal: mean + 4 std, the draws clipped there)."""
        if self.shape is Shape.FIXED:
            return int(self.a)
        return int(self.b) if self.shape is Shape.UNIFORM else max(1, round(self.a + 4 * self.b))

    def draw(self, rng: random.Random, n: int) -> list[int]:
        if self.shape is Shape.FIXED:
            return [int(self.a)] * n
        if self.shape is Shape.UNIFORM:
            return [rng.randint(math.ceil(self.a), int(self.b)) for _ in range(n)]
        return [min(self.longest, max(1, round(rng.gauss(self.a, self.b)))) for _ in range(n)]

    def describe(self) -> str:
        if self.shape is Shape.FIXED:
            return f"{self.a:g}"
        return f"{self.shape}:{self.a:g}:{self.b:g}"


@dataclass(frozen=True)
class Workload:
    input_len: Lengths
    output_len: Lengths
    requests: int
    arrivals: Arrivals = Arrivals.OFFLINE
    concurrency: int = 0
    rate_per_s: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.requests < 1:
            raise InputError(f"requests must be >= 1, got {self.requests}")
        if self.arrivals is Arrivals.CONCURRENCY and self.concurrency < 1:
            raise InputError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.arrivals is Arrivals.RATE and not self.rate_per_s > 0:
            raise InputError(f"the arrival rate must be > 0 requests/s, got {self.rate_per_s}")

    def share(self, replicas: int) -> Workload:
        """What one of `replicas` data-parallel replicas serves (requests spread evenly over them)."""
        if replicas == 1:
            return self
        return Workload(
            self.input_len, self.output_len, math.ceil(self.requests / replicas), self.arrivals,
            math.ceil(self.concurrency / replicas), self.rate_per_s / replicas, self.seed,
        )  # fmt: skip

    def describe(self) -> str:
        how = {Arrivals.OFFLINE: "offline", Arrivals.CONCURRENCY: f"{self.concurrency} concurrent clients",
               Arrivals.RATE: f"Poisson {self.rate_per_s:g} requests/s"}[self.arrivals]  # fmt: skip
        lengths = f"input {self.input_len.describe()}, output {self.output_len.describe()}"
        return f"{self.requests} requests, {lengths}, {how}"


@dataclass(frozen=True)
class Scheduler:
    """The engine's scheduling limits. Defaults: vLLM's max_num_seqs 256 and the 8,192-token budget of its
    chunked-prefill default for online serving (assumed for every stack), 16-token KV pages."""

    token_budget: int = 8192
    max_seqs: int = 256
    page_tokens: int = PAGE_TOKENS

    def __post_init__(self) -> None:
        if self.token_budget < 1 or self.max_seqs < 1 or self.page_tokens < 1:
            raise InputError(f"scheduler limits must be >= 1, got {self}")


class IterationModel(Protocol):
    def iteration(self, b: Batch) -> IterationCost: ...


@dataclass(frozen=True)
class RequestTimes:
    arrival_s: float
    first_token_s: float
    finish_s: float
    input_tokens: int
    output_tokens: int

    @property
    def ttft_s(self) -> float:
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> float | None:
        """Mean time between output tokens after the first (None for a one-token output)."""
        if self.output_tokens < 2:
            return None
        return (self.finish_s - self.first_token_s) / (self.output_tokens - 1)

    @property
    def latency_s(self) -> float:
        return self.finish_s - self.arrival_s


def percentile(xs: Sequence[float], p: float) -> float:
    """The p-th percentile, linear between order statistics (numpy's default)."""
    if not xs:
        return math.nan
    s = sorted(xs)
    at = (len(s) - 1) * p / 100
    lo = math.floor(at)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (at - lo)


@dataclass(frozen=True)
class SimResult:
    requests: tuple[RequestTimes, ...]
    energy_j: float
    iterations: int
    preemptions: int
    peak_running: int
    busy_s: float  # time the engine ran iterations (the rest it waited for arrivals)

    @property
    def start_s(self) -> float:
        return min(r.arrival_s for r in self.requests)

    @property
    def makespan_s(self) -> float:
        return max(r.finish_s for r in self.requests) - self.start_s

    @property
    def output_tokens(self) -> int:
        return sum(r.output_tokens for r in self.requests)

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.makespan_s

    def ttft_s(self, p: float) -> float:
        return percentile([r.ttft_s for r in self.requests], p)

    def tpot_s(self, p: float) -> float:
        return percentile([t for r in self.requests if (t := r.tpot_s) is not None], p)

    @property
    def latency_mean_s(self) -> float:
        return sum(r.latency_s for r in self.requests) / len(self.requests)

    def meets(self, ttft_s: float | None, tpot_s: float | None) -> list[bool]:
        """Per request: both latency objectives met (an absent objective is met)."""
        out = []
        for r in self.requests:
            tp = r.tpot_s
            out.append((ttft_s is None or r.ttft_s <= ttft_s) and (tpot_s is None or tp is None or tp <= tpot_s))
        return out


class _Seq:
    __slots__ = ("arrival", "cached", "first", "generated", "output", "pages", "prompt")

    def __init__(self, arrival: float, prompt: int, output: int) -> None:
        self.arrival, self.prompt, self.output = arrival, prompt, output
        self.cached = self.generated = self.pages = 0
        self.first = math.nan


def simulate(
    model: IterationModel, work: Workload, kv_pages: int, sched: Scheduler | None = None, *, fast: bool = True
) -> SimResult:
    """Serve `work` on one replica whose KV cache holds `kv_pages` pages.

    fast: run stretches of decode-only iterations without rescheduling each (`_steady_steps`); False
    schedules every iteration, the reference the tests hold the fast path to."""
    sc = sched or Scheduler()
    rng = random.Random(work.seed)
    n = work.requests
    prompts, outputs = work.input_len.draw(rng, n), work.output_len.draw(rng, n)
    page = sc.page_tokens
    longest = max(p + o for p, o in zip(prompts, outputs, strict=True))
    if math.ceil(longest / page) > kv_pages:
        raise InputError(f"a request of {longest} tokens needs {math.ceil(longest / page)} KV pages; the cache "
                         f"holds {kv_pages} (fewer tokens, more chips or a narrower KV format)")  # fmt: skip
    if work.arrivals is Arrivals.RATE:
        t, times = 0.0, []
        for _ in range(n):
            t += rng.expovariate(work.rate_per_s)
            times.append(t)
    else:
        first = n if work.arrivals is Arrivals.OFFLINE else min(n, work.concurrency)
        times = [0.0] * first
    pending = deque(_Seq(a, prompts[i], outputs[i]) for i, a in enumerate(times))
    issued = len(times)  # closed loop: requests sent so far
    waiting: deque[_Seq] = deque()
    running: list[_Seq] = []
    free = kv_pages
    now = busy = energy = 0.0
    done: list[RequestTimes] = []
    iterations = preemptions = peak = 0
    while len(done) < n:
        while pending and pending[0].arrival <= now:
            waiting.append(pending.popleft())
        if not running and not waiting:
            now = pending[0].arrival
            continue
        if iterations > MAX_ITERATIONS:
            raise RuntimeError(f"serving simulation made no progress after {MAX_ITERATIONS} iterations")
        if fast and (k := _steady_steps(running, waiting, free, sc)) > 1:  # decode-only iterations, nothing changes but
            r = len(running)  # the contexts: run them without scheduling each (the same schedule, faster)
            ctx = sum(s.cached for s in running)
            steps = 0
            while steps < k and not (pending and pending[0].arrival <= now and not waiting):
                steps += 1
                cost = model.iteration(Batch(decode_seqs=r, decode_context=ctx + steps * r, sampled=r))
                now += cost.seconds
                busy += cost.seconds
                energy += cost.energy_j
            iterations += steps
            for s in running:
                s.cached += steps
                s.generated += steps
                grown = -(-s.cached // page)
                free -= grown - s.pages
                s.pages = grown
            if any(s.generated >= s.output for s in running):
                for s in running:
                    if s.generated >= s.output:
                        free += s.pages
                        done.append(RequestTimes(s.arrival, s.first, now, s.prompt, s.output))
                        if work.arrivals is Arrivals.CONCURRENCY and issued < n:
                            pending.append(_Seq(now, prompts[issued], outputs[issued]))
                            issued += 1
                running = [s for s in running if s.generated < s.output]
            continue
        iterations += 1
        budget = sc.token_budget
        plan: list[tuple[_Seq, int]] = []
        preempted = False
        i = 0
        while i < len(running) and budget > 0:
            s = running[i]
            q = min(s.prompt + s.generated - s.cached, budget)
            need = -(-(s.cached + q) // page) - s.pages
            while need > free and running[-1] is not s:  # preempt the newest to make room
                v = running.pop()
                free += v.pages
                v.cached = v.pages = 0
                waiting.appendleft(v)
                preemptions += 1
                preempted = True
            if need > free:  # s is the newest itself and still does not fit: it waits
                running.pop()
                free += s.pages
                s.cached = s.pages = 0
                waiting.appendleft(s)
                preemptions += 1
                preempted = True
                break
            free -= need
            s.pages += need
            plan.append((s, q))
            budget -= q
            i += 1
        while waiting and not preempted and budget > 0 and len(running) < sc.max_seqs:
            s = waiting[0]
            q = min(s.prompt + s.generated - s.cached, budget)
            need = -(-q // page)
            if need > free:
                break
            waiting.popleft()
            running.append(s)
            free -= need
            s.pages = need
            plan.append((s, q))
            budget -= q
        peak = max(peak, len(running))
        chunks = [(q, s.cached + q) for s, q in plan]
        sampled = sum(1 for s, q in plan if s.cached + q == s.prompt + s.generated)
        cost = model.iteration(Batch.of(chunks, sampled))
        now += cost.seconds
        busy += cost.seconds
        energy += cost.energy_j
        finished = False
        for s, q in plan:
            s.cached += q
            if s.cached < s.prompt + s.generated:
                continue
            s.generated += 1
            if s.generated == 1:
                s.first = now
            if s.generated >= s.output:
                done.append(RequestTimes(s.arrival, s.first, now, s.prompt, s.output))
                free += s.pages
                finished = True
                if work.arrivals is Arrivals.CONCURRENCY and issued < n:  # the client sends its next request
                    pending.append(_Seq(now, prompts[issued], outputs[issued]))
                    issued += 1
        if finished:
            running = [s for s in running if s.generated < s.output]
    return SimResult(tuple(done), energy, iterations, preemptions, peak, busy)


def _steady_steps(running: list[_Seq], waiting: deque[_Seq], free: int, sc: Scheduler) -> int:
    """How many iterations from now are certain to be decode-only over exactly the running sequences: each
    decodes (its cache one token behind what it knows), none admits (no one waiting, the sequence cap
    reached, or the first waiting request's pages not free: free pages only shrink until one finishes),
    none finishes before the last of them, and the pages the steps take are free (no preemption). 0: an
    ordinary iteration must run. An arrival that could be admitted ends the run early (the caller)."""
    if not running or len(running) > sc.token_budget:
        return 0
    k = min(s.output - s.generated for s in running)
    if k < 2 or any(s.generated < 1 or s.cached != s.prompt + s.generated - 1 for s in running):
        return 0
    page = sc.page_tokens
    if waiting and len(running) < sc.max_seqs:
        w = waiting[0]
        if -(-(w.prompt + w.generated - w.cached) // page) <= free and len(running) < sc.token_budget:
            return 0
        # admission is blocked by pages (or budget) and stays so while the decodes take pages
    need = sum(-(-(s.cached + k) // page) - s.pages for s in running)
    return k if need <= free else 0
