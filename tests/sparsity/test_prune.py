"""sparsify_: which layers are pruned, the pattern reached, Wanda from calibration data, masks kept
through training, baked in for export."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chipfit.errors import InputError
from chipfit.sparsity import check_nm, remove_masks, sparsify_


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))  # fmt: skip


def test_the_middle_layers_are_pruned_two_of_four() -> None:
    m = net()
    r = sparsify_(m, "2:4")
    by = {x.name: x for x in r.layers}
    assert not by["0"].pruned and by["0"].why_dense == "the first layer"
    assert not by["9"].pruned and by["9"].why_dense == "the last layer"
    for name in ("2", "5", "7"):
        assert by[name].pruned and by[name].sparsity == pytest.approx(0.5)
        assert check_nm(dict(m.named_modules())[name].weight != 0, 2, 4)
    assert 0.4 < r.sparsity < 0.5  # the dense ends weigh in


def test_masks_survive_training_and_bake_in() -> None:
    m = net()
    sparsify_(m, "2:4")
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
    w = m[5].weight
    assert check_nm(w != 0, 2, 4)
    remove_masks(m)
    assert isinstance(m[5].weight, nn.Parameter) and check_nm(m[5].weight != 0, 2, 4)
    assert "weight" in dict(m[5].named_parameters())


def test_wanda_uses_the_inputs() -> None:
    a, b = net(), net()
    batches = [torch.randn(4, 3, 8, 8) for _ in range(3)]
    sparsify_(a, "2:4", "magnitude")
    sparsify_(b, "2:4", "wanda", calibrate=batches)
    assert check_nm(b[5].weight != 0, 2, 4)
    assert not torch.equal(a[5].weight != 0, b[5].weight != 0)  # the activations moved the choice
    with pytest.raises(InputError, match="Wanda scores weights by their inputs"):
        sparsify_(net(), "2:4", "wanda")


def test_unstructured_and_errors() -> None:
    m = net()
    r = sparsify_(m, "unstructured:0.7", keep_ends_dense=False)
    assert all(x.sparsity == pytest.approx(0.7, abs=1e-3) for x in r.layers if x.pruned)
    with pytest.raises(InputError, match="already pruned"):
        sparsify_(m, "2:4", keep_ends_dense=False)
    with pytest.raises(InputError, match="give N:M with 0 < N <= M"):
        sparsify_(net(), "5:4")
    with pytest.raises(InputError, match="unknown pruning method 'obs'; known: magnitude, wanda"):
        sparsify_(net(), "2:4", "obs")
    with pytest.raises(InputError, match="names no prunable layer: 42"):
        sparsify_(net(), "2:4", dense=["42"])
    odd = nn.Sequential(nn.Linear(6, 300), nn.Linear(300, 6))
    r = sparsify_(odd, "2:4", keep_ends_dense=False)
    assert not r.layers[0].pruned and "not a multiple of 4" in r.layers[0].why_dense
