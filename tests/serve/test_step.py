"""One serving iteration: the per-layer decomposition against the tracer's compiled trace, and
hand-derived cases (a memory-bound decode, tensor-parallel all-reduce bytes, MoE routing, split errors)."""

from __future__ import annotations

import math

import pytest
import torch

from chipfit.cost.collectives import Collective, collective_s
from chipfit.cost.estimate import BW_EFFICIENCY_ASSUMED, compiled
from chipfit.errors import InputError
from chipfit.hardware import get_device
from chipfit.hardware.stacks import resolve_stack
from chipfit.models.transformer import Decoder, DecoderConfig
from chipfit.serve import LlmConfig, get_llm
from chipfit.serve.step import Batch, Engine, Split, kv_format
from chipfit.trace import trace
from chipfit.vocab import OpClass

SMALL = {"model_type": "llama", "hidden_size": 256, "num_hidden_layers": 1, "num_attention_heads": 8,
         "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000}  # fmt: skip


def _traced_decode(batch: int, past: int) -> list:
    """The compiled trace of chipfit's own Llama decoder (one layer) on one decode step."""
    torch.manual_seed(0)
    c = DecoderConfig(dim=256, layers=1, heads=8, kv_heads=2, ffn=512, vocab=1000)
    tokens = torch.zeros(batch, 1, dtype=torch.long)
    cache = torch.zeros(2, 1, batch, c.kv_heads, past + 1, c.head_dim)
    tr = trace(Decoder(c), (tokens, cache))
    return list(compiled(tr, resolve_stack(get_device("h100-sxm"), "compiled", "inference")).records)


def _by(records: list, cls: str, layer: bool) -> tuple[float, float]:
    """(FLOPs, weight bytes) of the records of one class, in layer 0 or outside it."""
    rs = [r for r in records if r.op_class == cls and r.module.startswith("layers.0") == layer]
    return sum(r.flops for r in rs), sum(r.param_bytes for r in rs)


@pytest.mark.parametrize(("batch", "past"), [(1, 15), (4, 63), (16, 255)])
def test_decomposition_matches_the_tracer(batch: int, past: int) -> None:
    recs = _traced_decode(batch, past)
    eng = Engine.build(LlmConfig.from_dict(SMALL, "small"), "h100-sxm", "bf16", "bf16", Split())
    b = Batch.of([(1, past + 1)] * batch)
    layer = eng.token_kernels(batch, moe=False) + eng.attention_kernels(b)
    head = eng.head_kernels(batch, batch)

    def ours(ks: list, cls: OpClass) -> tuple[float, float]:
        rs = [k for k in ks if k.op_class == cls]
        return sum(k.flops for k in rs), sum(k.param_bytes for k in rs)

    # GEMMs: the same FLOPs (the tracer's count the fused epilogue's few element-wise FLOPs too) and the
    # same weights, byte for byte (both count FP32 bytes; pricing scales them to the format)
    t_flops, t_weights = _by(recs, OpClass.MATMUL, True)
    e_flops, e_weights = ours(layer, OpClass.MATMUL)
    assert e_weights == t_weights
    assert e_flops == pytest.approx(t_flops, rel=0.01)
    # attention: 4 n d per query-key pair, against the traced fused kernel (which counts the softmax too)
    t_att, _ = _by(recs, OpClass.ATTENTION, True)
    e_att, _ = ours(layer, OpClass.ATTENTION)
    assert e_att == pytest.approx(t_att, rel=0.06)
    # the head: LM head GEMM FLOPs and weights, the embedding table's lookup not read whole
    t_head, t_head_w = _by(recs, OpClass.MATMUL, False)
    e_head, e_head_w = ours(head, OpClass.MATMUL)
    assert (e_head, e_head_w) == (t_head, t_head_w)
    # norms' weights: two in the layer, one final
    assert ours(layer, OpClass.NORMALIZATION)[1] == 2 * 256 * 4
    # the cache the attention reads: every position's K and V once (the trace's attention kernel reads it)
    kv_read = batch * (past + 1) * 2 * 2 * 32 * 2  # positions x (K, V) x kv heads x head_dim x BF16
    att = next(k for k in layer if k.op_class == OpClass.ATTENTION)
    assert att.bytes_read * eng.pricer.scale == pytest.approx(kv_read + batch * 2 * 8 * 32 * 2)


def test_a_memory_bound_decode_is_weights_and_cache_over_bandwidth() -> None:
    """Llama-2-7B, one sequence decoding at context 4,096 on an H100: every weight and the whole cache
    are read once; the step's time is those bytes over the achievable bandwidth, plus each kernel's launch
    and each matrix kernel's fixed latency."""
    cfg = get_llm("llama-2-7b")
    eng = Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split())
    dev = get_device("h100-sxm")
    ctx = 4096
    weights = 2 * (cfg.params - cfg.vocab_size * cfg.hidden_size)  # BF16; the embedding is a lookup
    cache = ctx * 2 * 32 * 32 * 128 * 2  # positions x (K, V) x layers x heads x head_dim x BF16
    bw = dev.main_memory.bandwidth_bytes_per_s * (
        1.0 if dev.main_memory.source.kind == "measured" else BW_EFFICIENCY_ASSUMED
    )
    floor = (weights + cache) / bw
    it = eng.iteration(Batch.of([(1, ctx)]))
    kernels, matrix_kernels = 32 * 7 + 4, 32 * 5 + 1  # per layer 2 norms, rotary; 4 GEMMs, attention
    fixed = kernels * eng.pricer.launch_s + eng.pricer.stack.step_launch_s
    fixed += matrix_kernels * dev.compute.kernel_latency_s  # a compiled GEMM kernel's fixed duration
    assert floor <= it.seconds <= (floor + fixed) * 1.03
    assert it.comm_s == 0
    # and FP8 weights halve the weights' share
    fp8 = Engine.build(cfg, "h100-sxm", "fp8", "bf16", Split()).iteration(Batch.of([(1, ctx)]))
    assert fp8.seconds == pytest.approx(it.seconds - weights / 2 / bw, rel=0.03)


