"""Collectives priced by algorithm (alpha + bytes / beta per step) and scale-out that is never free
(issue 18, "More chips cost something")."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipfit.cost import estimate
from chipfit.cost.collectives import Algorithm, Collective, Fabric, collective_s, flat_collective_s
from chipfit.hardware import get_device, list_devices
from chipfit.hardware.device import Link, Source
from chipfit.models import get_model
from chipfit.plan import plan
from chipfit.plan.scaleout import StepParts, scale_out
from chipfit.trace import trace

SRC = Source("assumed", "a test link")


def _link(bw: float = 100e9, alpha: float = 5e-6, topology: str = "switch", domain: int = 8, hop: float = 0.0) -> Link:
    return Link(kind="nvlink", bandwidth_bytes_per_s=bw, topology=topology, source=SRC, latency_s=alpha,
                latency_source=SRC, hop_latency_s=hop, domain_chips=domain)  # fmt: skip


@pytest.mark.parametrize("n", [2, 3, 8, 64, 1000])
def test_ring_and_tree_follow_their_formulas(n: int) -> None:
    link, s = _link(), 1e8
    a, b = link.latency_s, link.bandwidth_bytes_per_s
    ring = 2 * (n - 1) * (a + s / n / b)
    tree = 2 * math.ceil(math.log2(n)) * a + 2 * s / b
    assert flat_collective_s(Collective.ALL_REDUCE, s, n, link, Algorithm.RING) == pytest.approx(ring)
    assert flat_collective_s(Collective.ALL_REDUCE, s, n, link, Algorithm.TREE) == pytest.approx(tree)
    assert flat_collective_s(Collective.ALL_REDUCE, s, n, link) == pytest.approx(min(ring, tree))
    for kind in (Collective.ALL_GATHER, Collective.REDUCE_SCATTER, Collective.ALL_TO_ALL):
        assert flat_collective_s(kind, s, n, link) == pytest.approx((n - 1) * (a + s / n / b))
    assert flat_collective_s(Collective.SEND_RECV, s, n, link) == pytest.approx(a + s / b)


def test_small_messages_cost_their_latency_large_ones_their_bandwidth() -> None:
    link = _link()
    tiny = flat_collective_s(Collective.ALL_REDUCE, 8, 8, link)
    assert tiny == pytest.approx(2 * 3 * link.latency_s, rel=1e-3)  # tree: 2 log2(8) steps of alpha
    huge = flat_collective_s(Collective.ALL_REDUCE, 1e10, 8, link)
    assert huge == pytest.approx(2 * 7 / 8 * 1e10 / link.bandwidth_bytes_per_s, rel=1e-3)  # ring bandwidth term


def test_beyond_the_domain_the_network_is_used_and_priced() -> None:
    fast, net = _link(bw=450e9, alpha=3e-6, domain=8), _link(bw=50e9, alpha=10e-6, domain=0)
    fab = Fabric(fast=fast, scale_out=net)
    inside = collective_s(Collective.ALL_REDUCE, 1e9, 8, fab)
    assert inside == pytest.approx(flat_collective_s(Collective.ALL_REDUCE, 1e9, 8, fast))
    beyond = collective_s(Collective.ALL_REDUCE, 1e9, 16, fab)
    # reduce-scatter and all-gather inside both domains, a 2-way all-reduce of 1/8 of the data across
    expect = 2 * flat_collective_s(Collective.REDUCE_SCATTER, 1e9, 8, fast) + flat_collective_s(
        Collective.ALL_REDUCE, 1e9 / 8, 2, net
    )
    assert beyond == pytest.approx(expect) and beyond > inside
    with pytest.raises(ValueError, match="exceed the 8-chip fast domain and the catalog has no scale-out network"):
        collective_s(Collective.ALL_REDUCE, 1e9, 16, Fabric(fast=fast))


def test_a_torus_tree_pays_its_hops() -> None:
    flat = _link(topology="torus-3d", domain=0, hop=0.0)
    hops = _link(topology="torus-3d", domain=0, hop=1e-6)
    n = 4096  # 16 x 16 x 16: diameter 24 hops, 12 tree levels: 2 hops per step
    assert flat_collective_s(Collective.ALL_REDUCE, 8, n, hops, Algorithm.TREE) == pytest.approx(
        flat_collective_s(Collective.ALL_REDUCE, 8, n, flat, Algorithm.TREE) + 2 * 12 * 1e-6
    )


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 200_000), st.floats(1.0, 1e11), st.sampled_from(list(Collective)))
def test_more_chips_never_make_a_collective_free(n: int, nbytes: float, kind: Collective) -> None:
    fab = Fabric(fast=_link(domain=8), scale_out=_link(bw=25e9, alpha=8e-6, domain=0))
    fast = fab.fast
    assert fast is not None
    t = collective_s(kind, nbytes, n, fab)
    assert t >= fast.latency_s  # at least one message's latency, however many chips
    assert t >= nbytes / (n * fab.link_for(n).bandwidth_bytes_per_s)  # and at least one share of the bytes


@pytest.mark.parametrize("dev", [d for d in list_devices() if d.interconnect or d.scale_out], ids=lambda d: d.name)
def test_every_catalog_link_has_a_sourced_latency(dev: object) -> None:
    for link in (dev.interconnect, dev.scale_out, dev.host_link):  # type: ignore[attr-defined]
        if link is not None:
            assert link.latency_s > 0 and link.latency_source.ref


def test_a_model_that_fits_one_chip_is_never_faster_on_100000() -> None:
    """The issue's case: `plan mlp --devices h100-sxm --chips 100000` put a 100,000-way tensor-parallel
    MLP on the front with 9 ns of communication."""
    p = plan(get_model("mlp").build(), get_model("mlp").example_inputs, devices=["h100-sxm"],
             precisions=["bf16"], batches=[1, 128], chips=[1, 8, 100_000], objective="latency")  # fmt: skip
    one = min(r.step_s for r in p.rows if r.chips == 1)
    for r in p.rows:
        if r.chips > 1 and r.strategy != "data":
            assert r.step_s > one, r.label()
            assert r.comm_s > 1e-6  # microseconds of latency, at least
    assert all(r.chips == 1 or r.strategy == "data" for r in p.front)


def test_more_chips_cost_energy() -> None:
    spec, dev = get_model("mlp"), get_device("h100-sxm")
    tr = trace(spec.build(), list(spec.example_inputs(64)))
    est = estimate(tr, dev, "bf16")
    parts = StepParts.of(est, tr, dev)
    one = scale_out(parts, None, "tensor", 1, dev, training=False, batch=64)
    eight = scale_out(parts, None, "tensor", 8, dev, training=False, batch=64)
    assert one.energy_j == pytest.approx(est.energy_j)
    assert eight.energy_j > one.energy_j  # eight chips idle through a step that is not 8x shorter


def test_the_plan_says_which_chip_counts_a_fabric_cannot_join() -> None:
    spec = get_model("mlp")
    p = plan(spec.build(), spec.example_inputs, devices=["h100-sxm", "t4", "l4", "inferentia2"], precisions=["fp16"],
             batches=[8], chips=[1, 2, 100_000], objective="latency", backend="serial")  # fmt: skip
    assert ("No tensor- or pipeline-parallel configurations on 2, 100000 chips (no chip-to-chip interconnect in "
            "the catalog): t4, l4.") in p.reasons  # fmt: skip
    assert any("exceed the 12-chip fast domain and the catalog has no scale-out network): inferentia2" in r
               for r in p.reasons)  # fmt: skip
    assert not [r for r in p.rows if r.device in ("t4", "l4") and r.strategy in ("tensor", "pipeline")]
