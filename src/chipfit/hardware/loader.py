"""Load, merge (`extends`) and validate device catalog files (TOML).

Each top-level table of a catalog file is a device; a name starting with `_` is
an abstract set of shared parts that others extend and that is never listed.
Built-in files live in `chipfit/hardware/catalog/`; users add or override chips
with `--device-file PATH` or `CHIPFIT_DEVICE_PATH` (files or folders, separated
by the OS path separator). Every error names the file, the device and the field.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chipfit.errors import InputError
from chipfit.formats import FORMATS, IntFormat
from chipfit.hardware import energy
from chipfit.hardware.device import (
    DATAFLOWS,
    FALLBACKS,
    FAMILIES,
    LINK_KINDS,
    MATRIX_KINDS,
    MEMORY_KINDS,
    TOPOLOGIES,
    Compute,
    Device,
    Link,
    MatrixUnit,
    MemoryLevel,
    Power,
    Price,
    PriceBasis,
    PriceUnit,
    Source,
    SparseMath,
    Support,
    Training,
    frozen_map,
)
from chipfit.hardware.sparsity import Pattern
from chipfit.hardware.stacks import EXECUTIONS, stacks
from chipfit.vocab import DEVICE_OP_CLASSES

__all__ = ["BUILTIN_DIR", "CatalogError", "load_devices", "parse_price", "read_catalog_file"]

BUILTIN_DIR = Path(__file__).resolve().parent / "catalog"
IDLE_FRACTION_ASSUMED = 0.3
DEFAULT_EFFICIENCY = 0.75

# field -> (min, max, unit hint); ranges are wide but catch 1000x unit slips
RANGES: dict[str, tuple[float, float, str]] = {
    "year": (2010, 2030, "a calendar year"),
    "process_nm": (1, 65, "nanometres"),
    "peak_ops_per_s": (1e9, 1e17, "ops per second (1 TFLOP/s = 1e12)"),
    "vector_ops_per_s": (1e8, 1e16, "ops per second"),
    "units": (1, 1e6, "a count"),
    "dispatch_overhead_s": (1e-8, 1e-2, "seconds (1 us = 1e-6)"),
    "count": (1, 1e6, "a count"),
    "rows": (1, 4096, "processing elements"),
    "cols": (1, 4096, "processing elements"),
    "depth": (1, 4096, "MACs per element per clock"),
    "clock_hz": (1e7, 1e10, "hertz (1 GHz = 1e9)"),
    "capacity_bytes": (1e3, 1e13, "bytes (1 GB = 1e9)"),
    "dram_bandwidth_bytes_per_s": (1e8, 2e13, "bytes per second (1 TB/s = 1e12)"),
    "sram_bandwidth_bytes_per_s": (1e9, 3e16, "bytes per second (1 TB/s = 1e12)"),
    "energy_pj_per_byte": (0.01, 1000, "picojoules per byte"),
    "tdp_w": (0.1, 30000, "watts (a wafer-scale system draws 23 kW)"),
    "idle_w": (0, 30000, "watts"),
    "link_bandwidth_bytes_per_s": (1e7, 1e13, "bytes per second, per direction"),
    "latency_s": (1e-8, 1e-2, "seconds (1 us = 1e-6)"),
    "hop_latency_s": (0, 1e-4, "seconds (1 us = 1e-6)"),
    "collective_latency_s": (0, 1e-3, "seconds (1 us = 1e-6)"),
    "domain_chips": (2, 1e6, "chips"),
    "usd": (1e-3, 1e8, "US dollars, as the source prints them (per unit)"),
    "accelerators": (1, 1e6, "accelerators per instance, card or system"),
    "published_ops_per_j": (1e9, 1e15, "ops per joule (1 TOPS/W = 1e12)"),
    "matmul_efficiency": (0.05, 1.0, "a fraction of peak"),
    "sustained_ops_per_s": (1e9, 1e17, "ops per second (1 TFLOP/s = 1e12)"),
    "view_overhead_s": (0, 1e-3, "seconds per view op (1 us = 1e-6)"),
    "module_overhead_s": (0, 1e-3, "seconds per module call (1 us = 1e-6)"),
    "class_overhead_s": (1e-8, 1e-2, "seconds (1 us = 1e-6)"),
    "op_overhead_s": (1e-8, 1e-2, "seconds (1 us = 1e-6)"),
    "param_access_s": (0, 1e-3, "seconds per parameter read (1 us = 1e-6)"),
    "gemm_half_dims": (0, 1e5, "matrix dimension"),
    "class_efficiency": (0.01, 2.0, "a multiplier of the GEMM model's speed"),
    "fresh_alloc_bytes_per_s": (1e7, 1e13, "bytes per second"),
    "kernel_latency_s": (1e-8, 1e-3, "seconds (1 us = 1e-6)"),
    "graph_call_s": (1e-8, 1e-2, "seconds per call of a compiled graph (1 us = 1e-6)"),
    "wave_latency_s": (0, 1e-3, "seconds per wave of output tiles (1 us = 1e-6)"),
    "wave_latency_format_s": (0, 1e-3, "seconds per wave of output tiles (1 us = 1e-6)"),
    "sparse_efficiency": (0.3, 1.0, "a share of the sparse-over-dense peak ratio"),
}

TOP_KEYS = {
    "extends", "display_name", "vendor", "family", "year", "process_nm", "description", "source",
    "compute", "matrix_units", "memory", "power", "support", "host_link", "interconnect", "scale_out", "prices",
    "training", "sparsity", "published_ops_per_j", "published_efficiency_source",
}  # fmt: skip
SECTION_KEYS = {
    "compute": {
        "peak_ops_per_s", "accumulate", "source", "vector_ops_per_s", "vector_source", "units",
        "dispatch_overhead_s", "overhead_source", "kernel_tile_mnk", "matmul_efficiency", "efficiency_source",
        "matmul_efficiency_format",
        "view_overhead_s", "module_overhead_s", "class_overhead_s", "op_overhead_s", "param_access_s", "gemm_half_dims",
        "gemm_table", "gemm_table_source", "class_efficiency",
        "fresh_alloc_bytes_per_s", "kernel_latency_s", "kernel_latency_source", "graph_call_s", "graph_call_source",
        "wave_latency_s",
        "wave_latency_format_s", "wave_latency_source",
    },
    "matrix_unit": {"kind", "count", "rows", "cols", "depth", "clock_hz", "source", "dataflow"},
    "memory": {"kind", "capacity_bytes", "bandwidth_bytes_per_s", "source", "energy_pj_per_byte", "energy_source"},
    "power": {"tdp_w", "idle_w", "source", "idle_source", "load_w", "load_source", "sustained_ops_per_s",
              "sustained_source", "sustained_from"},
    "support": {"autocast", "unsupported_format", "host_op_classes", "host", "source", "weight_only",
                "weight_only_source", "stack", "execution"},
    "link": {"kind", "bandwidth_bytes_per_s", "topology", "source", "generation", "latency_s", "latency_source",
             "hop_latency_s", "collective_latency_s", "domain_chips"},
    "price": {"basis", "provider", "region", "unit", "usd", "accelerators", "instance", "date", "source"},
    "training": {"formats", "source"},
    "sparsity": {"peak_ops_per_s", "source", "efficiency", "efficiency_source"},
}  # fmt: skip
OP_CLASSES = DEVICE_OP_CLASSES  # what a device file may name


class CatalogError(InputError):
    """A malformed catalog file or device; the message names file, device and field."""


@dataclass
class _Ctx:
    file: str
    device: str

    def fail(self, field: str, problem: str) -> CatalogError:
        where = f"{self.file}: device '{self.device}'"
        return CatalogError(f"{where}: field '{field}': {problem}" if field else f"{where}: {problem}")


def read_catalog_file(path: Path) -> dict[str, dict[str, Any]]:
    try:
        text = path.read_text()
    except OSError as e:
        raise CatalogError(f"{path}: cannot read device file ({e.strerror})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CatalogError(f"{path}: not valid TOML: {e}") from None
    for name, entry in data.items():
        if not isinstance(entry, dict):
            raise CatalogError(f"{path}: top-level key '{name}' must be a device table ([{name}])")
        entry["__file__"] = str(path)
    return data


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve(name: str, raw: Mapping[str, dict[str, Any]], stack: tuple[str, ...] = ()) -> dict[str, Any]:
    entry = raw[name]
    parent = entry.get("extends")
    if parent is None:
        return dict(entry)
    ctx = _Ctx(entry["__file__"], name)
    if not isinstance(parent, str) or parent not in raw:
        known = ", ".join(sorted(n for n in raw if n != name))
        raise ctx.fail("extends", f"unknown device {parent!r}; known: {known}")
    if parent in stack or parent == name:
        raise ctx.fail("extends", f"cycle: {' -> '.join((*stack, name, parent))}")
    merged = _merge(_resolve(parent, raw, (*stack, name)), entry)
    merged["__file__"] = entry["__file__"]
    if "prices" not in entry:  # a price is for a product: a part that extends another never inherits it
        merged.pop("prices", None)
    own = entry.get("compute")
    if isinstance(own, Mapping) and "matmul_efficiency" in own and "matmul_efficiency_format" not in own:
        merged["compute"].pop("matmul_efficiency_format", None)  # its own measured efficiency replaces the parent's
    power = entry.get("power")
    if isinstance(power, Mapping) and isinstance(merged.get("power"), dict):
        _replace_sustained(ctx, merged["power"], power)
        inherited = "sustained_ops_per_s" in merged["power"] and "sustained_ops_per_s" not in power
        if inherited and ("tdp_w" in power or "idle_w" in power):
            # the parent's measurement, at the parent's TDP: the die's energy, borrowed, not this part's own
            merged["power"].pop("sustained_ops_per_s")
            merged["power"].pop("sustained_source", None)
            merged["power"]["sustained_from"] = parent
    return merged


def _one_sustained(ctx: _Ctx, own: Mapping[str, Any]) -> None:
    """A power table gives its own measurement (sustained_ops_per_s) or borrows one (sustained_from)."""
    if "sustained_ops_per_s" in own and "sustained_from" in own:
        raise ctx.fail("power.sustained_from", "give either sustained_from or sustained_ops_per_s, not both")


def _replace_sustained(ctx: _Ctx, merged: dict[str, Any], own: Mapping[str, Any]) -> None:
    """A part's own power measurement (sustained_ops_per_s) replaces the borrowed one (sustained_from) it
    inherits or overrides, and the other way round; one table giving both is an error."""
    _one_sustained(ctx, own)
    if "sustained_ops_per_s" in own:
        merged.pop("sustained_from", None)
    elif "sustained_from" in own:
        merged.pop("sustained_ops_per_s", None)
        merged.pop("sustained_source", None)


def _files(paths: Iterable[str | Path], env: bool) -> list[Path]:
    out: list[Path] = []
    items = list(paths)
    if env and os.environ.get("CHIPFIT_DEVICE_PATH"):
        items += [p for p in os.environ["CHIPFIT_DEVICE_PATH"].split(os.pathsep) if p]
    for p in items:
        path = Path(p)
        if path.is_dir():
            out += sorted(path.glob("*.toml"))
        elif path.exists():
            out.append(path)
        else:
            raise CatalogError(f"{path}: device file not found")
    return out


def load_devices(paths: Sequence[str | Path] = (), *, builtin: bool = True, env: bool = True) -> dict[str, Device]:
    """Every device of the built-in catalog and the given files; later files override earlier names."""
    raw: dict[str, dict[str, Any]] = {}
    files = (sorted(BUILTIN_DIR.glob("*.toml")) if builtin else []) + _files(paths, env)
    for f in files:
        for name, entry in read_catalog_file(f).items():
            # a later file naming an existing device overrides just the fields it gives; a file that only
            # adds price records (the catalog's prices.toml) leaves the device's own file as its home
            prices_only = set(entry) <= {"prices", "__file__"} and f.parent == BUILTIN_DIR
            if name in raw:
                home = raw[name]["__file__"]
                raw[name] = _merge(raw[name], entry)
                own = entry.get("power")
                if isinstance(own, Mapping) and isinstance(raw[name].get("power"), dict):
                    _replace_sustained(_Ctx(str(f), name), raw[name]["power"], own)
                if prices_only:
                    raw[name]["__file__"] = home
            else:
                raw[name] = entry
    devices = {name: _build(name, _resolve(name, raw)) for name in raw if not name.startswith("_")}
    devices = {name: _borrow_sustained(d, devices) for name, d in devices.items()}
    for d in devices.values():
        host = d.support.host
        if host is not None:
            ctx = _Ctx(d.file, d.name)
            if host not in devices:
                raise ctx.fail("support.host", f"unknown device {host!r}; known: {', '.join(sorted(devices))}")
            if devices[host].family != "cpu":
                raise ctx.fail("support.host", f"{host!r} is a {devices[host].family}, the host must be a cpu")
    return devices


# ---------------------------------------------------------------- building and validating
def _check_keys(ctx: _Ctx, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for k in table:
        if k not in allowed and k != "__file__":
            raise ctx.fail(f"{where}{k}", f"unknown field; valid fields: {', '.join(sorted(allowed))}")


def _req(ctx: _Ctx, table: Mapping[str, Any], key: str, where: str = "") -> Any:
    if key not in table:
        raise ctx.fail(f"{where}{key}", "missing required field")
    return table[key]


def _num(ctx: _Ctx, table: Mapping[str, Any], key: str, where: str = "", rng: str | None = None) -> float:
    v = _req(ctx, table, key, where)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ctx.fail(f"{where}{key}", f"must be a number, got {v!r}")
    lo, hi, unit = RANGES[rng or key]
    if not lo <= v <= hi:
        raise ctx.fail(f"{where}{key}", f"{v:g} is outside [{lo:g}, {hi:g}]; the unit is {unit}")
    return float(v)


def _str(ctx: _Ctx, table: Mapping[str, Any], key: str, where: str = "", choices: Sequence[str] | None = None) -> str:
    v = _req(ctx, table, key, where)
    if not isinstance(v, str) or not v:
        raise ctx.fail(f"{where}{key}", f"must be a non-empty string, got {v!r}")
    if choices is not None and v not in choices:
        raise ctx.fail(f"{where}{key}", f"unknown value {v!r}; valid: {', '.join(choices)}")
    return v


def _source(ctx: _Ctx, table: Mapping[str, Any], key: str, where: str = "") -> Source:
    try:
        return Source.parse(_str(ctx, table, key, where))
    except ValueError as e:
        raise ctx.fail(f"{where}{key}", str(e)) from None


def _fmt(ctx: _Ctx, field: str, name: Any) -> str:
    if not isinstance(name, str) or name not in FORMATS:
        raise ctx.fail(field, f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    return name


def _table(ctx: _Ctx, d: Mapping[str, Any], key: str) -> dict[str, Any]:
    v = _req(ctx, d, key)
    if not isinstance(v, dict):
        raise ctx.fail(key, "must be a table")
    return v


DATE_RE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?)?$")


def parse_price(ctx: _Ctx, t: Mapping[str, Any], where: str, source: Source | None = None) -> Price:
    """One price record; `source` (a user's price file) replaces the record's own."""
    _check_keys(ctx, where, t, SECTION_KEYS["price"])
    basis = PriceBasis(_str(ctx, t, "basis", where, [b.value for b in PriceBasis]))
    unit = PriceUnit(_str(ctx, t, "unit", where, [u.value for u in PriceUnit]))
    if (basis is PriceBasis.PURCHASE) != (unit is PriceUnit.PURCHASE):
        want = "purchase" if basis is PriceBasis.PURCHASE else "accelerator-hour or instance-hour"
        raise ctx.fail(f"{where}unit", f"basis {basis} needs unit {want}, got {unit}")
    acc = _num(ctx, t, "accelerators", where) if "accelerators" in t else 1
    if acc != int(acc):
        raise ctx.fail(f"{where}accelerators", f"must be a whole number, got {acc:g}")
    if unit is PriceUnit.ACCELERATOR_HOUR and acc != 1:
        raise ctx.fail(f"{where}accelerators", "a price per accelerator-hour is for 1; use unit = 'instance-hour'")
    date = _str(ctx, t, "date", where)
    if not DATE_RE.match(date):
        raise ctx.fail(f"{where}date", f"must be YYYY, YYYY-MM or YYYY-MM-DD, got {date!r}")
    return Price(
        basis=basis,
        provider=_str(ctx, t, "provider", where),
        unit=unit,
        usd=_num(ctx, t, "usd", where),
        date=date,
        source=source if source is not None else _source(ctx, t, "source", where),
        region=str(t.get("region", "")),
        accelerators=int(acc),
        instance=str(t.get("instance", "")),
    )


def _per_format(
    ctx: _Ctx, table: Mapping[str, Any], prefix: str, unit_key: str, peaks: Mapping[str, float]
) -> dict[str, float]:
    """A `format = number` table (`prefix`: its field, e.g. 'power.sustained_ops_per_s.'; `unit_key`: the
    range its values are checked against), only for formats the device has a peak for (any other value
    would never be used)."""
    out = {}
    for k in table:
        where = f"{prefix}{k}"
        if _fmt(ctx, where, k) not in peaks:
            raise ctx.fail(where, f"compute.peak_ops_per_s has no {k}; it lists {', '.join(peaks)}")
        out[k] = _num(ctx, table, k, prefix, unit_key)
    return out


def _efficiency_table(ctx: _Ctx, c: Mapping[str, Any], peaks: Mapping[str, float]) -> dict[str, float]:
    """compute.matmul_efficiency_format: format = fraction of that format's peak, overriding matmul_efficiency."""
    table = c.get("matmul_efficiency_format", {})
    if not isinstance(table, dict):
        raise ctx.fail("compute.matmul_efficiency_format", "must be a table of format = fraction of peak")
    return _per_format(ctx, table, "compute.matmul_efficiency_format.", "matmul_efficiency", peaks)


def _wave_latency(ctx: _Ctx, c: Mapping[str, Any]) -> dict[str, Any]:
    """compute.wave_latency_s (every format) and wave_latency_format_s (format = seconds, overriding it),
    with the source both come from."""
    if "wave_latency_s" not in c and "wave_latency_format_s" not in c:
        return {}
    table = c.get("wave_latency_format_s", {})
    if not isinstance(table, dict):
        raise ctx.fail("compute.wave_latency_format_s", "must be a table of format = seconds")
    per_format = {
        _fmt(ctx, f"compute.wave_latency_format_s.{k}", k): _num(
            ctx, table, k, "compute.wave_latency_format_s.", "wave_latency_format_s"
        )
        for k in table
    }
    return {
        "wave_latency_s": _num(ctx, c, "wave_latency_s", "compute.") if "wave_latency_s" in c else 0.0,
        "wave_latency_format_s": frozen_map(per_format),
        "wave_latency_source": _source(ctx, c, "wave_latency_source", "compute."),
    }


def _gemm_table(ctx: _Ctx, c: Mapping[str, Any]) -> dict[str, Any]:
    """compute.gemm_table: [M, N, K, flops_per_s] rows covering every combination of the M, N and K values
    they name (a full grid, which the simd model interpolates), and compute.gemm_table_source."""
    if "gemm_table" not in c:
        return {}
    where = "compute.gemm_table"
    rows = c["gemm_table"]
    if not isinstance(rows, list) or not rows:
        raise ctx.fail(where, "must be a list of [M, N, K, flops_per_s] rows")
    out = []
    for row in rows:
        ok = isinstance(row, list) and len(row) == 4 and all(isinstance(v, int) and v >= 1 for v in row[:3])
        if not ok or isinstance(row[3], bool) or not isinstance(row[3], (int, float)) or not 1e6 <= row[3] <= 1e17:
            raise ctx.fail(where, f"row {row!r}: must be [M, N, K, flops_per_s], positive integers and 1e6..1e17")
        out.append((row[0], row[1], row[2], float(row[3])))
    axes = [sorted({r[d] for r in out}) for d in range(3)]
    have = {r[:3] for r in out}
    missing = [(m, n, k) for m in axes[0] for n in axes[1] for k in axes[2] if (m, n, k) not in have]
    if missing or len(have) != len(out):
        what = f"misses {missing[:3]}" if missing else "repeats a shape"
        raise ctx.fail(where, f"must cover each M x N x K combination of its values once; it {what}")
    return {"gemm_table": tuple(out), "gemm_table_source": _source(ctx, c, "gemm_table_source", "compute.")}


def _sustained(ctx: _Ctx, p: Mapping[str, Any], peaks: Mapping[str, float]) -> dict[str, Any]:
    """power.sustained_ops_per_s (format = the measured rate of a continuous large GEMM at the TDP, below
    that format's peak) and the measurement it comes from (power.sustained_source)."""
    if "sustained_ops_per_s" not in p:
        return {}
    table = p["sustained_ops_per_s"]
    if not isinstance(table, dict) or not table:
        raise ctx.fail("power.sustained_ops_per_s", "must be a table of format = ops per second")
    rates = _per_format(ctx, table, "power.sustained_ops_per_s.", "sustained_ops_per_s", peaks)
    for k, rate in rates.items():
        if rate > peaks[k]:
            raise ctx.fail(
                f"power.sustained_ops_per_s.{k}",
                f"{rate:g} exceeds the {k} peak {peaks[k]:g}; a sustained rate is at most the peak",
            )
    return {"sustained_ops_per_s": frozen_map(rates), "sustained_source": _source(ctx, p, "sustained_source", "power.")}


def _borrow_sustained(dev: Device, devices: Mapping[str, Device]) -> Device:
    """`dev` with the sustained GEMM rates of the part its power.sustained_from names: a part of the same
    die whose TDP holds a continuous GEMM below its peak, measured. The rates say what one op costs on that
    die (the power above idle the measuring part drew, over the rate); `dev`'s own TDP then caps it."""
    p = dev.power
    if p.sustained_part is None:
        return dev
    ctx = _Ctx(dev.file, dev.name)
    measured = sorted(n for n, d in devices.items() if d.power.sustained_ops_per_s and d.power.sustained_part is None)
    src = devices.get(p.sustained_part)
    if src is None or src.name == dev.name or not src.power.sustained_ops_per_s or src.power.sustained_part:
        raise ctx.fail(
            "power.sustained_from",
            f"{p.sustained_part!r} is not a part with its own sustained_ops_per_s; known: {', '.join(measured)}",
        )
    for f in src.power.sustained_ops_per_s:  # a rate above this part's peak is fine: only its energy counts
        if f not in dev.formats:
            have = ", ".join(dev.formats)
            raise ctx.fail("power.sustained_from", f"{src.name} measured {f}, which this part has no peak for ({have})")
    sp = src.power
    power = dataclasses.replace(
        p, sustained_ops_per_s=sp.sustained_ops_per_s, sustained_source=sp.sustained_source,
        sustained_dynamic_w=sp.tdp_w - sp.idle_w,
    )  # fmt: skip
    return dataclasses.replace(dev, power=power)


def _class_table(ctx: _Ctx, c: Mapping[str, Any], key: str) -> dict[str, float]:
    raw = c.get(key, {})
    if not isinstance(raw, dict):
        raise ctx.fail(f"compute.{key}", "must be a table of op class = number")
    for k in raw:
        if k not in OP_CLASSES:
            raise ctx.fail(f"compute.{key}.{k}", f"unknown op class; valid: {', '.join(OP_CLASSES)}")
    return {k: _num(ctx, raw, k, f"compute.{key}.", key) for k in raw}


def _op_table(ctx: _Ctx, c: Mapping[str, Any], key: str) -> dict[str, float]:
    """A table of aten op = number, keyed the way traces name ops ("aten.gelu.default")."""
    raw = c.get(key, {})
    if not isinstance(raw, dict):
        raise ctx.fail(f"compute.{key}", 'must be a table of aten op = number, like { "aten.gelu.default" = 1.5e-5 }')
    for k in raw:
        if not re.fullmatch(r"aten\.\w+\.\w+", k):
            raise ctx.fail(f"compute.{key}.{k}", 'not an aten op name; write them as traces do: "aten.gelu.default"')
    return {k: _num(ctx, raw, k, f"compute.{key}.", key) for k in raw}


def _half_dims(ctx: _Ctx, c: Mapping[str, Any]) -> tuple[float, float, float] | None:
    if "gemm_half_dims" not in c:
        return None
    v = c["gemm_half_dims"]
    if not (isinstance(v, list) and len(v) == 3):
        raise ctx.fail("compute.gemm_half_dims", f"must be [m0, n0, k0], got {v!r}")
    vals = {str(i): x for i, x in enumerate(v)}
    m0, n0, k0 = (_num(ctx, vals, str(i), "compute.gemm_half_dims.", "gemm_half_dims") for i in range(3))
    return (m0, n0, k0)


def _sparsity(ctx: _Ctx, d: Mapping[str, Any], dense: Mapping[str, float]) -> SparseMath:
    """[NAME.sparsity]: `peak_ops_per_s = { "2:4" = { format = sparse ops/s } }` (empty: the chip has
    none) and its `source`. A sparse peak lies above the dense one and at most M/N times it."""
    t = _table(ctx, d, "sparsity")
    _check_keys(ctx, "sparsity.", t, SECTION_KEYS["sparsity"])
    raw = _req(ctx, t, "peak_ops_per_s", "sparsity.")
    if not isinstance(raw, dict):
        raise ctx.fail("sparsity.peak_ops_per_s", 'must be a table of "N:M" = { format = ops/s } ({} for none)')
    out: dict[str, dict[str, float]] = {}
    for text, table in raw.items():
        w = f"sparsity.peak_ops_per_s.{text}"
        try:
            pat = Pattern.parse(text)
        except InputError as e:
            raise ctx.fail(w, str(e)) from None
        if not pat.structured or not isinstance(table, dict) or not table:
            raise ctx.fail(w, "must name an N:M pattern and a non-empty table of format = sparse ops/s")
        out[text] = {}
        for k in table:
            f = _fmt(ctx, f"{w}.{k}", k)
            v = _num(ctx, table, k, f"{w}.", "peak_ops_per_s")
            if f not in dense:
                raise ctx.fail(f"{w}.{k}", f"compute.peak_ops_per_s has no dense {f} peak to be sparse beside")
            if not dense[f] < v <= dense[f] * pat.m / pat.n * 1.02:  # vendors round (MI355X: 10.1 over 5 PF)
                raise ctx.fail(f"{w}.{k}", f"{v:g} must lie above the dense peak {dense[f]:g} and at most "
                               f"{pat.m}/{pat.n} times it")  # fmt: skip
            out[text][f] = v
    eff, eff_src = 1.0, None
    if out:  # what sparse kernels achieve of the peak ratio: required where there are sparse peaks
        eff = _num(ctx, t, "efficiency", "sparsity.", "sparse_efficiency")
        eff_src = _source(ctx, t, "efficiency_source", "sparsity.")
    elif "efficiency" in t:
        raise ctx.fail("sparsity.efficiency", "goes with sparse peaks; this entry has none")
    return SparseMath(frozen_map({p: frozen_map(v) for p, v in out.items()}), _source(ctx, t, "source", "sparsity."),
                      eff, eff_src)  # fmt: skip


def _build(name: str, d: dict[str, Any]) -> Device:
    ctx = _Ctx(d.get("__file__", "?"), name)
    _check_keys(ctx, "", d, TOP_KEYS)
    process_nm = _num(ctx, d, "process_nm")

    c = _table(ctx, d, "compute")
    _check_keys(ctx, "compute.", c, SECTION_KEYS["compute"])
    peaks_raw = _req(ctx, c, "peak_ops_per_s", "compute.")
    if not isinstance(peaks_raw, dict) or not peaks_raw:
        raise ctx.fail("compute.peak_ops_per_s", "must be a non-empty table of format = ops/s")
    peaks = {
        _fmt(ctx, f"compute.peak_ops_per_s.{k}", k): _num(
            ctx, peaks_raw, k, "compute.peak_ops_per_s.", "peak_ops_per_s"
        )
        for k in peaks_raw
    }
    acc = {
        _fmt(ctx, f"compute.accumulate.{k}", k): _fmt(ctx, f"compute.accumulate.{k}", v)
        for k, v in c.get("accumulate", {}).items()
    }
    tile = c.get("kernel_tile_mnk", [1, 1, 1])
    if not (isinstance(tile, list) and len(tile) == 3 and all(isinstance(t, int) and t >= 1 for t in tile)):
        raise ctx.fail("compute.kernel_tile_mnk", f"must be three positive integers [M, N, K], got {tile!r}")
    compute = Compute(
        peak_ops_per_s=frozen_map(peaks),
        accumulate=frozen_map(acc),
        source=_source(ctx, c, "source", "compute."),
        vector_ops_per_s=_num(ctx, c, "vector_ops_per_s", "compute."),
        vector_source=_source(ctx, c, "vector_source", "compute."),
        units=int(_num(ctx, c, "units", "compute.")),
        dispatch_overhead_s=_num(ctx, c, "dispatch_overhead_s", "compute."),
        overhead_source=_source(ctx, c, "overhead_source", "compute."),
        kernel_tile_mnk=(tile[0], tile[1], tile[2]),
        view_overhead_s=_num(ctx, c, "view_overhead_s", "compute.") if "view_overhead_s" in c else 0.0,
        module_overhead_s=_num(ctx, c, "module_overhead_s", "compute.") if "module_overhead_s" in c else 0.0,
        class_overhead_s=frozen_map(_class_table(ctx, c, "class_overhead_s")),
        op_overhead_s=frozen_map(_op_table(ctx, c, "op_overhead_s")),
        param_access_s=_num(ctx, c, "param_access_s", "compute.") if "param_access_s" in c else 0.0,
        gemm_half_dims=_half_dims(ctx, c),
        **_gemm_table(ctx, c),
        class_efficiency=frozen_map(_class_table(ctx, c, "class_efficiency")),
        fresh_alloc_bytes_per_s=(
            _num(ctx, c, "fresh_alloc_bytes_per_s", "compute.") if "fresh_alloc_bytes_per_s" in c else 0.0
        ),
        kernel_latency_s=_num(ctx, c, "kernel_latency_s", "compute.") if "kernel_latency_s" in c else 0.0,
        kernel_latency_source=_source(ctx, c, "kernel_latency_source", "compute.") if "kernel_latency_s" in c else None,
        graph_call_s=_num(ctx, c, "graph_call_s", "compute.") if "graph_call_s" in c else 0.0,
        graph_call_source=_source(ctx, c, "graph_call_source", "compute.") if "graph_call_s" in c else None,
        **_wave_latency(ctx, c),
        matmul_efficiency=_num(ctx, c, "matmul_efficiency", "compute.")
        if "matmul_efficiency" in c
        else DEFAULT_EFFICIENCY,
        matmul_efficiency_format=frozen_map(_efficiency_table(ctx, c, peaks)),
        efficiency_source=(
            _source(ctx, c, "efficiency_source", "compute.")
            if "matmul_efficiency" in c or "matmul_efficiency_format" in c
            else Source(
                "assumed", f"large-GEMM efficiency {DEFAULT_EFFICIENCY:.0%} of peak (no measurement in the sources)"
            )
        ),
    )

    units = []
    for uname, u in d.get("matrix_units", {}).items():
        w = f"matrix_units.{uname}."
        _check_keys(ctx, w, u, SECTION_KEYS["matrix_unit"])
        kind = _str(ctx, u, "kind", w, MATRIX_KINDS)
        flow = u.get("dataflow")
        if flow is not None and flow not in DATAFLOWS:
            raise ctx.fail(f"{w}dataflow", f"unknown value {flow!r}; valid: {', '.join(DATAFLOWS)}")
        units.append(
            MatrixUnit(
                uname,
                kind,
                int(_num(ctx, u, "count", w)),
                int(_num(ctx, u, "rows", w)),
                int(_num(ctx, u, "cols", w)),
                int(_num(ctx, u, "depth", w)),
                _num(ctx, u, "clock_hz", w),
                _source(ctx, u, "source", w),
                flow,
            )
        )

    mem_raw = _table(ctx, d, "memory")
    levels = []
    for mname, m in mem_raw.items():
        w = f"memory.{mname}."
        if not isinstance(m, dict):
            raise ctx.fail(f"memory.{mname}", "must be a table")
        _check_keys(ctx, w, m, SECTION_KEYS["memory"])
        kind = _str(ctx, m, "kind", w, MEMORY_KINDS)
        bw_range = "sram_bandwidth_bytes_per_s" if kind == "sram" else "dram_bandwidth_bytes_per_s"
        if "energy_pj_per_byte" in m:
            e = _num(ctx, m, "energy_pj_per_byte", w)
            esrc = _source(ctx, m, "energy_source", w)
        else:
            e = energy.memory_energy_pj_per_byte(kind, process_nm)
            esrc = Source.parse(energy.MEMORY_SOURCES[kind])
        levels.append(
            MemoryLevel(
                mname,
                kind,
                _num(ctx, m, "capacity_bytes", w),
                _num(ctx, m, "bandwidth_bytes_per_s", w, bw_range),
                _source(ctx, m, "source", w),
                e,
                esrc,
            )
        )
    if not levels:
        raise ctx.fail("memory", "needs at least one memory level")

    p = _table(ctx, d, "power")
    _check_keys(ctx, "power.", p, SECTION_KEYS["power"])
    tdp = _num(ctx, p, "tdp_w", "power.")
    if "idle_w" in p:
        idle = _num(ctx, p, "idle_w", "power.")
        idle_src = _source(ctx, p, "idle_source", "power.")
        if idle > tdp:
            raise ctx.fail("power.idle_w", f"{idle:g} W exceeds tdp_w {tdp:g} W")
    else:
        idle = IDLE_FRACTION_ASSUMED * tdp
        idle_src = Source("assumed", f"idle/static power taken as {IDLE_FRACTION_ASSUMED:.0%} of TDP (not published)")
    load = load_src = None
    if "load_w" in p:
        load = _num(ctx, p, "load_w", "power.", "tdp_w")
        load_src = _source(ctx, p, "load_source", "power.")
        if not idle < load <= tdp:
            raise ctx.fail("power.load_w", f"{load:g} W must be above idle_w ({idle:g}) and at most tdp_w ({tdp:g})")
    _one_sustained(ctx, p)
    if "sustained_from" in p:
        sustained: dict[str, Any] = {"sustained_part": _str(ctx, p, "sustained_from", "power.")}
    else:
        sustained = _sustained(ctx, p, peaks)
    power = Power(tdp, idle, _source(ctx, p, "source", "power."), idle_src, load, load_src, **sustained)

    s = _table(ctx, d, "support")
    _check_keys(ctx, "support.", s, SECTION_KEYS["support"])
    autocast = {
        _fmt(ctx, f"support.autocast.{k}", k): _fmt(ctx, f"support.autocast.{k}", v)
        for k, v in s.get("autocast", {}).items()
    }
    for k, v in autocast.items():
        if v not in peaks:
            raise ctx.fail(f"support.autocast.{k}", f"casts to {v!r}, which compute.peak_ops_per_s does not list")
    host_ops = s.get("host_op_classes", [])
    for op in host_ops:
        if op not in OP_CLASSES:
            raise ctx.fail("support.host_op_classes", f"unknown op class {op!r}; valid: {', '.join(OP_CLASSES)}")
    host = s.get("host")
    if host is not None and not isinstance(host, str):
        raise ctx.fail("support.host", f"must be a device name, got {host!r}")
    weight_only = s.get("weight_only", [])
    if not isinstance(weight_only, list) or any(w not in ("int8", "int4") for w in weight_only):
        raise ctx.fail("support.weight_only", f"must be a list of int8, int4; got {weight_only!r}")
    wo_src = _source(ctx, s, "weight_only_source", "support.") if weight_only else None
    stack = _str(ctx, s, "stack", "support.", tuple(stacks())) if "stack" in s else "graph-compiler"
    execution = _str(ctx, s, "execution", "support.", EXECUTIONS) if "execution" in s else "compiled"
    support = Support(
        frozen_map(autocast),
        _str(ctx, s, "unsupported_format", "support.", FALLBACKS),
        tuple(host_ops),
        host,
        _source(ctx, s, "source", "support."),
        tuple(weight_only),
        wo_src,
        stack,
        execution,
    )

    def link(key: str) -> Link | None:
        if key not in d:
            return None
        t = _table(ctx, d, key)
        w = f"{key}."
        _check_keys(ctx, w, t, SECTION_KEYS["link"])
        domain = _num(ctx, t, "domain_chips", w) if "domain_chips" in t else 0
        if domain != int(domain):
            raise ctx.fail(f"{w}domain_chips", f"must be a whole number of chips, got {domain}")
        return Link(
            kind=_str(ctx, t, "kind", w, LINK_KINDS),
            bandwidth_bytes_per_s=_num(ctx, t, "bandwidth_bytes_per_s", w, "link_bandwidth_bytes_per_s"),
            topology=_str(ctx, t, "topology", w, TOPOLOGIES),
            source=_source(ctx, t, "source", w),
            latency_s=_num(ctx, t, "latency_s", w),  # required: a link without latency made 100,000 chips free
            latency_source=_source(ctx, t, "latency_source", w),
            generation=str(t.get("generation", "")),
            hop_latency_s=_num(ctx, t, "hop_latency_s", w) if "hop_latency_s" in t else 0.0,
            collective_latency_s=_num(ctx, t, "collective_latency_s", w) if "collective_latency_s" in t else 0.0,
            domain_chips=int(domain),
        )

    raw_prices = d.get("prices", [])
    if not isinstance(raw_prices, list) or not all(isinstance(t, dict) for t in raw_prices):
        raise ctx.fail("prices", f"must be an array of tables ([[{name}.prices]]), one per price record")
    prices = tuple(parse_price(ctx, t, f"prices[{i}].") for i, t in enumerate(raw_prices))

    training = None
    if "training" in d:
        tr = _table(ctx, d, "training")
        _check_keys(ctx, "training.", tr, SECTION_KEYS["training"])
        names = _req(ctx, tr, "formats", "training.")
        if not isinstance(names, list) or not names:
            raise ctx.fail("training.formats", "must be a non-empty list of format names")
        for i, n in enumerate(names):
            _fmt(ctx, f"training.formats[{i}]", n)
            if isinstance(FORMATS[n], IntFormat):
                raise ctx.fail(f"training.formats[{i}]", f"{n} is an integer format; no stack trains in one")
        training = Training(formats=tuple(names), source=_source(ctx, tr, "source", "training."))

    family = _str(ctx, d, "family", "", FAMILIES)
    sparsity = _sparsity(ctx, d, peaks) if "sparsity" in d else None
    pub = _num(ctx, d, "published_ops_per_j") if "published_ops_per_j" in d else None
    pub_src = _source(ctx, d, "published_efficiency_source") if pub is not None else None
    return Device(
        name=name,
        display_name=_str(ctx, d, "display_name"),
        vendor=_str(ctx, d, "vendor"),
        family=family,
        year=int(_num(ctx, d, "year")),
        process_nm=process_nm,
        description=str(d.get("description", "")),
        source=_source(ctx, d, "source"),
        compute=compute,
        matrix_units=tuple(units),
        memory=tuple(levels),
        power=power,
        support=support,
        host_link=link("host_link"),
        interconnect=link("interconnect"),
        scale_out=link("scale_out"),
        prices=prices,
        training=training,
        sparsity=sparsity,
        published_ops_per_j=pub,
        published_efficiency_source=pub_src,
        file=ctx.file,
        extends=d.get("extends"),
    )
