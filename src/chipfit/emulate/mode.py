"""`emulate`: run a real model on the CPU with the numbers a chip would produce.

A private TorchDispatchMode sees every aten op below autograd, forward and
backward alike, and applies the policy:

- matmul / bmm / addmm / baddbmm / convolution: operands rounded (and scaled) to
  their formats, the K dimension accumulated as the policy says, integer operands
  multiplied exactly (an integer result is exact in FP32 while K*max|a|*max|b| < 2^24,
  else the GEMM runs in float64), scales applied in the epilogue, bias added in FP32,
  the result stored in the output format.
- CPU scaled-dot-product attention: decomposed as FlashAttention computes it:
  S = QK^T accumulated in FP32, softmax in FP32, P rounded to the input format,
  O = PV. Other attention kernels (backward) round their inputs and run in FP32.
- op classes in the policy's FP32 list compute in FP32 and store FP32 (but selecting
  reductions, max and max-pooling, keep their input's format, as under autocast).
- host classes and matrix ops the chip cannot run execute in FP32 and are listed.
- every other op computes in FP32 and stores its result in its storage format:
  torch's promotion rule over its inputs' storage formats ("promote"), or the
  compiler's cast format. In-place ops keep the destination's format, so FP32
  master weights stay FP32 through the optimizer step.

Storage formats are tags on tensors (values are float32 holding exactly
representable values), so the user's code and dtypes are unchanged. Only
float32 tensors are emulated; tensors of other dtypes run as they are.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode, _get_current_dispatch_mode
from torch.utils._pytree import tree_map
from torch.utils.module_tracker import ModuleTracker
from torch.utils.weak import WeakTensorKeyDictionary

from chipfit.emulate.matrix import MATRIX_KERNELS, short_name
from chipfit.emulate.passthrough import is_passthrough, rounding_is_idempotent
from chipfit.emulate.policy import NumericsPolicy, Operand, Scaling, ScalingKind, policy_for
from chipfit.emulate.report import OpStat, Report, RoundingWatch
from chipfit.emulate.scaling import ScaleState, prepare, round_to
from chipfit.emulate.storage import FP32 as _FP32
from chipfit.emulate.storage import Storage
from chipfit.errors import InputError
from chipfit.trace.classify import classify
from chipfit.vocab import MATRIX_CLASSES

__all__ = ["EmulationMode", "Run", "emulate"]

aten = torch.ops.aten


@dataclass
class Run:
    """What `emulate` yields: the policy in force and what happened to each op."""

    policy: NumericsPolicy
    shadow: bool
    stats: dict[tuple[str, str, str], OpStat] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    _mode: EmulationMode | None = None

    def report(self, sqnr: bool | None = None) -> Report:
        """Per-op formats and fallbacks; SQNR against the FP32 shadow when the run kept one."""
        if sqnr and not self.shadow:
            raise InputError("SQNR needs an FP32 shadow run: use emulate(..., shadow=True)")
        rows = sorted(self.stats.values(), key=lambda r: r.order)
        if sqnr is False:
            rows = [OpStat(**{**r.__dict__, "measured": False}) for r in rows]
        return Report(self.policy, rows, self.shadow and sqnr is not False)

    def fallbacks(self) -> list[OpStat]:
        return [r for r in sorted(self.stats.values(), key=lambda r: r.order) if r.fallback]

    @property
    def watch(self) -> RoundingWatch | None:
        """Backward rounding counts (emulate(..., watch=True))."""
        return self._mode.watch if self._mode is not None else None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Run the block with plain FP32 numerics, then resume emulation with the run's state
        (cached weights, delayed-scaling histories, statistics) intact:

            with chipfit.emulate(device="h100-sxm", precision="fp8") as run:
                out = model(x)
                with run.paused():
                    ref = model(x)  # FP32, the same weights
        """
        mode = self._mode
        if mode is None or not mode.active:
            raise RuntimeError("run.paused() is for use inside its emulate(...) block")
        if _get_current_dispatch_mode() is not mode:
            raise RuntimeError("run.paused(): another dispatch mode was entered inside emulate(...); leave it first")
        mode.detach()
        try:
            yield
        finally:
            mode.attach()

    def shadow_of(self, t: torch.Tensor) -> torch.Tensor:
        """The FP32 shadow value of a tensor produced under emulation (needs shadow=True)."""
        if self._mode is None or not self.shadow:
            raise InputError("no shadow run: use emulate(..., shadow=True)")
        got = self._mode.shadows.get(t)
        return t if got is None else got


