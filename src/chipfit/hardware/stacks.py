"""Software stacks as data: what each compiler fuses and what a kernel launch costs under it.

A device names its vendor's stack (`support.stack`) and the execution it is priced with by default
(`support.execution`: compiled, or eager for CPUs, calibrated against eager PyTorch). The rules live
in `stacks.toml` beside this file, one table per stack, each rule with the source that says the
compiler does it; `cost.fusion` applies them. `resolve_stack(device, execution, mode)` is the one
place that turns a user's `--execution` (eager, compiled, or a stack's name) into a `Stack`.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chipfit.errors import InputError

if TYPE_CHECKING:
    from chipfit.hardware.device import Device

__all__ = ["EXECUTIONS", "STACKS_FILE", "Execution", "Stack", "execution_choices", "get_stack", "resolve_stack",
           "stacks"]  # fmt: skip

STACKS_FILE = Path(__file__).with_name("stacks.toml")


class Execution(StrEnum):
    EAGER = "eager"  # one kernel per aten op, as eager PyTorch runs it
    COMPILED = "compiled"  # the device's compiler fuses (its Stack's rules)


EXECUTIONS = tuple(e.value for e in Execution)
RULES = ("fold_batchnorm", "epilogue", "pointwise", "attention")


@dataclass(frozen=True, kw_only=True)
class Stack:
    """A software stack's execution rules. Each fusion rule carries the source that says the compiler
    applies it (`sources[rule]`); `kernel_launch_s` (None: the device's own per-op dispatch figure) is
    what each kernel costs to start, `step_launch_s` what starting the whole step costs once."""

    name: str
    display_name: str
    execution: Execution
    fold_batchnorm: bool = False
    epilogue: bool = False
    pointwise: bool = False
    attention: bool = False
    inference_only: bool = False  # a training step runs under `training_stack` instead
    training_stack: str = ""
    kernel_launch_s: float | None = None
    step_launch_s: float = 0.0
    launch_source: str = ""
    source: str = ""
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def fuses(self) -> tuple[str, ...]:
        return tuple(r for r in RULES if getattr(self, r))

    def kernel_launch_on(self, device: Device) -> float:
        return device.compute.dispatch_overhead_s if self.kernel_launch_s is None else self.kernel_launch_s

    def step_launch_on(self, device: Device) -> float:
        """What starting one compiled step costs on `device`: its measured graph call (compute.graph_call_s,
        chipfit calibrate) where it has one, else the stack's own figure; nothing for eager execution."""
        if self.execution is not Execution.COMPILED:
            return 0.0
        return device.compute.graph_call_s or self.step_launch_s


def _parse(name: str, t: Mapping[str, Any]) -> Stack:
    def fail(problem: str) -> InputError:
        return InputError(f"{STACKS_FILE.name}: stack '{name}': {problem}")

    allowed = {"display_name", "execution", "inference_only", "training_stack", "kernel_launch_s", "step_launch_s",
               "launch_source", "source", *RULES, *(f"{r}_source" for r in RULES)}  # fmt: skip
    extra = set(t) - allowed
    if extra:
        raise fail(f"unknown field(s) {', '.join(sorted(extra))}; valid: {', '.join(sorted(allowed))}")
    if t.get("execution") not in EXECUTIONS:
        raise fail(f"execution must be one of {', '.join(EXECUTIONS)}")
    sources = {}
    for r in RULES:
        if t.get(r, False):
            if not t.get(f"{r}_source"):
                raise fail(f"{r} = true needs {r}_source (where the compiler is documented to do it)")
            sources[r] = str(t[f"{r}_source"])
    launch = t.get("kernel_launch_s")
    if (launch is not None or t.get("step_launch_s")) and not t.get("launch_source"):
        raise fail("kernel_launch_s / step_launch_s need launch_source")
    return Stack(
        name=name, display_name=str(t.get("display_name", name)), execution=Execution(t["execution"]),
        **{r: bool(t.get(r, False)) for r in RULES}, inference_only=bool(t.get("inference_only", False)),
        training_stack=str(t.get("training_stack", "")), kernel_launch_s=None if launch is None else float(launch),
        step_launch_s=float(t.get("step_launch_s", 0.0)), launch_source=str(t.get("launch_source", "")),
        source=str(t.get("source", "")), sources=sources,
    )  # fmt: skip


@functools.cache
def stacks() -> dict[str, Stack]:
    """Every stack of stacks.toml, by name (the file is read once)."""
    data = tomllib.loads(STACKS_FILE.read_text())
    out = {name: _parse(name, t) for name, t in data.items()}
    for s in out.values():
        if s.inference_only and s.training_stack not in out:
            raise InputError(f"{STACKS_FILE.name}: stack '{s.name}': training_stack {s.training_stack!r} is no stack")
    return out


def get_stack(name: str) -> Stack:
    try:
        return stacks()[name]
    except KeyError:
        raise InputError(f"unknown stack {name!r}; known: {', '.join(stacks())}") from None


def execution_choices() -> tuple[str, ...]:
    """What `--execution` accepts: eager, compiled (the device's own stack) or any stack's name."""
    return (*EXECUTIONS, *(n for n in stacks() if n not in EXECUTIONS))


def resolve_stack(device: Device, execution: str | None = None, mode: str = "inference") -> Stack:
    """The stack `device` runs a `mode` step under: `execution` None is the device's default
    (`support.execution`), "compiled" its vendor stack, "eager" one kernel per op, any other value a
    stack's name. A training step under an inference-only stack (TensorRT) runs under that stack's
    `training_stack`."""
    choice = device.support.execution if execution is None else execution
    if choice == Execution.COMPILED:
        name = device.support.stack
    elif choice in stacks():
        name = choice
    else:
        raise InputError(f"unknown execution {choice!r}; valid: {', '.join(execution_choices())}")
    stack = get_stack(name)
    if mode == "training" and stack.inference_only:
        stack = get_stack(stack.training_stack)
    return stack
