"""`chipfit serve`: the JSON keys the issue names, the table, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chipfit.cli import main

BASE = ["serve", "llama-3.1-8b", "--device", "h100-sxm", "--input-len", "256", "--output-len", "32",
        "--requests", "40"]  # fmt: skip
KEYS = ("output_tokens_per_s", "output_tokens_per_s_per_chip", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50",
        "tpot_ms_p99", "request_latency_ms_mean", "max_concurrency", "tp", "pp", "usd_per_million_output_tokens",
        "joules_per_output_token")  # fmt: skip


def test_json_has_the_named_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--chips", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert all(k in d for k in KEYS)
    assert d["chips"] == 2 and d["tp"] * d["pp"] * d["replicas"] == 2
    assert d["requests"] == 40 and d["output_tokens_per_s"] > 0


def test_online_modes_and_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, "--rate", "4", "--ttft-ms", "500", "--tpot-ms", "50"]) == 0
    out = capsys.readouterr().out
    assert "TTFT p50 / p99 ms" in out and "SLO TTFT p99 <= 500 ms and TPOT p99 <= 50 ms" in out
    assert main([*BASE, "--concurrency", "8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert "8 concurrent clients" in d["workload"] and d["peak_running_per_replica"] <= 8


def test_a_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = {"model_type": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
           "num_key_value_heads": 8, "intermediate_size": 8192, "vocab_size": 128256}  # fmt: skip
    f = tmp_path / "config.json"
    f.write_text(json.dumps(cfg))
    args = ["serve", "--config", str(f), *BASE[2:], "--json"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["output_tokens_per_s"] > 0
    del cfg["num_attention_heads"]
    f.write_text(json.dumps(cfg))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "field 'num_attention_heads' is missing" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--input-len", "zipf:3"], "give N, uniform:LOW:HIGH or normal:MEAN:STD"),
        (["--precision", "fp8", "--device", "a100-sxm"], "no matrix unit for fp8"),
        (["--device", "nosuch"], "unknown device 'nosuch'"),
        (["--tp", "3", "--chips", "3"], "do not divide over tp=3"),
        (["--kv-precision", "fp4"], "invalid choice: 'fp4'"),
        (["--rate", "0"], "not a positive number of requests per second"),
    ],
)
def test_errors_are_one_line(extra: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*BASE, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_a_model_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--device", "h100-sxm", "--input-len", "8", "--output-len", "8"]) == 2
    assert "name a language model or give --config FILE; built-in: " in capsys.readouterr().err
    assert main(["serve", "nosuch", "--device", "h100-sxm", "--input-len", "8", "--output-len", "8"]) == 2
    assert "unknown language model 'nosuch'; known: " in capsys.readouterr().err
