"""Helpers shared by the chipfit subcommands."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

from rich.console import Console

from chipfit.errors import InputError

__all__ = [
    "CliError",
    "add_execution_arg",
    "console",
    "count_or_all",
    "emit_json",
    "ints_arg",
    "jsonable",
    "num",
    "positive",
    "progress_bar",
]


class CliError(InputError):
    """A user error found by the CLI itself: printed as one line, exit status 2."""


def console() -> Console:
    """Wide enough for our tables when output goes to a pipe or a file."""
    probe = Console()
    return Console(highlight=False, width=probe.width if probe.is_terminal else 160)


MAX_COUNT = 2**31 - 1  # a batch, length or count beyond this overflows tensor sizes long before it means anything


def _count(text: str, least: int) -> int:
    import argparse

    try:
        v = int(text)
    except ValueError:
        v = None
    if v is None or not least <= v <= MAX_COUNT:
        what = "a positive integer" if least else "a non-negative integer (0: all)"
        raise argparse.ArgumentTypeError(f"{text!r} is not {what} up to {MAX_COUNT:,}")
    return v


def ints_arg(text: str, what: str) -> list[int]:
    """`1,8,32` -> [1, 8, 32]: comma-separated positive integers, else a one-line CliError naming `what`."""
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise CliError(f"{what} {text!r} must be comma-separated positive integers, e.g. 1,8,32") from None
    if not vals or any(v < 1 or v > MAX_COUNT for v in vals):
        raise CliError(f"{what} {text!r} must be comma-separated positive integers, e.g. 1,8,32")
    return vals


def positive(text: str) -> int:
    """argparse type: an integer in [1, MAX_COUNT], else a one-line usage error."""
    return _count(text, 1)


def count_or_all(text: str) -> int:
    """argparse type: an integer in [0, MAX_COUNT] where 0 means no limit."""
    return _count(text, 0)


def progress_bar(quiet: bool = False) -> Any:
    """A transient progress bar on a terminal; nothing at all (not even a blank line) when `quiet` or
    on a pipe or file."""
    from rich.progress import Progress

    c = console()
    return Progress(console=c, disable=quiet or not c.is_terminal, transient=True)


def jsonable(obj: Any) -> Any:
    """Plain JSON: non-finite floats become the strings 'inf', '-inf', 'nan'."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(obj), indent=2, allow_nan=False) + "\n")


def num(v: float) -> str:
    """Compact number for tables: plain in [1e-3, 1e6), a power of two as 2^k, else 4 digits."""
    if v == 0:
        return "0"
    if not math.isfinite(v):
        return str(v)
    a = abs(v)
    if 1e-3 <= a < 1e6:
        return f"{v:.6g}"
    e = math.log2(a)
    if e == int(e):
        return f"2^{int(e)}" if v > 0 else f"-2^{int(e)}"
    return f"{v:.4g}"


def builtin_with_data(name: str, own_model_hint: str) -> Any:
    """The ModelSpec of a built-in model that carries weights and data, or a CliError naming them."""
    from chipfit.models import MODELS, get_model

    spec = get_model(name)
    if spec.eval_data is None or spec.pretrained is None:
        with_data = ", ".join(n for n, s in MODELS.items() if s.eval_data is not None)
        raise CliError(
            f"{name} has no built-in weights and data; built-in models with both: {with_data}. "
            f"For your own model use {own_model_hint} from Python."
        )
    return spec


def build_user_model(ref: str, fake: Any) -> Any:
    """Call the factory `path/to/file.py:factory` (or `module:factory`) inside `fake` (a
    FakeTensorMode); CliErrors for a factory that raises or returns something else."""
    import torch

    from chipfit.models import load_user_model

    factory = load_user_model(ref)
    with fake:
        try:
            model = factory()
        except Exception as e:
            raise CliError(f"the model factory {ref} raised {type(e).__name__}: {e}") from e
    if not isinstance(model, torch.nn.Module):
        raise CliError(f"{ref} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def add_execution_arg(p: Any) -> None:
    """`--execution`: how the step is priced (hardware/stacks.toml; docs/cost.md#execution)."""
    from chipfit.hardware.stacks import execution_choices

    p.add_argument(
        "--execution", choices=execution_choices(), default=None, metavar="EXECUTION",
        help="how each device runs the step: its own stack by default (TensorRT on NVIDIA GPUs, XLA on TPUs, "
        "Neuron, ...; eager PyTorch on CPUs); 'eager' one kernel per aten op; 'compiled' the device's compiler; "
        f"or one stack for all: {', '.join(execution_choices()[2:])} (docs/cost.md#execution)",
    )  # fmt: skip
