"""`trace`: record every aten op a model runs, on fake tensors (no arithmetic, no real memory).

A public function over a private TorchDispatchMode, as torch's FlopCounterMode
does. The model's parameters are swapped for fake tensors with
`torch.func.functional_call`, so the user's module is never modified and a
70B-parameter model costs no memory. Module paths come from torch's
ModuleTracker, forward and backward alike. Peak live activations come from the
lifetimes of op outputs, which are tracked with weakref finalizers.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn
from torch._decomp import decomposition_table
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map
from torch.utils.flop_counter import flop_registry
from torch.utils.module_tracker import ModuleTracker

from chipfit.errors import InputError
from chipfit.trace.classify import classify, gemm_shape, op_flops
from chipfit.trace.records import Footprint, OpRecord, Trace
from chipfit.vocab import OpClass

__all__ = ["KVCacheModel", "TraceError", "trace"]

OPTIMIZERS = ("adam", "sgd")


@runtime_checkable
class KVCacheModel(Protocol):
    """A model with a key/value cache says how large it is; the tracer does not guess a layout.
    Any model (the built-in decoders, or yours) that defines this method gets its cache counted
    in the trace's footprint. A model whose cache is one of its inputs also defines
    `kv_cache_inputs(inputs) -> tuple[int, ...]`, the positions of those inputs, so the cache is
    counted once (as the KV cache) and not again as an input."""

    def step_kv_cache_bytes(self, inputs: Sequence[Any]) -> int:
        """Bytes of the cache resident after one step on `inputs` (the positional inputs the
        model is traced with), at the dtype the model keeps it in."""
        ...  # adam: two FP32 moments per parameter; sgd: no state


_SKIP_NAMESPACES = ("prim.", "profiler.")


def _batch_norm_outputs(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What aten.native_batch_norm returns on fake tensors in inference (training=False): the output
    laid out like the input, and empty saved statistics in the input's dtype. None when training, or on
    a real tensor (whose values the model might go on to use)."""
    x, training = args[0], (args[5] if len(args) > 5 else kwargs.get("training"))
    if training is not False or not isinstance(x, FakeTensor):
        return None
    return torch.empty_like(x), x.new_empty((0,)), x.new_empty((0,))


# ops whose outputs on fake tensors have a cheap closed form, where FakeTensorMode would run torch's whole
# decomposition for them (a ResNet-50 trace spent 45 % of its time in native_batch_norm's); the slow
# path is the oracle (tests/trace check each against FakeTensorMode itself)
FAST_OUTPUTS: dict[Any, Callable[[tuple[Any, ...], dict[str, Any]], Any]] = {
    torch.ops.aten.native_batch_norm.default: _batch_norm_outputs,
}


class TraceError(InputError, RuntimeError):
    """The model could not be traced; the message names the module and the op."""


def _nbytes(t: torch.Tensor) -> int:
    return int(t.numel()) * t.element_size()


def _read_bytes(t: torch.Tensor) -> int:
    """Bytes an op must read of `t`: its distinct elements. A broadcast (stride-0) dimension is
    read once, not once per repeat: `expand` makes a (4, 4096, 4096) view of one 4096 x 4096 weight."""
    distinct = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            distinct *= int(size)
    return distinct * t.element_size() if t.numel() else 0


def _tensors(x: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(x)[0] if isinstance(t, torch.Tensor)]


