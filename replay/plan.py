"""Named scenarios: which incidents go where and when, and the labels file that says so.

``mixed`` draws every kind across the tenants; each kind's name gives a scenario of that
kind alone, for debugging; ``quiet`` has none. Placement follows three rules, so a score on
the labels is a fair one:

- nothing starts before the warm-up ends (14 days: the seasonal baseline's warm-up);
- one tenant has at most one window at a time, a day apart at least, so an alert on a
  tenant-wide scope has one window it can belong to;
- a window goes only where the scope has enough normal traffic for its kind to show
  (``MIN_NORMAL``: e.g. 10 normal calls of the looping step in the window). An x5 loop on
  a step with one call an hour is 4 extra calls: no detector should be scored on it.

Start times are uniform over the eligible time, so incidents land at night and on
weekends too, wherever the scope is busy enough.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, cast

from spendwarden.exceptions import ConfigError
from spendwarden.replay.incidents import (
    CACHE_BEFORE, GROWTH_DAYS, KINDS, LEAK_DAYS, MODEL_SHARE, OUTCOME_KINDS, Kind, Window, cached_share,
    misroute_target, step_share,
)
from spendwarden.replay.scenario import MEAN_TRACE, Tenant, TenantProfile, _ms, generate

SCENARIOS: tuple[str, ...] = ("mixed", *KINDS, *OUTCOME_KINDS, "outcomes", "quiet")
# Scenario ``outcomes``: issue 9's kinds, with growth as the control that must not alert.
OUTCOMES_KINDS = (*OUTCOME_KINDS, "growth")
TRACED_SHARE = 0.2  # use cases traced besides those a gateway-silent window needs (outcomes scenario)
SILENT_PER_HOUR = 40.0  # a gateway-silent scope's expected calls per hour in its window, at least
WARMUP_DAYS = 14.0
GAP = timedelta(days=1)  # between two windows of one tenant
MARGIN = timedelta(hours=1)  # windows end this long before the data does, so late detections show
# Expected normal events of the affected kind inside the window (step calls, model calls,
# failed calls, or all the use case's events) below which a scope is not eligible.
MIN_NORMAL: dict[str, float] = {
    "agent-loop": 10, "retry-storm": 5, "prompt-bloat": 30, "misroute": 30, "cache-collapse": 30,
    "slow-leak": 200, "growth": 200, "surge": 200, "quality-regression": 100, "gateway-silent": 80,
}
# Window length in minutes, drawn uniformly (the issue fixes loops, storms, bloat, leak, growth;
# misroute and cache collapse last until someone rolls the change back). Surges are a local day.
DURATION_MINUTES: dict[str, tuple[int, int]] = {
    "agent-loop": (20, 60), "retry-storm": (10, 30), "prompt-bloat": (120, 360), "misroute": (60, 240),
    "cache-collapse": (120, 480), "slow-leak": (LEAK_DAYS * 1440,) * 2, "growth": (GROWTH_DAYS * 1440,) * 2,
    "surge": (1440, 1440), "quality-regression": (1440, 1440), "gateway-silent": (120, 360),
}
_ORDER = ("slow-leak", "growth", "surge", "cache-collapse", "prompt-bloat", "misroute", "agent-loop",
          "retry-storm", "quality-regression", "gateway-silent")
_TRIES = 4000  # draws per window before giving up on it


@dataclass
class Plan:
    """A scenario's time span and its labelled windows, sorted by start."""

    name: str
    seed: int
    start: datetime
    end: datetime
    warmup_end: datetime
    windows: list[Window]
    notes: list[str] = field(default_factory=list)
    outcomes: bool = False  # every trace ends in an outcome record
    traced: list[tuple[str, str]] = field(default_factory=list)  # (tenant, use case) with origin: trace copies


