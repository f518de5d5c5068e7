"""CLI fuzz test (issue 18): argument vectors of every subcommand, good and bad, never end a user
error in a traceback. Each run ends with status 0 or 2 (argparse's own usage errors included), and
stderr never carries a traceback or the "this is a bug" line that chipfit prints for its own bugs.

The vectors are drawn by hypothesis from per-command pools of flags and values (bad paths, shapes,
numbers, names included). Every vector starts from a small, fast base (few devices, one batch,
a handful of items) that the drawn flags may override, so the test stays within seconds per
command. CHIPFIT_FUZZ_EXAMPLES raises the number of examples for a longer local run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chipfit.cli import main

EXAMPLES = int(os.environ.get("CHIPFIT_FUZZ_EXAMPLES", "40"))

# vectors the fuzzer found once (each ended in a traceback): run first, every time
REGRESSIONS = {
    "trace": [["trace", "mlp", "--batch", "99999999999999999999"]],
    "estimate": [["estimate", "bert-base", "--seq-len", "99999999999999999999"]],
    "plan": [["plan", "{user}:make", "--input-shape", "3,8,8", *["--devices", "a100-sxm", "--backend", "serial"]]],
}

USER = """
import torch

def make():
    return torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU())

def broken():
    raise RuntimeError("no weights")

def not_a_module():
    return 3
