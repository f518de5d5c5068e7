"""What an accelerator-hour costs, on one stated basis: rented (on-demand, committed, spot, a
capacity block) or owned (total cost of ownership from a purchase price).

The catalog keeps every sourced price as a record (`Device.prices`: basis, provider, region,
unit, date, source; as the source prints it). `Pricing` turns records into one `PriceQuote` per
device: on the first of its `bases` the device has a record on, the median record of that basis
(`pick`: the lower middle of the providers' per-accelerator prices, so one odd record never
decides and the quote is always a real, sourced record) or the cheapest, optionally only from
chosen `providers`. `bases` is a fallback order: `("on-demand",)` prices only what can be rented
on demand; `("on-demand", "tco")` falls back to ownership, and the comparison then mixes bases,
which `PriceSummary` says. A user's price file (`read_price_file`, `--prices`) replaces the
built-in records of every (device, basis) it names, and its numbers carry the user's file as
their source, never the catalog's.

Ownership per accelerator-hour (basis `tco`), for a purchase of `usd` for `accelerators` chips:

    usd / accelerators / (years x 8760 h)                        amortized purchase
  + TDP kW x PUE x usd_per_kwh                                   electricity, with cooling overhead
  + TDP kW x hosting_usd_per_kw_month x 12 / 8760                colocation space and power delivery

at full use (every hour of the amortization is a working hour). Power is the chip's TDP: a
facility provisions, and a colocation contract bills, the rated power, not the average. The
purchase is what the record buys: a card's price leaves out the host server, network and staff
(a record for a system, `accelerators` > 1, includes what the system includes).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from chipfit.errors import InputError
from chipfit.hardware.device import Device, Price, PriceBasis, Source
from chipfit.paths import read_data_file

__all__ = [
    "DEFAULT_BASES",
    "HOURS_PER_YEAR",
    "PICKS",
    "PRICE_BASES",
    "PriceQuote",
    "PriceSummary",
    "Pricing",
    "Tco",
    "parse_bases",
    "parse_tco",
    "read_price_file",
]

HOURS_PER_YEAR = 8760.0
TCO = "tco"  # the ownership basis: priced from a purchase record


class Basis(StrEnum):
    """What `--price-basis` may name: every hourly record basis, and ownership."""

    ON_DEMAND = PriceBasis.ON_DEMAND.value
    ONE_YEAR = PriceBasis.ONE_YEAR.value
    THREE_YEAR = PriceBasis.THREE_YEAR.value
    SPOT = PriceBasis.SPOT.value
    CAPACITY_BLOCK = PriceBasis.CAPACITY_BLOCK.value
    TCO = TCO


PRICE_BASES: tuple[str, ...] = tuple(b.value for b in Basis)
PICKS = ("median", "cheapest")  # which record of a basis a quote rests on
DEFAULT_BASES: tuple[str, ...] = (Basis.ON_DEMAND.value,)  # one basis: no comparison mixes bases by default


# where each TCO default comes from: shown beside every TCO figure
TCO_SOURCES = {
    "years": "assumed: a 4-year amortization (cloud providers depreciate servers over 5-6 years; "
    "accelerator generations turn over in 2-3)",
    "usd_per_kwh": "assumed: USD 0.10 per kWh, between US industrial and commercial average electricity rates",
    "pue": "third-party: Uptime Institute Global Data Center Survey 2024 (via cloudnews.tech): new facilities "
    "reach a PUE of 1.3 or better; the industry average is 1.58 (Uptime Intelligence, 2023)",
    "hosting_usd_per_kw_month": "third-party: CBRE North America Data Center Trends H2 2024 (2025-02-26): "
    "average monthly asking rate for a 250-500 kW requirement in primary markets, USD 184.06 per kW",
}
TCO_LIMITS: dict[str, tuple[float, float]] = {
    "years": (0.1, 30.0), "usd_per_kwh": (0.0, 5.0), "pue": (1.0, 3.0), "hosting_usd_per_kw_month": (0.0, 5000.0),
}  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Tco:
    """The assumptions ownership is priced under (`--tco years=4,usd-per-kwh=0.10,pue=1.3`)."""

    years: float = 4.0
    usd_per_kwh: float = 0.10
    pue: float = 1.3
    hosting_usd_per_kw_month: float = 184.06

    def per_hour(self, dev: Device, purchase: Price) -> dict[str, float]:
        """{'purchase', 'electricity', 'hosting'}: USD per accelerator-hour, each part."""
        kw = dev.power.tdp_w / 1e3
        return {
            "purchase": purchase.usd_per_accelerator / (self.years * HOURS_PER_YEAR),
            "electricity": kw * self.pue * self.usd_per_kwh,
            "hosting": kw * self.hosting_usd_per_kw_month * 12 / HOURS_PER_YEAR,
        }

    def describe(self) -> str:
        return (
            f"{self.years:g}-year amortization, USD {self.usd_per_kwh:g}/kWh, PUE {self.pue:g}, "
            f"hosting USD {self.hosting_usd_per_kw_month:g}/kW-month, TDP power, full use"
        )

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def parse_tco(text: str) -> Tco:
    """`years=4,usd-per-kwh=0.10,pue=1.3,hosting-usd-per-kw-month=150`: any subset, the rest default."""
    keys = {f.name.replace("_", "-"): f.name for f in fields(Tco)}
    values: dict[str, float] = {}
    for item in (s.strip() for s in text.split(",") if s.strip()):
        k, sep, v = item.partition("=")
        if not sep or k.strip() not in keys:
            raise InputError(f"--tco takes KEY=VALUE items with KEY one of {', '.join(keys)}; got {item!r}")
        name = keys[k.strip()]
        try:
            x = float(v)
        except ValueError:
            raise InputError(f"--tco {k.strip()}: {v!r} is not a number") from None
        lo, hi = TCO_LIMITS[name]
        if not lo <= x <= hi:
            raise InputError(f"--tco {k.strip()}={x:g} is outside [{lo:g}, {hi:g}]")
        values[name] = x
    return Tco(**values)


def parse_bases(text: str) -> tuple[str, ...]:
    """`on-demand` or a fallback order `on-demand,tco`."""
    out = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [b for b in out if b not in PRICE_BASES]
    if bad or not out:
        raise InputError(f"unknown price basis {', '.join(bad) or repr(text)}; known: {', '.join(PRICE_BASES)}")
    if len(set(out)) != len(out):
        raise InputError(f"--price-basis names a basis twice: {text}")
    return out


@dataclass(frozen=True, kw_only=True)
class PriceQuote:
    """One device's price per accelerator-hour on one basis, with the record it rests on."""

    device: str
    basis: str
    usd_per_hour: float
    record: Price
    parts: Mapping[str, float] = field(default_factory=dict)  # TCO: purchase, electricity, hosting

    @property
    def from_user(self) -> bool:
        return self.record.from_user

    def describe(self) -> str:
        """'$6.88/accelerator-hour on-demand (AWS p5.48xlarge, us-east-1, 2025-06: ...)'."""
        head = f"${self.usd_per_hour:.4g}/accelerator-hour {self.basis}"
        if self.parts:
            head += " (" + " + ".join(f"{k} ${v:.3g}" for k, v in self.parts.items()) + ")"
        who = "your price file" if self.from_user else "catalog"
        return f"{head}; {who}: {self.record.describe()}"

    def as_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "basis": self.basis,
            "usd_per_hour": self.usd_per_hour,
            "from_user": self.from_user,
            "record": {
                "basis": r.basis.value, "provider": r.provider, "region": r.region, "unit": r.unit.value,
                "usd": r.usd, "accelerators": r.accelerators, "instance": r.instance, "date": r.date,
                "source": str(r.source),
            },
            "parts": dict(self.parts),
        }  # fmt: skip


