"""Energy per operation and per byte, from Horowitz (ISSCC 2014, 45 nm), scaled by a documented rule.

Per-op energy (one FMA = 2 ops) is multiply + add at 45 nm, scaled to the chip's
process node by `process_scale`:

- multiply: Horowitz's table where it has the format (fp32 3.7 pJ, fp16 1.1 pJ,
  int8 0.2 pJ, int32 3.1 pJ). Floats wider than fp16 are interpolated log-linearly
  in significand width p = man_bits + 1 between fp16 (p=11) and fp32 (p=24);
  narrower floats scale with p² from fp16 (an array multiplier's area and switched
  capacitance grow with the product of the operand widths), plus the exponent
  adder (an integer add of exp_bits). Integers scale with bits² from int8. So
  FP8 <= FP16, FP4 <= FP8, and an FP8 multiply (0.16 pJ) costs about an INT8 one.
- add: a matrix unit that takes `depth`-long dot products per element per clock
  (tensor cores: 4-16; systolic PEs: 1) sums the products in an adder tree at the
  product width (an integer add of 2p bits after alignment for floats, 2 x bits
  for integers) and adds into the accumulator once per `depth` products; the
  accumulate add is Horowitz's at the accumulate format (fp32 0.9 pJ, fp16
  0.4 pJ, int32 0.1 pJ, int8 0.03 pJ). Vector units (depth 1) pay the full
  accumulate add per FMA.
- process_scale = process_nm / 45. This is an assumption: switched capacitance
  scales with feature size, and supply voltage has stayed near 0.7–0.9 V since
  45 nm, so the V² term is taken as constant.

Memory energy per byte depends on the memory kind and is not process-scaled for
off-chip DRAM, which is dominated by its I/O:
- dram (DDR/LPDDR): 20 pJ/bit (Horowitz: DRAM I/O "over 20 pJ/bit").
- hbm: 6.0 pJ/bit and gddr: 7.5 pJ/bit (third-party: kylolab.com "Ultra-Bandwidth
  Solutions" memory comparison table, average device power for HBM2E and GDDR6).
- sram: Horowitz's 1 MB array, 100 pJ per 64-bit read = 12.5 pJ/B at 45 nm,
  process-scaled (large on-chip caches are at least that size).
"""

from __future__ import annotations

import math

from chipfit.formats import BlockFormat, FloatFormat, IntFormat, get_format
from chipfit.formats.spec import BinaryFormat

__all__ = [
    "HOROWITZ_45NM_PJ",
    "MEMORY_PJ_PER_BYTE",
    "add_energy_pj",
    "energy_pj_per_op",
    "int_add_pj",
    "memory_energy_pj_per_byte",
    "multiply_energy_pj",
    "process_scale",
]

HOROWITZ_45NM_PJ = {
    "int8_add": 0.03,
    "int16_add": 0.05,
    "int32_add": 0.1,
    "fp16_add": 0.4,
    "fp32_add": 0.9,
    "int8_mul": 0.2,
    "int32_mul": 3.1,
    "fp16_mul": 1.1,
    "fp32_mul": 3.7,
    "sram_1mb_read_64bit": 100.0,
}
SOURCE_HOROWITZ = (
    "paper: Horowitz, Computing's Energy Problem, ISSCC 2014 (45 nm, 0.9 V), via shared/reference/hardware_notes.md"
)

MEMORY_PJ_PER_BYTE = {
    "dram": 20.0 * 8,
    "hbm": 6.0 * 8,
    "gddr": 7.5 * 8,
}
MEMORY_SOURCES = {
    "dram": "paper: Horowitz ISSCC 2014, DRAM I/O over 20 pJ/bit (not process-scaled: I/O dominated)",
    "hbm": "third-party: kylolab.com Ultra-Bandwidth Solutions table, HBM2E average device power 6.0 pJ/bit",
    "gddr": "third-party: kylolab.com Ultra-Bandwidth Solutions table, GDDR6 average device power 7.5 pJ/bit",
    "sram": "paper: Horowitz ISSCC 2014, 1 MB SRAM 100 pJ per 64-bit read, scaled by process_nm / 45 (assumed rule)",
}


def process_scale(process_nm: float) -> float:
    """Assumed rule: dynamic energy scales linearly with feature size from 45 nm."""
    return process_nm / 45.0


def multiply_energy_pj(fmt_name: str) -> float:
    """45 nm multiply energy for one element multiply of `fmt_name`."""
    f = get_format(fmt_name)
    if isinstance(f, BlockFormat):
        return multiply_energy_pj(f.element.name) if isinstance(f.element, FloatFormat) else _int_mul(f.element.bits)
    if isinstance(f, BinaryFormat):
        return _int_mul(1)
    if isinstance(f, IntFormat):
        return _int_mul(f.bits)
    p = f.man_bits + 1
    lo, hi = HOROWITZ_45NM_PJ["fp16_mul"], HOROWITZ_45NM_PJ["fp32_mul"]
    if p >= 11:
        return lo * math.exp(math.log(hi / lo) * (p - 11) / (24 - 11))
    return lo * (p / 11) ** 2 + int_add_pj(f.exp_bits)


def _int_mul(bits: int) -> float:
    if bits == 32:
        return HOROWITZ_45NM_PJ["int32_mul"]
    return HOROWITZ_45NM_PJ["int8_mul"] * (bits / 8) ** 2


def add_energy_pj(acc_name: str) -> float:
    """45 nm add energy at the accumulate format."""
    f = get_format(acc_name)
    if isinstance(f, IntFormat):
        return HOROWITZ_45NM_PJ["int32_add"] if f.bits > 16 else HOROWITZ_45NM_PJ["int8_add"]
    if isinstance(f, FloatFormat) and f.man_bits >= 23:
        return HOROWITZ_45NM_PJ["fp32_add"]
    return HOROWITZ_45NM_PJ["fp16_add"]


def product_bits(fmt_name: str) -> int:
    """Width of one product in a dot-product adder tree: 2 x significand (floats, aligned) or 2 x bits."""
    f = get_format(fmt_name)
    if isinstance(f, BlockFormat):
        f = f.element
    if isinstance(f, FloatFormat):
        return 2 * (f.man_bits + 1)
    return 2 * max(1, f.bits)


def int_add_pj(bits: float) -> float:
    """45 nm integer add energy, linear in width from Horowitz's 32-bit add."""
    return HOROWITZ_45NM_PJ["int32_add"] * bits / 32


def energy_pj_per_op(fmt_name: str, acc_name: str, process_nm: float, depth: int = 1) -> float:
    """Arithmetic energy of one op (half an FMA) at the chip's process node, in a unit that sums
    `depth` products per accumulator add (see the module docstring)."""
    tree = int_add_pj(product_bits(fmt_name)) if depth > 1 else 0.0
    add = (add_energy_pj(acc_name) + (depth - 1) * tree) / depth
    return (multiply_energy_pj(fmt_name) + add) / 2 * process_scale(process_nm)


def memory_energy_pj_per_byte(kind: str, process_nm: float) -> float:
    if kind == "sram":
        return HOROWITZ_45NM_PJ["sram_1mb_read_64bit"] / 8 * process_scale(process_nm)
    return MEMORY_PJ_PER_BYTE[kind]
