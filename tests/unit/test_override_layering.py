"""Manual overrides meeting the rules' verdicts (pure logic; the live path is in
tests/integration/test_overrides.py)."""

from __future__ import annotations

import orjson
import pytest

from spendwarden.streams.overrides import (
    Override, OverrideBook, OverrideError, layer, parse_duration, resolve_field, scope_key,
)

T0 = 1_764_000_000.0
RULE_BLOCK = {"level": "block", "action": "block", "reason": "uc over budget", "rule": "uc-cap"}
RULE_DEGRADE = {"level": "L1", "action": "degrade", "reason": "tenant at 80%", "rule": "tenant-80"}


def make(**fields: object) -> Override:
    base: dict[str, object] = {"tenant_id": "acme", "action": "block", "reason": "incident 42", "author": "alice",
                               "created_at": T0, "expires_at": T0 + 3600}
    base.update(fields)
    return Override(**base)  # type: ignore[arg-type]


def test_tenant_wide_block_owns_star_fields_and_withdraws_every_rule_verdict_of_its_tiers() -> None:
    override = make(tiers=("low", "medium"))
    rules = {"support:low": RULE_DEGRADE, "support:high": RULE_BLOCK, "*:medium:gpt-4o": RULE_DEGRADE}
    published = layer(rules, [override])
    assert set(published) == {"*:low", "*:medium", "support:high"}
    assert published["support:high"] is RULE_BLOCK  # high tier not covered: the rules still decide
    assert published["*:low"]["level"] == "block"
    assert published["*:low"]["reason"] == "manual override by alice: incident 42"
    assert published["*:low"]["override"]["author"] == "alice"


def test_unblock_of_a_use_case_lifts_the_rule_block_with_a_visible_allow() -> None:
    override = make(use_case_id="support", action="unblock", tiers=("low",))
    published = layer({"support:low": RULE_BLOCK, "support:low:gpt-4o": RULE_BLOCK, "search:low": RULE_BLOCK},
                      [override])
    assert published["support:low"]["level"] == "L0" and published["support:low"]["action"] == "allow"
    assert "support:low:gpt-4o" not in published  # every model of the use case is covered
    assert published["search:low"] is RULE_BLOCK  # another use case keeps its block


def test_model_scoped_degrade_covers_only_that_model() -> None:
    override = make(use_case_id="support", model="gpt-4o", action="degrade", model_alias="gpt-4o-mini",
                    max_output_tokens=512, tiers=("low",))
    published = layer({"support:low": RULE_BLOCK, "support:low:gpt-4o": RULE_BLOCK}, [override])
    assert published["support:low"] is RULE_BLOCK
    assert published["support:low:gpt-4o"]["level"] == "L1"
    assert published["support:low:gpt-4o"]["model_alias"] == "gpt-4o-mini"
    assert published["support:low:gpt-4o"]["max_output_tokens"] == 512


def test_high_risk_coverage_is_said_in_the_verdict() -> None:
    verdict = make().verdict()
    assert "covers high-risk traffic" in verdict["reason"] and verdict["override"]["high_risk"] is True
    assert "high-risk" not in make(tiers=("low",)).verdict()["reason"]


def test_resolve_field_matches_layer_field_by_field() -> None:
    overrides = [make(tiers=("low",)), make(use_case_id="support", action="unblock", tiers=("medium",),
                                            created_at=T0 + 1)]
    rules = {"support:low": RULE_BLOCK, "support:medium": RULE_BLOCK, "support:high": RULE_DEGRADE,
             "*:low": RULE_DEGRADE, "x:medium": RULE_BLOCK}
    whole = layer(rules, overrides)
    for field, verdict in rules.items():
        assert resolve_field(field, verdict, overrides) == whole.get(field)


def test_book_replaces_by_scope_expires_and_reports_the_tenant() -> None:
    book = OverrideBook()
    first = make()
    assert book.apply(first.scope_key, first.to_record(), T0) == "acme"
    second = make(action="unblock", created_at=T0 + 10, expires_at=T0 + 20)
    book.apply(second.scope_key, second.to_record(), T0 + 10)
    assert [o.action for o in book.active("acme", T0 + 11)] == ["unblock"]  # same scope: replaced
    assert book.expire(T0 + 15) == set()
    assert book.expire(T0 + 20) == {"acme"}
    assert book.active("acme", T0 + 20) == [] and book.tenants() == ["acme"]  # kept for audit and cleanup
    assert book.counts(T0 + 20) == {"block": 0, "unblock": 0, "degrade": 0}


