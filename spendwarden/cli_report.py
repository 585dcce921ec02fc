"""``replay --labels/--report``, ``--sweep`` and ``--compare``: score detectors in replay.

The I/O around the pure parts: replay the events (the same engine and driver as a plain
``replay``), keep the alert effects, pair them into episodes and score them against the
labels (``replay/evaluation.py``), then print and write what ``replay/report.py`` renders.
A sweep replays once per value with a changed copy of the rules (``replay/sweep.py``); a
comparison replays two rule sets and lists the alerts only one of them raised.
"""

from __future__ import annotations

import shlex
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson
import yaml

from spendwarden.exceptions import ConfigError


@dataclass(frozen=True)
class ReplayOptions:
    """How to read and replay the events; the same for every run of a sweep or comparison."""

    events: str
    pricebook: str | None = None
    reprice: str | None = None
    tick: float = 60.0
    advance_to: str | None = None
    progress: bool = True
    start: str | None = None
    end: str | None = None
    partitions: str | None = None


class AlertTap:
    """Keeps what scoring needs of each alert effect and passes every effect on."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.alerts: list[dict[str, Any]] = []

    def effect(self, effect: Any) -> None:
        if effect.kind in ("alert_firing", "alert_resolved"):
            self.alerts.append({"kind": effect.kind, "fingerprint": effect.fingerprint, "rule": effect.rule,
                                "tenant_id": effect.tenant_id, "scope": dict(effect.scope), "at": effect.at})
        self.inner.effect(effect)

    def rejected(self, where: int, rejection: Any, raw: bytes) -> None:
        self.inner.rejected(where, rejection, raw)

    def close(self) -> None:
        self.inner.close()


def command_line(opts: ReplayOptions, rules: str | None, labels: str | None, report: str | None,
                 sweep: Sequence[str] = (), compare: Sequence[str] = ()) -> str:
    """The command that makes this output again (what matters of it: no --show or --progress)."""
    args = ["spendwarden", "replay", opts.events]
    if rules:
        args += ["--rules", rules]
    if compare:
        args += ["--compare", *compare]
    for flag, value in (("--pricebook", opts.pricebook), ("--reprice", opts.reprice), ("--from", opts.start),
                        ("--to", opts.end), ("--partitions", opts.partitions), ("--advance-to", opts.advance_to),
                        ("--tick", None if opts.tick == 60.0 else f"{opts.tick:g}"), ("--labels", labels)):
        if value is not None:
            args += [flag, value]
    for setting in sweep:
        args += ["--sweep", setting]
    if report:
        args += ["--report", report]
    return " ".join(shlex.quote(str(a)) for a in args)


def replay_alerts(opts: ReplayOptions, ruleset: Any, out: str | None = None, show: bool = False,
                  wrap_ingest: Any = None) -> tuple[Any, list]:
    """Replay the events through ``ruleset``; the result and the alert effects as dicts.
    ``wrap_ingest`` (ingest -> ingest) may watch the parsed events (the report's plots)."""
    from spendwarden.cli import _parse_time, _PrintingSink, _progress_printer, make_ingest, open_source
    from spendwarden.replay.run import JsonlSink, NullSink, replay

    source, locate = open_source(opts.events, opts.start, opts.end, opts.partitions)
    tap = AlertTap(_PrintingSink(JsonlSink(out, locate) if out else NullSink(), show))
    try:
        ingest = make_ingest(opts.pricebook, opts.reprice)
        result = replay(source, ruleset, wrap_ingest(ingest) if wrap_ingest else ingest, tap, tick_s=opts.tick,
                        advance_to=_parse_time(opts.advance_to, "--advance-to"),
                        progress=_progress_printer(source.total_bytes, source) if opts.progress else None)
    finally:
        if hasattr(source, "close"):
            source.close()
    if opts.progress and sys.stderr.isatty():
        click.echo("", err=True)
    return result, tap.alerts


def read_labels(path: str) -> Any:
    from spendwarden.replay.evaluation import parse_labels

    try:
        return parse_labels(orjson.loads(Path(path).read_bytes()))
    except FileNotFoundError:
        raise ConfigError(f"--labels {path}: no such file") from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"--labels {path}: not a labels file from `spendwarden scenario` ({exc})") from None


def detectors_of(ruleset: Any) -> dict[str, str]:
    """Rule name -> detector, for the rules that count as anomaly alerts."""
    from spendwarden.replay.evaluation import detector_of

    found = {}
    for rule in ruleset.rules:
        name = detector_of(rule.name, rule.spec.when, rule.spec.labels)
        if name is not None:
            found[rule.name] = name
    return found