@dataclass(frozen=True)
class Pricing:
    """How to price: the bases in fallback order, the TCO assumptions, and a user's records."""

    bases: tuple[str, ...] = DEFAULT_BASES
    tco: Tco = field(default_factory=Tco)
    user: Mapping[str, tuple[Price, ...]] = field(default_factory=dict)  # device -> records from --prices
    user_file: str = ""
    pick: str = "median"  # median | cheapest
    providers: tuple[str, ...] = ()  # only these providers' records (case-insensitive); (): every provider

    def __post_init__(self) -> None:
        if self.pick not in PICKS:
            raise InputError(f"unknown price pick {self.pick!r}; known: {', '.join(PICKS)}")

    def records(self, dev: Device) -> tuple[Price, ...]:
        """The device's records: the user's replace the catalog's on every basis the user names."""
        mine = self.user.get(dev.name, ())
        named = {p.basis for p in mine}
        recs = (*mine, *(p for p in dev.prices if p.basis not in named))
        if self.providers:
            wanted = {x.lower() for x in self.providers}
            recs = tuple(p for p in recs if p.from_user or p.provider.lower() in wanted)
        return recs

    def _choose(self, quotes: list[PriceQuote]) -> PriceQuote:
        ranked = sorted(quotes, key=lambda q: (q.usd_per_hour, q.record.date, q.record.provider))
        return ranked[0] if self.pick == "cheapest" else ranked[(len(ranked) - 1) // 2]

    def quote_on(self, dev: Device, basis: str) -> PriceQuote | None:
        recs = self.records(dev)
        if basis == TCO:
            buys = [p for p in recs if p.basis is PriceBasis.PURCHASE]
            if not buys:
                return None
            quotes = []
            for p in buys:
                parts = self.tco.per_hour(dev, p)
                quotes.append(PriceQuote(device=dev.name, basis=TCO, usd_per_hour=sum(parts.values()), record=p,
                                         parts=parts))  # fmt: skip
            return self._choose(quotes)
        hourly = [p for p in recs if p.basis.value == basis and p.hourly]
        if not hourly:
            return None
        return self._choose(
            [PriceQuote(device=dev.name, basis=basis, usd_per_hour=p.usd_per_accelerator, record=p) for p in hourly]
        )

    def quote(self, dev: Device) -> PriceQuote | None:
        """The first basis (in order) the device has a price on; None: unpriced on every basis."""
        for b in self.bases:
            q = self.quote_on(dev, b)
            if q is not None:
                return q
        return None

    def summary(self, devices: Iterable[Device]) -> PriceSummary:
        devs = list(devices)
        return PriceSummary(self, {d.name: self.quote(d) for d in devs}, {d.name: d for d in devs})


@dataclass(frozen=True)
class PriceSummary:
    """The quotes of one comparison, and what a reader must know about them."""

    pricing: Pricing
    quotes: Mapping[str, PriceQuote | None]
    devices: Mapping[str, Device]

    @property
    def unpriced(self) -> list[str]:
        return sorted(n for n, q in self.quotes.items() if q is None)

    @property
    def bases_used(self) -> list[str]:
        return sorted({q.basis for q in self.quotes.values() if q is not None}, key=PRICE_BASES.index)

    @property
    def mixed(self) -> bool:
        return len(self.bases_used) > 1

    def other_bases(self, name: str) -> list[str]:
        """The bases an unpriced device does have a price on (so the reader knows the way out)."""
        dev = self.devices[name]
        return [b for b in PRICE_BASES if b not in self.pricing.bases and self.pricing.quote_on(dev, b)]

    def lines(self, ranked_on_cost: bool = True) -> list[str]:
        """The plain-words notes: which basis and dates, mixed bases, user prices, unpriced devices."""
        out = []
        priced = {n: q for n, q in self.quotes.items() if q is not None}
        if priced:
            dates = sorted({q.record.date for q in priced.values()})
            span = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}"
            how = "the median record of each device" if self.pricing.pick == "median" else "the cheapest record"
            if self.pricing.providers:
                how += f" from {', '.join(self.pricing.providers)}"
            out.append(f"Prices: {', '.join(self.bases_used)} per accelerator-hour, {how}, dated {span}"
                       + (f" ({self.pricing.tco.describe()})" if TCO in self.bases_used else "") + ".")  # fmt: skip
        if self.mixed:
            by = {b: sorted(n for n, q in priced.items() if q.basis == b) for b in self.bases_used}
            out.append("warning: this comparison mixes price bases: "
                       + "; ".join(f"{b}: {', '.join(ns)}" for b, ns in by.items()) + ".")  # fmt: skip
        mine = sorted(n for n, q in priced.items() if q.from_user)
        if mine:
            out.append(f"Prices from your file {self.pricing.user_file}: {', '.join(mine)}.")
        if self.unpriced:
            hints = []
            for n in self.unpriced:
                other = self.other_bases(n)
                hints.append(f"{n} (has {', '.join(other)})" if other else n)
            lead = "Not ranked on cost, no" if ranked_on_cost else "No"
            out.append(f"{lead} {' or '.join(self.pricing.bases)} price: {', '.join(hints)}.")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "bases": list(self.pricing.bases),
            "pick": self.pricing.pick,
            "providers": list(self.pricing.providers),
            "bases_used": self.bases_used,
            "mixed_bases": self.mixed,
            "tco": self.pricing.tco.as_dict() if TCO in self.pricing.bases else None,
            "quotes": {n: q.as_dict() for n, q in self.quotes.items() if q is not None},
            "unpriced": self.unpriced,
        }


