"""``spendwarden report showback``: a period's spend by business unit, cost center, use case and
model, with cost per outcome, from replayed event and outcome files (docs/showback.md).

The I/O around ``replay/showback.py``: read the files with the replay readers, price events
with the same ``Ingest`` as replay, count bad records instead of stopping on them (stderr), and
print a table (stdout) and optionally the same rows as CSV with exact decimal USD.
"""

from __future__ import annotations

import csv
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import click
import orjson
from pydantic import ValidationError

from spendwarden.exceptions import ConfigError
from spendwarden.replay.showback import (
    DEFAULT_BY, OUTCOME_KINDS, PERIOD_HELP, SHOWBACK_DIMENSIONS, ReportPeriod, Showback, ShowbackRow,
)
from spendwarden.streams.events import Outcome
from spendwarden.streams.money import usd_text

_EXAMPLES = 5  # bad records quoted on stderr; the rest are only counted
_PROGRESS_EVERY = 20_000


@click.group("report")
def report_group() -> None:
    """Reports over recorded cost events."""


@dataclass
class _Bad:
    """Records that could not be counted, by reason, with a few examples to find them by."""

    reasons: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def add(self, path: str, where: int, reason: str, detail: str) -> None:
        self.reasons[reason] += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(f"  {path}:{where}: {reason}: {detail}")

    def summary(self) -> str:
        total = sum(self.reasons.values())
        if not total:
            return "0 rejected"
        return f"{total:,} rejected ({', '.join(f'{k} {v:,}' for k, v in sorted(self.reasons.items()))})"


