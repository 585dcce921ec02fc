"""Score anomaly alerts against a scenario's labelled windows (issue 6, "Definitions"). Pure.

Why a module of its own: the figures decide whether a detector set ships, so their rules must be
one readable place, tested edge by edge, and the same for a report, a sweep and a comparison.

- An **episode** is one anomaly alert from firing to resolved (or to the data's end if it never
  resolves). Budget alerts (rules with no detector) are not counted either way.
- A window is **detected** by a detector when one of its episodes on a matching scope *fires*
  inside the window or within ``grace`` (15 minutes) after it. The **delay** is from the
  window's start to the first such firing, in minutes.
- An episode is **on an incident** when it overlaps an incident window (plus the grace) of a
  matching scope; else **on growth/surge** when it overlaps a growth or surge window (labelled
  ``is_incident: false``) plus the grace; else it is a **false alert**. Episodes that fire
  before the labels' ``warmup_end`` are set aside (``in_warmup``): no window starts before it,
  and the tenant-weeks that normalise false alerts count from it.
- **Precision** is episodes on incidents over all scored episodes (growth/surge ones count as
  false here too, and are also reported on their own, where the goal is zero).
- **Scopes match** when the tenant is the same and every other dimension both sides have
  (``use_case_id``, ``workflow_step``) is equal: a use-case alert matches a loop on one of its
  steps, a step alert matches that step's windows and its use case's. A tenant-wide alert
  matches its tenant's windows (the plan keeps one window per tenant at a time).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from spendwarden.detectors import RULE_DETECTORS

GRACE_S = 15 * 60.0
WEEK_S = 7 * 86400.0
ALL = "all"  # the union of every detector's episodes: the default set's figures
MATCHED_DIMS = ("use_case_id", "workflow_step")


def parse_time(text: str) -> float:
    """UTC epoch seconds of an ISO 8601 time (``...Z``); naive times are UTC."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


@dataclass(frozen=True)
class LabelWindow:
    """One labelled window: ``[start, end)`` on ``scope`` (tenant_id, use_case_id[, workflow_step])."""

    id: str
    kind: str
    scope: Mapping[str, str]
    start: float
    end: float
    is_incident: bool


@dataclass(frozen=True)
class Labels:
    """A scenario's labels file, as far as scoring needs it."""

    scenario: str
    seed: int | None
    start: float
    end: float
    warmup_end: float
    tenants: int
    windows: tuple[LabelWindow, ...]
    peaks: Mapping[str, float] = field(default_factory=dict)  # tenant -> peak events per hour

    @property
    def days(self) -> float:
        return (self.end - self.start) / 86400.0

    @property
    def tenant_weeks(self) -> float:
        """Tenant-weeks scored: every tenant from the warm-up's end to the data's end."""
        return self.tenants * max(0.0, self.end - self.warmup_end) / WEEK_S


def parse_labels(data: Mapping[str, Any]) -> Labels:
    """Labels from the JSON ``spendwarden scenario`` writes (docs/scenarios.md)."""
    windows = []
    for entry in data["incidents"]:
        scope = {"tenant_id": entry["tenant_id"], "use_case_id": entry["use_case_id"]}
        if entry.get("workflow_step"):
            scope["workflow_step"] = entry["workflow_step"]
        windows.append(LabelWindow(entry["id"], entry["kind"], scope, parse_time(entry["start"]),
                                   parse_time(entry["end"]), bool(entry["is_incident"])))
    start = parse_time(data["start"])
    return Labels(scenario=str(data.get("scenario", "")), seed=data.get("seed"), start=start,
                  end=parse_time(data["end"]), warmup_end=parse_time(data.get("warmup_end", data["start"])),
                  tenants=len(data.get("tenants", ())), windows=tuple(windows),
                  peaks={t["tenant_id"]: float(t["peak_events_per_hour"]) for t in data.get("tenants", ())
                         if isinstance(t, Mapping) and "peak_events_per_hour" in t})


@dataclass(frozen=True)
class Episode:
    """One anomaly alert from firing to resolved; ``end`` is the data's end if it never resolved."""

    rule: str
    detector: str
    scope: Mapping[str, str]
    start: float
    end: float


