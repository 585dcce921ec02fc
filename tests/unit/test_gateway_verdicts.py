"""The gateway's pure decision rules: level mapping, strictest wins, tiers, staleness (docs/redis.md)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional

import pytest

from spendwarden.gateway.cache import DecisionCache, channel_tenant
from spendwarden.gateway.verdicts import (
    EXPIRES_FIELD, ON_STALE_FIELD, STALE_RETRY_AFTER_S, Verdict, decide, normalise_tier, verdict_fields,
)

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
FRESH = str(NOW + 30)
PERIOD_END = datetime.fromtimestamp(NOW + 3600.4, timezone.utc).isoformat().replace("+00:00", "Z")


def v(level: str, **extra: Any) -> bytes:
    """A verdict as the writer stores it (orjson compact JSON, bytes from redis-py)."""
    action = {"L0": "allow", "L1": "degrade", "L2": "spill", "L3": "fallback", "L4": "hold"}.get(level, level)
    doc = {"level": level, "action": action, "reason": f"{level} because", "rule": f"rule-{level}",
           "rules_version": "v1", "expires_at": PERIOD_END, "since": "2027-01-15T07:00:00Z"} | extra
    return json.dumps(doc, separators=(",", ":")).encode()


def answer(own: Optional[bytes] = None, wide: Optional[bytes] = None, *, expires: Optional[str] = FRESH,
           on_stale: Optional[bytes] = None, **more: Optional[bytes]) -> dict[str, Optional[bytes]]:
    values: dict[str, Optional[bytes]] = {"support:low": own, "*:low": wide}
    values.update(more)
    values[EXPIRES_FIELD] = expires.encode() if expires is not None else None
    values[ON_STALE_FIELD] = on_stale
    return values


@pytest.mark.parametrize("level, extra, expected", [
    ("L0", {}, {"action": "allow", "level": "L0", "review": False}),
    ("L1", {"model_alias": "gpt-4o-mini", "max_output_tokens": 512},
     {"action": "degrade", "level": "L1", "model_alias": "gpt-4o-mini", "max_output_tokens": 512}),
    ("L2", {"model_alias": "spill-pool"}, {"action": "degrade", "level": "L2", "model_alias": "spill-pool"}),
    ("L2", {}, {"action": "degrade", "level": "L2", "model_alias": None}),
    ("L3", {"model_alias": "approved-fallback"},
     {"action": "degrade", "level": "L3", "model_alias": "approved-fallback"}),
    ("L4", {}, {"action": "allow", "level": "L4", "review": True}),
    ("throttle", {"rate_per_minute": 7, "tokens_per_minute": 9000},
     {"action": "throttle", "rate": 7, "tokens_per_minute": 9000, "retry_after": 9.0}),
    ("throttle", {"tokens_per_minute": 9000}, {"action": "throttle", "rate": None, "retry_after": 60.0}),
    ("block", {}, {"action": "block", "level": "block", "retry_after": 3601.0}),
])
def test_each_level_maps_to_its_gateway_action(level: str, extra: dict[str, Any], expected: dict[str, Any]) -> None:
    verdict = decide(answer(own=v(level, **extra)), "low", NOW, "open", tenant="acme")
    for name, value in expected.items():
        assert getattr(verdict, name) == value, name
    assert verdict.reason == f"{level} because" and verdict.rule == f"rule-{level}"
    assert not verdict.stale


def test_no_verdict_is_allow_l0() -> None:
    verdict = decide(answer(), "low", NOW, "closed")
    assert (verdict.action, verdict.level, verdict.stale, verdict.retry_after) == ("allow", "L0", False, None)


def test_block_retry_after_is_at_least_one_second() -> None:
    ends = datetime.fromtimestamp(NOW + 0.2, timezone.utc).isoformat()
    assert decide(answer(own=v("block", expires_at=ends)), "low", NOW, "open").retry_after == 1.0


@pytest.mark.parametrize("own, wide, extra, winner", [
    ("L1", "block", {}, "block"),
    ("block", "L1", {}, "block"),
    ("throttle", "L4", {}, "throttle"),
    ("L3", "L2", {}, "L3"),
    (None, "L2", {}, "L2"),
    ("L1", None, {"support:low:gpt-4o": "throttle"}, "throttle"),
    ("L4", "L1", {"*:low:gpt-4o": "block", "support:low:gpt-4o": "L2"}, "block"),
])
def test_strictest_of_own_tenant_wide_and_model_fields_wins(own: Optional[str], wide: Optional[str],
                                                            extra: dict[str, str], winner: str) -> None:
    more = {name: v(level) for name, level in extra.items()}
    values = answer(own=v(own) if own else None, wide=v(wide) if wide else None, **more)
    assert decide(values, "low", NOW, "open").level == winner


def test_tie_goes_to_own_use_case_first() -> None:
    values = answer(own=v("L1", model_alias="own-mini"), wide=v("L1", model_alias="wide-mini"))
    assert decide(values, "low", NOW, "open").model_alias == "own-mini"


@pytest.mark.parametrize("tier, expected", [
    ("low", "low"), ("LOW", "low"), (" Medium ", "medium"), ("high", "high"),
    (None, "high"), ("", "high"), ("urgent", "high"), ("lo w", "high"), (3, "high"),
])
def test_unknown_tier_is_high(tier: Any, expected: str) -> None:
    assert normalise_tier(tier) == expected
    assert verdict_fields("support", normalise_tier(tier))[:2] == (f"support:{expected}", f"*:{expected}")


def test_fields_read_in_one_hmget() -> None:
    assert verdict_fields("support", "high", "gpt-4o") == (
        "support:high", "*:high", "support:high:gpt-4o", "*:high:gpt-4o", "_expires_at", "_on_stale")
    assert verdict_fields("*", "low") == ("*:low", "_expires_at", "_on_stale")


@pytest.mark.parametrize("expires, why", [(None, "_expires_at missing"), (str(NOW - 12), "expired 12.0 s ago"),
                                          ("garbage", "_expires_at missing"), (str(NOW), "expired 0.0 s ago")])
def test_stale_heartbeat_applies_the_default_policy(expires: Optional[str], why: str) -> None:
    values = answer(own=v("block"), expires=expires)
    opened = decide(values, "low", NOW, "open", tenant="acme")
    assert (opened.action, opened.level, opened.stale, opened.retry_after) == ("allow", "stale", True, None)
    assert why in opened.reason and "on_stale open" in opened.reason
    closed = decide(answer(expires=expires), "low", NOW, "closed", tenant="acme")
    assert (closed.action, closed.stale, closed.retry_after) == ("block", True, STALE_RETRY_AFTER_S)
    assert "tenant acme" in closed.reason and "stale" in closed.reason


@pytest.mark.parametrize("field, default, action", [
    (b"closed", "open", "block"), (b"open", "closed", "allow"), (b"sideways", "closed", "block"),
    (None, "open", "allow"),
])
def test_on_stale_field_overrides_the_default(field: Optional[bytes], default: str, action: str) -> None:
    assert decide(answer(expires=None, on_stale=field), "low", NOW, default).action == action


def test_verdict_past_its_expires_at_is_stale_not_allow() -> None:
    ended = "2027-01-15T07:59:59Z"  # one second before NOW
    values = answer(own=v("block", expires_at=ended), on_stale=b"closed")
    verdict = decide(values, "low", NOW, "open", tenant="acme")
    assert (verdict.action, verdict.stale) == ("block", True)
    assert "support:low expired" in verdict.reason
    opened = decide(answer(own=v("L1", expires_at=ended)), "low", NOW, "open")
    assert (opened.action, opened.stale, opened.level) == ("allow", True, "stale")


def test_expired_verdict_does_not_lift_a_valid_stricter_one() -> None:
    ended = "2027-01-15T07:00:00Z"
    values = answer(own=v("L1", expires_at=ended), wide=v("throttle", rate_per_minute=30))
    verdict = decide(values, "low", NOW, "open")
    assert (verdict.action, verdict.stale, verdict.rate) == ("throttle", False, 30)
    closed = decide(answer(own=v("L1", expires_at=ended), wide=v("block")), "low", NOW, "closed")
    assert (closed.action, closed.stale, closed.retry_after) == ("block", False, 3601.0)


@pytest.mark.parametrize("raw", [b"{not json", b'{"level":"L9"}', b"[]", v("L1", expires_at="soon")])
def test_unreadable_verdict_is_stale(raw: bytes) -> None:
    assert decide(answer(own=raw), "low", NOW, "closed").stale
    assert decide(answer(own=raw), "low", NOW, "closed").action == "block"


def test_str_values_from_decode_responses_clients() -> None:
    values = {k: (x.decode() if isinstance(x, bytes) else x) for k, x in answer(own=v("L1")).items()}
    assert decide(values, "low", NOW, "open").action == "degrade"


def test_verdict_is_frozen_and_allowed_says_whether_to_call() -> None:
    verdict = Verdict("degrade", "L1")
    with pytest.raises(AttributeError):
        verdict.action = "allow"  # type: ignore[misc]
    assert verdict.allowed and not Verdict("throttle", "throttle").allowed


def test_cache_stores_only_confirmed_unchanged_reads() -> None:
    clock = [0.0]
    cache = DecisionCache(10.0, monotonic=lambda: clock[0])
    fields = ("support:low",)
    assert not cache.store("acme", fields, {"support:low": b"x"}, cache.token("acme"))  # not confirmed
    cache.on_message({"type": "ssubscribe", "channel": b"sw:{acme}:changes", "data": 1})
    token = cache.token("acme")
    cache.on_message({"type": "smessage", "channel": b"sw:{acme}:changes", "data": b"{}"})
    assert not cache.store("acme", fields, {"support:low": b"x"}, token)  # a change raced the read
    assert cache.store("acme", fields, {"support:low": b"y"}, cache.token("acme"))
    assert cache.get("acme", fields) == {"support:low": b"y"}
    clock[0] = 10.0
    assert cache.get("acme", fields) is None  # TTL
    assert cache.store("acme", fields, {"support:low": b"z"}, cache.token("acme"))
    cache.reset()
    assert cache.get("acme", fields) is None
    assert not cache.store("acme", fields, {"support:low": b"z"}, cache.token("acme"))  # needs re-confirming
    assert channel_tenant("sw:{a:b}:changes") == "a:b" and channel_tenant("sw:progress") is None


def test_parsed_verdicts_are_reused_but_time_is_judged_on_every_call() -> None:
    """The same stored bytes, decided later: a block's Retry-After shrinks, an ended verdict goes stale."""
    raw = v("block")
    assert decide(answer(own=raw), "low", NOW, "open").retry_after == 3601.0
    assert decide(answer(own=raw, expires=str(NOW + 3030)), "low", NOW + 3000, "open").retry_after == 601.0
    later = NOW + 4000
    stale = decide(answer(own=raw, expires=str(later + 30)), "low", later, "closed")
    assert (stale.action, stale.stale, stale.level) == ("block", True, "stale")
