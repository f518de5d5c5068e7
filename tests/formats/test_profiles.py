"""Profiles as data: the `ml_dtypes` alias follows the installed release, and the two
ml_dtypes profiles differ exactly where ml_dtypes 0.6.0 and 0.7.0 do
(benchmarks/results/ml_dtypes_versions.md: E8M0, float32 subnormal inputs 0x400001..0x5fffff)."""

from __future__ import annotations

from importlib import metadata

import numpy as np
import pytest

from chipfit.cli import main
from chipfit.formats import FORMATS, FloatFormat, get_format, quantize
from chipfit.formats.profiles import ALIASES, PROFILES, get_profile, profile_names
from chipfit.formats.reference import quantize_bits

from .oracles import bits_of, edge_bits, f32

FLOATS = [f for f in FORMATS.values() if isinstance(f, FloatFormat)]


def test_ml_dtypes_alias_models_the_installed_release() -> None:
    installed = metadata.version("ml_dtypes")
    prof = get_profile("ml_dtypes")
    assert prof.name == ALIASES["ml_dtypes"]
    library, version = prof.models.split()
    assert library == "ml_dtypes"
    assert version.split(".")[:2] == installed.split(".")[:2], (prof.name, installed)


def test_every_name_resolves_and_unknown_names_list_them() -> None:
    assert {get_profile(n).name for n in profile_names()} == set(PROFILES)
    with pytest.raises(ValueError, match=r"unknown profile 'ml_dtypes-0.5'; known: torch, ml_dtypes-0.6, .*ml_dtypes$"):
        get_profile("ml_dtypes-0.5")


E8M0 = get_format("float8_e8m0fnu")


@pytest.mark.parametrize(
    ("bits", "old", "new"),
    [
        (0x00000001, 0x00400000, 0x00400000),  # far below 2^-127: the smallest value, 2^-127, in both
        (0x00400000, 0x00400000, 0x00400000),  # 2^-127 exactly
        (0x00400001, 0x00800000, 0x00400000),  # just above 2^-127: 0.6 takes the encoding's binade up, 0.7 the value
        (0x005FFFFF, 0x00800000, 0x00400000),  # just below the midpoint 1.5 * 2^-127
        (0x00600000, 0x00800000, 0x00800000),  # the midpoint: up in both (E8M0's only significand bit is odd)
        (0x007FFFFF, 0x00800000, 0x00800000),
        (0x00800000, 0x00800000, 0x00800000),  # 2^-126, float32's smallest normal
    ],
)
def test_e8m0_subnormal_inputs_per_release(bits: int, old: int, new: int) -> None:
    assert isinstance(E8M0, FloatFormat)
    for name, want in (("ml_dtypes-0.6", old), ("ml_dtypes-0.7", new)):
        assert quantize_bits(bits, E8M0, profile=name) == want, name
        assert int(bits_of(quantize(f32(np.array([bits], dtype=np.uint32)), E8M0, profile=name))[0]) == want, name


@pytest.mark.parametrize("fmt", FLOATS, ids=lambda f: f.name)
def test_ml_dtypes_profiles_differ_only_where_the_releases_do(fmt: FloatFormat) -> None:
    """On every edge of every float format, plus every float32 subnormal pattern's
    neighbourhood, 0.6 and 0.7 agree except for E8M0 on (0x400000, 0x600000)."""
    sub = np.arange(0x003FFF00, 0x00600100, 7, dtype=np.uint32)
    x = np.unique(np.concatenate([edge_bits(fmt), sub, sub | np.uint32(0x80000000)]))
    a = bits_of(quantize(f32(x), fmt, profile="ml_dtypes-0.6"))
    b = bits_of(quantize(f32(x), fmt, profile="ml_dtypes-0.7"))
    differs = x[a != b]
    if fmt is E8M0:
        expected = x[(x > 0x00400000) & (x < 0x00600000)]
        np.testing.assert_array_equal(differs, expected)
    else:
        assert differs.size == 0


def test_formats_show_accepts_every_profile_name(capsys: pytest.CaptureFixture[str]) -> None:
    for name in profile_names():
        assert main(["formats", "show", "float8_e8m0fnu", "--profile", name, "--json"]) == 0
        assert get_profile(name).name in capsys.readouterr().out
