"""Render an Evaluation as Markdown tables and a report page. Pure text, no I/O.

Why Markdown: it reads in a terminal, in a pull request and on GitHub alike. The PNG plots it
links are drawn by replay/plots.py (matplotlib, the ``report`` extra); evaluation.json holds
every figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from spendwarden.replay.evaluation import ALL, DetectorScore, Episode, Evaluation, quantile

# Issue 6's goals for the default detector set (the ``all`` row).
GOAL_RECALL = 0.9
GOAL_DELAY_MIN = 15.0
GOAL_DELAY_KINDS = ("agent-loop", "misroute")
GOAL_FALSE_PER_10TW = 1.0


@dataclass(frozen=True)
class RunInfo:
    """What was replayed, so a report says how to make it again."""

    events: str
    rules: str
    rules_version: str
    command: str
    elapsed_s: float = 0.0
    events_count: int = 0


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _minutes(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table padded to line up in a terminal too."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _order(evaluation: Evaluation) -> list[DetectorScore]:
    return [s for n, s in evaluation.detectors.items() if n != ALL] + [evaluation.detectors[ALL]]


def detector_table(evaluation: Evaluation) -> str:
    """One row per detector (``all`` last): precision, recall, delay, false alerts, growth/surge."""
    rows = []
    for s in _order(evaluation):
        delays = s.delays_min
        growth = s.kinds
        alerted = sum(k.alerted for k in growth.values() if not k.is_incident)
        quiet_windows = sum(k.windows for k in growth.values() if not k.is_incident)
        rows.append([s.detector, str(s.episodes), _num(s.precision), f"{s.detected}/{s.windows}", _num(s.recall),
                     _minutes(quantile(delays, 0.5)), _minutes(quantile(delays, 0.9)), str(s.false_alerts),
                     _num(s.false_per_10_tenant_weeks), f"{s.on_growth_surge} ({alerted}/{quiet_windows} windows)"])
    header = ["detector", "alerts", "precision", "detected", "recall", "delay median (min)", "delay p90 (min)",
              "false alerts", "false / 10 tenant-weeks", "alerts on growth/surge"]
    return markdown_table(header, rows)


def kind_table(evaluation: Evaluation) -> str:
    """One row per detector and kind: recall and delay for incidents, alerts for growth/surge."""
    rows = []
    for s in _order(evaluation):
        for name, k in sorted(s.kinds.items(), key=lambda item: (not item[1].is_incident, item[0])):
            if k.is_incident:
                rows.append([s.detector, name, str(k.windows), str(k.detected), _num(k.recall),
                             _minutes(quantile(k.delays_min, 0.5)), _minutes(quantile(k.delays_min, 0.9)),
                             ", ".join(k.missed) or "-"])
            else:
                rows.append([s.detector, f"{name} (not an incident)", str(k.windows),
                             f"{k.alerted} alerted, {k.episodes} alerts", "-", "-", "-", "-"])
    header = ["detector", "kind", "windows", "detected", "recall", "delay median (min)", "delay p90 (min)",
              "missed"]
    return markdown_table(header, rows)


def goals(evaluation: Evaluation) -> list[tuple[str, str, bool]]:
    """Issue 6's goals checked on the ``all`` row: (goal, measured, met)."""
    s = evaluation.detectors[ALL]
    found = []
    recall = s.recall
    found.append((f"recall >= {GOAL_RECALL}", _num(recall), recall is not None and recall >= GOAL_RECALL))
    for kind in GOAL_DELAY_KINDS:
        k = s.kinds.get(kind)
        median = quantile(k.delays_min, 0.5) if k else None
        found.append((f"median delay <= {GOAL_DELAY_MIN:g} min for {kind}", _minutes(median),
                      median is not None and median <= GOAL_DELAY_MIN))
    rate = s.false_per_10_tenant_weeks
    found.append((f"<= {GOAL_FALSE_PER_10TW:g} false alert per 10 tenant-weeks", _num(rate),
                  rate is not None and rate <= GOAL_FALSE_PER_10TW))
    found.append(("zero alerts on growth/surge", str(s.on_growth_surge), s.on_growth_surge == 0))
    return found