class _Recorder(TorchDispatchMode):
    def __init__(self, tracker: ModuleTracker, names: dict[str, tuple[str, str]]) -> None:
        super().__init__()
        self.tracker = tracker
        self.names = names  # tracker name -> (dotted path, module type)
        self.phase = "forward"
        self.records: list[OpRecord] = []
        self.live = 0
        self.events: list[tuple[int, int, int]] = []  # (op index, +/- bytes, index of the allocating op)
        self.storage_alloc: dict[int, int] = {}  # storage id -> index of the op that allocated it
        self.current = ("", "")
        self.param_storages: set[int] = set()
        self.decomposable: dict[Any, Any] = {}  # op -> its decomposition, or None
        self.decomposing: set[Any] = set()
        self.tensor_ids: dict[int, int] = {}  # storage address -> the dataflow id of what it holds now
        self.next_id = 0

    def _id(self, t: torch.Tensor, fresh: bool = False) -> int:
        """The dataflow id of `t`'s storage: a new id when an op allocates it (`fresh`: an address
        freed and reused holds a new tensor) or when it is first seen (inputs, parameters)."""
        key = t.untyped_storage()._cdata
        got = self.tensor_ids.get(key)
        if got is None or fresh:
            got = self.tensor_ids[key] = self.next_id
            self.next_id += 1
        return got

    def _module(self) -> tuple[str, str]:
        parents = [p for p in self.tracker.parents if p in self.names]
        if not parents:
            return "", ""
        return self.names[max(parents, key=lambda p: p.count("."))]

    def _track(self, out: Any, index: int) -> None:
        for t in _tensors(out):
            n = _nbytes(t)
            if n == 0:
                continue
            self.storage_alloc[t.untyped_storage()._cdata] = index
            self.events.append((index, n, index))

            def release(size: int = n, alloc: int = index) -> None:
                self.events.append((len(self.records), -size, alloc))

            weakref.finalize(t, release)

    def _decomposition(self, func: Any) -> Any:
        """torch's decomposition of an op chipfit has no rule or formula for (and torch no FLOP
        formula), so its pieces are classified and costed instead of one uncosted op; None when
        the op is known, has no decomposition, or is being decomposed already (no recursion)."""
        got = self.decomposable.get(func, False)
        if got is False:
            got = None
            known = getattr(func, "_overloadpacket", None) in flop_registry
            if not known and classify(func, "forward") is OpClass.OTHER:
                got = decomposition_table.get(func)
            self.decomposable[func] = got
        return None if got is None or func in self.decomposing else got

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        decomposed = self._decomposition(func) if self.phase != "optimizer" else None
        if decomposed is not None:
            self.decomposing.add(func)
            try:
                with self:  # the pieces dispatch through this recorder again
                    return decomposed(*args, **kwargs)
            finally:
                self.decomposing.discard(func)
        name = str(func)
        self.current = self._module()
        try:
            fast = FAST_OUTPUTS.get(func)
            out = fast(args, kwargs) if fast is not None else None
            if out is None:
                out = func(*args, **kwargs)
        except Exception as e:
            mod, mtype = self.current
            where = f"module '{mod}' ({mtype})" if mod else "the top-level forward"
            raise TraceError(f"op {name} in {where} cannot run on fake tensors: {type(e).__name__}: {e}") from e
        if name.startswith(_SKIP_NAMESPACES):
            return out
        ins = _tensors((args, kwargs))
        outs = _tensors(out)
        in_shapes = [tuple(int(d) for d in t.shape) for t in ins]
        out_shapes = [tuple(int(d) for d in t.shape) for t in outs]
        op_class = classify(func, self.phase)
        flops, source = op_flops(func, op_class, args, kwargs, out, in_shapes, out_shapes)
        view = op_class == "view"
        seen: set[int] = set()
        read = param_read = 0
        for t in ins:
            if id(t) not in seen:
                seen.add(id(t))
                read += _read_bytes(t)
                if t.untyped_storage()._cdata in self.param_storages:
                    param_read += _read_bytes(t)
        written = sum(_nbytes(t) for t in outs)
        reads = tuple(self._id(t) for t in ins)
        read_sizes = tuple(_read_bytes(t) for t in ins)
        read_params = tuple(t.untyped_storage()._cdata in self.param_storages for t in ins)
        in_storages = {t.untyped_storage()._cdata for t in ins}
        writes = tuple(self._id(t, fresh=t.untyped_storage()._cdata not in in_storages) for t in outs)
        if op_class == "embedding" and self.phase == "forward":
            # a gather reads the rows it fetches (as many bytes as it writes) and its indices, not the whole table
            read = written + sum(_nbytes(t) for t in ins if not t.is_floating_point())
        mod, mtype = self.current
        short = name.split(".")[1] if name.count(".") >= 1 else name
        index = len(self.records)
        self.records.append(
            OpRecord(
                index=index,
                op=name,
                module=mod,
                module_type=mtype,
                phase=self.phase,
                op_class=op_class,
                input_shapes=tuple(in_shapes),
                input_dtypes=tuple(str(t.dtype).replace("torch.", "") for t in ins),
                output_shapes=tuple(out_shapes),
                output_dtypes=tuple(str(t.dtype).replace("torch.", "") for t in outs),
                flops=flops,
                flops_source=source,
                bytes_read=0 if view else read,
                bytes_written=0 if view else written,
                gemm=gemm_shape(op_class, short, in_shapes, out_shapes),
                param_bytes=0 if view else param_read,
                reads=reads,
                writes=writes,
                read_sizes=read_sizes,
                read_params=read_params,
            )
        )
        if not view:
            self._track(out, index)
        return out


def _default_loss(out: Any) -> torch.Tensor:
    first = _tensors(out)[0]
    return first.float().pow(2).mean()