def read_price_file(path: str | Path, known: Sequence[str]) -> dict[str, tuple[Price, ...]]:
    """A user's prices: `[[DEVICE.prices]]` records as in the catalog (basis, unit, usd required;
    provider defaults to 'user'; date to 'today' is not guessed: it is required). Every record's
    source becomes `user: PATH` (with the record's own `note` if given)."""
    from chipfit.hardware.loader import CatalogError, _Ctx, parse_price

    p = Path(path)
    data = read_data_file(p, tomllib.loads, "price file", "TOML")
    out: dict[str, tuple[Price, ...]] = {}
    for name, entry in data.items():
        if name not in known:
            raise CatalogError(f"{p}: unknown device {name!r}; known: {', '.join(sorted(known))}")
        recs = entry.get("prices") if isinstance(entry, dict) else None
        if not isinstance(recs, list) or not recs or not all(isinstance(t, dict) for t in recs) or len(entry) != 1:
            raise CatalogError(f"{p}: device {name!r}: give its prices as [[{name}.prices]] records")
        ctx = _Ctx(str(p), name)
        parsed = []
        for i, t in enumerate(recs):
            t = dict(t)
            note = str(t.pop("note", ""))
            t.setdefault("provider", "user")
            if "source" in t:
                raise ctx.fail(f"prices[{i}].source", "a user price's source is your file; put remarks in 'note'")
            src = Source("user", f"{p}" + (f" ({note})" if note else ""))
            parsed.append(parse_price(ctx, t, f"prices[{i}].", source=src))
        out[name] = tuple(parsed)
    return out


def user_price_keys() -> list[str]:
    """The fields a user price record may give (for the CLI's help)."""
    from chipfit.hardware.loader import SECTION_KEYS

    return sorted((SECTION_KEYS["price"] - {"source"}) | {"note"})
