"""Prices through the CLI: one basis at a time, the basis and dates said, mixed bases warned about,
a user's prices labelled as the user's, unpriced devices listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chipfit.cli import main

PLAN = ["plan", "mlp", "--precisions", "int8", "--batch-sizes", "32", "--backend", "serial", "--json"]


def _plan(capsys: pytest.CaptureFixture[str], *extra: str) -> dict:
    assert main([*PLAN, *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_default_plan_prices_on_demand_only_and_lists_the_owned_devices_it_cannot_rank(capsys) -> None:
    p = _plan(capsys, "--devices", "l4,edge-tpu")
    assert p["pricing"]["bases"] == ["on-demand"] and not p["pricing"]["mixed_bases"]
    assert p["pricing"]["unpriced"] == ["edge-tpu"] and p["recommendation"]["device"] == "l4"
    text = " ".join(p["reasons"])
    assert "Prices: on-demand per accelerator-hour" in text and "dated 2026" in text
    assert "Not ranked on cost, no on-demand price: edge-tpu (has tco)." in text
    assert not any(r["usd_per_hour"] for r in p["rows"] if r["device"] == "edge-tpu")


def test_a_fallback_to_ownership_prices_every_device_and_warns_that_the_bases_mix(capsys) -> None:
    p = _plan(capsys, "--devices", "l4,edge-tpu", "--price-basis", "on-demand,tco")
    assert p["pricing"]["mixed_bases"] and p["pricing"]["unpriced"] == []
    assert p["pricing"]["quotes"]["edge-tpu"]["basis"] == "tco"
    assert "warning: this comparison mixes price bases: on-demand: l4; tco: edge-tpu." in p["reasons"]
    assert all(r["usd_per_hour"] is not None for r in p["rows"])
    tco = _plan(capsys, "--devices", "edge-tpu", "--price-basis", "tco", "--tco", "years=2,usd-per-kwh=0.3")
    q = tco["pricing"]["quotes"]["edge-tpu"]
    assert tco["pricing"]["tco"]["years"] == 2 and q["parts"]["purchase"] > 0 and q["record"]["basis"] == "purchase"
    assert any("2-year amortization, USD 0.3/kWh" in r for r in tco["reasons"])


def test_a_users_price_file_overrides_and_is_labelled_as_theirs(tmp_path: Path, capsys) -> None:
    f = tmp_path / "ours.toml"
    f.write_text('[[l4.prices]]\nbasis = "on-demand"\nunit = "accelerator-hour"\nusd = 0.11\ndate = "2026-12"\n')
    p = _plan(capsys, "--devices", "l4,t4", "--prices", str(f))
    q = p["pricing"]["quotes"]["l4"]
    assert q["usd_per_hour"] == 0.11 and q["from_user"] and q["record"]["source"].startswith("user: ")
    assert f"Prices from your file {f}: l4." in p["reasons"]
    assert not p["pricing"]["quotes"]["t4"]["from_user"]
    assert main(["estimate", "mlp", "--device", "l4", "--prices", str(f), "--json"]) == 0
    est = json.loads(capsys.readouterr().out)
    assert est["price"]["from_user"] and est["price"]["usd_per_hour"] == 0.11


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--price-basis", "hourly"], "unknown price basis hourly; known: on-demand, 1-year, 3-year, spot"),
        (["--tco", "life=3"], "--tco takes KEY=VALUE items with KEY one of years"),
        (["--prices", "/nonexistent/p.toml"], "cannot read price file"),
        (["--price-pick", "mean"], "invalid choice: 'mean'"),
    ],
)
def test_bad_price_flags_are_one_line_errors(flags: list[str], message: str, capsys) -> None:
    assert main(["estimate", "mlp", "--device", "l4", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_provider_choice_and_pick_change_the_quote_and_say_so(capsys) -> None:
    assert main(["devices", "show", "h100-sxm", "--json"]) == 0
    base = json.loads(capsys.readouterr().out)["price_quotes"]["on-demand"]["usd_per_hour"]
    assert main(["devices", "show", "h100-sxm", "--json", "--price-pick", "cheapest"]) == 0
    cheapest = json.loads(capsys.readouterr().out)["price_quotes"]["on-demand"]
    assert cheapest["usd_per_hour"] < base
    assert main(["devices", "show", "h100-sxm", "--json", "--price-provider", "AWS"]) == 0
    aws = json.loads(capsys.readouterr().out)["price_quotes"]["on-demand"]
    assert aws["record"]["provider"] == "AWS" and aws["usd_per_hour"] == pytest.approx(55.04 / 8)
    p = _plan(capsys, "--devices", "h100-sxm,tpu-v5e", "--price-provider", "AWS")
    assert p["pricing"]["unpriced"] == ["tpu-v5e"]  # Google's TPUs are not on AWS: unpriced, and said
    assert any("from AWS" in r for r in p["reasons"])
