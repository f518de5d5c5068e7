"""chipfit's `inductor` stack against the kernels torch.compile (Inductor) generated for built-in models
on this CPU (issue 20): tests/data/inductor_kernels.json was recorded by
`benchmarks/inductor_kernels.py --record` from Inductor's own generated wrapper code and scheduler byte
count; the slow test below compiles with Inductor live and checks the same."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from chipfit.cost import estimate
from chipfit.cost.fusion import kernels
from chipfit.hardware.stacks import get_stack
from chipfit.models import get_model
from chipfit.trace import trace

RECORDING = json.loads((Path(__file__).resolve().parents[1] / "data" / "inductor_kernels.json").read_text())


def _ours(case: dict[str, Any]) -> tuple[int, int, float]:
    """(library kernels, generated kernels, bytes) chipfit's inductor stack gives the case's model."""
    spec = get_model(case["model"])
    tr = trace(spec.build().eval(), list(spec.example_inputs(case["batch"], case["seq"])))
    ks = kernels(tr, get_stack("inductor"))
    library = sum(k.kind in ("matrix", "attention") for k in ks)
    nbytes = sum(r.bytes for r in estimate(tr, "xeon-8480", "fp32", execution="inductor").rows)
    return library, len(ks) - library, nbytes


@pytest.mark.parametrize("case", RECORDING["cases"], ids=lambda c: c["model"])
def test_chipfit_launches_the_library_kernels_inductor_does(case: dict[str, Any]) -> None:
    """Every GEMM, convolution and fused attention Inductor hands to a library (extern_kernels, SDPA) is one
    matrix or attention kernel in chipfit, no more and no fewer; chipfit never fuses more pointwise work
    than Inductor does (it fuses chains, Inductor also fuses siblings that share inputs)."""
    library, generated, _ = _ours(case)
    assert library == case["library"]
    assert generated >= case["generated"]


@pytest.mark.parametrize("case", [c for c in RECORDING["cases"] if c["model"] in ("mlp", "digits-cnn", "bert-base")],
                         ids=lambda c: c["model"])  # fmt: skip
def test_chipfit_moves_the_bytes_inductor_counts(case: dict[str, Any]) -> None:
    """The bytes of chipfit's kernels (each reads its inputs once, writes what leaves it) are within 2 % of
    Inductor's scheduler count for the graph; for the small models the kernel counts agree exactly."""
    _, generated, nbytes = _ours(case)
    assert nbytes == pytest.approx(case["bytes"], rel=0.02)
    if case["model"] != "bert-base":
        assert generated == case["generated"]


@pytest.mark.slow
def test_against_inductor_live() -> None:
    """Compiles digits-cnn and mlp with Inductor here and checks the recording still describes it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    from inductor_kernels import inductor_kernels

    for case in RECORDING["cases"][:2]:
        live = inductor_kernels(case["model"], case["batch"], case["seq"])
        assert (live["library"], live["generated"]) == (case["library"], case["generated"])
        library, generated, nbytes = _ours(case)
        assert (library, generated) == (live["library"], live["generated"])
        assert nbytes == pytest.approx(live["bytes"], rel=0.02)