def _tensors(x: Any) -> list[torch.Tensor]:
    """The tensors in (nested tuples, lists and dicts of) op arguments or results.

    An aten list argument is homogeneous (int[], Tensor[], Tensor?[]): one whose first non-None
    item is a number is skipped whole, which keeps conv's stride/padding lists cheap."""
    if isinstance(x, torch.Tensor):
        return [x]
    if not isinstance(x, (tuple, list, dict)):
        return []
    out: list[torch.Tensor] = []
    for v in x.values() if isinstance(x, dict) else x:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(_tensors(v))
        elif isinstance(v, (tuple, list)):
            first = next((u for u in v if u is not None), None)
            if first is not None and not isinstance(first, (int, float, bool)):
                out.extend(_tensors(v))
    return out


def _is_f32(t: Any) -> bool:
    return isinstance(t, torch.Tensor) and t.dtype == torch.float32


def _sumsq(t: torch.Tensor) -> float:
    return float(torch.sum(t.detach().double() ** 2))


class _PassTracker(ModuleTracker):
    """torch's ModuleTracker, also saying when an outermost module call starts (a new forward pass,
    whose call-site counts, delayed scaling's keys, start again). Without autograd (inference
    under no_grad) there is no backward to follow, so the hooks skip the tracker's per-call pytree
    walk over inputs and outputs that only registers backward hooks: the same paths, less work on
    the hot path."""

    def __init__(self, on_new_pass: Any) -> None:
        super().__init__()
        self._on_new_pass = on_new_pass
        self.version = 0  # bumped whenever `parents` changes, so the innermost path is worked out once
        self._innermost: tuple[int, int, str] = (0, -1, "")
        self._names: dict[nn.Module, str] = {}  # the tracker's names, looked up once per module
        self._stack: list[str] = []  # modules entered without autograd, innermost last

    def _name(self, mod: nn.Module) -> str:
        name = self._names.get(mod)
        if name is None:
            name = self._names[mod] = self._get_mod_name(mod)
        return name

    def innermost(self) -> str:
        """The innermost module's tracker name ("" outside every module), cached until `parents` changes."""
        parents = self.parents
        if self._stack and len(parents) == len(self._stack) + 1:  # every open module came by the fast path
            return self._stack[-1]
        key = (id(parents), self.version)
        if self._innermost[:2] == key:
            return self._innermost[2]
        name = "" if len(parents) < 2 else max(parents, key=lambda p: (p != "Global", p.count(".")))
        self._innermost = (*key, name)
        return name

    def _versioned(self, fn: Any) -> Any:
        """`fn` (a tracker callback that adds or removes a parent), bumping `version` after it."""

        def changed(*args: Any) -> None:
            fn(*args)
            self.version += 1

        return changed

    def _get_append_fn(self, name: str, is_bw: bool) -> Any:
        return self._versioned(super()._get_append_fn(name, is_bw))

    def _get_pop_fn(self, name: str, is_bw: bool) -> Any:
        return self._versioned(super()._get_pop_fn(name, is_bw))

    def _fw_pre_hook(self, mod: nn.Module, input: Any) -> None:
        if len(self.parents) == 1:  # only "Global": an outermost call
            self._stack.clear()
            self._on_new_pass()
        if torch.is_grad_enabled():
            super()._fw_pre_hook(mod, input)
        else:
            name = self._name(mod)
            self.parents.add(name)
            self._stack.append(name)
            self.version += 1

    def _fw_post_hook(self, mod: nn.Module, input: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            super()._fw_post_hook(mod, input, output)
        else:
            name = self._name(mod)
            self.parents.discard(name)
            if self._stack and self._stack[-1] == name:
                self._stack.pop()
            self.version += 1


class EmulationMode(TorchDispatchMode):
    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        """Keep __torch_dispatch__ unwrapped: torch otherwise wraps it in a dynamo-disable context
        entered on every aten op, a fixed cost per op that weighs on small models. Code compiled
        with torch.compile still runs under emulation (tests/emulate/test_mode.py)."""
        return False

    def __init__(self, policy: NumericsPolicy, run: Run, shadow: bool) -> None:
        super().__init__()
        self.policy = policy
        self.run = run
        self.shadow = shadow
        self.storage = Storage()  # storage-format tags and parameters' rounded values
        self.tags = self.storage.tags  # tensor -> storage format (the dispatch path reads it per op)
        self.grads: WeakTensorKeyDictionary = WeakTensorKeyDictionary()  # tensors made in backward
        self.shadows: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self.states: dict[tuple[Any, ...], ScaleState] = {}
        self.classes: dict[Any, tuple[str, str]] = {}  # op -> (op class, short name)
        self.watch: RoundingWatch | None = None  # set to count backward underflow/overflow
        self.current = ""  # the op being run (for the watch)
        self.numerics: dict[tuple[str, bool], str] = {}  # (phase, handled) -> matrix numerics text
        self.writes_first: dict[Any, bool] = {}  # op -> writes its first argument (in place)
        self.tracker: _PassTracker | None = None  # module paths, forward and backward (torch's own tracker)
        self.paths: dict[str, str] = {}  # tracker name -> dotted module path
        self.sites: Counter[tuple[str, str, str]] = Counter()  # (phase, module, op) -> calls in this pass
        self.phase = "forward"

    # ------------------------------------------------------------ entering and leaving
    active = False

    def attach(self) -> None:
        """Start intercepting: push the dispatch mode and start torch's ModuleTracker."""
        self.tracker = _PassTracker(lambda: self._new_pass("forward"))
        self.tracker.__enter__()
        self.__enter__()
        self.active = True

    def detach(self) -> None:
        """Stop intercepting (the state stays for a later attach)."""
        self.active = False
        self.__exit__(None, None, None)
        if self.tracker is not None:
            self.tracker.__exit__(None, None, None)
            self.tracker = None

    # ------------------------------------------------------------ module paths (torch's ModuleTracker)
    def _module(self) -> str:
        """The innermost module running now, as a dotted path (`features.0`; the root by its class
        name), in forward and in backward alike; "" outside every module."""
        if self.tracker is None:
            return ""
        name = self.tracker.innermost()
        if not name:
            return ""
        path = self.paths.get(name)
        if path is None:
            path = self.paths[name] = name.partition(".")[2] or name
        return path

    # ------------------------------------------------------------ bookkeeping
    def _site(self, name: str) -> tuple[Any, ...]:
        """A stable key for a matrix-op call site, for delayed scaling's amax history: the module,
        the op, and how many times that module ran that op so far in this pass."""
        key = (self.phase, self._module(), name)
        self.sites[key] += 1
        return (*key, self.sites[key])

    def _new_pass(self, phase: str, after_backward: bool = False) -> None:
        for key in [k for k in self.sites if k[0] == phase]:
            del self.sites[key]
        if after_backward and self.tracker is not None:
            for h in self.tracker._hooks:  # the backward has run: the tracker's grad hooks for it are spent
                h.remove()
            self.tracker._hooks.clear()

    def _state(self, site: tuple[Any, ...], which: str, op: Operand) -> ScaleState | None:
        if op.scaling.kind != "delayed" or op.exact or op.block:
            return None
        key = (*site, which)
        st = self.states.get(key)
        if st is None:
            st = self.states[key] = ScaleState(op.scaling.history)
        return st

    def _stat(self, name: str, cls: str, numerics: str, fallback: str) -> OpStat:
        module = self._module()
        key = (self.phase, module, name)
        st = self.run.stats.get(key)
        if st is None:
            st = self.run.stats[key] = OpStat(len(self.run.stats), self.phase, module, name, cls, numerics, fallback)
        st.calls += 1
        return st

    def _store(self, t: torch.Tensor, fmt: str) -> torch.Tensor:
        """Round t (in place) to its storage format and tag it."""
        if fmt != _FP32 and t.dtype == torch.float32 and t.numel():
            if self.watch is not None and self.phase == "backward":
                before = t.detach().clone()
                round_to(t, fmt, out=t)
                self.watch.record(self.current, before, t)
            else:
                round_to(t, fmt, out=t)
            self.tags[t] = fmt
        return t

    def _operand(self, t: torch.Tensor, role: str) -> Operand:
        p = self.policy
        if self.phase == "backward":
            if t in self.grads and p.grad is not None:
                return p.grad
            a = p.a
            if a.scaling.kind in ("per-channel", "per-row"):
                return Operand(a.format, Scaling(ScalingKind.DYNAMIC), a.rounding)
            return a
        return p.b if role == "b" else p.a

    # ------------------------------------------------------------ matrix ops
    def _prepare(self, t: torch.Tensor, op: Operand, site: tuple[Any, ...], which: str, **dims: int) -> Any:
        """prepare(), with parameters' rounded values cached until the parameter changes (its version)."""
        base = t if isinstance(t, nn.Parameter) else t._base
        if not isinstance(base, nn.Parameter) or op.scaling.kind == "delayed":
            return prepare(t, op, state=self._state(site, which, op), **dims)
        key = (tuple(t.shape), t.stride(), t.storage_offset(), op, tuple(sorted(dims.items())))
        return self.storage.cached(base, key, lambda: prepare(t, op, **dims))  # type: ignore[arg-type]

    # ------------------------------------------------------------ dispatch
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        phase = "backward" if torch._C._current_graph_task_id() != -1 else "forward"
        if phase != self.phase:  # a new backward pass, or forward after one: their call counts start again
            self.phase = phase
            self._new_pass(phase, after_backward=phase == "forward")
        known = self.classes.get(func)
        if known is None:
            known = self.classes[func] = (classify(func, "forward"), short_name(func))
        cls, name = known
        self.current = name
        if cls == "view":
            out = func(*args, **kwargs)
            src = next((t for t in _tensors(args) if t.dtype == torch.float32), None)
            if src is not None and src in self.tags and isinstance(out, torch.Tensor):
                self.tags[out] = self.tags[src]
            if src is not None and isinstance(out, torch.Tensor) and src in self.grads:
                self.grads[out] = True  # a view of a gradient is a gradient (e.g. its transpose)
            if self.watch is not None and src is not None and isinstance(out, torch.Tensor):
                got = self.watch.by_tensor.get(src)
                if got is not None:
                    self.watch.by_tensor[out] = got
            if self.shadow:
                self._shadow_view(func, args, kwargs, out)
            return out
        ins = _tensors(args) + _tensors(kwargs) if kwargs else _tensors(args)
        floats = [t for t in ins if t.is_floating_point()]
        if any(t.dtype != torch.float32 for t in floats):  # native low-precision tensors run as they are
            self._stat(name, cls, "native dtype (not emulated)", "")
            return func(*args, **kwargs)
        shadow_out = self._shadow_compute(func, args, kwargs) if self.shadow else None
        out, numerics, fallback = self._execute(func, name, cls, args, kwargs, ins)
        st = self._stat(name, cls, numerics, fallback)
        if phase == "backward":
            for t in _tensors(out):
                self.grads[t] = True
        if shadow_out is not None:
            self._shadow_record(st, out, shadow_out)
        return out

    def _execute(
        self, func: Any, name: str, cls: str, args: tuple[Any, ...], kwargs: dict[str, Any], ins: list[torch.Tensor]
    ) -> Any:
        p = self.policy
        if cls in p.host_classes:
            return func(*args, **kwargs), "float32", "host"
        if cls in MATRIX_CLASSES:
            if p.matrix_fallback:
                return func(*args, **kwargs), "float32", p.matrix_fallback
            if p.exact:
                return func(*args, **kwargs), "float32", ""
            handler = MATRIX_KERNELS.get(func)
            out: Any
            if handler is not None:
                out = handler(self, func, args, kwargs)
            else:  # other matrix kernels: round the float inputs, compute in FP32
                out = func(*self._fake_quant(args), **self._fake_quant(kwargs))
            numerics = self.numerics.get((self.phase, handler is not None))
            if numerics is None:
                numerics = self.numerics[(self.phase, handler is not None)] = self._matrix_numerics(handler is not None)
            if func is aten._scaled_dot_product_flash_attention_for_cpu.default:
                return (self._store(out[0], p.output), out[1]), numerics, ""  # logsumexp stays FP32
            for o in _tensors(out) if isinstance(out, (tuple, list)) else [out]:
                if _is_f32(o):
                    self._store(o, p.output)
            return out, numerics, ""
        out = func(*args, **kwargs)
        if cls in p.fp32_classes and not is_passthrough(func, args):  # max/amax/max-pool only select:
            return out, "float32", ""  # autocast leaves them in their input's dtype, as the storage rule below does
        fmt = self._storage(func, args, kwargs, ins)
        if self._already_in(fmt, func, args, ins):
            for o in _tensors(out):
                if _is_f32(o):
                    self.tags[o] = fmt
            return out, fmt, ""
        for o in _tensors(out):
            if o.is_floating_point():
                self._store(o, fmt)
        return out, fmt, ""

    def _already_in(self, fmt: str, func: Any, args: tuple[Any, ...], ins: list[torch.Tensor]) -> bool:
        """The op's float results are in `fmt` as computed (emulate/passthrough.py): it only selects
        or zeroes its inputs' elements, every float input is stored in `fmt`, and rounding to `fmt`
        is idempotent. Not while the watch counts backward roundings."""
        if fmt == _FP32 or (self.watch is not None and self.phase == "backward"):
            return False
        if not is_passthrough(func, args) or not rounding_is_idempotent(fmt):
            return False
        return all(self.tags.get(t) == fmt for t in ins if t.is_floating_point())

    def _matrix_numerics(self, handled: bool) -> str:
        p = self.policy
        if self.phase == "backward" and p.grad is not None:
            ins = f"{p.a.format}/{p.grad.format}"
        else:
            ins = p.a.format if p.a.format == p.b.format else f"{p.a.format}x{p.b.format}"
        acc = "int32 exact" if p.a.integer else p.accumulate.describe()
        text = f"{ins} -> acc {acc} -> {p.output}"
        return text if handled else text + " (inputs rounded, FP32 kernel)"

    def _storage(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], ins: list[torch.Tensor]) -> str:
        """The format an op's result is stored in."""
        writes_first = self.writes_first.get(func)
        if writes_first is None:
            first = func._schema.arguments[0] if func._schema.arguments else None
            writes_first = self.writes_first[func] = bool(first is not None and first.alias_info is not None
                                                         and first.alias_info.is_write)  # fmt: skip
        if writes_first and args:
            dst = args[0]
            return (
                self.storage.format_of(dst) if isinstance(dst, torch.Tensor) else _FP32
            )  # in place: the destination's
        if "out" in kwargs and isinstance(kwargs["out"], torch.Tensor):
            return self.storage.format_of(kwargs["out"])
        if self.policy.activations != "promote":
            return self.policy.activations
        fmts = {self.storage.format_of(t) for t in ins if t.dtype == torch.float32 and t.dim()}
        if not fmts:
            fmts = {self.storage.format_of(t) for t in ins if t.dtype == torch.float32}
        return fmts.pop() if len(fmts) == 1 else _FP32

    def _fake_quant(self, x: Any) -> Any:
        def fq(t: Any) -> Any:
            if not _is_f32(t):
                return t
            op = self._operand(t, "a")
            q, inv = prepare(
                t, op if op.scaling.kind != "delayed" else Operand(op.format, Scaling(ScalingKind.DYNAMIC))
            )
            return q * inv if not (isinstance(inv, float) and inv == 1.0) else q

        return tree_map(fq, x)

    # ------------------------------------------------------------ FP32 shadow run
    def _shadow_args(self, x: Any, clone_mutated: bool) -> Any:
        def sub(t: Any) -> Any:
            if not isinstance(t, torch.Tensor):
                return t
            s = self.shadows.get(t)
            return s if s is not None else (t.clone() if clone_mutated else t)

        return tree_map(sub, x)

    def _shadow_compute(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        schema = func._schema
        mutates = any(a.alias_info is not None and a.alias_info.is_write for a in schema.arguments)
        sargs = self._shadow_args(args, mutates)
        skw = self._shadow_args(kwargs, mutates)
        return func(*sargs, **skw)

    def _shadow_view(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
        if any(isinstance(t, torch.Tensor) and t in self.shadows for t in _tensors(args)):
            sout = func(*self._shadow_args(args, False), **self._shadow_args(kwargs, False))
            if isinstance(out, torch.Tensor) and isinstance(sout, torch.Tensor):
                self.shadows[out] = sout

    def _shadow_record(self, st: OpStat, out: Any, shadow_out: Any) -> None:
        for o, s in zip(_tensors(out), _tensors(shadow_out), strict=False):
            if o is s or not o.is_floating_point() or o.shape != s.shape:
                continue
            self.shadows[o] = s
            st.signal += _sumsq(s)
            st.noise += _sumsq(o.detach().double() - s.detach().double())
            st.measured = True


@contextmanager
def emulate(
    device: str | None = None,
    precision: str | None = None,
    *,
    policy: NumericsPolicy | None = None,
    accumulate: str | None = None,
    tf32_rounding: str = "nearest-even",
    fp8_scaling: str = "dynamic",
    shadow: bool = False,
    watch: bool = False,
) -> Iterator[Run]:
    """Run the PyTorch code inside the block with `device`'s numerics at `precision`.

        with chipfit.emulate(device="tpu-v5e", precision="bf16") as run:
            out = model(x)
        print(run.report())

    Or pass your own `policy=NumericsPolicy(...)`. accumulate: an accumulation preset
    (fp32, fp16, fp8-fast-accum, fp8-promote-128) for the catalog policy; tf32_rounding and
    fp8_scaling are passed to `policy_for`.
    shadow: also run every op in FP32 on FP32 inputs, so report(sqnr=True) gives each
    op's SQNR against the FP32 model and run.shadow_of(out) its FP32 output.
    watch: count, in backward, the values each op's output storage flushes to zero or
    overflows (run.watch; chipfit.amp's gradient diagnostics).
    Works for inference and training: backward ops are emulated too.
    """
    if policy is None:
        if device is None or precision is None:
            raise InputError("emulate needs device= and precision= (see `chipfit devices`), or policy=")
        policy = policy_for(
            device, precision, accumulate=accumulate, tf32_rounding=tf32_rounding, fp8_scaling=fp8_scaling
        )
    elif device is not None or precision is not None or accumulate is not None:
        raise InputError("pass either policy= or device=/precision=/accumulate=, not both")
    run = Run(policy, shadow)
    mode = EmulationMode(policy, run, shadow)
    if watch:
        mode.watch = RoundingWatch()
    run._mode = mode
    mode.attach()
    try:
        yield run
    finally:
        if mode.active:
            mode.detach()
