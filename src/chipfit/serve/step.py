"""One iteration of a serving engine: the kernels each chip of a deployment runs for a batch of
sequences, priced by the cost model's own pricing (`cost.estimate.Pricer`, compiled execution), and the
collectives between the chips.

An iteration runs `tokens` new tokens: prefill chunks (sequence i adds q_i prompt tokens after c_i - q_i
cached ones) and decodes (q_i = 1 against c_i cached positions). Per layer, one tensor-parallel rank runs
the kernels a serving engine launches (vLLM's model code: a fused QKV projection, RMSNorm kernels, rotary
embedding with the KV cache write, one paged FlashAttention kernel, the output projection with the
residual add in its epilogue, a merged gate/up projection with SiLU-and-multiply, the down projection):

| kernel | FLOPs | reads | writes |
|---|---|---|---|
| norm | 5 T h | T h activations, h weights | T h |
| QKV GEMM | 2 T h (nq + 2 nkv) d | T h, h (nq + 2 nkv) d weights | T (nq + 2 nkv) d |
| rotary + cache write | 3 T (nq + nkv) d | T (nq + 2 nkv) d | T nq d, and T 2 nkv d into the cache (its format) |
| attention | 4 nq d sum q_i c'_i | T nq d, sum c_i 2 nkv d of cache | T nq d |
| O GEMM + residual | 2 T nq d h | T nq d, T h, weights | T h |
| gate/up GEMM + SiLU x mul | 4 T h w | T h, 2 h w weights | T w |
| down GEMM + residual | 2 T w h | T w, T h, weights | T h |

with nq, nkv the rank's query and KV heads, w its share of the MLP width, and c'_i = c_i - (q_i - 1) / 2
the causal mean context of a chunk. `tests/serve/test_step.py` checks the FLOPs and weight bytes
against the tracer's compiled trace of chipfit's own Llama decoder layer. Activations between kernels are
16-bit (32-bit at FP32), whatever the GEMMs compute in, as serving engines keep them; the KV cache is at
its own format; weights at the precision's storage format.

Mixtures of experts (Mixtral, DeepSeek): a router GEMM, then the routed experts' GEMMs (each token's k
experts; the weights of every expert some token is routed to are read: for T tokens routed uniformly,
E (1 - (1 - k / E)^T) experts, assumed uniform routing), and the shared experts as a dense MLP. Experts
are split over the tensor-parallel ranks (each expert's width divided, vLLM's default), or with
`expert_parallel` spread over the ranks whole, attention then running data-parallel (each rank its own
sequences) with an all-to-all to dispatch tokens to their experts and one to combine them (DeepSeek's
deployment). Multi-head latent attention (DeepSeek) caches one latent of kv_lora_rank + rope per token;
decode runs the absorbed form (queries projected into the latent space: 2 n (2 kv_lora + rope) FLOPs
per position and head), prefill the expanded form (the latent's keys and values decompressed for the
chunk's context, then ordinary attention), as vLLM's MLA backends do.

Collectives: two all-reduces of T h activations per layer under tensor parallelism (after the O and
down projections), a point-to-point send of the micro-batch's activations between pipeline stages, and
the LM head's logits gathered to one rank; each priced by `cost.collectives` on the device's links. Under
pipeline parallelism the engine keeps `pp` micro-batches in flight (vLLM's virtual engines): each
micro-batch holds 1/pp of the batch and the batch advances one iteration in pp stage times.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from chipfit.cost.collectives import Collective, Fabric, collective_s, flat_collective_s
from chipfit.cost.estimate import LINK_PJ_PER_BYTE, OpCost, Pricer, power_cap_s
from chipfit.errors import InputError
from chipfit.formats import storage_bytes
from chipfit.hardware import Device, get_device
from chipfit.hardware.precision import PRECISION_ALIASES, How, Precision, resolve_precision
from chipfit.hardware.stacks import resolve_stack
from chipfit.serve.config import AttentionKind, LlmConfig, MlpKind
from chipfit.serve.memory import kv_bytes_per_token, params_per_chip
from chipfit.trace.records import OpRecord
from chipfit.vocab import OpClass, Phase

__all__ = ["KV_PRECISIONS", "Batch", "Engine", "IterationCost", "Split", "default_kv", "kv_format"]

FP32 = 4  # traced bytes per element: the cost model's records count FP32 bytes and scale them to a format
KV_PRECISIONS = ("bf16", "fp16", "fp8", "int8", "fp32")  # the KV cache's storage formats


def kv_format(kv_precision: str) -> str:
    """The storage format of a KV-cache precision name (bf16, fp8, ...)."""
    if kv_precision not in KV_PRECISIONS:
        raise InputError(f"unknown KV-cache precision {kv_precision!r}; valid: {', '.join(KV_PRECISIONS)}")
    return PRECISION_ALIASES[kv_precision][0]


def default_kv(device: Device, kv_precision: str | None) -> str:
    """The KV cache's precision when none is asked for: bf16 where the chip computes in BF16, else fp16
    (the attention kernel reads the cache at the activations' width)."""
    if kv_precision:
        return kv_precision
    return "bf16" if device.peak("bfloat16") or not device.peak("float16") else "fp16"


@dataclass(frozen=True)
class Split:
    """How one replica of a model is spread over chips: tp ranks inside a stage, pp stages; for a mixture
    of experts, `expert_parallel` spreads the experts whole over the tp ranks (attention data-parallel)."""

    tp: int = 1
    pp: int = 1
    expert_parallel: bool = False

    def __post_init__(self) -> None:
        if self.tp < 1 or self.pp < 1:
            raise InputError(f"tp and pp must be >= 1, got tp={self.tp}, pp={self.pp}")

    @property
    def chips(self) -> int:
        return self.tp * self.pp

    def describe(self) -> str:
        return f"TP{self.tp} x PP{self.pp}" + (" (EP)" if self.expert_parallel else "")


@dataclass(frozen=True)
class Batch:
    """One iteration's work across a replica: new tokens, and the attention it does."""

    decode_seqs: int = 0
    decode_context: int = 0  # sum over decoding sequences of the positions each attends to
    prefill_seqs: int = 0
    prefill_tokens: int = 0
    prefill_pairs: float = 0.0  # sum over chunks of q_i * c'_i: query-key pairs, causal
    prefill_context: int = 0  # sum over chunks of c_i: cache positions each chunk's attention reads
    sampled: int = 0  # sequences that sample a token at the end of the iteration

    @property
    def tokens(self) -> int:
        return self.decode_seqs + self.prefill_tokens

    @classmethod
    def of(cls, chunks: list[tuple[int, int]], sampled: int | None = None) -> Batch:
        """From (q_i, c_i) pairs: q_i new tokens of a sequence whose context is c_i after them."""
        dec = [c for q, c in chunks if q == 1]
        pre = [(q, c) for q, c in chunks if q > 1]
        for q, c in chunks:
            if q < 1 or c < q:
                raise InputError(f"a chunk adds q >= 1 tokens to a context c >= q, got q={q}, c={c}")
        return cls(
            decode_seqs=len(dec), decode_context=sum(dec), prefill_seqs=len(pre),
            prefill_tokens=sum(q for q, _ in pre), prefill_pairs=sum(q * (c - (q - 1) / 2) for q, c in pre),
            prefill_context=sum(c for _, c in pre), sampled=len(chunks) if sampled is None else sampled,
        )  # fmt: skip

    def share(self, parts: int) -> Batch:
        """1/parts of this batch (a pipeline micro-batch, a data-parallel rank's sequences), rounded up."""
        if parts == 1:
            return self

        def up(x: float) -> int:
            return math.ceil(x / parts)

        return Batch(
            decode_seqs=up(self.decode_seqs), decode_context=up(self.decode_context),
            prefill_seqs=up(self.prefill_seqs), prefill_tokens=up(self.prefill_tokens),
            prefill_pairs=self.prefill_pairs / parts, prefill_context=up(self.prefill_context),
            sampled=up(self.sampled),
        )  # fmt: skip


@dataclass(frozen=True)
class IterationCost:
    seconds: float
    energy_j: float  # every chip of the replica
    compute_s: float  # of seconds, kernels (the slowest stage, all micro-batches)
    comm_s: float  # of seconds, collectives and pipeline sends


def _kernel(
    op: str, op_class: OpClass, flops: float, read: float, write: float, params: float = 0.0,
    gemm: tuple[int, int, int, int] | None = None,
) -> OpRecord:  # fmt: skip
    """A kernel record; read/write in traced bytes (see Engine.units), params in elements."""
    pb = round(params * FP32)
    return OpRecord(
        index=0, op=op, module="", module_type="", phase=Phase.FORWARD, op_class=op_class, input_shapes=(),
        input_dtypes=(), output_shapes=(), output_dtypes=(), flops=round(flops), flops_source="chipfit",
        bytes_read=round(read) + pb, bytes_written=round(write), gemm=gemm, param_bytes=pb,
    )  # fmt: skip


def _gemm(op: str, m: int, n: int, k: int, act_in: float, act_out: float, weights: bool = True, b: int = 1) -> OpRecord:
    """An (m x k) @ (k x n) GEMM, b of them; act_in/act_out: its activations' traced bytes."""
    return _kernel(op, OpClass.MATMUL, 2 * m * n * k * b, act_in, act_out, n * k * b if weights else 0, (m, n, k, b))


@dataclass
class Engine:
    """A model served on one replica of `split` chips of `device`: prices iterations (`iteration`).

    precision: the GEMMs' precision (bf16, fp8, int8, w4a16, ...); the chip must run it on its matrix unit.
    kv_precision: the KV cache's storage format (bf16, fp8, int8)."""

    cfg: LlmConfig
    device: Device
    precision: Precision
    kv_format: str
    split: Split
    pricer: Pricer = field(init=False)
    fabric: Fabric = field(init=False)
    _memo: dict[tuple[str, int, int], tuple[float, float]] = field(init=False, default_factory=dict, repr=False)

    @classmethod
    def build(cls, cfg: LlmConfig, device: str | Device, precision: str, kv_precision: str, split: Split) -> Engine:
        dev = get_device(device)
        prec = resolve_precision(dev, precision)
        if prec.how in (How.VECTOR, How.HOST):
            runs = ", ".join(dev.formats)
            raise InputError(f"{dev.name} has no matrix unit for {precision}; its matrix unit runs: {runs}")
        check_split(cfg, split)
        return cls(cfg=cfg, device=dev, precision=prec, kv_format=kv_format(kv_precision), split=split)

    def __post_init__(self) -> None:
        stack = resolve_stack(self.device, "compiled", "inference")
        self.pricer = Pricer.of(self.device, self.precision, stack, self.weights_bytes_per_chip)
        self.fabric = Fabric.of(self.device)
        if self.split.chips > 1 and (why := self.fabric.reach(self.split.chips)):
            raise InputError(f"{self.device.name}: {why}")

    # ------------------------------------------------------------ formats and shares
    @functools.cached_property
    def act_format(self) -> str:
        return "float32" if self.precision.format == "float32" else "bfloat16"

    def units(self, elements: float, fmt: str | None = None) -> float:
        """Traced bytes for `elements` values stored at `fmt` (default: the activations' format): the
        pricing scales traced bytes by the compute format's width, so this divides by it."""
        return storage_bytes(fmt or self.act_format, elements) / self.pricer.scale

    @property
    def ranks(self) -> int:
        return self.split.tp

    @functools.cached_property
    def attn_tp(self) -> int:
        """The ranks one sequence's attention is split over (1 when attention is data-parallel)."""
        return 1 if self.split.expert_parallel else self.split.tp

    @functools.cached_property
    def heads(self) -> tuple[int, int]:
        """(query heads, KV heads) on one rank: a KV head is replicated when ranks outnumber them."""
        c, t = self.cfg, self.attn_tp
        return math.ceil(c.heads / t), (1 if c.attention is AttentionKind.MLA else math.ceil(c.kv_heads / t))

    @functools.cached_property
    def weights_bytes_per_chip(self) -> float:
        return storage_bytes(self.precision.weights, self.params_per_chip)

    @functools.cached_property
    def params_per_chip(self) -> float:
        s = self.split
        return params_per_chip(self.cfg, s.tp, s.pp, s.expert_parallel)

    @functools.cached_property
    def kv_bytes_per_token(self) -> float:
        """Cache bytes one token of context adds on one chip (its stage's layers, its heads)."""
        return kv_bytes_per_token(self.cfg, self.kv_format, self.attn_tp, self.split.pp)

    # ------------------------------------------------------------ kernels of one layer on one rank
    def token_kernels(self, t: int, moe: bool) -> list[OpRecord]:
        """The kernels whose work depends only on the rank's `t` new tokens (everything but attention)."""
        c, u = self.cfg, self.units
        h, d = c.hidden_size, c.head_dim
        nq, nkv = self.heads
        tn = t  # tokens through attention's projections
        ks: list[OpRecord] = []
        norm_flops = 8 if c.mlp is MlpKind.PLAIN else 5  # LayerNorm with bias, or RMSNorm
        norm_params = 2 * h if c.mlp is MlpKind.PLAIN else h
        norm = _kernel("norm", OpClass.NORMALIZATION, norm_flops * tn * h, u(tn * h), u(tn * h), norm_params)
        ks.append(norm)
        if c.attention is AttentionKind.MLA:
            ks += self._mla_projections(tn)
        else:
            qkv = (nq + 2 * nkv) * d
            ks.append(_gemm("qkv_proj", tn, qkv, h, u(tn * h), u(tn * qkv)))
            cache = u(tn * 2 * nkv * d, self.kv_format)
            ks.append(_kernel("rotary+cache", OpClass.ELEMENTWISE, 3 * tn * (nq + nkv) * d, u(tn * qkv),
                              u(tn * nq * d) + cache))  # fmt: skip
            ks.append(_gemm("o_proj", tn, h, nq * d, u(tn * nq * d) + u(tn * h), u(tn * h)))
        if not c.parallel_block:
            ks.append(norm)
        if moe:
            ks += self._moe(t)
        else:
            ks += self._mlp("mlp", t, math.ceil(c.intermediate_size / self.split.tp))
        return ks

    def _mlp(self, name: str, t: int, w: int) -> list[OpRecord]:
        c, u, h = self.cfg, self.units, self.cfg.hidden_size
        if c.mlp is MlpKind.PLAIN:  # fc_in + bias + GELU, fc_out + bias (+ the residual)
            return [_gemm(f"{name}.fc_in", t, w, h, u(t * h), u(t * w)),
                    _gemm(f"{name}.fc_out", t, h, w, u(t * w) + 2 * u(t * h), u(t * h))]  # fmt: skip
        return [_gemm(f"{name}.gate_up", t, 2 * w, h, u(t * h), u(t * w)),
                _gemm(f"{name}.down", t, h, w, u(t * w) + u(t * h), u(t * h))]  # fmt: skip

    def _moe(self, t: int) -> list[OpRecord]:
        """Router, routed experts and shared experts for `t` tokens on one rank."""
        c, u, h, s = self.cfg, self.units, self.cfg.hidden_size, self.split
        e, k = c.experts, c.experts_per_token
        ks = [_gemm("router", t, e, h, u(t * h), u(t * e) * 2)]  # logits and their top-k softmax
        if s.expert_parallel:  # this rank's experts, whole, for the tokens every rank routes to them
            local, w, rows = math.ceil(e / s.tp), c.expert_width, t * s.tp * k / s.tp
        else:  # every expert, its width split over the ranks
            local, w, rows = e, math.ceil(c.expert_width / s.tp), t * k
        touched = max(1.0, min(local, local * (1 - (1 - k / e) ** (t * (s.tp if s.expert_parallel else 1)))))
        m = max(1, math.ceil(rows / touched))
        b = max(1, round(touched))
        gated = c.mlp is MlpKind.GATED
        up_w = (2 if gated else 1) * w
        ks.append(_gemm("experts.gate_up", m, up_w, h, u(rows * h), u(rows * w), b=b))
        ks.append(_gemm("experts.down", m, h, w, u(rows * w), u(rows * h), b=b))
        ks.append(_kernel("experts.combine", OpClass.ELEMENTWISE, 2 * rows * h, u(rows * h) + u(t * h), u(t * h)))
        if c.shared_experts:
            width = c.shared_experts * c.expert_width
            ks += self._mlp("shared", t, math.ceil(width / (1 if s.expert_parallel else s.tp)))
        return ks

    def _mla_projections(self, t: int) -> list[OpRecord]:
        """MLA's projections: the query (through its low-rank latent), the KV latent with the rotary key,
        the cache write, and the output projection from the value heads."""
        c, u, h = self.cfg, self.units, self.cfg.hidden_size
        nq = self.heads[0]
        qk, rope, lat, v = c.head_dim, c.qk_rope_head_dim, c.kv_lora_rank, c.v_head_dim
        ks = []
        if c.q_lora_rank:
            ks.append(_gemm("q_a_proj", t, c.q_lora_rank, h, u(t * h), u(t * c.q_lora_rank)))
            ks.append(_gemm("q_b_proj", t, nq * qk, c.q_lora_rank, u(t * c.q_lora_rank), u(t * nq * qk)))
        else:
            ks.append(_gemm("q_proj", t, nq * qk, h, u(t * h), u(t * nq * qk)))
        ks.append(_gemm("kv_a_proj", t, lat + rope, h, u(t * h), u(t * (lat + rope))))
        ks.append(_kernel("rotary+cache", OpClass.ELEMENTWISE, 3 * t * (nq + 1) * rope, u(t * (nq * qk + lat + rope)),
                          u(t * nq * qk) + u(t * (lat + rope), self.kv_format)))  # fmt: skip
        ks.append(_gemm("o_proj", t, h, nq * v, u(t * nq * v) + u(t * h), u(t * h)))
        return ks

    def attention_kernels(self, b: Batch) -> list[OpRecord]:
        """The rank's attention over the batch's cache: one decode and one prefill kernel when both run."""
        c, u = self.cfg, self.units
        nq, nkv = self.heads
        d = c.head_dim
        ks = []
        if c.attention is AttentionKind.MLA:
            return self._mla_attention(b)
        per_pos = u(2 * nkv * d, self.kv_format)  # one position's K and V for this rank
        g = max(1, nq // nkv)
        if b.decode_seqs:
            n = math.ceil(b.decode_context / b.decode_seqs)
            ks.append(_kernel("attention.decode", OpClass.ATTENTION, 4 * nq * d * b.decode_context,
                              u(2 * b.decode_seqs * nq * d) + per_pos * b.decode_context, u(b.decode_seqs * nq * d),
                              gemm=(g, n, d, b.decode_seqs * nkv)))  # fmt: skip
        if b.prefill_tokens:
            m = math.ceil(b.prefill_tokens / b.prefill_seqs)
            n = math.ceil(b.prefill_pairs / b.prefill_tokens)
            ks.append(_kernel("attention.prefill", OpClass.ATTENTION, 4 * nq * d * b.prefill_pairs,
                              u(2 * b.prefill_tokens * nq * d) + per_pos * b.prefill_context,
                              u(b.prefill_tokens * nq * d), gemm=(m, n, d, b.prefill_seqs * nq)))  # fmt: skip
        return ks

    def _mla_attention(self, b: Batch) -> list[OpRecord]:
        c, u = self.cfg, self.units
        nq = self.heads[0]
        nope, rope, lat, v = c.head_dim - c.qk_rope_head_dim, c.qk_rope_head_dim, c.kv_lora_rank, c.v_head_dim
        per_pos = u(lat + rope, self.kv_format)
        ks = []
        if b.decode_seqs:  # absorbed: q_nope into the latent (W_UK), attend over latents, out through W_UV
            s = b.decode_seqs
            ks.append(_gemm("mla.q_absorb", s, lat, nope, u(s * nq * nope), u(s * nq * lat), b=nq))
            n = math.ceil(b.decode_context / s)
            ks.append(_kernel("attention.decode", OpClass.ATTENTION, 2 * nq * (2 * lat + rope) * b.decode_context,
                              u(s * nq * (lat + rope)) + per_pos * b.decode_context, u(s * nq * lat),
                              gemm=(nq, n, lat + rope, s)))  # fmt: skip
            ks.append(_gemm("mla.v_absorb", s, v, lat, u(s * nq * lat), u(s * nq * v), b=nq))
        if b.prefill_tokens:  # expanded: decompress the chunks' context (kv_b_proj), then attention
            ctx = b.prefill_context
            ks.append(_gemm("kv_b_proj", ctx, nq * (nope + v), lat, per_pos * ctx, u(ctx * nq * (nope + v))))
            m = math.ceil(b.prefill_tokens / b.prefill_seqs)
            n = math.ceil(b.prefill_pairs / b.prefill_tokens)
            ks.append(_kernel("attention.prefill", OpClass.ATTENTION, 2 * nq * (c.head_dim + v) * b.prefill_pairs,
                              u(b.prefill_tokens * nq * (c.head_dim + v)) + u(ctx * nq * (c.head_dim + v)),
                              u(b.prefill_tokens * nq * v), gemm=(m, n, c.head_dim, b.prefill_seqs * nq)))  # fmt: skip
        return ks

    def head_kernels(self, t: int, sampled: int) -> list[OpRecord]:
        """Embedding gather (first stage) and the final norm, LM head and sampling (last stage)."""
        c, u, h = self.cfg, self.units, self.cfg.hidden_size
        v = math.ceil(c.vocab_size / self.attn_tp)
        ks = [_kernel("embedding", OpClass.EMBEDDING, 0, u(t * h) + u(t), u(t * h))]
        if sampled:
            ks.append(_kernel("final_norm", OpClass.NORMALIZATION, 5 * sampled * h, u(sampled * h), u(sampled * h), h))
            ks.append(_gemm("lm_head", sampled, v, h, u(sampled * h), u(sampled * v, "float32")))
            ks.append(_kernel("sample", OpClass.SOFTMAX, 5 * sampled * c.vocab_size,
                              u(sampled * c.vocab_size, "float32"), u(sampled)))  # fmt: skip
        return ks

    # ------------------------------------------------------------ pricing
    def _price(self, ks: list[OpRecord]) -> tuple[float, float]:
        """(seconds, dynamic joules) of kernels run one after another on one chip."""
        costs: list[OpCost] = [self.pricer(k) for k in ks]
        idle = self.device.power.idle_w
        secs = sum(x.time_s for x in costs)
        return secs, sum(x.energy_j for x in costs) - idle * secs

    def _token_part(self, t: int, moe: bool) -> tuple[float, float]:
        """Priced once per token count (a simulation meets a few hundred distinct ones)."""
        return self._once(("layer", t, moe), lambda: self.token_kernels(t, moe))

    def _head_part(self, t: int, sampled: int) -> tuple[float, float]:
        return self._once(("head", t, sampled), lambda: self.head_kernels(t, sampled))

    def _once(self, key: tuple[str, int, int], kernels: Callable[[], list[OpRecord]]) -> tuple[float, float]:
        got = self._memo.get(key)
        if got is None:
            got = self._memo[key] = self._price(kernels())
        return got

    def _collectives_s(self, t: int, sampled: int) -> tuple[float, float]:
        """(seconds, bytes each chip sends) of one stage's collectives for `t` tokens on each rank."""
        c, s = self.cfg, self.split
        act = storage_bytes(self.act_format, t * c.hidden_size)
        layers = math.ceil(c.layers / s.pp)
        secs = sent = 0.0
        if s.tp > 1:
            fab, n = self.fabric, s.tp
            if s.expert_parallel:  # dispatch and combine each MoE layer's routed tokens: all-to-all
                moe_layers = math.ceil(c.moe_layers / s.pp)
                a2a = act * c.experts_per_token
                secs += 2 * moe_layers * collective_s(Collective.ALL_TO_ALL, a2a, n, fab)
                sent += 2 * moe_layers * a2a * (n - 1) / n
            else:
                per_layer = 2 if not c.parallel_block else 1
                secs += per_layer * layers * collective_s(Collective.ALL_REDUCE, act, n, fab)
                sent += per_layer * layers * 2 * act * (n - 1) / n
                if sampled:  # the LM head's vocabulary shards gathered for sampling
                    logits = storage_bytes("float32", sampled * c.vocab_size)
                    secs += collective_s(Collective.ALL_GATHER, logits, n, fab)
                    sent += logits * (n - 1) / n
        if s.pp > 1:
            link = self.fabric.link_for(s.chips)
            secs += flat_collective_s(Collective.SEND_RECV, act, 2, link)
            sent += act
        return secs, sent

    def iteration(self, b: Batch) -> IterationCost:
        """One iteration of the replica over batch `b` (all of its sequences)."""
        c, s = self.cfg, self.split
        micro = b.share(s.pp)
        rank = micro.share(s.tp) if s.expert_parallel else micro  # data-parallel attention: its sequences
        t = max(1, rank.tokens)
        layers_per_stage = math.ceil(c.layers / s.pp)
        frac = layers_per_stage / c.layers  # the slowest stage's share of the layers
        dense_s, dense_j = self._token_part(t, False)
        secs = (c.layers - c.moe_layers) * frac * dense_s
        joules = (c.layers - c.moe_layers) * frac * dense_j
        if c.moe_layers:
            moe_s, moe_j = self._token_part(t, True)
            secs += c.moe_layers * frac * moe_s
            joules += c.moe_layers * frac * moe_j
        att_s, att_j = self._price(self.attention_kernels(rank))
        secs += layers_per_stage * att_s
        joules += layers_per_stage * att_j
        head_s, head_j = self._head_part(t, rank.sampled)
        secs += head_s + self.pricer.stack.step_launch_on(self.device)
        joules += head_j
        secs += power_cap_s(self.device, secs, joules + self.device.power.idle_w * secs)  # a TDP-capped clock
        comm_s, sent = self._collectives_s(t, rank.sampled)
        stage_s = secs + comm_s
        wall = s.pp * stage_s  # pp micro-batches through pp stages
        chips = s.chips
        energy = (chips * s.pp * joules + chips * self.device.power.idle_w * wall
                  + chips * s.pp * sent * LINK_PJ_PER_BYTE * 1e-12)  # fmt: skip
        return IterationCost(seconds=wall, energy_j=energy, compute_s=s.pp * secs, comm_s=s.pp * comm_s)


def check_split(cfg: LlmConfig, split: Split) -> None:
    """A split a serving engine can run: heads divisible by TP (KV heads, or TP by them), layers >= PP."""
    tp = split.tp
    if split.expert_parallel and not cfg.moe:
        raise InputError(f"{cfg.name} has no experts: expert parallelism needs a mixture-of-experts model")
    if split.expert_parallel:
        if cfg.experts % tp:
            raise InputError(f"{cfg.name}'s {cfg.experts} experts do not divide over {tp} expert-parallel ranks")
    else:
        if cfg.heads % tp:
            raise InputError(f"{cfg.name}'s {cfg.heads} attention heads do not divide over tp={tp}")
        if cfg.attention is AttentionKind.GQA and cfg.kv_heads % tp and tp % cfg.kv_heads:
            raise InputError(f"{cfg.name}'s {cfg.kv_heads} KV heads and tp={tp}: one must divide the other")
    if split.pp > cfg.layers:
        raise InputError(f"pp={split.pp} exceeds {cfg.name}'s {cfg.layers} layers")