def detector_of(rule_name: str, when: str, labels: Mapping[str, str]) -> str | None:
    """Which detector a rule's alerts count for: its ``detector`` label, else the ``anomaly.*``
    variables its ``when`` reads (``spend``, ``unit_cost``, ..., several joined by ``+``), else, for a
    rule reading ``unit.*`` with a ``playbook`` label (rules/packs/outcomes), ``unit-<playbook>``
    (``unit-quality``, ``unit-coverage``); None for a budget rule."""
    if labels.get("detector"):
        return labels["detector"]
    used = [name for name in RULE_DETECTORS if f"anomaly.{name}." in when]
    if not used and "unit." in when and labels.get("playbook"):
        return f"unit-{labels['playbook']}"
    return "+".join(used) or None


def episodes(alerts: Iterable[Mapping[str, Any]], detectors: Mapping[str, str], data_end: float) -> list[Episode]:
    """Pair alert effects (``to_dict`` of AlertFiring / AlertResolved, in emission order) into
    episodes by fingerprint. Rules missing from ``detectors`` (budget rules) are skipped."""
    open_: dict[str, tuple[str, dict[str, str], float]] = {}
    found: list[Episode] = []
    for alert in alerts:
        rule = alert["rule"]
        if rule not in detectors:
            continue
        at = parse_time(alert["at"])
        if alert["kind"] == "alert_firing":
            scope = {k: v for k, v in alert.get("scope", {}).items() if k in MATCHED_DIMS}
            if alert.get("tenant_id") is None:
                continue  # a budget across tenants has no tenant to match
            scope["tenant_id"] = alert["tenant_id"]
            open_[alert["fingerprint"]] = (rule, scope, at)
        elif alert["kind"] == "alert_resolved":
            opened = open_.pop(alert["fingerprint"], None)
            if opened is not None:
                found.append(Episode(opened[0], detectors[rule], opened[1], opened[2], at))
    found += [Episode(rule, detectors[rule], scope, at, max(at, data_end)) for rule, scope, at in open_.values()]
    found.sort(key=lambda e: (e.start, e.rule))
    return found


def scope_matches(alert: Mapping[str, str], window: Mapping[str, str]) -> bool:
    """Same tenant, and every other dimension present on both sides equal."""
    if alert.get("tenant_id") != window.get("tenant_id"):
        return False
    return all(alert[d] == window[d] for d in MATCHED_DIMS if d in alert and d in window)


def quantile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated quantile (numpy's default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class KindScore:
    """One detector on one kind: incident kinds count detections, growth/surge count alerts."""

    kind: str
    is_incident: bool
    windows: int = 0
    detected: int = 0  # incident windows with a firing inside window + grace
    alerted: int = 0  # growth/surge windows an episode overlapped
    episodes: int = 0  # episodes overlapping this kind's windows
    delays_min: list[float] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)  # window ids
    delay_of: dict[str, float | None] = field(default_factory=dict)  # window id -> delay (None: missed)

    @property
    def recall(self) -> float | None:
        return self.detected / self.windows if self.is_incident and self.windows else None

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "is_incident": self.is_incident, "windows": self.windows,
                "detected": self.detected, "recall": _round(self.recall), "alerted_windows": self.alerted,
                "episodes": self.episodes, "delay_median_min": _round(quantile(self.delays_min, 0.5)),
                "delay_p90_min": _round(quantile(self.delays_min, 0.9)), "missed": self.missed,
                "delay_of": {w: _round(d) for w, d in self.delay_of.items()}}


