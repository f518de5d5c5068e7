"""What to quantize and how: `QuantSpec` per tensor, `QuantConfig` per model, named recipes.

Configs are frozen dataclasses that round-trip through JSON (`to_json` / `from_json`).
Per-module overrides match module names with shell-style patterns (fnmatch), the last
matching override wins, and `skip=True` leaves a module in floating point.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
from dataclasses import dataclass, field
from typing import Any

from chipfit.errors import InputError
from chipfit.formats import BlockFormat, FloatFormat, IntFormat, get_format, list_formats
from chipfit.quant.calibrate import CALIBRATORS

__all__ = ["GRANULARITIES", "RECIPES", "Override", "QuantConfig", "QuantSpec", "get_recipe"]

GRANULARITIES = ("tensor", "channel", "group", "block", "token")


@dataclass(frozen=True)
class QuantSpec:
    """How one tensor (a weight or a layer's input activation) is quantized.

    format: a chipfit format (int8, int4, float8_e4m3fn, mxfp4, nvfp4, ...).
    granularity: tensor | channel (weights: per output channel) | group (weights: group_size
      consecutive inputs share a scale) | block (MX/NVFP4: the format's own block scales) |
      token (activations: one scale per row, dynamic).
    symmetric: integer formats only; False gives an affine (zero-point) scale.
    calibrator: how a static range is found (minmax, moving-minmax, percentile, entropy, mse).
    dynamic: activations: the range is taken from each batch at run time (no calibration).
    learnable: QAT with LSQ: the scale is a trained parameter (integer formats).
    """

    format: str = "int8"
    granularity: str = "tensor"
    group_size: int = 128
    symmetric: bool = True
    calibrator: str = "minmax"
    percentile: float = 99.99
    dynamic: bool = False
    learnable: bool = False

    def __post_init__(self) -> None:
        try:
            f = get_format(self.format)
        except ValueError:
            raise InputError(
                f"unknown format {self.format!r}; known: {', '.join(f.name for f in list_formats())}"
            ) from None
        if self.granularity not in GRANULARITIES:
            raise InputError(f"unknown granularity {self.granularity!r}; known: {', '.join(GRANULARITIES)}")
        if self.calibrator not in CALIBRATORS:
            raise InputError(f"unknown calibrator {self.calibrator!r}; known: {', '.join(CALIBRATORS)}")
        if isinstance(f, BlockFormat) != (self.granularity == "block"):
            raise InputError(
                f"{self.format}: block formats (mx*, nvfp4) take granularity 'block' and other formats do not"
            )
        if not isinstance(f, (IntFormat, FloatFormat, BlockFormat)):
            raise InputError(f"{self.format} cannot be a quantization target; use an int, float or block format")
        if not self.symmetric and not isinstance(f, IntFormat):
            raise InputError("asymmetric (zero-point) quantization needs an integer format")
        if self.learnable and not isinstance(f, IntFormat):
            raise InputError("learnable (LSQ) scales need an integer format")
        if self.group_size < 1:
            raise InputError(f"group_size must be >= 1, got {self.group_size}")
        if self.granularity == "token" and not self.dynamic:
            raise InputError("per-token scales are dynamic: set dynamic=True")
        if not 0 < self.percentile <= 100:
            raise InputError(f"percentile must be in (0, 100], got {self.percentile}")

    @property
    def kind(self) -> str:
        f = get_format(self.format)
        return "block" if isinstance(f, BlockFormat) else "int" if isinstance(f, IntFormat) else "float"

    @property
    def bits(self) -> float:
        return float(get_format(self.format).bits)

    def describe(self) -> str:
        parts = [self.format, self.granularity if self.granularity != "group" else f"group {self.group_size}"]
        if self.kind == "int" and not self.symmetric:
            parts.append("asym")
        if self.granularity != "block":
            parts.append("dynamic" if self.dynamic else self.calibrator)
        return " ".join(parts)


@dataclass(frozen=True)
class Override:
    """Module-name pattern (fnmatch) -> its own weight/activation specs, or skip."""

    pattern: str
    weights: QuantSpec | None = None
    activations: QuantSpec | None = None
    skip: bool = False


@dataclass(frozen=True)
class QuantConfig:
    """A whole-model recipe. weights/activations None: that side stays floating point."""

    name: str = "custom"
    weights: QuantSpec | None = field(default_factory=lambda: QuantSpec("int8", "channel"))
    activations: QuantSpec | None = field(default_factory=lambda: QuantSpec("int8", "token", dynamic=True))
    targets: tuple[str, ...] = ("Linear", "Conv1d", "Conv2d")
    overrides: tuple[Override, ...] = ()
    smoothquant_alpha: float | None = None
    bias_correction: bool = False

    def __post_init__(self) -> None:
        if self.weights is None and self.activations is None:
            raise InputError("a config must quantize weights, activations or both")
        if self.smoothquant_alpha is not None and not 0 <= self.smoothquant_alpha <= 1:
            raise InputError(f"smoothquant_alpha must be in [0, 1], got {self.smoothquant_alpha}")
        for s in (self.weights, *(o.weights for o in self.overrides)):
            if s is not None and (s.granularity == "token" or s.dynamic):
                raise InputError("weights take tensor, channel, group or block granularity (not token/dynamic)")

    def for_module(self, name: str) -> tuple[QuantSpec | None, QuantSpec | None] | None:
        """(weights, activations) for module `name`, or None when it is skipped."""
        w, a = self.weights, self.activations
        for o in self.overrides:
            if fnmatch.fnmatchcase(name, o.pattern):
                if o.skip:
                    return None
                w, a = o.weights, o.activations
        return w, a

    def with_(self, **changes: Any) -> QuantConfig:
        return dataclasses.replace(self, **changes)

    # ---------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> QuantConfig:
        known = {f.name for f in dataclasses.fields(QuantConfig)}
        extra = set(d) - known
        if extra:
            raise InputError(f"unknown config keys {sorted(extra)}; known: {', '.join(sorted(known))}")

        def spec(v: Any) -> QuantSpec | None:
            if v is None:
                return None
            fields = {f.name for f in dataclasses.fields(QuantSpec)}
            bad = set(v) - fields
            if bad:
                raise InputError(f"unknown spec keys {sorted(bad)}; known: {', '.join(sorted(fields))}")
            return QuantSpec(**v)

        d = dict(d)
        for side in ("weights", "activations"):
            if side in d:
                d[side] = spec(d[side])
        if "targets" in d:
            d["targets"] = tuple(d["targets"])
        if "overrides" in d:
            d["overrides"] = tuple(
                Override(o["pattern"], spec(o.get("weights")), spec(o.get("activations")), bool(o.get("skip", False)))
                for o in d["overrides"]
            )
        return QuantConfig(**d)

    @staticmethod
    def from_json(text: str) -> QuantConfig:
        return QuantConfig.from_dict(json.loads(text))


_W8 = QuantSpec("int8", "channel")
RECIPES: dict[str, QuantConfig] = {
    c.name: c
    for c in [
        # the first recipe to reach for: no calibration data needed, and the most accurate INT8
        # here (MiniLM mean cosine 0.997 vs 0.955 entropy, 0.988 percentile: benchmarks/quant.py)
        QuantConfig("int8", _W8, QuantSpec("int8", "token", dynamic=True)),
        # static per-tensor activation ranges (what INT8 NPUs and TensorRT engines run)
        QuantConfig("int8-entropy", _W8, QuantSpec("int8", "tensor", calibrator="entropy")),
        QuantConfig("int8-minmax", _W8, QuantSpec("int8", "tensor", calibrator="minmax")),
        QuantConfig("int8-percentile", _W8, QuantSpec("int8", "tensor", calibrator="percentile")),
        QuantConfig("int8-mse", _W8, QuantSpec("int8", "tensor", calibrator="mse")),
        QuantConfig(
            "int8-smoothquant", _W8, QuantSpec("int8", "tensor", calibrator="percentile"), smoothquant_alpha=0.5
        ),
        QuantConfig("int8-weight-only", _W8, None),
        # INT4 tensor-core GEMM inputs: per-channel weights, per-token dynamic activations
        QuantConfig("int4", QuantSpec("int4", "channel"), QuantSpec("int4", "token", dynamic=True)),
        QuantConfig("int4-weight-only", QuantSpec("int4", "group", group_size=32), None),
        QuantConfig("w4a8", QuantSpec("int4", "group", group_size=32), QuantSpec("int8", "token", dynamic=True)),
        QuantConfig("fp8", QuantSpec("float8_e4m3fn", "channel"), QuantSpec("float8_e4m3fn", "tensor")),
        QuantConfig("mxfp8", QuantSpec("mxfp8_e4m3", "block"), QuantSpec("mxfp8_e4m3", "block")),
        QuantConfig("mxfp4", QuantSpec("mxfp4", "block"), QuantSpec("mxfp4", "block")),
        QuantConfig("nvfp4", QuantSpec("nvfp4", "block"), QuantSpec("nvfp4", "block")),
    ]
}
DEFAULT_RECIPE = "int8"


def get_recipe(name: str) -> QuantConfig:
    try:
        return RECIPES[name]
    except KeyError:
        raise InputError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None