def test_an_override_set_on_a_clock_ahead_is_in_force_at_once() -> None:
    """created_at is the CLI host's clock, for the audit trail: a host 5 s ahead does not delay a block."""
    book = OverrideBook()
    ahead = make(created_at=T0 + 5, expires_at=T0 + 60)
    book.apply(ahead.scope_key, ahead.to_record(), T0)
    assert ahead.active(T0) and book.has_active("acme", T0)
    assert book.counts(T0)["block"] == 1
    assert book.expire(T0 + 1) == set() and book.expire(T0 + 60) == {"acme"}


def test_cleared_override_is_not_in_force() -> None:
    book = OverrideBook()
    cleared = make(cleared_by="bob", cleared_at=T0 + 5, clear_reason="fixed")
    book.apply(cleared.scope_key, cleared.to_record(), T0 + 5)
    assert not book.has_active("acme", T0 + 6)


def test_tombstone_removes_and_bad_records_are_refused_without_changing_the_book() -> None:
    book = OverrideBook()
    good = make()
    book.apply(good.scope_key, good.to_record(), T0)
    with pytest.raises(OverrideError, match="unusable"):
        book.apply(good.scope_key, b"{not json", T0)
    with pytest.raises(OverrideError, match="unusable"):
        book.apply(good.scope_key, orjson.dumps({"tenant_id": "acme"}), T0)
    with pytest.raises(OverrideError, match="does not match"):
        book.apply(scope_key("other"), good.to_record(), T0)
    assert book.has_active("acme", T0)
    assert book.apply(good.scope_key, None, T0) == "acme"
    assert book.tenants() == []


def test_fields_a_newer_cli_adds_are_passed_over_when_read_but_refused_when_built() -> None:
    record = dict(orjson.loads(make().to_record()), ticket="INC-4411", approvals=["bob"])
    book = OverrideBook()
    assert book.apply(scope_key("acme"), orjson.dumps(record), T0) == "acme"
    assert book.active("acme", T0)[0] == make()
    with pytest.raises(ValueError, match="ticket"):
        make(ticket="INC-4411")
    with pytest.raises(OverrideError, match="not a JSON object"):
        book.apply(scope_key("acme"), b"[1, 2]", T0)


@pytest.mark.parametrize("fields, message", [
    ({"action": "degrade"}, "model_alias"),
    ({"model_alias": "m"}, "only go with degrade"),
    ({"expires_at": T0}, "after created_at"),
    ({"use_case_id": "a:b"}, "not an id"),
    ({"tiers": ()}, "at least one"),
    ({"reason": ""}, "reason"),
])
def test_unusable_overrides_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**fields)


@pytest.mark.parametrize("fields", [
    {"tenant_id": "_x"}, {"tenant_id": "a{b}"}, {"tenant_id": "a|b"}, {"tenant_id": "acme\n"},
    {"use_case_id": "_x"}, {"use_case_id": "*"}, {"use_case_id": "a|b"}, {"use_case_id": "a b"},
    {"model": "a|b"}, {"model": "a b"}, {"model": "m{x}"}, {"model": "x" * 201},
])
def test_ids_follow_the_cost_event_patterns(fields: dict[str, object]) -> None:
    """'_x' would be a metadata field, '*' any use case, '|' splits the scope key: all refused,
    here and when read from the topic, so the publisher never sees them."""
    with pytest.raises(ValueError, match="not an id|not a model name"):
        make(**fields)
    record = orjson.loads(make().to_record())
    record.update(fields)
    key = scope_key(str(record["tenant_id"]), record.get("use_case_id"), record.get("model"))  # type: ignore[arg-type]
    with pytest.raises(OverrideError, match="unusable"):
        OverrideBook().apply(key, orjson.dumps(record), T0)


def test_a_model_name_may_hold_a_colon() -> None:
    override = make(use_case_id="support", model="llama3:8b", action="degrade", model_alias="llama3:1b",
                    tiers=("low",))
    assert override.own_fields() == ["support:low:llama3:8b"]
    assert override.covers("support:low:llama3:8b") and not override.covers("support:low:llama3")
    assert override.scope_key == b"acme|support|llama3:8b"


def test_durations() -> None:
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration("1.5d") == 129600
    for bad in ("2", "h", "-1h", "0m", "91d"):
        with pytest.raises(OverrideError):
            parse_duration(bad)
