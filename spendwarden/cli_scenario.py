"""``spendwarden scenario NAME --days N --seed S > events.jsonl``: labelled synthetic traffic.

Events go to stdout as JSONL (what ``spendwarden replay`` reads); the labelled windows go to
``--labels`` (default ``labels.json``), written before the first event so a run cut short
still says what it was. Progress goes to stderr once per simulated day.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import click
import orjson

from spendwarden.exceptions import ConfigError
from spendwarden.replay.plan import SCENARIOS, WARMUP_DAYS

DEFAULT_START = "2026-11-02T00:00:00Z"  # a Monday, after the northern DST changes


def write_events(events: Iterable[dict[str, Any]], out: IO[bytes], progress: bool) -> int:
    """Write events as JSON lines in chunks; one progress line per simulated day on stderr."""
    count, day, began = 0, "", time.monotonic()
    chunk: list[bytes] = []
    tty = sys.stderr.isatty()
    for event in events:
        chunk.append(orjson.dumps(event))
        count += 1
        if len(chunk) == 4096:
            out.write(b"\n".join(chunk) + b"\n")
            chunk.clear()
        if progress and event["ts"][:10] != day:
            if day:
                line = f"scenario: {day} done, {count:,} events, {time.monotonic() - began:,.0f} s"
                click.echo(f"\r{line}" if tty else line, err=True, nl=not tty)
            day = event["ts"][:10]
    if chunk:
        out.write(b"\n".join(chunk) + b"\n")
    out.flush()
    if progress and tty:
        click.echo("", err=True)
    return count


@click.command("scenario")
@click.argument("name", type=click.Choice(SCENARIOS), metavar="NAME")
@click.option("--days", type=float, default=30.0, show_default=True, help="Simulated days (fractions allowed).")
@click.option("--seed", type=int, required=True, help="Same seed, same bytes.")
@click.option("--tenants", type=int, default=50, show_default=True, help="Tenants, Zipf-sized (t00 the biggest).")
@click.option("--start", default=DEFAULT_START, show_default=True,
              help="First simulated minute (ISO 8601, UTC if no zone).")
@click.option("--labels", "labels_path", default="labels.json", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the labelled windows (JSON).")
@click.option("--warmup-days", type=float, default=WARMUP_DAYS, show_default=True,
              help="Days with no window at the start (detectors' warm-up).")
@click.option("--per-kind", type=int, default=None,
              help="Windows per kind (default: one per 10 tenants, at least 1).")
@click.option("--peak", type=float, default=None,
              help="The biggest tenant's events per hour at a weekday's peak (default 2000).")
@click.option("--outcomes", is_flag=True, default=False,
              help="End every trace with an outcome record (on anyway for quality-regression and outcomes).")
@click.option("--traced-share", type=float, default=None,
              help="Share of use cases also emitted as origin: trace copies (default 0; 0.2 for outcomes).")
@click.option("--progress/--no-progress", default=True, help="One line per simulated day on stderr.")
def scenario_command(name: str, days: float, seed: int, tenants: int, start: str, labels_path: str,
                     warmup_days: float, per_kind: int | None, peak: float | None, outcomes: bool,
                     traced_share: float | None, progress: bool) -> None:
    """Write scenario NAME's cost events to stdout (JSONL) and its labelled windows to --labels.

    NAME is mixed (every kind, per_kind of each, across tenants), one kind alone (agent-loop,
    prompt-bloat, misroute, cache-collapse, retry-storm, slow-leak, growth, surge,
    quality-regression, gateway-silent), outcomes (quality-regression, gateway-silent and growth,
    with outcome records and traced use cases) or quiet. Growth and surge windows are labelled
    is_incident: false. See docs/scenarios.md.
    """
    from spendwarden.replay.plan import events, labels, plan
    from spendwarden.replay.tenants import zipf_tenants

    if sys.stdout.isatty():
        raise ConfigError("stdout is a terminal; redirect the events: "
                          f"spendwarden scenario {name} ... > events.jsonl")
    if tenants < 1:
        raise ConfigError("--tenants must be at least 1")
    if per_kind is not None and per_kind < 1:
        raise ConfigError("--per-kind must be at least 1")
    try:
        first = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"--start {start!r} is not an ISO 8601 time such as {DEFAULT_START}") from None
    if first.tzinfo is None:
        first = first.replace(tzinfo=timezone.utc)
    if peak is not None and peak <= 0:
        raise ConfigError("--peak must be positive")
    profiles = zipf_tenants(tenants, seed) if peak is None else zipf_tenants(tenants, seed, peak)
    result = plan(name, profiles, seed=seed, start=first, days=days, warmup_days=warmup_days, per_kind=per_kind,
                  outcomes=outcomes, traced_share=traced_share)
    Path(labels_path).write_bytes(orjson.dumps(labels(result, profiles), option=orjson.OPT_INDENT_2) + b"\n")
    for note in result.notes:
        click.echo(f"scenario: note: {note}", err=True)
    began = time.monotonic()
    count = write_events(events(result, profiles), sys.stdout.buffer, progress)
    incidents = sum(w.is_incident for w in result.windows)
    click.echo(f"scenario {name} seed {seed}: {count:,} events, {days:g} days x {tenants} tenants in "
               f"{time.monotonic() - began:,.1f} s; {len(result.windows)} windows ({incidents} incidents) "
               f"in {labels_path}", err=True)