class _Progress:
    """A progress line on stderr like replay's: every 0.5 s on a terminal, every 10 s in a log."""

    def __init__(self, enabled: bool, total_bytes: int | None) -> None:
        self.enabled = enabled
        self.total = total_bytes
        self.tty = sys.stderr.isatty()
        self.last = time.monotonic()
        self.done_before = 0  # bytes of the files already read

    def show(self, source: Any, events: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < (0.5 if self.tty else 10.0):
            return
        self.last = now
        done = self.done_before + source.bytes_read
        share = f"{done / self.total:6.1%}" if self.total else f"{done / 1e6:,.0f} MB"
        line = f"showback {share}  {events:,} events"
        click.echo(f"\r{line}" if self.tty else line, err=True, nl=not self.tty)

    def finish(self) -> None:
        if self.enabled and self.tty:
            click.echo("", err=True)


def _parse_period(_ctx: click.Context, _param: click.Parameter, value: str) -> ReportPeriod:
    try:
        return ReportPeriod.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _parse_by(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names:
        raise click.BadParameter(f"name at least one of {', '.join(SHOWBACK_DIMENSIONS)}")
    unknown = [name for name in names if name not in SHOWBACK_DIMENSIONS]
    if unknown or len(set(names)) != len(names):
        raise click.BadParameter(f"{value!r}: use distinct names from {', '.join(SHOWBACK_DIMENSIONS)}")
    return names


def _open(paths: Sequence[str], start: str | None = None, end: str | None = None) -> list[Any]:
    """Every input opened (checked) before any is read, so a typo fails at once; ``kafka://TOPIC``
    reads the live topic's range (``start``/``end`` as in ``replay``), files are read whole."""
    from spendwarden.cli import open_source

    opened: list[Any] = []
    try:
        for path in paths:
            opened.append(open_source(path, start, end, None)[0] if path.startswith("kafka://")
                          else open_source(path, None, None, None)[0])
    except BaseException:
        _close(opened)
        raise
    return opened


def _close(sources: Iterable[Any]) -> None:
    for source in sources:
        if hasattr(source, "close"):  # a Kafka reader holds a connection until closed
            source.close()


def _records(sources: Sequence[Any], progress: _Progress,
             counted: Callable[[], int]) -> Iterator[tuple[str, int, Any]]:
    """(path, position, record) of every source in turn, showing progress every few thousand."""
    for source in sources:
        for number, (where, record) in enumerate(source, 1):
            if number % _PROGRESS_EVERY == 0:
                progress.show(source, counted())
            yield source.path, where, record
        progress.done_before += source.bytes_read


def _read_events(sources: Sequence[Any], showback: Showback, ingest: Any, bad: _Bad,
                 progress: _Progress) -> int:
    """Price and count every event record; returns how many records were read."""
    records = 0
    for path, where, record in _records(sources, progress, lambda: showback.stats.events):
        records += 1
        if isinstance(record, bytes):  # marked outcomes among the events count as outcomes, as live
            items, rejections = ingest.parse_items(record)
        else:
            items, rejections = ingest.parse_object(record)
        for rejection in rejections:
            index = "" if rejection.index is None else f"[{rejection.index}]"
            bad.add(path, where, rejection.reason, f"{index}{rejection.detail}")
        for item in items:
            if isinstance(item, Outcome):
                showback.add_outcome(item)
            else:
                showback.add_event(item)
    return records


def _outcome_items(record: Any) -> list[Any]:
    """The objects of one outcome record: a JSON object, an array of them, or a CSV row."""
    if not isinstance(record, bytes):
        return [record]
    value = orjson.loads(record)
    return value if isinstance(value, list) else [value]


def _read_outcomes(sources: Sequence[Any], showback: Showback, bad: _Bad) -> None:
    """Validate every outcome with the ``Outcome`` model and keep it for the join."""
    for path, where, record in _records(sources, _Progress(False, None), lambda: 0):
        try:
            items = _outcome_items(record)
        except orjson.JSONDecodeError as exc:
            bad.add(path, where, "decode", f"not JSON: {str(exc)[:120]}")
            continue
        for item in items:
            try:
                showback.add_outcome(Outcome.model_validate(item))
            except ValidationError as exc:
                error = exc.errors(include_url=False)[0]
                where_field = ".".join(str(part) for part in error["loc"]) or "record"
                bad.add(path, where, "invalid", f"{where_field}: {error['msg']}")


def _zone_lookup(rules: str | None) -> Callable[[str], str]:
    """Each tenant's time zone from the rules' ``tenants:`` section; UTC without rules."""
    if rules is None:
        return lambda _tenant: "UTC"
    from spendwarden.rules.loader import load_ruleset

    ruleset = load_ruleset(rules)
    return lambda tenant: ruleset.tenant(tenant).timezone


def _make_ingest(pricebook: str | None) -> Any:
    from spendwarden.streams.ingest import Ingest
    from spendwarden.streams.pricebook import Pricebook

    return Ingest(Pricebook.load(pricebook) if pricebook else Pricebook.default())


# ---------------------------------------------------------------- rendering
def _money(nanos: int | None) -> str:
    return "" if nanos is None else usd_text(nanos)


def _ratio(value: Fraction | None, places: int) -> str:
    return "" if value is None else f"{float(value):.{places}f}"


CSV_FIGURES = ("spend_usd", "events", "input_tokens", "output_tokens", "outcomes", *OUTCOME_KINDS,
               "joined_spend_usd", "unjoined_spend_usd", "unjoined_share", "cost_per_outcome_usd",
               "resolved_spend_usd", "cost_per_resolved_usd")
TABLE_FIGURES = ("spend USD", "events", "tokens in", "tokens out", "outcomes", "resolved", "accepted",
                 "rejected", "escalated", "human_rej", "USD/outcome", "USD/resolved", "unjoined")
_MONEY_COLUMNS = frozenset({"spend USD", "USD/outcome", "USD/resolved"})


def csv_rows(by: Sequence[str], rows: Iterable[ShowbackRow], total: ShowbackRow) -> list[list[str]]:
    """Header, one line per group and the total (``row`` says which): numbers as plain text."""
    lines = [["row", *by, *CSV_FIGURES]]
    for kind, row in [*(("group", r) for r in rows), ("total", total)]:
        key = list(row.key) if kind == "group" else [""] * len(by)
        lines.append([kind, *key, usd_text(row.spend_nanos), str(row.events), str(row.input_tokens),
                      str(row.output_tokens), str(row.outcomes),
                      *(str(row.by_kind[k]) for k in OUTCOME_KINDS),
                      usd_text(row.joined_nanos), usd_text(row.unjoined_nanos), _ratio(row.unjoined_share, 6),
                      _money(row.cost_per_outcome_nanos), usd_text(row.resolved_nanos),
                      _money(row.cost_per_resolved_nanos)])
    return lines


def _align_points(lines: Sequence[list[str]], column: int) -> None:
    """Pad exact amounts on the right so their decimal points line up once right-justified."""
    digits = max((len(line[column].partition(".")[2]) for line in lines), default=0)
    for line in lines:
        whole, point, fraction = line[column].partition(".")
        if line[column]:
            line[column] = whole + (point or (" " if digits else "")) + fraction.ljust(digits)


def table_text(by: Sequence[str], rows: Sequence[ShowbackRow], total: ShowbackRow) -> str:
    """An aligned table, groups then a TOTAL line: text left, numbers right, exact USD."""
    def cells(key: Sequence[str], row: ShowbackRow) -> list[str]:
        share = row.unjoined_share
        return [*key, usd_text(row.spend_nanos), f"{row.events:,}", f"{row.input_tokens:,}",
                f"{row.output_tokens:,}", f"{row.outcomes:,}",
                *(f"{row.by_kind[k]:,}" for k in OUTCOME_KINDS),
                _money(row.cost_per_outcome_nanos), _money(row.cost_per_resolved_nanos),
                "" if share is None else f"{float(share):.1%}"]

    header = [*by, *TABLE_FIGURES]
    body = [cells(row.key, row) for row in rows]
    footer = cells(["TOTAL", *[""] * (len(by) - 1)], total)
    for column, name in enumerate(header):
        if name in _MONEY_COLUMNS:
            _align_points([*body, footer], column)
    widths = [max(len(line[i]) for line in [header, *body, footer]) for i in range(len(header))]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) if i < len(by) else v.rjust(w)
                         for i, (v, w) in enumerate(zip(values, widths))).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(b) for b in body), rule, line(footer)])


