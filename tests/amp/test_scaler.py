"""LossScaler step by step against torch.amp.GradScaler on the same gradients."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from chipfit.amp import LossScaler

# a gradient sequence with overflows: each entry is the multiplier of a unit gradient (inf = overflow)
SEQUENCE = [1.0, math.inf, 2.0, 3.0, math.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, math.inf, 1.0, 1.0, 1.0, 1.0]


def _run(scaler: object, model: nn.Module, opt: torch.optim.Optimizer, mult: float) -> None:
    opt.zero_grad()
    loss = model(torch.ones(1, 3)).sum()
    scaler.scale(loss).backward()  # type: ignore[attr-defined]
    with torch.no_grad():
        for p in model.parameters():
            assert p.grad is not None
            p.grad.mul_(mult)
    scaler.step(opt)  # type: ignore[attr-defined]
    scaler.update()  # type: ignore[attr-defined]


@pytest.mark.parametrize("interval", [1, 3, 2000])
def test_state_machine_equals_gradscaler(interval: int) -> None:
    torch.manual_seed(0)
    ours_m = nn.Linear(3, 2)
    ref_m = copy.deepcopy(ours_m)
    ours_o = torch.optim.SGD(ours_m.parameters(), lr=0.1)
    ref_o = torch.optim.SGD(ref_m.parameters(), lr=0.1)
    ours = LossScaler(init_scale=2.0**10, growth_interval=interval)
    ref = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=interval)
    for mult in SEQUENCE:
        before = [p.detach().clone() for p in ours_m.parameters()]
        _run(ours, ours_m, ours_o, mult)
        _run(ref, ref_m, ref_o, mult)
        assert ours.get_scale() == ref.get_scale()
        for a, b in zip(ours_m.parameters(), ref_m.parameters(), strict=True):
            assert torch.equal(a, b)
        if not math.isfinite(mult):  # a skipped step leaves the weights unchanged
            assert ours.history[-1].skipped
            assert all(torch.equal(a, b) for a, b in zip(before, ours_m.parameters(), strict=True))
    assert ours.skipped_steps == 3


def test_defaults_static_and_misuse() -> None:
    s = LossScaler()
    assert (s.init_scale, s.growth_factor, s.backoff_factor, s.growth_interval) == (2.0**16, 2.0, 0.5, 2000)
    m = nn.Linear(3, 1)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    static = LossScaler(init_scale=128.0, dynamic=False)
    for mult in (math.inf, 1.0, 1.0):
        _run(static, m, opt, mult)
    assert static.get_scale() == 128.0 and static.skipped_steps == 1
    opt.zero_grad()
    static.scale(m(torch.ones(1, 3)).sum()).backward()
    static.unscale_(opt)
    with pytest.raises(RuntimeError, match="already been called"):
        static.unscale_(opt)
    with pytest.raises(ValueError, match="backoff_factor"):
        LossScaler(backoff_factor=2.0)
