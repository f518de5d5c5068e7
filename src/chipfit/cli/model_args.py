"""MODEL and the flags that shape its inputs, with one meaning on every command.

Every command that builds a model takes the same flags (docs/cli.md, "Models and inputs"):

- `MODEL`: a built-in name (`chipfit models`), `path/to/file.py:factory` or `package.module:factory`.
- `--input-shape DIMS` (user models, one per positional input): the shape of ONE item, without the
  batch dimension; `--batch` (or plan's `--batch-sizes`) sets the batch, so the tensor is
  `(batch, *DIMS)`. Built-in models make their own inputs.
- `--dtype` (user models): the inputs' dtype, once for all inputs or once per `--input-shape`.
- `--seq-len`, `--decode`: the sequence length of the models that have one, and one decode step
  over a KV cache of that length for the decoder-* models.
- `--device-file`: extra or overriding catalog files, wherever a device is named.

A flag that does not apply to the model it is given with is a one-line error naming where it does
apply; it is never ignored.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from chipfit.cli.common import CliError, build_user_model, positive

__all__ = ["DTYPES", "ModelChoice", "add_device_file_arg", "add_model_args", "parse_item_shape", "resolve_model"]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
}  # fmt: skip
MODEL_HELP = "a built-in model (see `chipfit models`), path/to/file.py:factory or package.module:factory"


def add_model_args(
    p: argparse.ArgumentParser, *, batch: bool = True, model_help: str = MODEL_HELP, optional: bool = False
) -> None:
    """MODEL, --batch (unless the command sweeps batches itself), --input-shape, --dtype, --seq-len, --decode.
    optional: MODEL may be left out (plan --serve --config FILE); the command then checks it is given."""
    p.add_argument("model", help=model_help, nargs="?" if optional else None)
    if batch:
        p.add_argument("--batch", type=positive, default=1, help="items per step (default 1)")
    p.add_argument(
        "--input-shape", action="append", metavar="DIMS",
        help="user models: the shape of one item of a positional input, without the batch dimension, e.g. "
        "3,224,224 (repeat once per input); the batch comes from --batch",
    )  # fmt: skip
    p.add_argument(
        "--dtype", action="append", choices=sorted(DTYPES),
        help="user models: the inputs' dtype (once for all, or once per --input-shape; default float32)",
    )  # fmt: skip
    p.add_argument("--seq-len", type=positive, help="sequence length of the bert-*, decoder-* and minilm models")
    p.add_argument(
        "--decode", action="store_true", help="decoder-* models: one decode step over a KV cache of --seq-len"
    )


def add_device_file_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device-file", action="append", metavar="PATH", help="extra or overriding device TOML (repeatable)"
    )


def parse_item_shape(text: str) -> tuple[int, ...]:
    """`3,224,224` (or `3x224x224`) -> (3, 224, 224); a CliError for anything else."""
    try:
        dims = tuple(int(d) for d in text.lower().replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if not dims or any(d < 1 for d in dims):
        raise CliError(
            f"--input-shape {text!r} must be positive integers like 3,224,224: one item, without the batch dimension"
        )
    return dims


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """A resolved MODEL argument: what to build and how to make its inputs for a batch size."""

    name: str
    spec: Any = None  # the built-in ModelSpec, None for a user model
    item_shapes: tuple[tuple[int, ...], ...] = ()
    dtypes: tuple[torch.dtype, ...] = ()
    seq_len: int | None = None
    decode: bool = False
    fake: Any = field(default=None, compare=False)  # the FakeTensorMode the model and inputs live in (or None)

    @property
    def builtin(self) -> bool:
        return self.spec is not None

    def _mode(self) -> Any:
        return self.fake if self.fake is not None else contextlib.nullcontext()

    def build(self, *, pretrained: bool = False) -> torch.nn.Module:
        """The module: on fake tensors when the choice is fake, else for real (a built-in's trained
        weights with `pretrained`)."""
        if self.spec is None:
            user: torch.nn.Module = build_user_model(self.name, self._mode())
            return user
        if pretrained and self.spec.pretrained is not None:
            try:
                model: torch.nn.Module = self.spec.pretrained()
            except RuntimeError as e:  # an optional extra that is not installed
                raise CliError(str(e)) from None
            return model
        with self._mode():
            built: torch.nn.Module = self.spec.build()
        return built

    def inputs(self, batch: int) -> tuple[torch.Tensor, ...]:
        """Example inputs for `batch` items: (batch, *item shape) per positional input."""
        if batch < 1:
            raise CliError(f"batch must be >= 1, got {batch}")
        with self._mode():
            if self.spec is not None:
                out: tuple[torch.Tensor, ...] = self.spec.example_inputs(batch, self.seq_len, self.decode)
                return out
            return tuple(
                torch.randint(0, 2, (batch, *s)) if dt == torch.int64 else torch.randn((batch, *s), dtype=dt)
                for s, dt in zip(self.item_shapes, self.dtypes, strict=True)
            )


def _applies(what: str, names: Sequence[str]) -> str:
    return f"{what} applies to {', '.join(names)}" if names else f"no built-in model takes {what}"


def resolve_model(
    args: argparse.Namespace,
    *,
    fake: bool = True,
    data: bool = False,
    shapes_from_data: bool = False,
    own_model_hint: str = "the Python API",
) -> ModelChoice:
    """The one place a MODEL argument and its input flags are checked and resolved.

    `fake`: build on fake tensors (shapes only: a 70B model costs no memory). `data`: the command runs
    a built-in model's own weights and data (emulate, quantize, train), so the input flags that would
    change those inputs are refused. `shapes_from_data`: the user's data gives the input shapes
    (plan --eval-data), so a user model needs no --input-shape."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from chipfit.models import MODELS, get_model

    ref: str = args.model
    shapes = getattr(args, "input_shape", None) or []
    dtypes = getattr(args, "dtype", None) or []
    seq_len: int | None = getattr(args, "seq_len", None)
    decode: bool = bool(getattr(args, "decode", False))
    batch = getattr(args, "batch", None)
    if batch is not None and batch < 1:
        raise CliError(f"--batch must be >= 1, got {batch}")
    if seq_len is not None and seq_len < 1:
        raise CliError(f"--seq-len must be >= 1, got {seq_len}")
    mode = FakeTensorMode(allow_non_fake_inputs=True) if fake else None
    if ref in MODELS:
        spec = get_model(ref)
        if shapes or dtypes:
            flag = "--input-shape" if shapes else "--dtype"
            how = "its built-in data are its inputs" if data else "it makes its own inputs (use --batch, --seq-len)"
            raise CliError(f"{flag} is for user models; {ref}: {how}")
        if data:
            from chipfit.cli.common import builtin_with_data

            builtin_with_data(ref, own_model_hint)  # a built-in without weights and data: the error lists those with
        with_seq = [n for n, s in MODELS.items() if s.default_seq_len]
        decoders = [n for n, s in MODELS.items() if s.task == "decoder"]
        if data:
            if seq_len is not None or decode:
                flag = "--seq-len" if seq_len is not None else "--decode"
                raise CliError(
                    f"{ref}'s built-in data fixes its inputs, so {flag} does not apply here; it applies where chipfit "
                    "makes the inputs (trace, estimate, plan without accuracy)"
                )
        else:
            if seq_len is not None and not spec.default_seq_len:
                raise CliError(f"{ref} has no sequence length; {_applies('--seq-len', with_seq)}")
            if decode and spec.task != "decoder":
                raise CliError(f"{ref} has no decode step; {_applies('--decode', decoders)}")
        return ModelChoice(name=ref, spec=spec, seq_len=seq_len, decode=decode, fake=mode)
    if ":" not in ref:
        known = ", ".join(MODELS)
        raise CliError(f"unknown model {ref!r}; built-in: {known}; or a user model as path/to/file.py:factory "
                       "or package.module:factory")  # fmt: skip
    if data:
        with_data = ", ".join(n for n, s in MODELS.items() if s.eval_data is not None)
        raise CliError(f"this command runs a built-in model with weights and data ({with_data}); for your own "
                       f"model use {own_model_hint}")  # fmt: skip
    if seq_len is not None or decode:
        flag = "--seq-len" if seq_len is not None else "--decode"
        raise CliError(f"{flag} is for built-in models; give a user model's input shapes with --input-shape")
    if not shapes and shapes_from_data:
        return ModelChoice(name=ref, fake=mode)
    if not shapes:
        raise CliError(
            "a user model needs --input-shape: the shape of one item of each positional input, without the batch "
            "dimension (repeat per input), e.g. --input-shape 3,224,224"
        )
    items = tuple(parse_item_shape(s) for s in shapes)
    if len(dtypes) not in (0, 1, len(items)):
        raise CliError(f"give --dtype once or once per --input-shape ({len(items)}), not {len(dtypes)} times")
    kinds = tuple(DTYPES[d] for d in dtypes) or (torch.float32,)
    if len(kinds) == 1:
        kinds = kinds * len(items)
    return ModelChoice(name=ref, item_shapes=items, dtypes=kinds, fake=mode)
