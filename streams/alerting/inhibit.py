"""Inhibition: while one alert fires, mute related alerts (a scope's block mutes its burn alerts).

Pure, no I/O; the semantics are Alertmanager's inhibit_rules. A target is muted when some
firing alert matches a rule's source matchers, the target matches its target matchers, and
the ``equal`` labels have the same values on both (a label missing on both counts as equal).
An alert matching both sides cannot mute another that also matches both sides, so no alert
ever mutes itself (and two block alerts of one scope do not mute each other).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from spendwarden.streams.alerting.tree import Matcher, matches_all

if TYPE_CHECKING:
    from spendwarden.streams.alerting.config import InhibitRuleSpec


@dataclass(frozen=True, slots=True)
class InhibitRule:
    """One compiled inhibit rule."""

    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...]

    @classmethod
    def from_spec(cls, spec: "InhibitRuleSpec") -> "InhibitRule":
        return cls(tuple(Matcher.parse(m) for m in spec.source_matchers),
                   tuple(Matcher.parse(m) for m in spec.target_matchers), tuple(spec.equal))

    def muting_source(self, target: Mapping[str, str], firing: Iterable[Mapping[str, str]]) -> Optional[Mapping[str, str]]:
        """The first firing alert (labels) that mutes ``target`` under this rule, or None."""
        if not matches_all(self.target, target):
            return None
        two_sided = matches_all(self.source, target)
        for source in firing:
            if not matches_all(self.source, source):
                continue
            if two_sided and matches_all(self.target, source):
                continue  # Alertmanager: an alert on both sides cannot mute another on both sides (nor itself)
            if all(source.get(name, "") == target.get(name, "") for name in self.equal):
                return source
        return None


class Inhibitor:
    """The inhibit rules of a routing file; ``muted`` asks whether any of them mutes an alert."""

    def __init__(self, rules: Iterable["InhibitRuleSpec | InhibitRule"]) -> None:
        self.rules = tuple(r if isinstance(r, InhibitRule) else InhibitRule.from_spec(r) for r in rules)

    def muted(self, target_labels: Mapping[str, str], firing: Iterable[Mapping[str, str]]) -> bool:
        return self.muted_by(target_labels, firing) is not None

    def muted_by(self, target_labels: Mapping[str, str],
                 firing: Iterable[Mapping[str, str]]) -> Optional[Mapping[str, str]]:
        """The labels of a firing alert that mutes ``target_labels`` (for logs), or None."""
        if not self.rules:
            return None
        sources = list(firing)
        for rule in self.rules:
            source = rule.muting_source(target_labels, sources)
            if source is not None:
                return source
        return None
