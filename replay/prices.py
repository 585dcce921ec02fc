"""List prices of the synthetic traffic and the cost of one event at those prices.

They match the bundled pricebook (streams/pricebooks/default.yaml, version 2026-10), so an
event the generator prices itself and one the pricebook prices cost the same.
"""

from __future__ import annotations

from typing import Any

PRICING_VERSION = "2026-10"
# List prices in nano-dollars: per token (input, output, cached input) or per call.
TOKEN_PRICES_NANOS: dict[str, tuple[str, int, int, int]] = {
    "gpt-4o": ("openai", 2500, 10000, 1250),
    "gpt-4o-mini": ("openai", 150, 600, 75),
    "claude-sonnet-4": ("anthropic", 3000, 15000, 300),
    "claude-haiku-4": ("anthropic", 800, 4000, 80),
    "gemini-2.0-flash": ("google", 100, 400, 25),
    "o3": ("openai", 2000, 8000, 500),  # in no tier's mix: targets of misroutes
    "claude-opus-4": ("anthropic", 15000, 75000, 1500),
}
CALL_PRICES_NANOS: dict[str, tuple[str, int]] = {
    "web-search": ("tool", 5_000_000),
    "vector-search": ("retrieval", 400_000),
}


def cost_nanos(model: str, input_tokens: int = 0, output_tokens: int = 0, cached_tokens: int = 0,
               api_calls: int = 1) -> int:
    """List cost of one event; cached tokens are part of input and billed at the cached rate."""
    if model in CALL_PRICES_NANOS:
        return api_calls * CALL_PRICES_NANOS[model][1]
    _, p_in, p_out, p_cached = TOKEN_PRICES_NANOS[model]
    return (input_tokens - cached_tokens) * p_in + cached_tokens * p_cached + output_tokens * p_out


def usd(nanos: int) -> float:
    # Serialises as a plain decimal with at most 9 places (orjson: 0.000015, never 1.5e-05).
    return round(nanos / 1e9, 9)


def reprice(event: dict[str, Any]) -> None:
    """Refresh a gateway-priced event's cost after an incident changed its tokens or model."""
    if "allocated_cost_usd" in event:
        event["allocated_cost_usd"] = usd(cost_nanos(
            event["model_or_service"], event.get("input_tokens", 0), event.get("output_tokens", 0),
            event.get("cached_tokens", 0), event.get("api_calls", 1)))
