"""Number formats: specs, registry, profiles, quantize / encode / decode."""

from chipfit.formats.profiles import DEFAULT_PROFILE, PROFILES, Profile, get_profile
from chipfit.formats.quantize import quantize
from chipfit.formats.registry import FORMATS, get_format, list_formats, register_format, storage_bytes
from chipfit.formats.spec import (
    BinaryFormat,
    BlockFormat,
    FloatFormat,
    Format,
    IntFormat,
    NanEncoding,
    Overflow,
    Rounding,
    ScaleRule,
)

__all__ = [
    "DEFAULT_PROFILE",
    "FORMATS",
    "PROFILES",
    "BinaryFormat",
    "BlockFormat",
    "FloatFormat",
    "Format",
    "IntFormat",
    "NanEncoding",
    "Overflow",
    "Profile",
    "Rounding",
    "ScaleRule",
    "get_format",
    "get_profile",
    "list_formats",
    "quantize",
    "register_format",
    "storage_bytes",
]
