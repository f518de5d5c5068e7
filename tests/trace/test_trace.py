"""The tracer: hand-derived small cases, torch's FLOP counter on every built-in model, footprints, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from chipfit.models import MODELS, get_model
from chipfit.models.transformer import Attention
from chipfit.trace import Trace, TraceError, trace


def _only(tr: Trace, op: str) -> list:  # type: ignore[type-arg]
    return [r for r in tr.records if r.op == op]


def test_linear_by_hand() -> None:
    tr = trace(nn.Linear(64, 32), (torch.randn(8, 64),))
    (r,) = _only(tr, "aten.addmm.default")
    assert r.flops == 2 * 8 * 32 * 64  # 2*M*N*K = 32768
    assert r.gemm == (8, 32, 64, 1)
    assert r.bytes_read == (8 * 64 + 32 * 64 + 32) * 4  # x, W, b read once = 10368
    assert r.bytes_written == 8 * 32 * 4  # 1024
    assert r.module == "" and r.op_class == "matmul" and r.flops_source == "torch"
    views = [x for x in tr.records if x.op_class == "view"]
    assert views and all(x.bytes == 0 for x in views)  # W.t() is a view: no bytes


def test_conv_by_hand() -> None:
    tr = trace(nn.Conv2d(3, 8, 3, padding=1), (torch.randn(2, 3, 16, 16),))
    (r,) = [x for x in tr.records if x.op_class == "conv"]
    assert r.flops == 2 * 2 * 8 * 16 * 16 * 3 * 3 * 3  # 2*N*Cout*Hout*Wout*Cin*kh*kw = 221184
    assert r.gemm == (2 * 16 * 16, 8, 3 * 3 * 3, 1)  # implicit GEMM: M = N*H*W, N = Cout, K = Cin*kh*kw


def test_attention_block_by_hand() -> None:
    b, s, d, h = 2, 16, 64, 4
    tr = trace(Attention(d, h), (torch.randn(b, s, d),))
    core = [r for r in tr.records if r.op_class == "matmul" and r.gemm and r.gemm[3] > 1]
    assert len(core) == 2  # QK^T and PV as batched matmuls
    assert all(r.flops == 2 * b * h * s * s * (d // h) for r in core)  # 2*B*H*S*S*hd = 65536 each
    proj = [r for r in tr.records if r.op_class == "matmul" and r.gemm and r.gemm[3] == 1]
    assert sum(r.flops for r in proj) == 4 * 2 * (b * s) * d * d  # q, k, v, o projections = 1048576
    assert {r.module for r in proj} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert any(r.op_class == "softmax" for r in tr.records)


def test_training_is_about_three_forwards_and_has_every_phase() -> None:
    spec = get_model("mlp")
    tr = trace(spec.build(), spec.example_inputs(16), mode="training", optimizer="adam")
    fwd, bwd = tr.phase_flops("forward"), tr.phase_flops("backward")
    # backward is dW and dX per layer (the first layer's input needs no dX): between 1x and 2x forward
    assert 1.5 * fwd < bwd <= 2 * fwd
    assert (
        2.5
        < tr.flops_torch / sum(r.flops for r in tr.records if r.phase == "forward" and r.flops_source == "torch")
        <= 3
    )
    assert {r.phase for r in tr.records} == {"forward", "backward", "optimizer"}
    assert any(r.module.startswith("net.") and r.phase == "backward" for r in tr.records)  # backward attributed


def test_footprint() -> None:
    spec = get_model("mlp")
    params = sum(p.numel() for p in spec.build().parameters()) * 4
    adam = trace(spec.build(), spec.example_inputs(16), mode="training", optimizer="adam").footprint
    sgd = trace(spec.build(), spec.example_inputs(16), mode="training", optimizer="sgd").footprint
    inf = trace(spec.build(), spec.example_inputs(16)).footprint
    assert adam.params_bytes == adam.grads_bytes == params
    assert adam.optimizer_bytes == 2 * params and sgd.optimizer_bytes == 0
    assert inf.grads_bytes == 0 and inf.activations_peak_bytes > 0
    # training keeps activations alive for backward
    assert adam.activations_peak_bytes > inf.activations_peak_bytes
    assert adam.inputs_bytes == 16 * 64 * 4


def test_kv_cache_footprint() -> None:
    spec = get_model("decoder-125m")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(2, 100, decode=True)
    fp = trace(model, inputs).footprint
    # 2 (K, V) * 12 layers * batch 2 * 4 KV heads * (100 + 1) positions * 64 head dim * 4 bytes
    assert fp.kv_cache_bytes == 2 * 12 * 2 * 4 * 101 * 64 * 4
    assert fp.inputs_bytes == 2 * 8  # the tokens only: the cache is counted once, as the KV cache


def test_decode_reads_the_cache_once_and_updates_it_in_place() -> None:
    """Issue 18: a decode step moved the whole cache twice (torch.cat copies) and counted it twice."""
    spec = get_model("decoder-125m")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(4, 2048, decode=True)
    tr = trace(model, inputs)
    kv, params = tr.footprint.kv_cache_bytes, tr.footprint.params_bytes
    assert sum(r.bytes for r in tr.records if r.op in ("aten.cat.default", "aten.copy_.default")) < 0.01 * kv
    # the attention matmuls read the cache once (plus their small scores); before, the concatenation
    # copied it (read past, write past + new) before reading it again: over 3x the cache
    attn = sum(r.bytes - r.param_bytes for r in tr.records if r.op_class == "matmul" and r.module.endswith("attn"))
    assert kv < attn < 1.05 * kv
    table = 32000 * 768 * 4  # the embedding table is only gathered from: its parameter bytes are not all read
    assert tr.bytes - params + table < 1.25 * kv  # the rest: eager softmax/scale traffic, activations


def test_in_place_decode_gives_the_prefill_answer() -> None:
    torch.manual_seed(0)
    model = get_model("decoder-125m").build().eval()
    c = model.config
    tokens = torch.randint(0, c.vocab, (2, 6))
    with torch.no_grad():
        full = model(tokens)[:, -1]
        cache = torch.zeros(2, c.layers, 2, c.kv_heads, 6, c.head_dim)
        for t in range(6):  # one token at a time, each step writing its slot of the cache in place
            step = model(tokens[:, t : t + 1], cache[:, :, :, :, : t + 1])
    assert torch.allclose(step[:, -1], full, atol=1e-4)


def test_a_trace_reads_a_broadcast_tensor_once() -> None:
    x = torch.randn(4, 1, 64)
    w = torch.randn(64, 32)

    class M(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.bmm(x, w.expand(4, 64, 32))

    rec = trace(M(), (x,)).records[-1]
    assert rec.op == "aten.bmm.default" and rec.bytes == (4 * 64 + 64 * 32 + 4 * 32) * 4


@pytest.mark.parametrize("mode", ["inference", "training"])
@pytest.mark.parametrize("name", list(MODELS))
def test_flops_equal_torch_flop_counter(name: str, mode: str) -> None:
    spec = MODELS[name]
    seq = 8 if spec.default_seq_len else None
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(2, seq)
    tr = trace(model, inputs, mode=mode, optimizer=None)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model2, inputs2 = spec.build(), spec.example_inputs(2, seq)
        with FlopCounterMode(display=False) as counter:
            out = model2(*inputs2)
            if mode == "training":
                first = out[0] if isinstance(out, tuple) else out
                first.float().pow(2).mean().backward()
    assert tr.flops_torch == counter.get_total_flops()
    assert tr.flops_torch > 0 and not tr.uncosted()
    assert spec.published_params is None or tr.param_count == spec.published_params


def test_json_round_trip(tmp_path: Path) -> None:
    spec = get_model("digits-cnn")
    tr = trace(spec.build(), spec.example_inputs(4), mode="training")
    path = tr.save(tmp_path / "t.json")
    back = Trace.load(path)
    assert back.records == tr.records and back.footprint == tr.footprint
    assert json.loads(path.read_text())["flops"] == tr.flops


def test_summaries_add_up() -> None:
    spec = get_model("resnet50")
    with FakeTensorMode(allow_non_fake_inputs=True):
        tr = trace(spec.build(), spec.example_inputs(1))
    assert sum(v["flops"] for v in tr.by_class().values()) == tr.flops
    assert sum(v["flops"] for v in tr.by_module(1).values()) == tr.flops
    tree = tr.module_tree()
    assert tree[""]["flops"] == tr.flops
    assert tree["layer1"]["flops"] == sum(
        v["flops"] for k, v in tree.items() if k.count(".") == 1 and k.startswith("layer1.")
    )
    assert tr.top(3)[0].flops >= tr.top(3)[-1].flops


def test_wrong_input_shape_names_module_and_op() -> None:
    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(TraceError, match=r"op aten\.addmm\.default in module '2' \(Linear\)"):
        trace(model, (torch.randn(3, 8),))


def test_data_dependent_op_names_module_and_op() -> None:
    class Sparse(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x).nonzero()

    with pytest.raises(TraceError, match=r"op aten\.nonzero\.default in .*cannot run on fake tensors"):
        trace(Sparse(), (torch.randn(2, 4),))


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="unknown mode 'train'; known: inference, training"):
        trace(nn.Linear(2, 2), (torch.randn(1, 2),), mode="train")
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        trace(nn.Linear(2, 2), (torch.randn(1, 2),), mode="training", optimizer="lamb")
    with pytest.raises(TypeError, match=r"must be a torch\.nn\.Module"):
        trace(lambda x: x, (torch.randn(1, 2),))  # type: ignore[arg-type]


def test_user_module_is_not_modified() -> None:
    model = nn.Linear(4, 2)
    before = model.weight.detach().clone()
    trace(model, (torch.randn(3, 4),), mode="training", optimizer="adam")
    assert torch.equal(model.weight, before) and model.weight.grad is None


class _RunningLogSumExp(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logcumsumexp(x, -1) + x  # no rule, no torch formula, no decomposition


def test_a_new_aten_op_registered_in_one_place_is_classified_costed_and_shown(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from chipfit.cli import main
    from chipfit.cost import estimate
    from chipfit.trace.classify import OP_RULES, register_op
    from chipfit.vocab import OpClass

    x = torch.randn(4, 32)
    before = trace(_RunningLogSumExp(), [x])
    (rec,) = [r for r in before.records if r.op == "aten.logcumsumexp.default"]
    assert rec.op_class == "other" and rec.flops_source == "none" and rec in before.uncosted()
    try:
        # a running log-sum-exp: exp, add, log per element; 4 * 4*32 = 512 (with the max shift)
        register_op(
            "logcumsumexp", op_class=OpClass.REDUCTION, flops=lambda _n, args, ins, _o: 4 * ins[0][0] * ins[0][1]
        )
        with pytest.raises(ValueError, match="'logcumsumexp' is already registered as reduction"):
            register_op("logcumsumexp", op_class=OpClass.ELEMENTWISE)
        after = trace(_RunningLogSumExp(), [x])
        (rec,) = [r for r in after.records if r.op == "aten.logcumsumexp.default"]
        assert (rec.op_class, rec.flops, rec.flops_source) == ("reduction", 512, "chipfit")
        assert rec not in after.uncosted()
        row = estimate(after, "h100-sxm", "fp32").rows[rec.index]
        assert row.op_class == "reduction" and row.unit == "vector" and row.time_s > 0
        assert after.by_class()["reduction"]["flops"] >= 512  # the trace's summaries, which `chipfit trace` prints
        path = tmp_path / "logcumsumexp_model.py"
        path.write_text(
            "import torch\n\n\nclass M(torch.nn.Module):\n"
            "    def forward(self, x):\n"
            "        return torch.logcumsumexp(x, -1) + x\n\n\n"
            "def make():\n    return M()\n"
        )
        assert main(["trace", f"{path}:make", "--input-shape", "32", "--batch", "4", "--json"]) == 0
        shown = json.loads(capsys.readouterr().out)
        assert shown["by_class"]["reduction"]["flops"] >= 512
    finally:
        OP_RULES.pop("logcumsumexp", None)


def test_a_user_model_declares_its_cache_through_the_protocol() -> None:
    from chipfit.trace import KVCacheModel

    class Cached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(16, 16)

        def forward(self, x: torch.Tensor, cache: torch.Tensor) -> torch.Tensor:
            return self.proj(x) + cache.sum()

        def step_kv_cache_bytes(self, inputs: list[torch.Tensor]) -> int:
            return inputs[1].numel() * 4 + inputs[0].shape[0] * 16 * 4  # the cache plus one new position

    class Guessable(Cached):  # the old name and signature alone are no longer read
        step_kv_cache_bytes = None  # type: ignore[assignment]

        def kv_cache_bytes(self, batch: int, length: int) -> int:
            return 10**9

    x, cache = torch.randn(2, 16), torch.randn(2, 8, 16)
    assert isinstance(Cached(), KVCacheModel) and not isinstance(Guessable(), KVCacheModel)
    assert trace(Cached(), [x, cache]).footprint.kv_cache_bytes == 2 * 8 * 16 * 4 + 2 * 16 * 4  # = 1152
    assert trace(Guessable(), [x, cache]).footprint.kv_cache_bytes == 0


def test_an_op_without_a_rule_is_costed_through_its_decomposition() -> None:
    """Issue 17: ops chipfit has no rule for and torch no FLOP formula for run as torch's
    decomposition, so their pieces are classified and costed; ops without one stay listed as uncosted."""

    class M(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            g = torch.linspace(0, 1, x.shape[-1])
            return nn.functional.glu(torch.cat([x * g, x], -1), -1).cumprod(-1)

    tr = trace(M(), [torch.randn(4, 16)])
    assert not tr.uncosted()
    ops = {r.op for r in tr.records}
    assert not ops & {"aten.linspace.default", "aten.glu.default", "aten.cumprod.default"}  # decomposed
    assert "aten.sigmoid.default" in ops  # glu's gate
    assert tr.by_class()["elementwise"]["flops"] >= 4 * 16 * 2  # the gate and its product, at least

    class Sorts(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.logcumsumexp(x, -1)  # no rule, no formula, no decomposition

    unc = trace(Sorts(), [torch.randn(4, 16)]).uncosted()
    assert [r.op for r in unc] == ["aten.logcumsumexp.default"]


def _layout(out: object) -> list[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]]:
    ts = [t for t in (out if isinstance(out, tuple) else (out,)) if isinstance(t, torch.Tensor)]
    return [(tuple(t.shape), t.stride(), t.dtype) for t in ts]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("affine", [True, False])
def test_fast_outputs_lay_out_what_fake_tensor_mode_does(
    dtype: torch.dtype, fmt: torch.memory_format, affine: bool
) -> None:
    from chipfit.trace.capture import FAST_OUTPUTS

    with FakeTensorMode():
        x = torch.empty(4, 8, 5, 5, dtype=dtype).contiguous(memory_format=fmt)
        w, stats = (torch.empty(8) if affine else None), torch.empty(8)
        for func, fast in FAST_OUTPUTS.items():
            args = (x, w, w, stats, stats, False, 0.1, 1e-5)
            assert _layout(fast(args, {})) == _layout(func(*args))
            assert fast((x, w, w, stats, stats, True, 0.1, 1e-5), {}) is None  # training: the slow path


def test_the_fast_outputs_leave_the_trace_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    from chipfit.trace import capture

    layers = (nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))
    model = nn.Sequential(*layers).eval()
    x = torch.randn(2, 3, 9, 9)
    used = []  # how often each fast path answered (keeping its outputs alive would change the trace)

    def spy(fn: Any) -> Any:
        def wrapped(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            out = fn(args, kwargs)
            used.append(out is not None)
            return out

        return wrapped

    monkeypatch.setattr(capture, "FAST_OUTPUTS", {f: spy(fn) for f, fn in capture.FAST_OUTPUTS.items()})
    fast = trace(model, [x])
    assert used == [True, True]  # both batch norms took the fast path
    monkeypatch.setattr(capture, "FAST_OUTPUTS", {})
    slow = trace(model, [x])
    assert [r.op for r in fast.records].count("aten.native_batch_norm.default") == 2
    assert fast.records == slow.records and fast.footprint == slow.footprint
