"""Software stacks as data (hardware/stacks.toml): every rule sourced, every device naming a stack,
and `--execution` resolved in one place."""

from __future__ import annotations

import pytest

from chipfit.errors import InputError
from chipfit.hardware import get_device, load_catalog
from chipfit.hardware import stacks as st
from chipfit.hardware.stacks import RULES, Execution, execution_choices, get_stack, resolve_stack, stacks


@pytest.mark.parametrize("name", list(stacks()))
def test_every_rule_a_stack_applies_has_a_source(name: str) -> None:
    s = get_stack(name)
    assert set(s.sources) == set(s.fuses)
    assert all(s.sources[r].strip() for r in s.fuses)
    if s.kernel_launch_s is not None or s.step_launch_s:
        assert s.launch_source
    if s.execution is Execution.EAGER:
        assert not s.fuses  # eager is one kernel per op


def test_compilers_differ_where_their_documentation_says_so() -> None:
    assert get_stack("tensorrt").attention and not get_stack("xla").attention  # XLA needs a Pallas kernel
    assert not get_stack("inductor").fold_batchnorm  # torch.compile folds only with freezing
    assert not get_stack("inductor").epilogue and get_stack("tensorrt").epilogue
    # IPEX freezes the TorchScript graph (BatchNorm folded) and fuses oneDNN post-ops and SDPA, as TensorRT does
    ipex = get_stack("ipex")
    assert ipex.fold_batchnorm and ipex.epilogue and ipex.pointwise and ipex.attention and ipex.inference_only


@pytest.mark.parametrize("dev", list(load_catalog().values()), ids=lambda d: d.name)
def test_every_device_names_a_known_stack(dev) -> None:  # type: ignore[no-untyped-def]
    assert dev.support.stack in stacks()
    assert dev.support.execution in ("eager", "compiled")
    if dev.family == "cpu":
        assert dev.support.execution == "eager"  # CPUs are calibrated against eager PyTorch
    else:
        assert dev.support.execution == "compiled"


def test_resolve_stack_defaults_overrides_and_training() -> None:
    h100, xeon, tpu = get_device("h100-sxm"), get_device("xeon-8480"), get_device("tpu-v5e")
    assert resolve_stack(h100).name == "tensorrt"
    assert resolve_stack(xeon).name == "eager"
    assert resolve_stack(xeon, "compiled").name == "ipex"  # Intel's own inference stack
    assert resolve_stack(xeon, "inductor").name == "inductor"
    assert resolve_stack(xeon, "compiled", mode="training").name == "inductor"  # frozen TorchScript: inference only
    assert resolve_stack(tpu, "compiled").name == resolve_stack(tpu).name == "xla"
    assert resolve_stack(h100, "eager").name == "eager"
    assert resolve_stack(h100, "xla").name == "xla"  # any stack by name
    assert resolve_stack(h100, mode="training").name == "inductor"  # TensorRT builds inference engines only
    assert resolve_stack(tpu, mode="training").name == "xla"
    with pytest.raises(InputError, match="valid: eager, compiled, inductor"):
        resolve_stack(h100, "tvm")
    assert execution_choices()[:2] == ("eager", "compiled")


def test_a_malformed_stack_is_refused_naming_the_problem(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "stacks.toml"
    bad.write_text('[x]\nexecution = "compiled"\npointwise = true\n')
    monkeypatch.setattr(st, "STACKS_FILE", bad)
    st.stacks.cache_clear()
    try:
        with pytest.raises(InputError, match="pointwise = true needs pointwise_source"):
            st.stacks()
        bad.write_text('[x]\nexecution = "jit"\n')
        st.stacks.cache_clear()
        with pytest.raises(InputError, match="execution must be one of eager, compiled"):
            st.stacks()
        bad.write_text('[x]\nexecution = "eager"\nfuses = ["all"]\n')
        st.stacks.cache_clear()
        with pytest.raises(InputError, match="unknown field"):
            st.stacks()
    finally:
        st.stacks.cache_clear()
    assert set(RULES) == {"fold_batchnorm", "epilogue", "pointwise", "attention"}


def test_a_device_file_naming_an_unknown_stack_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from chipfit.hardware.loader import CatalogError, load_devices

    f = tmp_path / "mine.toml"
    f.write_text('[my-gpu]\nextends = "h100-sxm"\n[my-gpu.support]\nstack = "tvm"\n')
    with pytest.raises(CatalogError, match=r"support\.stack.*unknown value 'tvm'; valid: eager, inductor"):
        load_devices([f], env=False)