def plan(name: str, tenants: Sequence[TenantProfile], *, seed: int, start: datetime, days: float,
         warmup_days: float = WARMUP_DAYS, per_kind: int | None = None, outcomes: bool = False,
         traced_share: float | None = None) -> Plan:
    """Place the scenario's windows; ``per_kind`` defaults to one per 10 tenants (at least 1).

    ``outcomes`` and ``traced_share`` (a share of the use cases, drawn from the seed) turn the
    generator's options on; a quality regression turns outcomes on, a gateway-silent window
    traces its own use case, and scenario ``outcomes`` traces TRACED_SHARE more."""
    if name not in SCENARIOS:
        raise ConfigError(f"unknown scenario {name!r}; choose one of: {', '.join(SCENARIOS)}")
    if days <= 0 or warmup_days < 0:
        raise ConfigError("--days must be positive and --warmup-days not negative")
    start = start.astimezone(timezone.utc).replace(second=0, microsecond=0)
    result = Plan(name, seed, start, start + timedelta(days=days), start + timedelta(days=warmup_days), [])
    kinds = KINDS if name == "mixed" else () if name == "quiet" else OUTCOMES_KINDS if name == "outcomes" \
        else (name,)
    count = per_kind if per_kind is not None else max(1, round(len(tenants) / 10))
    placer = _Placer(tenants, seed, name, result)
    placed: list[Window] = []
    for kind in sorted(kinds, key=_ORDER.index):
        got = [w for w in (placer.place(kind) for _ in range(count)) if w is not None]
        if not got:
            raise ConfigError(f"scenario {name}: no room for {kind} windows: {placer.why(kind)}")
        if len(got) < count:
            result.notes.append(f"placed {len(got)} of {count} {kind} windows: {placer.why(kind)}")
        placed += got
    placed.sort(key=lambda w: (w.start, w.tenant_id))
    numbers: dict[str, int] = {}
    for w in placed:
        numbers[w.kind] = numbers.get(w.kind, 0) + 1
        result.windows.append(replace(w, id=f"{w.kind}-{numbers[w.kind]:02d}"))
    result.outcomes = outcomes or name == "outcomes" or "quality-regression" in kinds
    if traced_share is None:
        traced_share = TRACED_SHARE if name == "outcomes" else 0.0
    if not 0.0 <= traced_share <= 1.0:
        raise ConfigError("--traced-share must be between 0 and 1")
    draw = random.Random(f"{seed}/traced")
    traced = {(w.tenant_id, w.use_case_id) for w in result.windows if w.kind == "gateway-silent"}
    for profile in tenants:
        for use_case in profile.use_cases:
            if draw.random() < traced_share:
                traced.add((profile.tenant_id, use_case[0]))
    result.traced = sorted(traced)
    return result


