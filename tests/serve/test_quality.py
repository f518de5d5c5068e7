"""The serving quality probe: a trained small decoder's perplexity under chips' numerics and KV formats."""

from __future__ import annotations

import pytest

from chipfit.errors import InputError
from chipfit.models.tinylm import held_out, tinylm_pretrained
from chipfit.models.transformer import Attention
from chipfit.serve.quality import kv_rounding, measure_quality, perplexity


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return tinylm_pretrained()


def test_the_probe_has_learned_the_text(model) -> None:  # type: ignore[no-untyped-def]
    # uniform guessing over bytes is 256; the trained model is far better on text it has not seen
    assert perplexity(model, held_out()) < 10


def test_narrower_formats_cost_more(model) -> None:  # type: ignore[no-untyped-def]
    bf16 = measure_quality("h100-sxm", "bf16", "bf16")
    fp4 = measure_quality("b200", "fp4", "fp8")
    w4 = measure_quality("h100-sxm", "w4a16", "bf16")
    assert abs(bf16.change) < 0.005
    assert fp4.change > 0.01 and w4.change > 0.01
    assert fp4.change > abs(bf16.change) and w4.change > abs(bf16.change)
    assert "+" in fp4.describe() and "not the served model's own quality" in fp4.describe()


def test_the_kv_format_is_applied_and_removed(model) -> None:  # type: ignore[no-untyped-def]
    data = held_out(8)
    base = perplexity(model, data)
    int8 = perplexity(model, data, kv_precision="int8")
    fp8 = perplexity(model, data, kv_precision="fp8")
    assert int8 != base and fp8 != base
    assert abs(int8 / base - 1) < 0.05 and abs(fp8 / base - 1) < 0.05
    assert all(m.cache_round is None for m in model.modules() if isinstance(m, Attention))
    assert perplexity(model, data) == base  # nothing left behind
    with pytest.raises(InputError, match="unknown KV-cache precision 'fp2'; valid: bf16"), kv_rounding(model, "fp2"):
        pass


def test_chips_with_the_same_numerics_share_a_measurement() -> None:
    a, b = measure_quality("h100-sxm", "fp8", "bf16"), measure_quality("h200-sxm", "fp8", "bf16")
    assert a.perplexity == b.perplexity and a.device != b.device