def _stderr_summary(showback: Showback, records: int, bad_events: _Bad, bad_outcomes: _Bad,
                    with_outcomes: bool) -> None:
    stats = showback.stats
    click.echo(f"events: {records:,} records read, {stats.events:,} counted in the period, "
               f"{stats.outside_period:,} outside it, {stats.duplicates:,} duplicates, "
               f"{bad_events.summary()}",
               err=True)
    for example in bad_events.examples:
        click.echo(example, err=True)
    if not with_outcomes:
        return
    lonely = showback.unjoined_outcomes()
    shown = ", ".join(f"{o.tenant_id}/{o.business_outcome_id}" for o in lonely[:_EXAMPLES])
    click.echo(f"outcomes: {stats.outcomes:,} kept, {stats.outcome_duplicates:,} duplicates, "
               f"{bad_outcomes.summary()}; {len(lonely):,} stamped in the period joined no event"
               + (f" ({shown}{', ...' if len(lonely) > _EXAMPLES else ''})" if lonely else ""), err=True)
    for example in bad_outcomes.examples:
        click.echo(example, err=True)


@report_group.command("showback")
@click.argument("events", nargs=-1, required=True)
@click.option("--period", required=True, callback=_parse_period, metavar="PERIOD",
              help=f"The period: {PERIOD_HELP}.")
@click.option("--outcomes", "outcomes", multiple=True, metavar="FILE",
              help="Outcome records (JSONL, JSONL.gz, CSV, Parquet) to join for cost per outcome; "
                   "repeatable.")
@click.option("--by", default=",".join(DEFAULT_BY), show_default=True, callback=_parse_by,
              help=f"Comma-separated grouping, from: {', '.join(SHOWBACK_DIMENSIONS)}.")
@click.option("--rules", default=None,
              help="Rules directory (or file) whose tenants: section gives time zones.")
@click.option("--pricebook", default=None, help="Pricebook YAML (default: the bundled illustrative one).")
@click.option("--csv", "csv_out", default=None, type=click.Path(dir_okay=False),
              help="Also write the rows as CSV here.")
@click.option("--from", "start", default=None,
              help="kafka:// inputs: first record, an offset or an ISO time of the record (default: the oldest kept).")
@click.option("--to", "end", default=None,
              help="kafka:// inputs: end of the range, exclusive (default: the log end when the report starts).")
@click.option("--progress/--no-progress", default=True, help="Progress on stderr.")
def showback_command(events: tuple[str, ...], period: ReportPeriod, outcomes: tuple[str, ...],
                     by: tuple[str, ...], rules: str | None, pricebook: str | None, csv_out: str | None,
                     start: str | None, end: str | None, progress: bool) -> None:
    """Spend of PERIOD by business unit, cost center, use case and model, with cost per outcome,
    from EVENTS (JSONL, JSONL.gz, CSV, Parquet, - for stdin, or kafka://TOPIC for the live cost
    topic, whose bridged outcomes join too). Each event falls in the period by its tenant's local
    calendar. Definitions: docs/showback.md."""
    if (start or end) and not any(path.startswith("kafka://") for path in events + outcomes):
        raise ConfigError("--from and --to apply to kafka://TOPIC inputs only")
    showback = Showback(period, _zone_lookup(rules))
    ingest = _make_ingest(pricebook)
    event_sources = _open(events, start, end)
    try:
        outcome_sources = _open(outcomes, start, end)
    except BaseException:
        _close(event_sources)
        raise
    bad_events, bad_outcomes = _Bad(), _Bad()
    try:
        _read_outcomes(outcome_sources, showback, bad_outcomes)  # first, though the join works in any order
        sizes = [source.total_bytes for source in event_sources]
        meter = _Progress(progress, None if None in sizes else sum(sizes))
        records = _read_events(event_sources, showback, ingest, bad_events, meter)
        meter.finish()
    finally:
        _close(event_sources + outcome_sources)
    rows, total = showback.rows(by), showback.total()
    _stderr_summary(showback, records, bad_events, bad_outcomes, bool(outcomes))
    click.echo(f"showback {period.text} ({period.kind}, each tenant's local calendar) by {', '.join(by)}\n")
    click.echo(table_text(by, rows, total))
    if csv_out:
        try:
            with Path(csv_out).open("w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerows(csv_rows(by, rows, total))
        except OSError as exc:
            raise ConfigError(f"cannot write {csv_out}: {exc.strerror}") from None
        click.echo(f"\nCSV written to {csv_out}", err=True)