class _Placer:
    """Draws candidate windows and keeps those that pass the rules in the module docstring."""

    def __init__(self, tenants: Sequence[TenantProfile], seed: int, name: str, span: Plan) -> None:
        self.tenants = list(tenants)
        if not self.tenants:
            raise ConfigError("a scenario needs at least one tenant")
        self.states = {p.tenant_id: Tenant(p, seed) for p in self.tenants}  # their load, not their draws
        self.rng = random.Random(f"{seed}/plan/{name}")
        self.span = span
        self.busy: dict[str, list[tuple[datetime, datetime]]] = {}
        self.too_long: set[str] = set()

    def why(self, kind: str) -> str:
        if kind in self.too_long:
            need = _needed(kind)
            parts = [(need.days, "days"), (need.seconds // 3600, "h"), (need.seconds % 3600 // 60, "min")]
            return f"it needs --days of at least the warm-up + {' '.join(f'{n} {u}' for n, u in parts if n)}"
        return (f"too few scopes busy enough (at least {MIN_NORMAL[kind]:g} normal events of the affected kind "
                "in the window) and free (one window per tenant at a time, a day apart)")

    def place(self, kind: str) -> Window | None:
        if self.span.warmup_end + _needed(kind) > self.span.end:
            self.too_long.add(kind)
            return None
        for _ in range(_TRIES):
            window = self._draw(kind)
            if window is not None:
                self.busy.setdefault(window.tenant_id, []).append((window.start, window.end))
                return window
        return None

    def _draw(self, kind: str) -> Window | None:
        rng, span = self.rng, self.span
        profile = rng.choice(self.tenants)
        use_case = rng.choice(list(profile.use_cases))
        state = self.states[profile.tenant_id]
        hit = state.hit[use_case[0]]
        step = model = None
        facts: dict[str, Any] = {}
        share = MODEL_SHARE
        if kind == "agent-loop":
            step = rng.choice(sorted(set(use_case[2])))
            share = step_share(use_case[2], step)
        elif kind == "misroute":
            target = misroute_target(use_case[1], hit)
            if target is None:
                return None
            model, facts["price_ratio"] = target
        elif kind == "cache-collapse":
            if cached_share(hit) < CACHE_BEFORE + 0.05:  # the window's own share must stay >= 40%
                return None
            facts["cached_share_before"] = round(cached_share(hit), 3)
        elif kind == "retry-storm":
            share = MODEL_SHARE * profile.fail_rate
        elif kind in ("slow-leak", "growth", "surge", "gateway-silent"):
            share = 1.0
        elif kind == "quality-regression":
            share = 1 / MEAN_TRACE  # outcomes: one per trace
        latest = span.end - MARGIN
        if kind == "surge":
            start, end = _local_day(rng, state, span.warmup_end, latest)
        else:
            lo, hi = DURATION_MINUTES[kind]
            length = timedelta(minutes=rng.randint(lo, hi))
            room = (latest - length - span.warmup_end) // timedelta(minutes=1)
            if room < 0:  # this length does not fit; a shorter draw may
                return None
            start = span.warmup_end + timedelta(minutes=rng.randint(0, room))
            end = start + length
        if end > latest:
            return None
        if any(start < e + GAP and s < end + GAP for s, e in self.busy.get(profile.tenant_id, ())):
            return None
        if _expected(state, use_case[0], start, end) * share < MIN_NORMAL[kind]:
            return None
        if kind == "gateway-silent" and any(
                _expected(state, use_case[0], hour, min(end, hour + timedelta(hours=1))) * share
                < SILENT_PER_HOUR * (min(end, hour + timedelta(hours=1)) - hour) / timedelta(hours=1)
                for hour in _hours(start, end)):
            return None
        return Window(kind=cast(Kind, kind), tenant_id=profile.tenant_id, use_case_id=use_case[0], start=start,
                      end=end, workflow_step=step, model=model, facts=facts)


def _hours(start: datetime, end: datetime) -> Iterator[datetime]:
    while start < end:
        yield start
        start += timedelta(hours=1)


def _needed(kind: str) -> timedelta:
    """Time after the warm-up a window of ``kind`` needs: its shortest length (a local day may
    start up to a day late and last 25 h) and the margin."""
    shortest = timedelta(days=2, hours=1) if kind == "surge" else timedelta(minutes=DURATION_MINUTES[kind][0])
    return shortest + MARGIN


def _local_day(rng: random.Random, state: Tenant, earliest: datetime,
               latest: datetime) -> tuple[datetime, datetime]:
    """A whole local calendar day of the tenant, starting at or after ``earliest``."""
    room = max(0, (latest - earliest) // timedelta(minutes=1))
    when = (earliest + timedelta(minutes=rng.randint(0, room))).astimezone(state.zone)
    day = when.date()
    while True:
        midnight = datetime(day.year, day.month, day.day, tzinfo=state.zone).astimezone(timezone.utc)
        if midnight >= earliest:
            break
        day += timedelta(days=1)
    after = day + timedelta(days=1)
    return midnight, datetime(after.year, after.month, after.day, tzinfo=state.zone).astimezone(timezone.utc)


def _expected(state: Tenant, use_case_id: str, start: datetime, end: datetime) -> float:
    """Expected normal events of the use case in [start, end), sampled at most ~1,500 times."""
    lo, hi = _ms(start), _ms(end)
    minutes = (hi - lo) // 60_000
    step = max(1, minutes // 1440)
    return sum(state.calls_per_minute(ms, use_case_id) for ms in range(lo, hi, step * 60_000)) * step


def labels(result: Plan, tenants: Sequence[TenantProfile]) -> dict[str, Any]:
    """The labels file: the scenario, its span, its tenants' zones and every window."""
    iso = "%Y-%m-%dT%H:%M:%SZ"
    extra: dict[str, Any] = {}
    if result.outcomes:
        extra["outcomes"] = True
    if result.traced:
        extra["traced"] = [{"tenant_id": t, "use_case_id": u} for t, u in result.traced]
    return {
        "seed": result.seed, "scenario": result.name, "start": result.start.strftime(iso),
        "end": result.end.strftime(iso), "warmup_end": result.warmup_end.strftime(iso),
        "tenants": [{"tenant_id": p.tenant_id, "timezone": p.timezone, "peak_events_per_hour": p.calls_per_hour}
                    for p in tenants],
        "incidents": [w.label() for w in result.windows],
        "notes": result.notes,
        **extra,
    }


def events(result: Plan, tenants: list[TenantProfile]) -> Iterator[dict[str, Any]]:
    """The scenario's cost events in timestamp order, incidents included."""
    hours = (result.end - result.start) / timedelta(hours=1)
    return generate(start=result.start, hours=hours, tenants=tenants, seed=result.seed, incidents=result.windows,
                    outcomes=result.outcomes, traced=result.traced)