"""

INTS = ["0", "-1", "1", "3", "16", "abc", "1e3", "", "99999999999999999999"]
FLOATS = ["0", "-1", "0.5", "nan", "inf", "x", "1e400"]
SHAPES = ["8", "3,8,8", "0", "x", "3,,4", "-2", "8x8", "", "1,2,3,4,5,6"]
DEVICES = ["a100-sxm", "t4", "edge-tpu", "nosuch", "all", "", "A100-SXM"]
PRECISIONS = ["bf16", "fp32", "int8", "fp8", "int2", "binary", "all", "nvfp4", "", "float8_e4m3fn"]


def _models(user: Path) -> list[str]:
    return ["mlp", "linear-regressor", "digits-cnn", "bert-base", "decoder-125m", "nosuch", "", f"{user}:make",
            f"{user}:broken", f"{user}:not_a_module", f"{user}:missing", "no/such/file.py:make", "os:getcwd",
            "x:", ":y"]  # fmt: skip


def _paths(tmp: Path) -> list[str]:
    (tmp / "adir").mkdir(exist_ok=True)
    (tmp / "junk.pt").write_bytes(b"not a tensor file")
    (tmp / "bad.toml").write_text("[a100-sxm.power]\ntdp_w = 'hot'\n")
    return [str(tmp / "out.file"), str(tmp / "adir"), str(tmp / "junk.pt"), "/dev/null", str(tmp / "no" / "x"),
            str(tmp / "bad.toml"), ""]  # fmt: skip


def _pool(command: str, tmp: Path) -> dict[str, list[str] | None]:
    """flag -> values (None: a switch)."""
    paths = _paths(tmp)
    model_flags: dict[str, list[str] | None] = {
        "--seq-len": INTS, "--decode": None, "--input-shape": SHAPES, "--dtype": ["float32", "int64", "int8"],
        "--device-file": paths,
    }  # fmt: skip
    pools: dict[str, dict[str, list[str] | None]] = {
        "trace": {"--batch": INTS, "--train": None, "--optimizer": ["sgd", "adam", "lion"], "--top": INTS,
                  "--save": paths, "--json": None},
        "estimate": {"--batch": INTS, "--train": None, "--device": DEVICES, "--precision": PRECISIONS,
                     "--top": INTS, "--json": None},
        "plan": {"--objective": ["cost", "latency", "speed", ""], "--max-latency-ms": FLOATS,
                 "--max-accuracy-drop": FLOATS, "--max-usd-per-hour": FLOATS, "--devices": ["a100-sxm,t4", "nosuch",
                 "a100-sxm,,t4", ""], "--precisions": ["bf16,int8", "int2", "binary,bf16", ""],
                 "--batch-sizes": ["1", "0", "1,x", ""], "--chips": ["1,2", "0", "x"], "--train": None,
                 "--allow-fallback": None, "--eval-data": paths, "--metric": ["top1", "cosine", "f1"],
                 "--eval-limit": INTS, "--quant": ["int8", "nosuch", *paths], "--top": INTS,
                 "--workers": INTS, "--html": paths, "--csv": paths, "--json": None},
        "emulate": {"--device": DEVICES, "--precision": PRECISIONS, "--accumulate": ["fp32", "fp16", "x"],
                    "--batch": INTS, "--limit": INTS, "--report": None, "--top": INTS, "--json": None},
        "quantize": {"--method": ["entropy", "minmax", "x"], "--recipe": ["int8", "w4a8", "x"], "--config": paths,
                     "--device": DEVICES, "--budget": FLOATS, "--levels": ["int8,bf16", "x"], "--batch": INTS,
                     "--limit": INTS, "--export": paths, "--json": None},
        "train": {"--device": DEVICES, "--precision": PRECISIONS, "--epochs": ["1", "0", "x"], "--batch": INTS,
                  "--lr": FLOATS, "--loss-scaling": ["auto", "none", "x"], "--save-json": paths, "--plot": paths,
                  "--json": None},
        "devices": {"--family": ["gpu", "x"], "--format": ["bfloat16", "x"], "--device-file": paths, "--json": None},
        "formats": {"--kind": ["float", "int", "x"], "--json": None},
        "serve": {"--device": DEVICES, "--precision": PRECISIONS, "--chips": INTS, "--tp": INTS, "--pp": INTS,
                  "--kv-precision": ["bf16", "fp8", "fp4", ""], "--input-len": [*INTS, "uniform:5:1", "normal:9:x"],
                  "--output-len": INTS, "--rate": FLOATS, "--concurrency": INTS, "--ttft-ms": FLOATS,
                  "--tpot-ms": FLOATS, "--requests": ["1", "8", "0", "x"], "--config": paths,
                  "--expert-parallel": None, "--token-budget": INTS, "--max-seqs": INTS, "--json": None},
    }  # fmt: skip
    own = pools[command]
    return own if command in ("devices", "formats", "serve") else {**model_flags, **own}


# small, fast defaults the drawn flags may override (single-valued flags: the last one wins)
BASE = {
    "plan": ["--devices", "a100-sxm,t4", "--batch-sizes", "8", "--backend", "serial", "--eval-limit", "16"],
    "emulate": ["--limit", "16"],
    "quantize": ["--limit", "16", "--no-sensitivity", "--batch", "16"],
    "train": ["--epochs", "1", "--device", "a100-sxm", "--precision", "bf16", "--no-progress"],
    "estimate": [],
    "trace": [],
    "devices": [],
    "formats": [],
    "serve": ["--device", "h100-sxm", "--input-len", "64", "--output-len", "8", "--requests", "8"],
}


def _argv(command: str, tmp: Path) -> st.SearchStrategy[list[str]]:
    user = tmp / "user_models.py"
    pool = _pool(command, tmp)

    def flag(name: str) -> st.SearchStrategy[list[str]]:
        values = pool[name]
        return st.just([name]) if values is None else st.sampled_from(values).map(lambda v: [name, v])

    flags = st.lists(st.sampled_from(sorted(pool)).flatmap(flag), max_size=4).map(lambda xs: [a for x in xs for a in x])
    if command in ("devices", "formats"):
        head = st.just([command])
    elif command == "serve":
        head = st.sampled_from(["llama-3.1-8b", "mixtral-8x7b", "gpt-j-6b", "nosuch", ""]).map(lambda m: [command, m])
    else:
        head = st.sampled_from(_models(user)).map(lambda m: [command, m])
    return st.tuples(head, flags).map(lambda hf: [*hf[0], *BASE[command], *hf[1]])


@pytest.mark.parametrize(
    "command", ["trace", "estimate", "plan", "emulate", "quantize", "train", "devices", "formats", "serve"]
)
def test_no_user_error_ends_in_a_traceback(
    command: str, tmp_path_factory: pytest.TempPathFactory, capfd: pytest.CaptureFixture[str]
) -> None:
    tmp = tmp_path_factory.mktemp(f"fuzz-{command}")
    (tmp / "user_models.py").write_text(USER)

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(_argv(command, tmp))
    def run(argv: list[str]) -> None:
        try:
            status = main(argv)
        except SystemExit as e:  # argparse's usage errors
            status = e.code if isinstance(e.code, int) else 2
        err = capfd.readouterr().err
        assert "Traceback" not in err and "internal error" not in err, (argv, err)
        assert status in (0, 2), (argv, status, err)
        if status == 2:
            assert err.strip(), (argv, "a failure must say why")

    for argv in REGRESSIONS.get(command, []):
        run.hypothesis.inner_test([a.replace("{user}", str(tmp / "user_models.py")) for a in argv])  # type: ignore[attr-defined]
    run()
