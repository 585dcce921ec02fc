"""Pricebook: exact integer pricing, versions, fallbacks, validation and LiteLLM import."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendwarden.exceptions import ConfigError, PricebookError
from spendwarden.streams.events import CostEvent
from spendwarden.streams.pricebook import Pricebook, dump_yaml, import_litellm

NANO = Decimal("1e9")


def event(**kw: Any) -> CostEvent:
    base: dict[str, Any] = {"cost_event_id": "e1", "ts": "2026-05-01T12:00:00Z", "tenant_id": "acme"}
    return CostEvent.model_validate({**base, **kw})


def nanos(usd: Decimal) -> int:
    return int((usd * NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


GPT4O = {"provider": "openai", "model": "gpt-4o"}
TWO_VERSIONS = {
    "versions": [
        {
            "version": "v1",
            "effective_from": "2026-01-01T00:00:00Z",
            "prices": [{**GPT4O, "input_per_mtok": "2.50", "output_per_mtok": 10}],
        },
        {
            "version": "v2",
            "effective_from": "2026-06-01T00:00:00Z",
            "prices": [{**GPT4O, "input_per_mtok": "2.00", "output_per_mtok": 8}],
        },
    ]
}


def test_default_loads() -> None:
    """The shipped default pricebook validates and has version 2026-10."""
    assert "2026-10" in Pricebook.default().versions


MIX = {"input_tokens": 1234, "cached_tokens": 567, "output_tokens": 89}


def test_token_and_cached_math_exact() -> None:
    """Cached tokens are a subset of input and priced at the cached rate, exact in nanos."""
    cost, version = Pricebook.default().price(
        event(provider="openai", model_or_service="gpt-4o", **MIX)
    )
    mtok = Decimal(1_000_000)
    usd = (1234 - 567) * Decimal("2.50") / mtok + 567 * Decimal("1.25") / mtok + 89 * Decimal("10.00") / mtok
    assert (cost, version) == (nanos(usd), "2026-10")


def test_sub_nano_rounds_half_even_once() -> None:
    """A total below one nano-dollar is rounded once, half-even, not per component."""
    tiny = {"provider": "p", "model": "m", "input_per_mtok": "0.00015", "cached_per_mtok": "0.000075"}
    version = {"version": "t", "effective_from": "2026-01-01T00:00:00Z", "prices": [tiny]}
    pb = Pricebook.from_dict({"versions": [version]})
    # 0.15 nano per uncached token, 0.075 per cached one.
    assert pb.price(event(provider="p", model_or_service="m", input_tokens=3))[0] == 0  # 0.45
    assert pb.price(event(provider="p", model_or_service="m", input_tokens=10))[0] == 2  # 1.5 → 2
    assert pb.price(event(provider="p", model_or_service="m", input_tokens=30))[0] == 4  # 4.5 → 4
    # 7 cached (0.525) + 3 uncached (0.45) = 0.975 → 1, where per-part rounding would give 1 + 0.
    assert pb.price(event(provider="p", model_or_service="m", input_tokens=10, cached_tokens=7))[0] == 1
    # 2 cached (0.15) + 1 uncached (0.15) = 0.3 → 0, where rounding up parts would give more.
    assert pb.price(event(provider="p", model_or_service="m", input_tokens=3, cached_tokens=2))[0] == 0


def test_gpu_and_per_call_math_exact() -> None:
    """GPU seconds and per-call prices keep sub-nano precision until the final rounding."""
    pb = Pricebook.default()
    gpu, _ = pb.price(event(provider="internal", model_or_service="gpu-pool-a100", gpu_seconds=12.345))
    assert gpu == nanos(Decimal("12.345") * Decimal("0.0011"))
    calls, _ = pb.price(event(provider="internal", model_or_service="vector-search", api_calls=7))
    assert calls == nanos(7 * Decimal("0.0004"))
    human, _ = pb.price(event(provider="internal", model_or_service="human-review", api_calls=3))
    assert human == nanos(3 * Decimal("1.50"))


def test_cached_price_defaults_to_input() -> None:
    """Without cached_per_mtok, cached tokens cost the input price."""
    cost, _ = Pricebook.default().price(
        event(provider="internal", model_or_service="judge-small", input_tokens=1000, cached_tokens=400)
    )
    assert cost == nanos(1000 * Decimal("0.15") / 1_000_000)


def test_version_switch_at_effective_from() -> None:
    """The version in force is the latest whose effective_from ≤ ts; before the first, none."""
    pb = Pricebook.from_dict(TWO_VERSIONS)
    kw = {"provider": "openai", "model_or_service": "gpt-4o", "input_tokens": 1_000_000}
    assert pb.price(event(ts="2026-05-31T23:59:59.999999Z", **kw)) == (2_500_000_000, "v1")
    assert pb.price(event(ts="2026-06-01T00:00:00Z", **kw)) == (2_000_000_000, "v2")
    assert pb.price(event(ts="2026-06-01T02:00:00+02:00", **kw)) == (2_000_000_000, "v2")
    assert pb.price(event(ts="2025-12-31T23:59:59Z", **kw)) == (None, None)


def test_provider_fallback() -> None:
    """Unknown or missing provider falls back to the model name; unknown model gives None."""
    pb = Pricebook.default()
    kw = {"model_or_service": "gpt-4o", "output_tokens": 1000}
    expected = nanos(1000 * Decimal("10") / 1_000_000)
    assert pb.price(event(provider="azure", **kw))[0] == expected
    assert pb.price(event(**kw))[0] == expected
    assert pb.price(event(provider="openai", model_or_service="gpt-9")) == (None, "2026-10")
    assert pb.price(event(provider="openai")) == (None, "2026-10")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["versions"][1]["prices"][0].update(input_per_mtok=-1), "version 'v2' entry 0: input"),
        (lambda d: d["versions"][0]["prices"][0].update(colour="red"), "version 'v1' entry 0: colour"),
        (lambda d: d["versions"][0].update(effective_from="2026-01-01T00:00:00"), "effective_from"),
        (lambda d: d["versions"][1].update(version="v1"), "repeated: v1"),
        (lambda d: d["versions"][0]["prices"].append(dict(d["versions"][0]["prices"][0])), "listed twice"),
        (lambda d: d["versions"][0]["prices"][0].update(input_per_mtok="1e-12"), "finer than"),
        (lambda d: d["versions"][0]["prices"].append({"provider": "x", "model": "y"}), "entry 1: no price"),
    ],
)
def test_bad_pricebook_names_entry(tmp_path: Path, mutate: Any, needle: str) -> None:
    """An invalid pricebook raises PricebookError naming file, version and entry."""
    data = yaml.safe_load(yaml.safe_dump(TWO_VERSIONS))
    mutate(data)
    path = tmp_path / "book.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(PricebookError) as info:
        Pricebook.load(path)
    assert str(path) in str(info.value) and needle in str(info.value)


def test_load_errors_are_one_liners(tmp_path: Path) -> None:
    """Missing files are ConfigError; broken YAML is a PricebookError naming the file."""
    with pytest.raises(ConfigError, match="not found"):
        Pricebook.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("versions: [\n")
    with pytest.raises(PricebookError, match="bad.yaml: not valid YAML"):
        Pricebook.load(bad)


def test_yaml_floats_stay_exact(tmp_path: Path) -> None:
    """Prices in YAML are read as exact decimals, so 0.1234567891 is not rounded through float."""
    path = tmp_path / "b.yaml"
    path.write_text(
        'versions:\n  - version: "a"\n    effective_from: 2026-01-01T00:00:00Z\n'
        "    prices:\n      - {provider: p, model: m, input_per_mtok: 0.123456789}\n"
    )
    cost, _ = Pricebook.load(path).price(event(provider="p", model_or_service="m", input_tokens=10**9))
    assert cost == 123_456_789_000


LITELLM_SAMPLE = {
    "sample_spec": {"input_cost_per_token": 0, "output_cost_per_token": 0, "litellm_provider": "x"},
    "gpt-4o": {
        "input_cost_per_token": 2.5e-06,
        "output_cost_per_token": 1e-05,
        "cache_read_input_token_cost": 1.25e-06,
        "litellm_provider": "openai",
    },
    "claude-3-haiku-20240307": {
        "input_cost_per_token": 2.5e-07,
        "output_cost_per_token": 1.25e-06,
        "litellm_provider": "anthropic",
    },
    "dall-e-3": {"output_cost_per_pixel": 0.0, "litellm_provider": "openai"},
}


def test_import_litellm_round_trip() -> None:
    """LiteLLM per-token costs become exact per-Mtok prices that dump and load again."""
    when = datetime(2026, 7, 1, tzinfo=timezone.utc)
    data = import_litellm(LITELLM_SAMPLE, "litellm-2026-07", when)
    prices = data["versions"][0]["prices"]
    assert [p["model"] for p in prices] == ["gpt-4o", "claude-3-haiku-20240307"]
    assert prices[0] == {
        "provider": "openai",
        "model": "gpt-4o",
        "input_per_mtok": Decimal("2.5"),
        "output_per_mtok": Decimal("10"),
        "cached_per_mtok": Decimal("1.25"),
    }
    assert prices[1]["input_per_mtok"] == Decimal("0.25") and "cached_per_mtok" not in prices[1]
    text = dump_yaml(data)
    assert "input_per_mtok: 0.25" in text and "output_per_mtok: 10" in text
    pb = Pricebook.from_dict(yaml.safe_load(text))
    cost, version = pb.price(
        event(
            ts="2026-07-02T00:00:00Z",
            provider="anthropic",
            model_or_service="claude-3-haiku-20240307",
            input_tokens=4,
        ),
    )
    assert (cost, version) == (1000, "litellm-2026-07")  # 4 × 0.25 USD/Mtok


def test_pinned_version_prices_every_time_and_reprice_ignores_allocated_cost() -> None:
    """`replay --reprice v2`: an event of v1's time, carrying its own cost, costs v2's price."""
    from spendwarden.streams.ingest import Ingest

    pb = Pricebook.from_dict(TWO_VERSIONS)
    kw = {"provider": "openai", "model_or_service": "gpt-4o", "input_tokens": 1_000_000}
    old = event(ts="2026-02-01T00:00:00Z", allocated_cost_usd="7.5", **kw)
    assert pb.pinned("v2").price(old) == (2_000_000_000, "v2")
    assert pb.pinned("v2").price(event(ts="2020-01-01T00:00:00Z", **kw)) == (2_000_000_000, "v2")
    assert Ingest(pb).price(old).cost_nanos == 7_500_000_000
    repriced = Ingest(pb.pinned("v2"), reprice=True).price(old)
    assert (repriced.cost_nanos, repriced.pricing_version) == (2_000_000_000, "v2")
    with pytest.raises(ConfigError, match="has no version 'v3'; it has v1, v2"):
        pb.pinned("v3")


def test_reprice_keeps_the_own_cost_of_what_has_no_list_price() -> None:
    """A refund stays a refund, a shared-pool allocation and an unpriced tool keep their cost."""
    from spendwarden.streams.ingest import Ingest

    ingest = Ingest(Pricebook.from_dict(TWO_VERSIONS).pinned("v2"), reprice=True)
    kw = {"provider": "openai", "model_or_service": "gpt-4o", "input_tokens": 1_000_000, "ts": "2026-02-01T00:00:00Z"}
    assert ingest.price(event(component="adjustment", allocated_cost_usd="-2.5", **kw)).cost_nanos == -2_500_000_000
    assert ingest.price(event(allocation_method="shared_pool", allocated_cost_usd="12.5", **kw)).cost_nanos \
        == 12_500_000_000
    assert ingest.price(event(component="tool", model_or_service="crm-lookup", allocated_cost_usd="3",
                              ts="2026-02-01T00:00:00Z")).cost_nanos == 3_000_000_000
