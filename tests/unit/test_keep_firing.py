"""keep_firing_for: a firing rule whose condition clears stays firing for the hold, so a score
hovering at its threshold is one alert; a condition back inside the hold keeps the alert."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from spendwarden.exceptions import RuleFileError
from spendwarden.streams.effects import AlertFiring, AlertResolved
from spendwarden.streams.engine import Engine, position

RULES = """
budgets:
  - {name: daily, for_each: [tenant_id], period: day, limit_usd: 1000}
rules:
  - name: burst
    budget: daily
    when: window.spend_usd_5m > 10
    keep_firing_for: HOLD
"""


def epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Run:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.offset, self.effects = engine, 0, []

    def event(self, make_event: Any, usd: str, ts: str) -> None:
        self.offset += 1
        self.effects += self.engine.process(make_event(usd, ts=ts), position(self.offset))

    def advance(self, ts: str) -> None:
        self.effects += self.engine.advance(epoch(ts))

    def history(self) -> list[tuple[str, str]]:
        return [("fired" if isinstance(e, AlertFiring) else "resolved", e.rule) for e in self.effects
                if isinstance(e, (AlertFiring, AlertResolved))]


def test_resolves_only_after_the_condition_stayed_false_for_the_hold(make_event: Any, ruleset_from_yaml: Any) -> None:
    run = Run(Engine(ruleset_from_yaml(RULES.replace("HOLD", "10m"))))
    run.event(make_event, "11", "2026-01-15T12:00:10Z")
    assert run.history() == [("fired", "burst")]
    for minute in range(5, 15):  # the burst leaves the 5-minute window at 12:05; held until 12:15
        run.advance(f"2026-01-15T12:{minute:02d}:30Z")
    assert run.history() == [("fired", "burst")]
    run.advance("2026-01-15T12:15:30Z")
    resolved = [e for e in run.effects if isinstance(e, AlertResolved)]
    assert run.history() == [("fired", "burst"), ("resolved", "burst")]
    assert resolved[0].reason == "condition cleared" and resolved[0].at.startswith("2026-01-15T12:15")


def test_a_condition_back_inside_the_hold_is_the_same_alert(make_event: Any, ruleset_from_yaml: Any) -> None:
    run = Run(Engine(ruleset_from_yaml(RULES.replace("HOLD", "10m"))))
    run.event(make_event, "11", "2026-01-15T12:00:10Z")
    run.advance("2026-01-15T12:07:00Z")  # cleared at 12:05, held
    run.event(make_event, "11", "2026-01-15T12:08:00Z")  # true again: the hold is cancelled
    for minute in range(9, 23):
        run.advance(f"2026-01-15T12:{minute:02d}:30Z")
    assert run.history() == [("fired", "burst")]  # cleared at 12:13, held until 12:23
    run.advance("2026-01-15T12:23:30Z")
    assert run.history() == [("fired", "burst"), ("resolved", "burst")]


def test_without_a_hold_it_flaps(make_event: Any, ruleset_from_yaml: Any) -> None:
    run = Run(Engine(ruleset_from_yaml(RULES.replace("    keep_firing_for: HOLD\n", ""))))
    run.event(make_event, "11", "2026-01-15T12:00:10Z")
    run.advance("2026-01-15T12:07:00Z")
    run.event(make_event, "11", "2026-01-15T12:08:00Z")
    assert run.history() == [("fired", "burst"), ("resolved", "burst"), ("fired", "burst")]


@pytest.mark.parametrize("bad", ["10", "soon", "0m", "400d"])
def test_a_bad_hold_is_refused_with_its_line(rules_dir: Any, bad: str) -> None:
    with pytest.raises(RuleFileError, match="keep_firing_for") as found:
        rules_dir(RULES.replace("HOLD", f'"{bad}"'))
    assert "rules.yaml:8:" in str(found.value)  # the keep_firing_for line
