"""The serving simulator against closed forms (a constant-cost engine), its fast path against the
iteration-by-iteration reference, and its errors."""

from __future__ import annotations

import pytest

from chipfit.errors import InputError
from chipfit.serve import get_llm
from chipfit.serve.sim import Arrivals, Lengths, Scheduler, Shape, Workload, percentile, simulate
from chipfit.serve.step import Batch, Engine, IterationCost, Split

TAU = 0.01  # seconds per iteration


class Constant:
    """An engine whose every iteration takes TAU; it records the batches it ran."""

    def __init__(self) -> None:
        self.batches: list[Batch] = []

    def iteration(self, b: Batch) -> IterationCost:
        self.batches.append(b)
        return IterationCost(TAU, 1.0, TAU, 0.0)


def work(n: int, i: int, o: int, **kw: object) -> Workload:
    return Workload(Lengths.parse(str(i)), Lengths.parse(str(o)), n, **kw)  # type: ignore[arg-type]


def test_offline_batch_that_fits_one_budget() -> None:
    """N prompts fit one iteration's budget: one prefill iteration gives every first token, then O - 1
    decodes: makespan O tau, TTFT tau, TPOT tau, N / tau tokens/s."""
    n, i, o = 20, 100, 50
    eng = Constant()
    r = simulate(eng, work(n, i, o), kv_pages=10_000)
    assert r.iterations == o
    assert r.makespan_s == pytest.approx(o * TAU)
    assert r.ttft_s(50) == r.ttft_s(99) == pytest.approx(TAU)
    assert r.tpot_s(50) == pytest.approx(TAU) and r.tpot_s(99) == pytest.approx(TAU)
    assert r.output_tokens_per_s == pytest.approx(n / TAU)
    assert r.energy_j == pytest.approx(o)
    first, second = eng.batches[0], eng.batches[1]
    assert (first.prefill_seqs, first.prefill_tokens, first.decode_seqs, first.sampled) == (n, n * i, 0, n)
    # the second iteration decodes every sequence over its prompt and its first token
    assert (second.decode_seqs, second.decode_context, second.prefill_tokens) == (n, n * (i + 1), 0)


def test_one_sequence_at_a_time() -> None:
    """max_seqs 1: request j starts when j - 1 ends; first token at (j O + 1) tau, done at (j + 1) O tau."""
    n, o = 5, 8
    r = simulate(Constant(), work(n, 300, o), 10_000, Scheduler(max_seqs=1))
    for j, q in enumerate(sorted(r.requests, key=lambda q: q.finish_s)):
        assert q.first_token_s == pytest.approx((j * o + 1) * TAU)
        assert q.finish_s == pytest.approx((j + 1) * o * TAU)
    assert r.latency_mean_s == pytest.approx(sum((j + 1) * o * TAU for j in range(n)) / n)


def test_chunked_prefill_splits_a_long_prompt() -> None:
    """A 10,000-token prompt with a 4,096-token budget: chunks of 4,096, 4,096 and 1,808; the first
    token ends the third iteration."""
    eng = Constant()
    r = simulate(eng, work(1, 10_000, 4), 10_000, Scheduler(token_budget=4096))
    assert [b.prefill_tokens for b in eng.batches[:3]] == [4096, 4096, 1808]
    assert [b.sampled for b in eng.batches[:3]] == [0, 0, 1]
    assert r.ttft_s(50) == pytest.approx(3 * TAU) and r.iterations == 3 + 3


