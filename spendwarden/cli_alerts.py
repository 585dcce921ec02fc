"""``spendwarden alerts route|routes|check`` and ``spendwarden silence add|list|expire``.

The first three read the routing file only (like ``amtool config routes``): where would this
alert go, what does the tree look like, does the file load. Silences live in Redis (the one
in SPENDWARDEN_REDIS_URL), where every router reads them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import click

from spendwarden.exceptions import ConfigError, RuleFileError
from spendwarden.streams.alerting.config import RoutingConfig, default_routing, load_routing, parse_duration
from spendwarden.streams.alerting.tree import CompiledRoute, compile_tree, format_duration, group_key

T = TypeVar("T")


def parse_labels(given: tuple[str, ...]) -> dict[str, str]:
    """``tenant=acme,severity=high`` (one or more --labels) as a dict; ConfigError on anything else."""
    from spendwarden.streams.alerting.tree import LABEL_NAME

    labels: dict[str, str] = {}
    for text in given:
        for pair in (p.strip() for p in text.split(",")):
            if not pair:
                continue
            name, sep, value = pair.partition("=")
            name = name.strip()
            if not sep or not LABEL_NAME.match(name):
                raise ConfigError(f"--labels {pair!r}: write name=value[,name=value...]")
            labels[name] = value.strip().strip('"')
    return labels


def _routing(config: Optional[Path]) -> tuple[RoutingConfig, str]:
    """--config, else the routing_file setting, else the default routing; and which it was."""
    if config is None:
        from spendwarden.settings import load_settings

        config = load_settings().routing_file
    if config is None:
        return default_routing(), "the default routing (no routing_file set): every alert to 'log'"
    return load_routing(config), str(config)


def _timers(route: CompiledRoute) -> str:
    return (f"group_wait={format_duration(route.group_wait_s)} group_interval={format_duration(route.group_interval_s)}"
            f" repeat_interval={format_duration(route.repeat_interval_s)}")


def _group_by(route: CompiledRoute) -> str:
    return "[...]" if route.group_by_all else "[" + ",".join(route.group_by) + "]"


@click.group("alerts")
def alerts_group() -> None:
    """Alert routing: test where an alert goes, show the routing tree, check a routing file."""


_config_option = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                              help="Routing file (default: the routing_file setting, else the default routing).")


@alerts_group.command("route")
@click.option("--labels", "labels", multiple=True, required=True, metavar="NAME=VALUE[,...]",
              help="The alert's labels, e.g. tenant=acme,rule=daily-burn,severity=high.")
@_config_option
@click.option("--silences", "check_silences", is_flag=True,
              help="Also say whether an active silence in Redis (SPENDWARDEN_REDIS_URL) mutes the alert.")
def alerts_route(labels: tuple[str, ...], config: Optional[Path], check_silences: bool) -> None:
    """Which routes and receivers an alert with these labels reaches (like `amtool config routes test`)."""
    routing, where = _routing(config)
    alert = parse_labels(labels)
    matched = compile_tree(routing).match(alert)
    click.echo(",".join(dict.fromkeys(route.receiver for route in matched)))
    for route in matched:
        line = f" (line {route.line})" if route.line else ""
        click.echo(f"  {route.path}{line}: receiver={route.receiver} group={group_key(route, alert)} {_timers(route)}")
    click.echo(f"from {where}", err=True)
    if check_silences:
        from spendwarden.streams.alerting.silences import silenced_by

        silence = silenced_by(alert, _redis(lambda store: store.list()), time.time())
        if silence is None:
            click.echo("not silenced")
        else:
            click.echo(f"silenced by {silence.id} ({silence.matchers_text}) until {_iso(silence.ends_at)} "
                       f"by {silence.created_by}: {silence.comment}")


@alerts_group.command("routes")
@_config_option
def alerts_routes(config: Optional[Path]) -> None:
    """The routing tree with inherited settings resolved (like `amtool config routes show`)."""
    routing, where = _routing(config)
    click.echo(f"# {where}")
    _print_tree(compile_tree(routing).root, "", True, True)


def _print_tree(route: CompiledRoute, prefix: str, last: bool, is_root: bool) -> None:
    matchers = "{" + ", ".join(str(m) for m in route.matchers) + "}" if route.matchers else "{}  (every alert)"
    head = "" if is_root else ("└── " if last else "├── ")
    extra = "  continue" if route.continue_matching else ""
    click.echo(f"{prefix}{head}{route.path} {matchers}  receiver={route.receiver} group_by={_group_by(route)} "
               f"{_timers(route)}{extra}")
    child_prefix = prefix if is_root else prefix + ("    " if last else "│   ")
    for index, child in enumerate(route.routes):
        _print_tree(child, child_prefix, index == len(route.routes) - 1, False)


@alerts_group.command("check")
@click.argument("file", type=click.Path(path_type=Path))
def alerts_check(file: Path) -> None:
    """Load a routing file: OK, or its error as file:line:col (exit 1)."""
    try:
        routing = load_routing(file)
    except (RuleFileError, ConfigError) as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    tree = compile_tree(routing)
    click.echo(f"OK: {file} ({len(tree.routes())} routes, {len(routing.receivers)} receivers, "
               f"{len(routing.inhibit_rules)} inhibit rules)")


# ---------------------------------------------------------------- silences
def _redis(work: Callable[[Any], T]) -> T:
    """Run ``work(SilenceStore)`` on the configured Redis; its errors as one ConfigError line."""
    import redis

    from spendwarden.redis_client import redis_target, sync_client
    from spendwarden.settings import load_settings
    from spendwarden.streams.alerting.silences import SilenceStore

    target = redis_target(load_settings())
    client = sync_client(target, timeout_s=5.0)
    try:
        return work(SilenceStore(client))
    except redis.RedisError as exc:
        raise ConfigError(f"Redis at {target.where}: {type(exc).__name__} {str(exc)[:200]}") from None
    finally:
        client.close()


def _iso(epoch: float) -> str:
    from spendwarden.streams.periods import iso_utc

    return iso_utc(epoch)


@click.group("silence")
def silence_group() -> None:
    """Silences: mute alerts matching some labels for a while (kept in Redis, seen by every router)."""


@silence_group.command("add")
@click.argument("matchers", nargs=-1, required=True)
@click.option("--for", "duration", required=True, help="How long, e.g. 30m, 2h, 1d.")
@click.option("--comment", required=True, help="Why (shown in `silence list`).")
@click.option("--author", default=None, help="Who (default: SPENDWARDEN_OPERATOR or the login name).")
def silence_add(matchers: tuple[str, ...], duration: str, comment: str, author: Optional[str]) -> None:
    """Silence alerts matching all MATCHERS (name=value, name!=value, name=~regex, name!~regex)."""
    from spendwarden.cli_overrides import author_name
    from spendwarden.streams.alerting.silences import new_silence

    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise ConfigError(f"--for: {exc}") from None
    who = author_name(author)
    new_silence(matchers, seconds, comment, who, time.time())  # checked before connecting
    silence = _redis(lambda store: store.add(matchers, seconds, comment, who))
    click.echo(silence.id)
    click.echo(f"silenced {silence.matchers_text} until {_iso(silence.ends_at)} by {silence.created_by}", err=True)


@silence_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Also expired silences (kept for 5 days).")
def silence_list(show_all: bool) -> None:
    """Active and pending silences, ending soonest first."""
    now = time.time()
    silences = _redis(lambda store: store.list(include_expired=show_all, now=now))
    if not silences:
        click.echo("no silences" if show_all else "no active silences")
        return
    rows = [("ID", "STATE", "MATCHERS", "ENDS", "COMMENT", "AUTHOR")]
    rows += [(s.id, s.state(now), s.matchers_text, _iso(s.ends_at), s.comment, s.created_by) for s in silences]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])


@silence_group.command("expire")
@click.argument("silence_id", metavar="ID")
def silence_expire(silence_id: str) -> None:
    """End silence ID now."""
    silence = _redis(lambda store: store.expire(silence_id))
    click.echo(f"expired {silence.id} ({silence.matchers_text})")
