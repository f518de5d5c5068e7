"""The device catalog: typed, validated, sourced chip descriptions.

`get_device("h100-sxm")`, `list_devices(family="tpu")`, `load_catalog([path])`.
User files come from `device_files=` or `CHIPFIT_DEVICE_PATH`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

from chipfit.errors import InputError
from chipfit.hardware.device import (
    FAMILIES,
    Compute,
    Device,
    Link,
    MatrixUnit,
    MemoryLevel,
    Power,
    Price,
    Source,
    Support,
)
from chipfit.hardware.loader import BUILTIN_DIR, CatalogError, load_devices

__all__ = [
    "BUILTIN_DIR",
    "FAMILIES",
    "CatalogError",
    "Compute",
    "Device",
    "Link",
    "MatrixUnit",
    "MemoryLevel",
    "Power",
    "Price",
    "Source",
    "Support",
    "get_device",
    "list_devices",
    "load_catalog",
]


@functools.lru_cache(maxsize=16)
def _cached(files: tuple[str, ...], env_path: str) -> dict[str, Device]:
    return load_devices(files, env=bool(env_path))


def load_catalog(device_files: Sequence[str | Path] = ()) -> dict[str, Device]:
    """Built-in devices plus `device_files` and CHIPFIT_DEVICE_PATH (cached per argument set)."""
    return dict(_cached(tuple(str(p) for p in device_files), os.environ.get("CHIPFIT_DEVICE_PATH", "")))


def get_device(name: str | Device, device_files: Sequence[str | Path] = ()) -> Device:
    if isinstance(name, Device):
        return name
    catalog = load_catalog(device_files)
    try:
        return catalog[name]
    except KeyError:
        raise InputError(f"unknown device {name!r}; known: {', '.join(sorted(catalog))}") from None


def list_devices(
    family: str | None = None, fmt: str | None = None, device_files: Sequence[str | Path] = ()
) -> list[Device]:
    """Devices, optionally only one family or only those whose matrix unit runs `fmt`."""
    from chipfit.formats import FORMATS

    if family is not None and family not in FAMILIES:
        raise InputError(f"unknown family {family!r}; known: {', '.join(FAMILIES)}")
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    out = [d for d in load_catalog(device_files).values() if family is None or d.family == family]
    out.sort(key=lambda d: (FAMILIES.index(d.family), d.year, d.name))
    return [d for d in out if fmt is None or d.peak(fmt) > 0]
