"""On-chip residency between kernels (cost.residency): an LRU replay of the trace's dataflow."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from chipfit.cost import estimate
from chipfit.cost.estimate import (
    BW_EFFICIENCY_ASSUMED,
    Bound,
    OpCost,
    Pricer,
    Unit,
    _backlog_cap_s,
    _memory,
    compiled,
    writeback_s,
)
from chipfit.cost.residency import resident_reads, resident_reads_reference
from chipfit.hardware import get_device
from chipfit.hardware.stacks import get_stack
from chipfit.models import get_model
from chipfit.trace import Trace, trace
from chipfit.trace.records import Footprint, OpRecord


def _rec(i: int, reads: list[tuple[int, int, bool]], writes: list[tuple[int, int]]) -> OpRecord:
    """A record reading (id, bytes, is a parameter) and writing (id, bytes)."""
    return OpRecord(
        index=i, op="aten.add.Tensor", module="", module_type="", phase="forward", op_class="elementwise",
        input_shapes=(), input_dtypes=(), output_shapes=(), output_dtypes=(), flops=1, flops_source="chipfit",
        bytes_read=sum(s for _, s, _ in reads), bytes_written=sum(s for _, s in writes),
        param_bytes=sum(s for _, s, p in reads if p), reads=tuple(t for t, _, _ in reads),
        read_sizes=tuple(s for _, s, _ in reads), read_params=tuple(p for _, _, p in reads),
        writes=tuple(t for t, _ in writes), write_sizes=tuple(s for _, s in writes),
    )  # fmt: skip


def _trace(recs: list[OpRecord]) -> Trace:
    return Trace("synthetic", "inference", 1, 0, recs, Footprint(0, 0, 0, 0, 0, 0))


X, A, B, C, W = 1, 2, 3, 4, 5


def test_lru_hits_what_the_producer_left_and_evicts_the_least_recent_first() -> None:
    # capacity 100 bytes:
    # r0 reads X (10, cold: 0 hit), writes A (60): [X 10, A 60]
    # r1 reads A (60 hit), writes B (60): [X 10, A 60, B 60] = 130, evict X, then 20 of A: [A 40, B 60]
    # r2 reads A (40 hit) and B (60 hit), writes C (30): [A 60, B 60, C 30] = 150, A keeps 10
    # r3 reads X: evicted at r1, 0 hit
    tr = _trace([
        _rec(0, [(X, 10, False)], [(A, 60)]),
        _rec(1, [(A, 60, False)], [(B, 60)]),
        _rec(2, [(A, 60, False), (B, 60, False)], [(C, 30)]),
        _rec(3, [(X, 10, False)], [(A, 10)]),
    ])  # fmt: skip
    assert resident_reads(tr, 100) == pytest.approx([0, 60, 100, 0])
    assert resident_reads_reference(tr, 100) == pytest.approx([0, 60, 100, 0])


def test_streamed_weights_evict_activations_but_never_count_as_hits() -> None:
    # capacity 100: r0 writes A (60); r1 reads the weight W (80) and writes B (60): [A 60, W 80, B 60] = 200,
    # A goes, W keeps 40; r2 reads A (gone) and W (a parameter: priced as weights, never as a hit)
    tr = _trace([
        _rec(0, [(X, 0, False)], [(A, 60)]),
        _rec(1, [(W, 80, True)], [(B, 60)]),
        _rec(2, [(A, 60, False), (W, 80, True)], [(C, 10)]),
    ])  # fmt: skip
    assert resident_reads(tr, 100) == [0, 0, 0]


def test_an_in_place_op_reads_and_writes_one_tensor_once() -> None:
    # capacity 100: A (60) written, then updated in place twice; each update hits all 60 bytes
    tr = _trace([
        _rec(0, [(X, 0, False)], [(A, 60)]),
        _rec(1, [(A, 60, False)], [(A, 60)]),
        _rec(2, [(A, 60, False)], [(A, 60)]),
    ])  # fmt: skip
    assert resident_reads(tr, 100) == [0, 60, 60]


def test_the_traffic_scale_shrinks_tensors_before_they_meet_the_capacity() -> None:
    # at INT8 (a quarter of the traced FP32 bytes) A is 30 of 100 bytes and survives B (30); at FP32 it does not
    tr = _trace([
        _rec(0, [(X, 0, False)], [(A, 120)]),
        _rec(1, [(X, 0, False)], [(B, 120)]),
        _rec(2, [(A, 120, False)], [(C, 4)]),
    ])  # fmt: skip
    assert resident_reads(tr, 100, 0.25) == [0, 0, 30]
    assert resident_reads(tr, 100, 1.0) == [0, 0, 0]


def _resnet(batch: int) -> Trace:
    spec = get_model("resnet50")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(batch)
    return trace(model, list(inputs))


@pytest.mark.parametrize(("model", "cap"), [("resnet50", 48e6), ("resnet50", 6e6), ("bert-base", 50e6)])
def test_the_fast_lru_equals_the_list_oracle_on_compiled_traces(model: str, cap: float) -> None:
    if model == "resnet50":
        tr = _resnet(8)
    else:
        spec = get_model(model)
        tr = trace(spec.build(), list(spec.example_inputs(4, seq_len=128)))
    ctr = compiled(tr, get_stack("tensorrt"))
    fast = resident_reads(ctr, cap, 0.25)
    assert fast == pytest.approx(resident_reads_reference(ctr, cap, 0.25), rel=1e-9, abs=1e-6)
    assert 0 < sum(fast) < sum(r.bytes_read - r.param_bytes for r in ctr.records) * 0.25


def test_a_read_that_hits_costs_on_chip_bandwidth_and_the_rest_main_memory() -> None:
    dev = get_device("l40s")  # 96 MiB L2 at 2.6 TB/s, 864 GB/s GDDR6 (bandwidths catalogued, not measured)
    rec = _rec(0, [(A, 100_000_000, False)], [(B, 50_000_000)])  # 150 MB: no fit on chip
    dram, l2 = 864e9 * BW_EFFICIENCY_ASSUMED, 2.6e12 * BW_EFFICIENCY_ASSUMED
    t = _memory(dev, rec, 1.0, 0.0, resident=40e6)
    # 40 MB of A from L2, its other 60 MB and the 50 MB written from GDDR6
    assert t.seconds == pytest.approx(110e6 / dram + 40e6 / l2)
    assert t.main_s == pytest.approx(110e6 / dram)
    assert (t.write_bytes_per_s, t.writeback_s) == (pytest.approx(dram), 0.0)
    assert _memory(dev, rec, 1.0, 0.0, resident=1e12)[0] == pytest.approx(50e6 / dram + 100e6 / l2)  # capped at reads
    assert _memory(dev, rec, 1.0, 0.0)[0] == pytest.approx(150e6 / dram)


def test_a_gather_reads_its_rows_and_no_residency_credit_goes_negative() -> None:
    """An embedding's record counts the whole table as its parameters but reads only its rows, so its
    activation reads are 'negative': with no resident bytes (eager) the price must stay table + activations
    net, exactly as before residency existed, and a resident credit can only lower it, never raise it."""
    import dataclasses

    dev = get_device("l40s")
    dram = 864e9 * BW_EFFICIENCY_ASSUMED
    rec = dataclasses.replace(
        _rec(0, [(W, 100_000_000, True)], [(B, 100_000_000)]), param_bytes=400_000_000
    )  # a 400 MB table, 100 MB of rows gathered, 100 MB written
    net = 400e6 + (200e6 - 400e6)  # weights from main memory, activations net of the table
    for resident in (0.0, 50e6):
        t = _memory(dev, rec, 1.0, 1e12, resident=resident)
        assert t.seconds == pytest.approx(net / dram)
        assert t.main_s <= t.seconds


def test_a_compiled_kernel_writes_its_output_to_l2_and_defers_the_write_back() -> None:
    dev = get_device("l40s")
    rec = _rec(0, [(A, 100_000_000, False)], [(B, 50_000_000)])
    dram, l2 = 864e9 * BW_EFFICIENCY_ASSUMED, 2.6e12 * BW_EFFICIENCY_ASSUMED
    t = _memory(dev, rec, 1.0, 0.0, resident=40e6, defer=True)
    # reads as above; the 50 MB output lands in L2 (write-back caching) and reaches GDDR6 later
    assert t.seconds == pytest.approx(60e6 / dram + 40e6 / l2 + 50e6 / l2)
    assert t.main_s == pytest.approx(60e6 / dram)
    assert t.write_bytes_per_s == pytest.approx(l2)
    assert t.writeback_s == pytest.approx(50e6 / dram)
    big = _rec(0, [(A, 10_000_000, False)], [(B, 200_000_000)])  # an output larger than the L2 goes straight out
    assert _memory(dev, big, 1.0, 0.0, defer=True).writeback_s == 0.0


def _cost_row(time_s: float, main_s: float, writeback_s: float) -> OpCost:
    return OpCost(
        index=0, op="k", module="", op_class="conv", phase="forward", unit=Unit.MATRIX, time_s=time_s,
        compute_s=time_s, memory_s=main_s, overhead_s=0.0, transfer_s=0.0, bound=Bound.COMPUTE, energy_j=0.0,
        bytes=0.0, flops=0, utilization=0.0, fallback=False, main_memory_s=main_s, writeback_s=writeback_s,
    )  # fmt: skip


def test_write_backs_drain_while_main_memory_idles_and_charge_the_rest() -> None:
    # two kernels: 10 us with 4 us of main memory (6 idle), 10 us with 10 us of it (0 idle); the first's
    # 5 us of write-back fits its own 6 idle; the second's 4 us finds no idle after it (the first's idle
    # came before that write: it cannot absorb it) and is charged whole
    assert writeback_s([_cost_row(10e-6, 4e-6, 5e-6), _cost_row(10e-6, 10e-6, 0.0)]) == 0.0
    assert writeback_s([_cost_row(10e-6, 4e-6, 5e-6), _cost_row(10e-6, 10e-6, 4e-6)]) == pytest.approx(4e-6)
    # the order matters: the same two kernels the other way round drain the 4 us in the idle 6
    assert writeback_s([_cost_row(10e-6, 10e-6, 4e-6), _cost_row(10e-6, 4e-6, 5e-6)]) == pytest.approx(3e-6)
    # the backlog never outgrows the on-chip memory: past its capacity (here 6 us of writes) a write-back
    # is written out at once and charged, even when idle time follows
    busy = [_cost_row(10e-6, 10e-6, 4e-6)] * 3 + [_cost_row(100e-6, 0.0, 0.0)]
    assert writeback_s(busy) == 0.0
    assert writeback_s(busy, backlog_cap_s=6e-6) == pytest.approx(6e-6)


def test_a_memory_bound_compiled_step_pays_its_write_backs_as_a_row() -> None:
    """Two streaming kernels: each output (64 MB at BF16) fits the L2, none fits with its input, so their
    write-backs find too little idle main memory and the step pays the rest as a 'main-memory write-back' row
    of bound memory; the step is never faster than its main-memory bytes allow (64 MB read, 128 MB written)."""

    class Stream(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(x) * 2.0
            return torch.sigmoid(y.sum(dim=0, keepdim=True) + y)

    with FakeTensorMode(allow_non_fake_inputs=True):
        tr = trace(Stream(), [torch.empty(64, 512, 1024)])  # 128 MB in FP32, 64 MB at BF16
    e = estimate(tr, "l40s", "bf16", execution="compiled")
    late = [r for r in e.rows if r.op_class == "write-back"]
    assert len(late) == 1 and late[0].bound is Bound.MEMORY
    assert late[0].time_s == pytest.approx(writeback_s(list(e.rows[:-1]), _backlog_cap_s(get_device("l40s"))))
    assert late[0].memory_s == late[0].time_s and late[0].overhead_s == 0.0  # memory work, not overhead
    assert late[0].time_s > 0
    assert e.latency_s >= 192e6 / (864e9 * BW_EFFICIENCY_ASSUMED)


def test_compiled_resnet50_on_l40s_reads_a_block_s_input_from_l2(monkeypatch: pytest.MonkeyPatch) -> None:
    """At batch 64 INT8 a bottleneck's 1x1 expansion with its residual add touches 116 MB, more than the 96 MiB
    L2, but its 12.8 MB input was written by the kernel just before: residency makes the step faster."""
    tr = _resnet(64)
    with_l2 = estimate(tr, "l40s", "int8")
    monkeypatch.setattr(Pricer, "resident", lambda self, t: [0.0] * len(t.records))
    without = estimate(tr, "l40s", "int8")
    assert with_l2.latency_s < without.latency_s
    row = next(r for r in with_l2.rows if r.module == "layer1.1.conv3")
    bare = next(r for r in without.rows if r.module == "layer1.1.conv3")
    assert row.memory_s < bare.memory_s


def test_repeated_layers_stay_twins() -> None:
    """Residency is rounded to a thousandth of an op's reads, so the blocks of a stack still price as one
    op each (a 70B decoder's 80 layers must not cost 80 pricings). BERT-base at batch 32 x 512 tokens, INT8:
    a 4x768 FFN activation is 50 MB, so a third of the kernels overflow the H100's 50 MB L2 and read part
    of their input from it."""
    spec = get_model("bert-base")
    with FakeTensorMode(allow_non_fake_inputs=True):
        tr = trace(spec.build(), list(spec.example_inputs(32, seq_len=512)))
    ctr = compiled(tr, get_stack("tensorrt"))
    hits = Pricer.of("h100-sxm", "int8", get_stack("tensorrt"), tr.footprint.params_bytes / 4).resident(ctr)
    overflowing = [h for h, r in zip(hits, ctr.records, strict=True) if r.bytes / 4 > 50e6]
    assert len(overflowing) >= len(ctr.records) // 4 and all(overflowing)
    reps, where = ctr.distinct_ops()
    assert len({(pos, h) for pos, h in zip(where, hits, strict=True)}) == len(reps)
