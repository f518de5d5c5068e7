"""The planner's backends: serial (the oracle), a local process pool, and a local Ray instance give
identical plans; bad backends and worker failures give clear errors, not hangs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest

from chipfit.cli import main
from chipfit.hardware import get_device
from chipfit.models import get_model
from chipfit.plan import BACKENDS, plan, sweep
from chipfit.plan.backend import open_backend
from chipfit.plan.sweep import Measured, SweepTask


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    ray = pytest.importorskip("ray")  # the test extra installs it: this never skips under `make test`
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=200 * 2**20)
    yield ray
    ray.shutdown()


def _plan(backend: str, **kw: Any) -> dict[str, Any]:
    spec = get_model("mlp")
    acc = {
        (d, p): Measured(0.9 - i * 0.01, i * 0.01)
        for i, d in enumerate(["a100-sxm", "t4", "tpu-v5e"])
        for p in ["bf16"]
    }
    args: dict[str, Any] = {
        "name": "mlp",
        "devices": ["a100-sxm", "h100-sxm", "t4", "tpu-v5e", "gaudi2", "inferentia2", "edge-tpu"],
        "precisions": ["fp32", "bf16", "fp8"],
        "batches": [1, 16, 256],
        "chips": [1, 2, 4],
        "training": True,
        **kw,
    }
    p = plan(spec.build(), spec.example_inputs, backend=backend, **args)
    rows = sweep(spec.build(), spec.example_inputs, accuracy=acc, backend=backend, **{
        k: v for k, v in args.items() if k not in ("name",)
    })  # fmt: skip
    return {"plan": p.as_dict(), "rows": [r.as_dict() for r in rows]}


def test_local_pool_and_ray_give_the_serial_plan(ray_local: Any) -> None:
    serial = _plan("serial")
    assert serial["rows"] and any(r["accuracy"] is not None for r in serial["rows"])
    assert {r["strategy"] for r in serial["plan"]["rows"]} == {"single", "data", "tensor", "pipeline"}
    assert _plan("local", workers=2) == serial
    assert _plan("local", workers=3) == serial  # another split of the devices into tasks
    assert _plan("ray") == serial


def test_progress_counts_every_estimate_on_each_backend(ray_local: Any) -> None:
    spec = get_model("mlp")
    for backend in BACKENDS:
        seen: list[tuple[int, int]] = []
        sweep(
            spec.build(),
            spec.example_inputs,
            devices=["a100-sxm", "t4", "tpu-v5e"],
            precisions=["bf16", "fp16"],
            batches=[1, 8],
            progress=lambda done, total, seen=seen: seen.append((done, total)),
            backend=backend,
        )
        assert seen[-1] == (12, 12), backend
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_a_device_known_only_to_the_driver_reaches_the_workers() -> None:
    custom = dataclasses.replace(get_device("a100-sxm"), name="my-a100-at-half-clock")
    spec = get_model("mlp")
    rows = sweep(
        spec.build(),
        spec.example_inputs,
        devices=[custom, "t4"],
        precisions=["fp16"],  # both run it on their matrix units (t4 has no bf16: it would not be swept)
        batches=[8],
        backend="local",
        workers=2,
    )
    assert [r.device for r in rows] == ["my-a100-at-half-clock", "t4"]


def test_a_worker_error_surfaces_and_the_pool_closes() -> None:
    task = SweepTask(1, (get_device("t4"),), ("fp16",), (1,), False)
    with pytest.raises(AttributeError), open_backend("local", workers=2) as ex:
        ex.submit(None, task)  # type: ignore[arg-type]  # no trace: the worker raises
        ex.gather(lambda _done: None)


def test_bad_backend_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    spec = get_model("mlp")
    with pytest.raises(ValueError, match="known: local, ray, serial"):
        plan(spec.build(), spec.example_inputs, devices=["t4"], backend="dask")
    with pytest.raises(ValueError, match="positive integer"), open_backend("local", workers=0):
        pass
    base = ["plan", "mlp", "--devices", "t4", "--precisions", "bf16", "--batch-sizes", "8"]
    assert main([*base, "--backend", "dask"]) == 2
    assert "known: local, ray, serial" in capsys.readouterr().err
    assert main([*base, "--ray-address", "auto"]) == 2
    assert "--ray-address goes with --backend ray" in capsys.readouterr().err
    assert main([*base, "--workers", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err


def test_cli_ray_backend_equals_local(ray_local: Any, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["plan", "mlp", "--devices", "a100-sxm,t4,tpu-v5e", "--batch-sizes", "1,64", "--chips", "1,4", "--json"]
    out = {}
    for backend in ("local", "ray"):
        assert main([*base, "--backend", backend]) == 0
        out[backend] = json.loads(capsys.readouterr().out)
    assert out["ray"] == out["local"] and out["local"]["rows"]