@dataclass
class DetectorScore:
    """One detector's figures over every window of the labels."""

    detector: str
    tenant_weeks: float
    episodes: int = 0
    on_incident: int = 0
    on_growth_surge: int = 0
    false_alerts: int = 0
    in_warmup: int = 0
    kinds: dict[str, KindScore] = field(default_factory=dict)
    false_examples: list[Episode] = field(default_factory=list)

    def _incident_kinds(self) -> list[KindScore]:
        return [k for k in self.kinds.values() if k.is_incident]

    @property
    def windows(self) -> int:
        return sum(k.windows for k in self._incident_kinds())

    @property
    def detected(self) -> int:
        return sum(k.detected for k in self._incident_kinds())

    @property
    def recall(self) -> float | None:
        return self.detected / self.windows if self.windows else None

    @property
    def delays_min(self) -> list[float]:
        return [d for k in self._incident_kinds() for d in k.delays_min]

    @property
    def precision(self) -> float | None:
        scored = self.on_incident + self.on_growth_surge + self.false_alerts
        return self.on_incident / scored if scored else None

    @property
    def false_per_10_tenant_weeks(self) -> float | None:
        return 10 * self.false_alerts / self.tenant_weeks if self.tenant_weeks else None

    def to_dict(self) -> dict[str, Any]:
        return {"detector": self.detector, "episodes": self.episodes, "on_incident": self.on_incident,
                "on_growth_surge": self.on_growth_surge, "false_alerts": self.false_alerts,
                "in_warmup": self.in_warmup, "precision": _round(self.precision), "windows": self.windows,
                "detected": self.detected, "recall": _round(self.recall),
                "delay_median_min": _round(quantile(self.delays_min, 0.5)),
                "delay_p90_min": _round(quantile(self.delays_min, 0.9)),
                "false_per_10_tenant_weeks": _round(self.false_per_10_tenant_weeks),
                "kinds": {name: k.to_dict() for name, k in self.kinds.items()}}


@dataclass
class Evaluation:
    """Per detector (and ``all`` of them together), per kind; ``grace_s`` as used."""

    labels: Labels
    grace_s: float
    detectors: dict[str, DetectorScore]

    def to_dict(self) -> dict[str, Any]:
        lab = self.labels
        return {"scenario": lab.scenario, "seed": lab.seed, "days": round(lab.days, 3), "tenants": lab.tenants,
                "tenant_weeks": round(lab.tenant_weeks, 3), "grace_min": self.grace_s / 60,
                "detectors": {name: score.to_dict() for name, score in self.detectors.items()}}


def evaluate(found: Sequence[Episode], labels: Labels, grace_s: float = GRACE_S) -> Evaluation:
    """Score each detector's episodes, and all of them together (``ALL``), against ``labels``."""
    names = sorted({e.detector for e in found})
    scores = {name: _score(name, [e for e in found if e.detector == name], labels, grace_s) for name in names}
    scores[ALL] = _score(ALL, found, labels, grace_s)
    return Evaluation(labels, grace_s, scores)


def _score(name: str, found: Sequence[Episode], labels: Labels, grace_s: float) -> DetectorScore:
    score = DetectorScore(name, labels.tenant_weeks)
    for window in labels.windows:
        score.kinds.setdefault(window.kind, KindScore(window.kind, window.is_incident))
    scored = [e for e in found if e.start >= labels.warmup_end]
    score.in_warmup = len(found) - len(scored)
    score.episodes = len(scored)
    for window in labels.windows:
        kind = score.kinds[window.kind]
        kind.windows += 1
        mine = [e for e in scored if scope_matches(e.scope, window.scope)]
        overlapping = [e for e in mine if _overlaps(e, window, grace_s)]
        kind.episodes += len(overlapping)
        if not window.is_incident:
            kind.alerted += bool(overlapping)
            continue
        fired = [e.start for e in mine if window.start <= e.start <= window.end + grace_s]
        if fired:
            kind.detected += 1
            kind.delays_min.append((min(fired) - window.start) / 60.0)
            kind.delay_of[window.id] = kind.delays_min[-1]
        else:
            kind.missed.append(window.id)
            kind.delay_of[window.id] = None
    for episode in scored:
        hit = window_of(episode, labels, grace_s)
        if hit is None:
            score.false_alerts += 1
            score.false_examples.append(episode)
        elif hit.is_incident:
            score.on_incident += 1
        else:
            score.on_growth_surge += 1
    return score


def window_of(episode: Episode, labels: Labels, grace_s: float = GRACE_S) -> LabelWindow | None:
    """The window an episode is on: an incident window of its scope it overlaps (plus the grace)
    first, else a growth/surge one; None for a false alert."""
    hits = [w for w in labels.windows if scope_matches(episode.scope, w.scope) and _overlaps(episode, w, grace_s)]
    return next((w for w in hits if w.is_incident), hits[0] if hits else None)


def _overlaps(episode: Episode, window: LabelWindow, grace_s: float) -> bool:
    return episode.start <= window.end + grace_s and episode.end >= window.start


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
