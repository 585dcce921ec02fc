"""Inhibition: a scope's block alert mutes its other alerts, only its own, never itself."""

from __future__ import annotations

import pytest

from spendwarden.streams.alerting.config import InhibitRuleSpec
from spendwarden.streams.alerting.inhibit import Inhibitor

BLOCK_MUTES_BURN = InhibitRuleSpec(source_matchers=["decision=block"], target_matchers=["decision!=block"],
                                   equal=["tenant", "use_case", "budget"])

BLOCK = {"alertname": "hard-stop", "tenant": "acme", "use_case": "drafting", "budget": "daily", "decision": "block"}
BURN = {"alertname": "daily-burn", "tenant": "acme", "use_case": "drafting", "budget": "daily", "decision": "none"}


@pytest.fixture
def inhibitor() -> Inhibitor:
    return Inhibitor([BLOCK_MUTES_BURN])


def test_block_mutes_burn_of_the_same_scope(inhibitor: Inhibitor) -> None:
    assert inhibitor.muted(BURN, [BLOCK])
    assert inhibitor.muted_by(BURN, [BURN, BLOCK]) == BLOCK


@pytest.mark.parametrize("other", [{"tenant": "beta"}, {"use_case": "support"}, {"budget": "monthly"}])
def test_block_of_another_scope_does_not_mute(inhibitor: Inhibitor, other: dict[str, str]) -> None:
    assert not inhibitor.muted(BURN, [{**BLOCK, **other}])


def test_nothing_firing_mutes_nothing(inhibitor: Inhibitor) -> None:
    assert not inhibitor.muted(BURN, [])
    assert not inhibitor.muted(BURN, [BURN])  # the burn alert is not a source


def test_equal_labels_missing_on_both_sides_count_as_equal(inhibitor: Inhibitor) -> None:
    block = {k: v for k, v in BLOCK.items() if k != "use_case"}
    burn = {k: v for k, v in BURN.items() if k != "use_case"}
    assert inhibitor.muted(burn, [block])
    # missing on one side only: "" versus "drafting"
    assert not inhibitor.muted(BURN, [block])
    assert not inhibitor.muted(burn, [BLOCK])


def test_target_must_match_target_matchers(inhibitor: Inhibitor) -> None:
    other_block = {**BLOCK, "alertname": "second-block"}
    assert not inhibitor.muted(other_block, [BLOCK])


def test_no_self_inhibition() -> None:
    # a rule whose source and target both match one alert: it cannot mute itself
    both = Inhibitor([InhibitRuleSpec(source_matchers=["severity=~high|critical"],
                                      target_matchers=["rule=~.+"], equal=["tenant"])])
    alert = {"rule": "r1", "severity": "critical", "tenant": "acme"}
    assert not both.muted(alert, [alert])
    # nor another alert that also matches both sides (Alertmanager's rule)
    assert not both.muted(alert, [{**alert, "rule": "r2"}])
    # but it mutes an alert that matches the target side only
    assert both.muted({"rule": "r3", "severity": "low", "tenant": "acme"}, [alert])


def test_any_rule_may_mute() -> None:
    inhibitor = Inhibitor([
        InhibitRuleSpec(source_matchers=["alertname=never"], target_matchers=["tenant=~.+"]),
        BLOCK_MUTES_BURN,
    ])
    assert inhibitor.muted(BURN, [BLOCK])
    assert not Inhibitor([]).muted(BURN, [BLOCK])
