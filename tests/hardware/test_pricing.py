"""Prices as sourced records on one basis: selection, ownership (TCO), user files, and the words a
comparison carries (basis, dates, mixed bases, unpriced devices)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from chipfit.errors import InputError
from chipfit.hardware import get_device, list_devices
from chipfit.hardware.device import Price, PriceBasis, PriceUnit, Source
from chipfit.hardware.loader import CatalogError, load_devices
from chipfit.hardware.pricing import (
    HOURS_PER_YEAR,
    PRICE_BASES,
    Pricing,
    Tco,
    parse_bases,
    parse_tco,
    read_price_file,
)


def _price(basis: str, usd: float, *, unit: str = "accelerator-hour", acc: int = 1, date: str = "2025-06") -> Price:
    return Price(
        basis=PriceBasis(basis), provider="test", unit=PriceUnit(unit), usd=usd, date=date,
        source=Source("datasheet", "test"), accelerators=acc,
    )  # fmt: skip


def _with(name: str, *prices: Price):
    return dataclasses.replace(get_device(name), prices=tuple(prices))


@pytest.mark.parametrize("dev", list_devices(), ids=lambda d: d.name)
def test_every_catalog_price_has_basis_unit_date_and_source(dev) -> None:
    for p in dev.prices:
        assert p.basis in PriceBasis and p.unit in PriceUnit
        assert (p.basis is PriceBasis.PURCHASE) == (p.unit is PriceUnit.PURCHASE)
        assert p.date[:4].isdigit() and 2015 <= int(p.date[:4]) <= 2026
        assert p.source.kind in ("datasheet", "third-party", "derived") and p.source.ref
        assert p.provider and p.usd > 0 and p.accelerators >= 1


def test_an_instance_price_is_divided_by_its_accelerators_and_the_cheapest_record_wins() -> None:
    dev = _with(
        "h100-sxm",
        _price("on-demand", 55.04, unit="instance-hour", acc=8),
        _price("on-demand", 7.50),
        _price("spot", 2.0),
    )
    q = Pricing().quote(dev)
    assert q is not None and q.basis == "on-demand"
    assert q.usd_per_hour == pytest.approx(55.04 / 8)  # 6.88 < 7.50
    assert Pricing(bases=("spot",)).quote(dev).usd_per_hour == 2.0  # type: ignore[union-attr]
    assert Pricing(bases=("1-year",)).quote(dev) is None  # an unknown price stays unknown


def test_tco_reproduces_a_hand_computed_case() -> None:
    # a 700 W chip bought at $200,000 per 8 (a server): 4 years, $0.10/kWh, PUE 1.3, $184.06/kW-month
    dev = _with("h100-sxm", _price("purchase", 200_000, unit="purchase", acc=8))
    q = Pricing(bases=("tco",)).quote(dev)
    assert q is not None and q.basis == "tco"
    capex = 25_000 / (4 * 8760)  # 0.71347
    power = 0.7 * 1.3 * 0.10  # 0.091
    hosting = 0.7 * 184.06 * 12 / 8760  # 0.17650
    assert q.parts["purchase"] == pytest.approx(capex)
    assert q.parts["electricity"] == pytest.approx(power)
    assert q.parts["hosting"] == pytest.approx(hosting)
    assert q.usd_per_hour == pytest.approx(0.98097, rel=1e-4)
    cheap = Pricing(bases=("tco",), tco=parse_tco("years=5,usd-per-kwh=0.05,pue=1.1,hosting-usd-per-kw-month=0"))
    q2 = cheap.quote(dev)
    assert q2 is not None
    assert q2.usd_per_hour == pytest.approx(25_000 / (5 * HOURS_PER_YEAR) + 0.7 * 1.1 * 0.05)


def test_a_fallback_order_prices_owned_devices_and_the_summary_warns_that_bases_mix() -> None:
    rented = _with("h100-sxm", _price("on-demand", 6.88))
    owned = _with("edge-tpu", _price("purchase", 60.0, unit="purchase"))
    neither = _with("ascend-310")
    one = Pricing().summary([rented, owned, neither])
    assert not one.mixed and one.unpriced == ["ascend-310", "edge-tpu"]
    assert any("edge-tpu (has tco)" in line for line in one.lines())  # says which basis would price it
    both = Pricing(bases=("on-demand", "tco")).summary([rented, owned, neither])
    assert both.mixed and both.bases_used == ["on-demand", "tco"]
    text = " ".join(both.lines())
    assert "warning: this comparison mixes price bases: on-demand: h100-sxm; tco: edge-tpu." in text
    assert "ascend-310" in text and both.unpriced == ["ascend-310"]
    d = both.as_dict()
    assert d["mixed_bases"] is True and d["quotes"]["edge-tpu"]["basis"] == "tco" and d["tco"]["pue"] == 1.3


def test_a_user_price_file_replaces_the_catalog_on_its_basis_and_is_labelled_as_the_users(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(
        '[[h100-sxm.prices]]\nbasis = "on-demand"\nunit = "accelerator-hour"\nusd = 2.10\ndate = "2026-11"\n'
        'note = "our negotiated rate"\n'
    )
    user = read_price_file(f, [d.name for d in list_devices()])
    dev = _with("h100-sxm", _price("on-demand", 6.88), _price("spot", 1.5))
    pricing = Pricing(user=user, user_file=str(f))
    q = pricing.quote(dev)
    assert q is not None and q.usd_per_hour == 2.10 and q.from_user
    assert q.record.source.kind == "user" and str(f) in q.record.source.ref and "negotiated" in q.record.source.ref
    assert "your price file" in q.describe() and "catalog" not in q.describe()
    assert Pricing(bases=("spot",), user=user).quote(dev).usd_per_hour == 1.5  # type: ignore[union-attr]
    assert any(str(f) in line and "h100-sxm" in line for line in pricing.summary([dev]).lines())


OK = 'basis = "on-demand"\nunit = "accelerator-hour"\ndate = "2026"\n'


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (f"[[nope.prices]]\n{OK}usd = 1\n", "unknown device 'nope'"),
        (f"[[t4.prices]]\n{OK.replace('on-demand', 'hourly')}usd = 1\n", "valid: on-demand, 1-year"),
        (f"[[t4.prices]]\n{OK.replace('on-demand', 'purchase')}usd = 1\n", "needs unit purchase"),
        (f"[[t4.prices]]\n{OK.replace('2026', 'last year')}usd = 1\n", "YYYY"),
        (f'[[t4.prices]]\n{OK}usd = 1\nsource = "x"\n', "put remarks in 'note'"),
        (f"[[t4.prices]]\n{OK}", "'prices\\[0\\].usd': missing"),
        ("[t4]\nprice = 3\n", r"\[\[t4.prices\]\]"),
    ],
)
def test_a_bad_price_file_is_one_clear_error(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "p.toml"
    f.write_text(text)
    with pytest.raises(InputError, match=match):
        read_price_file(f, [d.name for d in list_devices()])


def test_catalog_price_records_are_validated(tmp_path: Path) -> None:
    f = tmp_path / "dev.toml"
    f.write_text('[[t4.prices]]\nbasis = "on-demand"\nprovider = "x"\nunit = "accelerator-hour"\nusd = 1\n'
                 'accelerators = 8\ndate = "2026"\nsource = "datasheet: x"\n')  # fmt: skip
    with pytest.raises(CatalogError, match="accelerator-hour is for 1"):
        load_devices([f])


def test_bases_and_tco_arguments_name_the_valid_choices() -> None:
    assert parse_bases("on-demand,tco") == ("on-demand", "tco")
    with pytest.raises(InputError, match="known: " + ", ".join(PRICE_BASES)):
        parse_bases("hourly")
    with pytest.raises(InputError, match="KEY one of years, usd-per-kwh, pue, hosting-usd-per-kw-month"):
        parse_tco("life=3")
    with pytest.raises(InputError, match="outside"):
        parse_tco("pue=0.5")
    assert parse_tco("") == Tco()


def test_a_part_that_extends_another_never_inherits_its_price() -> None:
    assert get_device("gaudi3").prices and not get_device("gaudi3-pcie").prices  # the kit is 8 OAM parts
    assert get_device("h200-sxm").extends == "h100-sxm"
    assert all("H200" in p.source.ref or "h200" in p.source.ref.lower() for p in get_device("h200-sxm").prices)