def trace(
    model: nn.Module,
    example_inputs: Sequence[Any],
    *,
    mode: str = "inference",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
    optimizer: str | None = "sgd",
    name: str | None = None,
) -> Trace:
    """Record every aten op of one inference step, or of a training step (forward, backward, optimizer).

    model: any nn.Module (real or fake parameters; it is not modified).
    example_inputs: positional inputs (real or fake tensors; only shapes and dtypes matter).
    loss_fn: maps the model output to a scalar loss (training); default mean of squares.
    optimizer: sgd (no state) | adam (two moments) | None (no step), training only.
    """
    if mode not in ("inference", "training"):
        raise InputError(f"unknown mode {mode!r}; known: inference, training")
    if optimizer not in (*OPTIMIZERS, None):
        raise InputError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}, None")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    training = mode == "training"
    logging.getLogger("torch._subclasses.fake_tensor").setLevel(logging.CRITICAL)
    fake = FakeTensorMode(allow_non_fake_inputs=True)

    def to_fake(t: Any) -> Any:
        return fake.from_tensor(t) if isinstance(t, torch.Tensor) and not fake.is_our_fake(t) else t

    with fake:
        params = {
            n: to_fake(p).detach().requires_grad_(training and p.requires_grad) for n, p in model.named_parameters()
        }
        buffers = {n: to_fake(b) for n, b in model.named_buffers()}
        inputs = tree_map(to_fake, tuple(example_inputs))
    param_bytes = sum(_nbytes(p) for p in params.values())
    trainable = [p for p in params.values() if p.requires_grad]

    tracker = ModuleTracker()
    root = type(model).__name__
    names = {root: ("", root)}
    for path, m in model.named_modules():
        if path:
            names[f"{root}.{path}"] = (path, type(m).__name__)
    rec = _Recorder(tracker, names)
    rec.param_storages = {p.untyped_storage()._cdata for p in params.values()}
    was_training = model.training
    model.train(training)
    grads_bytes = opt_bytes = 0
    grad_allocs: set[int] = set()
    backward_end: int | None = None
    calls = [0]

    def count_call(_module: nn.Module, _args: Any) -> None:
        calls[0] += 1

    hook = nn.modules.module.register_module_forward_pre_hook(count_call)
    try:
        with fake, tracker, rec, torch.set_grad_enabled(training):
            out = torch.func.functional_call(model, {**params, **buffers}, inputs)
            if training:
                loss = (loss_fn or _default_loss)(out)
                if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
                    raise TraceError("loss_fn must return a scalar tensor")
                rec.phase = "backward"
                loss.backward()
                grads = [p.grad for p in trainable if p.grad is not None]
                grads_bytes = sum(_nbytes(g) for g in grads)
                storages = (g.untyped_storage()._cdata for g in grads)
                grad_allocs = {rec.storage_alloc[c] for c in storages if c in rec.storage_alloc}
                backward_end = len(rec.events)
                if optimizer is not None:
                    rec.phase = "optimizer"
                    opt = torch.optim.SGD(trainable, lr=0.01) if optimizer == "sgd" else torch.optim.Adam(trainable)
                    opt.step()
                    opt_bytes = sum(
                        _nbytes(t)
                        for st in opt.state.values()
                        for t in st.values()
                        if isinstance(t, torch.Tensor) and t.dim() > 0
                    )
            del out
    except TraceError:
        raise
    except Exception as e:  # errors outside an op (shape checks in Python, bad loss_fn)
        mod, mtype = rec.current
        where = f" in module '{mod}' ({mtype})" if mod else ""
        raise TraceError(f"tracing {name or root} failed{where}: {type(e).__name__}: {e}") from e
    finally:
        hook.remove()
        model.train(was_training)

    kv = int(model.step_kv_cache_bytes(inputs)) if isinstance(model, KVCacheModel) else 0
    named = getattr(model, "kv_cache_inputs", None)
    cache_at = set(named(inputs)) if kv and callable(named) else set()
    in_tensors = _tensors(inputs)
    non_cache = _tensors([x for i, x in enumerate(inputs) if i not in cache_at])
    footprint = Footprint(
        params_bytes=param_bytes,
        grads_bytes=grads_bytes,
        optimizer_bytes=opt_bytes,
        activations_peak_bytes=_peak(rec.events[:backward_end], grad_allocs),
        kv_cache_bytes=kv,
        inputs_bytes=sum(_nbytes(t) for t in non_cache),
    )
    batch = int(in_tensors[0].shape[0]) if in_tensors and in_tensors[0].dim() else 1
    return Trace(
        model=name or root,
        mode=mode,
        batch=batch,
        param_count=sum(int(p.numel()) for p in params.values()),
        records=rec.records,
        footprint=footprint,
        input_shapes=[tuple(int(d) for d in t.shape) for t in in_tensors],
        optimizer=optimizer if training else None,
        module_calls=calls[0],
    )


def _peak(events: list[tuple[int, int, int]], exclude: set[int]) -> int:
    """Peak of live op-output bytes over forward and backward, not counting the parameter
    gradients (outputs of the ops in `exclude`, which are counted as gradients instead)."""
    live = peak = 0
    for _idx, delta, alloc in events:
        if alloc in exclude:
            continue
        live += delta
        peak = max(peak, live)
    return peak
