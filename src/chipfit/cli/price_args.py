"""The price flags every command that shows money takes: `--price-basis`, `--tco`, `--prices`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from chipfit.hardware.pricing import (
    DEFAULT_BASES,
    PICKS,
    PRICE_BASES,
    Pricing,
    parse_bases,
    parse_tco,
    read_price_file,
)

__all__ = ["add_price_args", "resolve_pricing"]


def add_price_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--price-basis",
        default=",".join(DEFAULT_BASES),
        metavar="BASIS[,BASIS...]",
        help=f"what a chip-hour costs: one of {', '.join(PRICE_BASES)} (tco: owning, from a purchase price); "
        "a comma list is a fallback order, and the output warns when devices end up on different bases "
        f"(default {','.join(DEFAULT_BASES)})",
    )
    p.add_argument(
        "--price-pick",
        default=PICKS[0],
        choices=PICKS,
        help="which of a device's records on the basis: median (default; one odd record never decides) or cheapest",
    )
    p.add_argument(
        "--price-provider",
        metavar="NAME[,NAME...]",
        help="only these providers' records (e.g. AWS,Google Cloud); devices they do not offer are left unpriced",
    )
    p.add_argument(
        "--tco",
        default="",
        metavar="KEY=VALUE,...",
        help="ownership assumptions for --price-basis tco: years, usd-per-kwh, pue, hosting-usd-per-kw-month "
        "(default years=4,usd-per-kwh=0.10,pue=1.3,hosting-usd-per-kw-month=184.06; docs/pricing.md)",
    )
    p.add_argument(
        "--prices",
        metavar="FILE",
        help="your own prices, TOML [[DEVICE.prices]] records (docs/pricing.md): they replace the catalog's on "
        "the bases they name and are shown as yours",
    )


def resolve_pricing(args: argparse.Namespace, device_files: Sequence[str] = ()) -> Pricing:
    from chipfit.hardware import load_catalog

    bases = parse_bases(args.price_basis)
    tco = parse_tco(args.tco)
    user = read_price_file(args.prices, list(load_catalog(device_files))) if args.prices else {}
    providers = tuple(x.strip() for x in (args.price_provider or "").split(",") if x.strip())
    return Pricing(bases=bases, tco=tco, user=user, user_file=args.prices or "", pick=args.price_pick,
                   providers=providers)  # fmt: skip
