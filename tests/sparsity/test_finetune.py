"""Mask-preserving fine-tuning under a chip's numerics, the study, the dense-layer rule and the ONNX export."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from chipfit.errors import InputError
from chipfit.sparsity import check_nm, dense_layers, remove_masks, sparsify_
from chipfit.sparsity.export import export_pruned_onnx, onnx_weights
from chipfit.sparsity.finetune import finetune_
from chipfit.sparsity.study import study


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Conv1d(4, 8, 3, padding=1), nn.Flatten(), nn.Linear(128, 4))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 64)
        self.mid = nn.Linear(64, 64)
        self.conv = nn.Conv1d(4, 4, 3, padding=1)
        self.out = nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.mid(torch.relu(self.inp(x))))
        h = torch.relu(self.conv(h.reshape(-1, 4, 16))).reshape(-1, 64)
        return self.out(h)


def _data(n: int = 8) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)) for _ in range(n)]


def _loss(m: nn.Module, b: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(m(b[0]), b[1])


@pytest.mark.parametrize(("device", "precision"), [(None, "fp32"), ("a100-sxm", "fp16"), ("h100-sxm", "bf16")])
def test_finetuning_keeps_every_mask_and_lowers_the_loss(device: str | None, precision: str) -> None:
    model = _Net()
    rep = sparsify_(model, "2:4", keep_ends_dense=False, min_params=0)
    assert {x.name for x in rep.layers if x.pruned} == {"inp", "mid", "conv", "out"}
    before = [m.weight.detach().clone() for m in (model.inp, model.mid, model.conv, model.out)]
    res = finetune_(model, _data(), _loss, epochs=3, device=device, precision=precision, lr=1e-2)
    assert res.steps == 24 and res.epoch_loss[-1] < res.epoch_loss[0]
    for w0, mod in zip(before, (model.inp, model.mid, model.conv, model.out), strict=True):
        w = mod.weight.detach()
        assert check_nm(w != 0, 2, 4)  # exactly two of every four along the reduction dimension
        assert torch.equal(w == 0, w0 == 0)  # the same positions as pruned
        assert not torch.equal(w, w0)  # and the kept ones trained
    assert res.device == (device or "")


def test_the_dense_layer_rule() -> None:
    why = dense_layers(_Net(), "2:4", min_params=300)
    assert why == {"inp": "the first layer", "mid": "", "conv": "fewer than 300 weights", "out": "the last layer"}
    odd = nn.Sequential(nn.Linear(6, 64), nn.Linear(6 * 0 + 64, 64), nn.Linear(64, 64), nn.Linear(64, 2))
    odd[1] = nn.Linear(66, 64)
    assert dense_layers(odd)["1"] == "its reduction dimension is not a multiple of 4"
    with pytest.raises(InputError, match="fine-tuning needs at least one epoch"):
        finetune_(_Net(), _data(), _loss, epochs=0)


def test_study_rows_and_speed() -> None:
    model = _Net()
    data = [((x,), y) for x, y in _data(2)]
    st = study(model, data, "top1", "2:4", "wanda", calibrate=[(x,) for (x,), _ in data], train=_data(),
               loss=_loss, epochs=1, lr=1e-2, device="h100-sxm", precision="bf16", speed_inputs=data[0][0],
               keep_ends_dense=False, min_params=0)  # fmt: skip
    got = {(r.stage, r.numerics) for r in st.rows}
    assert got == {(s, n) for s in ("dense", "pruned", "fine-tuned") for n in ("fp32", "h100-sxm:bf16")}
    assert st.value("dense") == st.rows[0].value and st.rows[0].drop == 0
    assert st.speed is not None and st.speed.covered_gemms == 4 and st.speed.device == "h100-sxm"
    assert st.final is st.models["fine-tuned"]


def test_onnx_export_writes_the_pruned_weights(tmp_path: Path) -> None:
    model = _Net()
    sparsify_(model, "2:4", keep_ends_dense=False)
    twin = copy.deepcopy(model)  # shares the parametrized classes with the model
    x = torch.randn(5, 16)
    got = export_pruned_onnx(model, (x,), tmp_path / "m.onnx")
    assert got["max_abs_diff_vs_chipfit"] < 1e-5
    ws = onnx_weights(tmp_path / "m.onnx")
    for name in ("inp", "mid", "out"):
        assert check_nm(ws[f"{name}.weight"] != 0, 2, 4)
        assert torch.equal(ws[f"{name}.weight"], getattr(model, name).weight.detach())
    remove_masks(twin)  # baking one copy leaves the other's masks working
    assert torch.equal(twin.mid.weight, model.mid.weight) and parametrize.is_parametrized(model.mid, "weight")
    assert not parametrize.is_parametrized(twin.mid) and isinstance(twin.mid.weight, nn.Parameter)