def score(opts: ReplayOptions, ruleset: Any, labels: Any, out: str | None = None,
          show: bool = False, wrap_ingest: Any = None) -> tuple[Any, Any, list]:
    """Replay and evaluate: the replay result, the Evaluation and the alert episodes."""
    from spendwarden.replay.evaluation import episodes, evaluate

    detectors = detectors_of(ruleset)
    if not detectors:
        raise ConfigError("no rule reads anomaly.* or has a `detector` label: nothing to evaluate "
                          "(try --rules rules/packs/anomaly)")
    result, alerts = replay_alerts(opts, ruleset, out, show, wrap_ingest)
    found = episodes(alerts, detectors, labels.end)
    return result, evaluate(found, labels), found


def run_evaluation(opts: ReplayOptions, rules: str, labels_path: str, report: str | None, out: str | None,
                   show: bool) -> None:
    """``replay EVENTS --rules DIR --labels L [--report DIR]``: print the tables, write the report."""
    from spendwarden.replay.evaluation import ALL
    from spendwarden.replay.plots import HourlySpend, write_plots
    from spendwarden.replay.report import RunInfo, detector_table, goals_table, kind_table, markdown, report_json
    from spendwarden.rules.loader import load_ruleset

    ruleset = load_ruleset(rules)
    labels = read_labels(labels_path)
    hourly = HourlySpend()
    result, evaluation, found = score(opts, ruleset, labels, out, show, hourly.watch if report else None)
    run = RunInfo(opts.events, rules, ruleset.version, command_line(opts, rules, labels_path, report), result.elapsed_s,
                  result.events)
    click.echo(f"\n{labels.scenario} seed {labels.seed}: {labels.days:g} days, {labels.tenants} tenants, "
               f"rules {ruleset.version} from {rules}; {result.events:,} events in {result.elapsed_s:,.0f} s\n")
    click.echo(detector_table(evaluation))
    click.echo("")
    click.echo(kind_table(evaluation))
    click.echo("")
    click.echo(goals_table(evaluation))
    if report:
        folder = Path(report)
        folder.mkdir(parents=True, exist_ok=True)
        plots = write_plots(folder / "plots", labels, found, hourly, evaluation.detectors[ALL].false_examples)
        (folder / "report.md").write_text(markdown(evaluation, run, plots))
        (folder / "evaluation.json").write_bytes(orjson.dumps(report_json(evaluation, run), option=orjson.OPT_INDENT_2))
        drawn = f", {len(plots)} plots in plots/" if plots else " (no plots: pip install 'spendwarden[report]')"
        click.echo(f"\nreport written to {folder}/ (report.md, evaluation.json{drawn})")


def _rule_files(rules: str) -> dict[str, Any]:
    from spendwarden.rules.loader import rule_files

    return {path.name: yaml.safe_load(path.read_text()) for path in rule_files(rules)}


def _load_changed(files: dict[str, Any], folder: Path) -> Any:
    from spendwarden.rules.loader import load_ruleset

    for name, data in files.items():
        (folder / name).write_text(yaml.safe_dump(data, sort_keys=False))
    return load_ruleset(folder)