def test_tensor_parallel_all_reduces_by_hand() -> None:
    """TP 8 on Llama-2-70B: two all-reduces of T x hidden BF16 activations per layer, and the logits'
    all-gather, each priced by the link model; TP 1 has none."""
    cfg = get_llm("llama-2-70b")
    t = 64
    eng = Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split(tp=8))
    secs, sent = eng._collectives_s(t, sampled=t)
    act = t * 8192 * 2  # bytes of one all-reduce's message
    logits = t * 32000 * 4
    fab = eng.fabric
    want = 2 * 80 * collective_s(Collective.ALL_REDUCE, act, 8, fab)
    want += collective_s(Collective.ALL_GATHER, logits, 8, fab)
    assert secs == pytest.approx(want)
    # a ring all-reduce sends 2 (n - 1) / n of the message from each chip
    assert sent == pytest.approx(2 * 80 * 2 * act * 7 / 8 + logits * 7 / 8)
    assert Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split())._collectives_s(t, t) == (0.0, 0.0)
    it = eng.iteration(Batch.of([(1, 2048)] * t))
    assert it.comm_s == pytest.approx(secs)
    # a TP rank's weights are an eighth of the model
    assert eng.params_per_chip == pytest.approx(cfg.params / 8)


def test_moe_reads_only_the_experts_tokens_are_routed_to() -> None:
    cfg = get_llm("mixtral-8x7b")
    eng = Engine.build(cfg, "h100-sxm", "fp8", "bf16", Split(tp=2))
    one = [k for k in eng.token_kernels(1, moe=True) if k.op.startswith("experts.")]
    many = [k for k in eng.token_kernels(256, moe=True) if k.op.startswith("experts.")]
    w = math.ceil(cfg.expert_width / 2)
    expert = 3 * cfg.hidden_size * w * 4  # one expert's TP share, FP32 bytes
    assert sum(k.param_bytes for k in one) == 2 * expert  # one token: its top-2 experts
    assert sum(k.param_bytes for k in many) == 8 * expert  # 256 tokens touch all 8
    # expert parallelism: whole experts on each rank, replicated attention
    ep = Engine.build(cfg, "h100-sxm", "fp8", "bf16", Split(tp=2, expert_parallel=True))
    experts = cfg.moe_layers * cfg.experts * 3 * cfg.hidden_size * cfg.expert_width
    assert ep.params_per_chip == pytest.approx(experts / 2 + cfg.params - experts)
    assert ep.attn_tp == 1 and eng.attn_tp == 2


def test_pipeline_parallel_runs_micro_batches_through_stages() -> None:
    cfg = get_llm("llama-2-70b")
    b = Batch.of([(1, 1024)] * 64)
    tp8 = Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split(tp=8)).iteration(b)
    pp = Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split(tp=4, pp=2)).iteration(b)
    # two stages of 40 layers, two micro-batches of 32: each stage reads its half of the weights twice
    assert pp.seconds > tp8.seconds and pp.compute_s > tp8.compute_s
    assert pp.energy_j > 0 and tp8.energy_j > 0


def test_prefill_attention_is_causal() -> None:
    """A 2,048-token prompt: 2,048 x 1,024.5 query-key pairs (each token sees itself and those before)."""
    b = Batch.of([(2048, 2048)])
    assert b.prefill_pairs == 2048 * (2048 - 2047 / 2)
    eng = Engine.build(get_llm("llama-2-7b"), "h100-sxm", "bf16", "bf16", Split())
    (att,) = eng.attention_kernels(b)
    assert att.flops == round(4 * 32 * 128 * b.prefill_pairs)
    # a chunk of 512 after 1,536 cached tokens: its queries see 1,536 + their own causal half
    chunk = Batch.of([(512, 2048)])
    assert chunk.prefill_pairs == 512 * (2048 - 511 / 2)


def test_mla_caches_the_latent() -> None:
    cfg = get_llm("deepseek-v2-lite")
    eng = Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split())
    assert eng.kv_bytes_per_token == cfg.layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2
    it = eng.iteration(Batch.of([(1, 4096)] * 8 + [(512, 512)]))
    assert it.seconds > 0 and it.compute_s > 0


def test_splits_and_formats_that_cannot_run_are_named() -> None:
    cfg = get_llm("llama-2-70b")
    with pytest.raises(InputError, match="64 attention heads do not divide over tp=3"):
        Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split(tp=3))
    with pytest.raises(InputError, match="exceeds llama-2-70b's 80 layers"):
        Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split(pp=81))
    with pytest.raises(InputError, match="no experts"):
        Engine.build(cfg, "h100-sxm", "bf16", "bf16", Split(tp=2, expert_parallel=True))
    with pytest.raises(InputError, match="unknown KV-cache precision 'fp4'; valid: bf16"):
        kv_format("fp4")
    with pytest.raises(InputError, match="tp and pp must be >= 1"):
        Split(tp=0)
    with pytest.raises(InputError, match="a chunk adds q >= 1"):
        Batch.of([(4, 2)])
