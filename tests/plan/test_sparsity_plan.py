"""plan --sparsity: sparse variants where a device has sparse math, their measured accuracy, and the
devices without named."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from chipfit.cli import main
from chipfit.plan import plan
from chipfit.plan.plan import PlanError


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024),
                         nn.ReLU(), nn.Linear(1024, 16))  # fmt: skip


def test_sparse_rows_only_where_the_chip_accelerates_them() -> None:
    model = _mlp()
    data = [((torch.randn(32, 256),), None) for _ in range(2)]
    p = plan(model, lambda b: (torch.randn(b, 256),), devices=["h100-sxm", "v100-sxm", "mi300x"],
             precisions=["fp16", "int8"], batches=[4096], backend="serial", eval_data=data, metric="cosine",
             sparsity="2:4")  # fmt: skip
    sparse = [r for r in p.rows if r.sparsity]
    assert {r.device for r in sparse} == {"h100-sxm", "mi300x"}
    assert all(r.sparsity == "2:4" and "2:4 sparse" in r.label() for r in sparse)
    for r in sparse:  # every sparse row beside its dense twin, faster, and less accurate than dense
        twin = next(
            d for d in p.rows if not d.sparsity and (d.device, d.precision, d.chips) == (r.device, r.precision, r.chips)
        )
        assert r.step_s < twin.step_s
        assert r.accuracy_source == "pruned:2:4:magnitude" and r.accuracy is not None and twin.accuracy is not None
        assert r.accuracy < twin.accuracy
    if p.best is not None and p.best.sparsity:
        assert any("The recommendation runs the model pruned 2:4" in x for x in p.reasons)
    why = next(x for x in p.reasons if x.startswith("Sparsity 2:4"))
    assert "2 layers pruned" in why and "v100-sxm" in why.split("No 2:4 sparse math")[1]


def test_a_sparse_recommendation_without_accuracy_says_so() -> None:
    p = plan(_mlp(), lambda b: (torch.randn(b, 256),), devices=["h100-sxm"], precisions=["int8"], batches=[8192],
             backend="serial", sparsity="2:4", objective="latency")  # fmt: skip
    assert p.best is not None and p.best.sparsity == "2:4"
    assert any("accuracy cost is NOT measured here" in x for x in p.reasons)


def test_training_and_unprunable_models_are_refused() -> None:
    with pytest.raises(PlanError, match="--sparsity prices inference"):
        plan(_mlp(), lambda b: (torch.randn(b, 256),), devices=["h100-sxm"], precisions=["bf16"], batches=[8],
             backend="serial", training=True, sparsity="2:4")  # fmt: skip
    tiny = nn.Sequential(nn.Linear(6, 6))
    with pytest.raises(PlanError, match="no layer of the model can be pruned 2:4"):
        plan(tiny, lambda b: (torch.randn(b, 6),), devices=["h100-sxm"], precisions=["bf16"], batches=[8],
             backend="serial", sparsity="2:4")  # fmt: skip


def test_cli_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--serve", "llama-3.1-8b", "--sparsity", "2:4"]) == 2
    assert "sparse serving is not modelled" in capsys.readouterr().err
    assert main(["plan", "digits-cnn", "--devices", "h100-sxm", "--sparsity", "9:4"]) == 2
    assert "give N:M with 0 < N <= M" in capsys.readouterr().err