def test_closed_loop_and_sparse_poisson_arrivals_see_an_idle_engine() -> None:
    o = 10
    one = simulate(Constant(), work(6, 200, o, arrivals=Arrivals.CONCURRENCY, concurrency=1), 10_000)
    assert all(q.ttft_s == pytest.approx(TAU) and q.latency_s == pytest.approx(o * TAU) for q in one.requests)
    assert one.output_tokens_per_s == pytest.approx(1 / TAU)  # one token an iteration, back to back
    # one request every 100 s on average, each served in 0.1 s: none waits for another
    sparse = simulate(Constant(), work(30, 200, o, arrivals=Arrivals.RATE, rate_per_s=0.01, seed=3), 10_000)
    assert all(q.ttft_s == pytest.approx(TAU) and q.latency_s == pytest.approx(o * TAU) for q in sparse.requests)
    assert sparse.busy_s == pytest.approx(30 * o * TAU)
    again = simulate(Constant(), work(30, 200, o, arrivals=Arrivals.RATE, rate_per_s=0.01, seed=3), 10_000)
    other = simulate(Constant(), work(30, 200, o, arrivals=Arrivals.RATE, rate_per_s=0.01, seed=4), 10_000)
    assert again.requests == sparse.requests and other.requests != sparse.requests


def test_a_full_cache_preempts_and_recomputes() -> None:
    """Three 64 + 64-token sequences (8 pages each at full length) in 20 pages: all three start, the newest
    is preempted when the cache fills, and recomputed after; every token is still produced."""
    r = simulate(Constant(), work(3, 64, 64), kv_pages=20)
    assert r.preemptions >= 1 and len(r.requests) == 3 and r.output_tokens == 3 * 64
    assert r.peak_running == 3
    slow = max(r.requests, key=lambda q: q.finish_s)
    assert slow.finish_s > 64 * TAU  # it waited for a page


@pytest.mark.parametrize(
    "w",
    [
        Workload(Lengths.parse("uniform:200:900"), Lengths.parse("normal:300:120"), 120, seed=1),
        Workload(Lengths.parse("512"), Lengths.parse("256"), 80, Arrivals.RATE, rate_per_s=40.0, seed=2),
        Workload(Lengths.parse("2000"), Lengths.parse("uniform:50:400"), 60, Arrivals.CONCURRENCY, concurrency=24),
    ],
    ids=["offline", "poisson", "closed-loop"],
)
def test_fast_path_matches_the_reference(w: Workload) -> None:
    eng = Engine.build(get_llm("llama-2-7b"), "h100-sxm", "bf16", "bf16", Split())
    pages = 3000  # tight enough to preempt on the offline run
    fast = simulate(eng, w, pages, Scheduler(max_seqs=64))
    ref = simulate(eng, w, pages, Scheduler(max_seqs=64), fast=False)
    assert fast.iterations == ref.iterations and fast.preemptions == ref.preemptions
    for a, b in zip(fast.requests, ref.requests, strict=True):
        assert (a.input_tokens, a.output_tokens) == (b.input_tokens, b.output_tokens)
        assert a.finish_s == pytest.approx(b.finish_s, rel=1e-9)
        assert a.first_token_s == pytest.approx(b.first_token_s, rel=1e-9)
    assert fast.energy_j == pytest.approx(ref.energy_j, rel=1e-9)


def test_lengths_draws_stay_in_range() -> None:
    import random

    u = Lengths.parse("uniform:10:20")
    assert u.shape is Shape.UNIFORM and u.mean == 15
    assert set(u.draw(random.Random(0), 500)) == set(range(10, 21))
    nrm = Lengths.parse("normal:100:50").draw(random.Random(0), 2000)
    assert min(nrm) >= 1 and max(nrm) <= 300
    assert sum(nrm) / len(nrm) == pytest.approx(100, rel=0.05)
    assert percentile([1, 2, 3, 4], 50) == 2.5 and percentile([5.0], 99) == 5.0


def test_bad_workloads_are_named() -> None:
    with pytest.raises(InputError, match="give N, uniform:LOW:HIGH or normal:MEAN:STD"):
        Lengths.parse("lognormal:1:2")
    with pytest.raises(InputError, match="lengths are >= 1"):
        Lengths.parse("uniform:50:10")
    with pytest.raises(InputError, match="requests must be >= 1"):
        work(0, 10, 10)
    with pytest.raises(InputError, match="arrival rate must be > 0"):
        work(5, 10, 10, arrivals=Arrivals.RATE)
    with pytest.raises(InputError, match="needs 2 KV pages; the cache holds 1"):
        simulate(Constant(), work(1, 20, 5), kv_pages=1)