def goals_table(evaluation: Evaluation) -> str:
    return markdown_table(["goal (all detectors)", "measured", "met"],
                  [[g, m, "yes" if ok else "no"] for g, m, ok in goals(evaluation)])


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _false_list(episodes: Sequence[Episode], limit: int = 30) -> str:
    rows = [[e.rule, "/".join(e.scope.get(d, "") for d in ("tenant_id", "use_case_id", "workflow_step")).rstrip("/"),
             iso(e.start), f"{(e.end - e.start) / 60:.0f}"] for e in episodes[:limit]]
    more = f"\n\n... and {len(episodes) - limit} more (evaluation.json has the counts)" if len(episodes) > limit else ""
    return markdown_table(["rule", "scope", "fired", "minutes"], rows) + more


def window_table(evaluation: Evaluation) -> str:
    """Every incident window with its tenant's size and the delay of the first alert (all detectors)."""
    lab, score = evaluation.labels, evaluation.detectors[ALL]
    rows = []
    for w in lab.windows:
        if not w.is_incident:
            continue
        delay = score.kinds[w.kind].delay_of.get(w.id)
        scope = "/".join(w.scope.get(d, "") for d in ("tenant_id", "use_case_id", "workflow_step")).rstrip("/")
        peak = lab.peaks.get(w.scope["tenant_id"])
        rows.append([w.id, scope, "-" if peak is None else f"{peak:,.0f}", iso(w.start),
                     f"{(w.end - w.start) / 60:,.0f}", "missed" if delay is None else f"{delay:,.0f}"])
    return markdown_table(["window", "scope", "tenant peak events/h", "start", "minutes", "delay (min)"], rows)


def plots_section(plots: Sequence[Any]) -> list[str]:
    """The report's plots (``Plot`` of replay/plots.py), or how to get them."""
    if not plots:
        return ["No plots: matplotlib is not installed (`pip install 'spendwarden[report]'`). "
                "`evaluation.json` holds the same figures.", ""]
    lines = ["Hourly spend (UTC) around each labelled window and each false alert: the usual range is "
             "a seasonal baseline of the same series (a reading aid, not what fired), red a labelled "
             "incident, green growth or a surge, orange bars the anomaly alerts.", ""]
    for plot in plots:
        lines += [f"### {plot.title}", "", f"![{plot.title}](plots/{plot.file})", ""]
    return lines


def markdown(evaluation: Evaluation, run: RunInfo, plots: Sequence[Any] = ()) -> str:
    """The report page: what ran, the tables, the goals, the false alerts to look at, the plots."""
    lab = evaluation.labels
    parts = [
        f"# Detector evaluation: {lab.scenario or 'scenario'} seed {lab.seed}",
        "",
        "| | |", "|---|---|",
        f"| scenario | {lab.scenario}, seed {lab.seed}, {lab.days:g} days, {lab.tenants} tenants |",
        f"| scored | from the warm-up's end {iso(lab.warmup_end)} to {iso(lab.end)}: "
        f"{lab.tenant_weeks:.1f} tenant-weeks |",
        f"| windows | {sum(w.is_incident for w in lab.windows)} incidents, "
        f"{sum(not w.is_incident for w in lab.windows)} growth/surge |",
        f"| events | `{run.events}` ({run.events_count:,} events, replayed in {run.elapsed_s:,.0f} s) |",
        f"| rules | `{run.rules}`, version `{run.rules_version}` |",
        f"| grace | {evaluation.grace_s / 60:g} min after a window |",
        "",
        "```sh", run.command, "```",
        "",
        "## Per detector", "",
        detector_table(evaluation), "",
        "`alerts` are firing episodes after the warm-up. `precision` is the share of them on an incident "
        "window of their scope (growth/surge ones count as false there, and are also counted on their own). "
        "A detector is a rule's `detector` label; `all` is every detector's alerts together.", "",
        "## Goals (issue 6)", "",
        goals_table(evaluation), "",
        "## Per kind", "",
        kind_table(evaluation), "",
        "## Per window", "",
        window_table(evaluation), "",
        "## False alerts", "",
        _false_list(evaluation.detectors[ALL].false_examples) if evaluation.detectors[ALL].false_examples
        else "None.",
        "",
        "## Plots",
        "",
        *plots_section(plots),
    ]
    return "\n".join(parts)


def report_json(evaluation: Evaluation, run: RunInfo) -> dict[str, Any]:
    """evaluation.json: the figures, the goals and how the run was made."""
    return {**evaluation.to_dict(), "events": run.events, "rules": run.rules, "rules_version": run.rules_version,
            "command": run.command, "events_count": run.events_count, "elapsed_s": round(run.elapsed_s, 1),
            "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in goals(evaluation)]}
