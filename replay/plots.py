"""PNG plots for the evaluation report: around each labelled window and each false alert, the
scope's hourly spend with a seasonal band, the labelled windows and the anomaly alerts.

Why a seasonal band: it is what the scope's spend usually is at that hour of the week, learned
online from the same series (detectors/seasonal.py, hour-of-day profile until two weeks), so
one picture shows the spend, its usual range, where the labelled window was and when the
alerts fired. The default set does not include the seasonal detector: the band is a reading
aid, not what fired. Hours are UTC.

matplotlib is an optional dependency (the ``report`` extra, in the test extra too); without it
the report is written without plots and says how to get them.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from spendwarden.detectors import SeasonalBaseline
from spendwarden.replay.evaluation import Episode, Labels, LabelWindow
from spendwarden.streams.money import NANOS_PER_USD

HOUR = 3600
BEFORE_H = 72  # hours shown before a window or a false alert ...
AFTER_H = 24  # ... and after it
MAX_FALSE_PLOTS = 20
Scope = tuple[str, str]  # (tenant_id, use_case_id)


class HourlySpend:
    """Wraps an Ingest: passes its parsed events on and sums their cost per scope and UTC hour
    (every parsed event: duplicates the engine then drops are in the picture too)."""

    def __init__(self, inner: Any = None) -> None:
        self.inner = inner
        self.hours: dict[Scope, dict[int, int]] = {}

    def watch(self, inner: Any) -> HourlySpend:
        """This tap around ``inner`` (what ``replay --report`` hands the replay as its ingest)."""
        self.inner = inner
        return self

    def parse_record(self, raw: bytes) -> tuple[list[Any], list[Any]]:
        events, rejections = self.inner.parse_record(raw)
        self._add(events)
        return events, rejections

    def parse_object(self, record: Mapping[str, Any]) -> tuple[list[Any], list[Any]]:
        items, rejections = self.inner.parse_object(record)  # outcome rows too; they cost nothing
        self._add(items)
        return items, rejections

    def parse_items(self, raw: bytes, now: float | None = None) -> tuple[list[Any], list[Any]]:
        """Events and outcomes (replay's reader since outcomes): the events' cost is summed."""
        items, rejections = self.inner.parse_items(raw, now)
        self._add(items)
        return items, rejections

    def _add(self, events: Iterable[Any]) -> None:
        for priced in events:
            if not hasattr(priced, "cost_nanos"):
                continue  # an outcome
            event = priced.event
            series = self.hours.setdefault((event.tenant_id, event.use_case_id), {})
            hour = int(priced.ts // HOUR)
            series[hour] = series.get(hour, 0) + priced.cost_nanos


@dataclass(frozen=True)
class Plot:
    """One picture of the report: its title and file name (inside the report's plots/ folder)."""

    title: str
    file: str


@dataclass(frozen=True)
class Hour:
    start: float
    usd: float
    expected: float | None
    band: tuple[float, float] | None


def with_band(series: Mapping[int, int], first: int, last: int) -> list[Hour]:
    """Hours ``first..last`` of a scope's spend, each scored by a seasonal baseline taught every
    hour before it (from ``first``), then taught that hour."""
    detector = SeasonalBaseline(tz="UTC")
    rows = []
    for hour in range(first, last + 1):
        usd = series.get(hour, 0) / NANOS_PER_USD
        score = detector.score_one({"spend_usd": usd}, hour * HOUR)
        rows.append(Hour(hour * HOUR, usd, score.expected, score.band))
        detector.learn_one({"spend_usd": usd}, hour * HOUR)
    return rows


def _scope_of(mapping: Mapping[str, str]) -> Scope:
    return mapping.get("tenant_id", ""), mapping.get("use_case_id", "")


def _file_name(kind: str, scope: Scope, start: float) -> str:
    text = f"{kind}-{scope[0]}-{scope[1]}-{datetime.fromtimestamp(start, timezone.utc):%Y%m%dT%H%M}"
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) + ".png"


def draw(path: Path, title: str, rows: Sequence[Hour], windows: Sequence[LabelWindow],
         alerts: Sequence[Episode]) -> None:
    """One PNG: spend per hour (line), the seasonal band (shaded), labelled windows (red for an
    incident, green for growth or a surge) and alert episodes (orange bars along the top)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def when(epoch: float) -> datetime:
        return datetime.fromtimestamp(epoch, timezone.utc)

    times = [when(row.start) for row in rows]
    fig, ax = plt.subplots(figsize=(11, 3.4), dpi=90)
    try:
        banded = [(t, row.band) for t, row in zip(times, rows) if row.band is not None]
        if banded:
            ax.fill_between([t for t, _ in banded], [b[0] for _, b in banded], [b[1] for _, b in banded],
                            step="post", color="tab:blue", alpha=0.18, label="usual range (seasonal band)")
        ax.step(times, [row.usd for row in rows], where="post", color="black", linewidth=0.9, label="spend USD/h")
        lo, hi = times[0], times[-1]
        for window in windows:
            color = "tab:red" if window.is_incident else "tab:green"
            ax.axvspan(max(lo, when(window.start)), min(hi, when(window.end)), color=color, alpha=0.22,
                       label=f"{window.kind} ({'incident' if window.is_incident else 'not an incident'})")
        for episode in alerts:
            ax.axvspan(max(lo, when(episode.start)), min(hi, when(episode.end)), ymin=0.93, ymax=1.0,
                       color="tab:orange", label=f"alert {episode.rule}")
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles))
        ax.legend(unique.values(), unique.keys(), loc="upper left", fontsize=7, framealpha=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("USD per hour (UTC hours)", fontsize=8)
        ax.set_ylim(bottom=0)
        ax.tick_params(labelsize=7)
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def write_plots(folder: Path, labels: Labels, found: Sequence[Episode], hourly: HourlySpend,
                false_alerts: Sequence[Episode]) -> list[Plot]:
    """A PNG per labelled window and per false alert (the first MAX_FALSE_PLOTS) in
    ``folder``; [] when matplotlib is not installed."""
    if importlib.util.find_spec("matplotlib") is None:
        return []
    folder.mkdir(parents=True, exist_ok=True)
    data_first, data_last = int(labels.start // HOUR), int(labels.end // HOUR)
    subjects: list[tuple[str, Scope, float, float, str]] = [
        ("window", _scope_of(w.scope), w.start, w.end, f"{w.id}: {w.kind}") for w in labels.windows]
    subjects += [("false", _scope_of(e.scope), e.start, e.end, f"false alert {e.rule}")
                 for e in false_alerts[:MAX_FALSE_PLOTS]]
    plots = []
    banded: dict[Scope, list[Hour]] = {}  # the whole replayed span per scope, computed once
    for kind, scope, start, end, what in subjects:
        first = max(data_first, int(start // HOUR) - BEFORE_H)
        last = min(data_last, int(end // HOUR) + AFTER_H)
        if first > last:
            continue  # the window or alert lies outside the replayed data
        if scope not in banded:
            banded[scope] = with_band(hourly.hours.get(scope, {}), data_first, data_last)
        rows = banded[scope][first - data_first:last - data_first + 1]
        lo, hi = first * HOUR, (last + 1) * HOUR
        windows = [w for w in labels.windows if _scope_of(w.scope) == scope and w.start < hi and w.end > lo]
        alerts = [e for e in found if _scope_of(e.scope) == scope and e.start < hi and e.end > lo]
        name = _file_name(kind, scope, start)
        title = f"{scope[0]} / {scope[1]}: {what}, {len(alerts)} alert episode(s) shown"
        draw(folder / name, title, rows, windows, alerts)
        plots.append(Plot(title, name))
    return plots