def run_sweep(opts: ReplayOptions, rules: str, labels_path: str, settings: Sequence[str], report: str | None) -> None:
    """``--sweep SETTING=a,b,c``: one replay per value; a row each, the Pareto frontier marked."""
    from spendwarden.replay import sweep as sweep_
    from spendwarden.replay.evaluation import ALL, quantile
    from spendwarden.replay.report import markdown_table

    if opts.events == "-":
        raise ConfigError("--sweep replays the events once per value: give a file, not stdin")
    if len(settings) != 1:
        raise ConfigError("give one --sweep (a grid of several parameters is not built)")
    labels = read_labels(labels_path)
    setting = sweep_.parse_sweep(settings[0])
    files = _rule_files(rules)
    rows: list[dict[str, Any]] = []
    for value in setting.values:
        changed = sweep_.apply(files, setting, value)
        with tempfile.TemporaryDirectory(prefix="spendwarden-sweep-") as tmp:
            ruleset = _load_changed(changed, Path(tmp))
        click.echo(f"sweep {setting.label}={value!r}: replaying with rules {ruleset.version}", err=True)
        _, evaluation, _ = score(opts, ruleset, labels)
        s = evaluation.detectors[ALL]
        rows.append({"value": value, "rules_version": ruleset.version, "recall": s.recall,
                     "delay_median_min": quantile(s.delays_min, 0.5), "delay_p90_min": quantile(s.delays_min, 0.9),
                     "false_per_10_tenant_weeks": s.false_per_10_tenant_weeks, "false_alerts": s.false_alerts,
                     "on_growth_surge": s.on_growth_surge, "alerts": s.episodes,
                     "detectors": evaluation.to_dict()["detectors"]})
    marks = sweep_.frontier([(r["recall"], r["delay_median_min"], r["false_per_10_tenant_weeks"],
                              float(r["on_growth_surge"])) for r in rows])
    table = markdown_table(
        [setting.label, "recall", "delay median (min)", "delay p90 (min)", "false / 10 tenant-weeks",
         "alerts on growth/surge", "alerts", "frontier"],
        [[repr(r["value"]) if not isinstance(r["value"], (int, float)) else f"{r['value']:g}",
          _fmt(r["recall"]), _fmt(r["delay_median_min"], 0), _fmt(r["delay_p90_min"], 0),
          _fmt(r["false_per_10_tenant_weeks"]), str(r["on_growth_surge"]), str(r["alerts"]), "*" if m else ""]
         for r, m in zip(rows, marks)])
    click.echo(f"\n{labels.scenario} seed {labels.seed}, all detectors of {rules}; * = on the Pareto frontier "
               "(higher recall; lower delay, false alerts and growth/surge alerts)\n")
    click.echo(table)
    if report:
        folder = Path(report)
        folder.mkdir(parents=True, exist_ok=True)
        for row, mark in zip(rows, marks):
            row["frontier"] = mark
        command = command_line(opts, rules, labels_path, report, settings)
        (folder / "sweep.md").write_text(f"# Sweep {setting.label}\n\n```sh\n{command}\n```\n\n{table}\n")
        (folder / "sweep.json").write_bytes(orjson.dumps({"sweep": setting.text, "scenario": labels.scenario,
                                                          "seed": labels.seed, "rows": rows},
                                                         option=orjson.OPT_INDENT_2))
        click.echo(f"\nsweep written to {folder}/ (sweep.md, sweep.json)")


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run_compare(opts: ReplayOptions, old_rules: str, new_rules: str, labels_path: str | None,
                report: str | None) -> None:
    """``--compare OLD NEW``: replay both rule sets; list the alerts that appear or vanish."""
    from spendwarden.replay.compare import diff
    from spendwarden.replay.evaluation import detector_of, episodes, window_of
    from spendwarden.replay.report import markdown_table
    from spendwarden.rules.loader import load_ruleset

    if opts.events == "-":
        raise ConfigError("--compare replays the events twice: give a file, not stdin")
    labels = read_labels(labels_path) if labels_path else None
    found, versions = [], []
    for rules in (old_rules, new_rules):
        ruleset = load_ruleset(rules)
        versions.append(ruleset.version)
        kinds = {r.name: detector_of(r.name, r.spec.when, r.spec.labels) or "budget" for r in ruleset.rules}
        click.echo(f"compare: replaying with {rules} (rules {ruleset.version})", err=True)
        result, alerts = replay_alerts(opts, ruleset)
        found.append(episodes(alerts, kinds, labels.end if labels else (result.last_ts or 0.0)))
    appeared, vanished = diff(found[0], found[1])

    def on(episode: Any) -> str:
        if labels is None:
            return "-"
        if episode.detector == "budget":
            return "budget alert"
        window = window_of(episode, labels)
        return "false alert" if window is None else window.id

    from spendwarden.replay.report import iso

    rows = [[change, e.rule, "/".join(e.scope.get(d, "") for d in ("tenant_id", "use_case_id", "workflow_step"))
             .rstrip("/"), iso(e.start), f"{(e.end - e.start) / 60:.0f}", on(e)]
            for change, group in (("appears", appeared), ("vanishes", vanished)) for e in group]
    rows.sort(key=lambda r: (r[3], r[1]))
    table = markdown_table(["change", "rule", "scope", "fired", "minutes", "on"], rows) if rows else "No change."
    head = (f"{old_rules} ({versions[0]}, {len(found[0])} alerts) -> {new_rules} ({versions[1]}, "
            f"{len(found[1])} alerts): {len(appeared)} appear, {len(vanished)} vanish")
    click.echo(f"\n{head}\n")
    click.echo(table)
    if report:
        folder = Path(report)
        folder.mkdir(parents=True, exist_ok=True)
        command = command_line(opts, None, labels_path, report, compare=(old_rules, new_rules))
        (folder / "compare.md").write_text(f"# Compare\n\n```sh\n{command}\n```\n\n{head}\n\n{table}\n")
        click.echo(f"\ncomparison written to {folder}/compare.md")
