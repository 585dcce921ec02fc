"""``spendwarden override set|list|clear``: a person's decision, written to the overrides topic.

Every worker follows that topic and applies the override to the tenant's Redis hash within a
tick; the record is also the audit trail (who, why, when, until). See docs/overrides.md.
"""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import time
from typing import Any, Optional

import click

from spendwarden.exceptions import ConfigError
from spendwarden.streams.overrides import Override, OverrideError, parse_duration, scope_key
from spendwarden.streams.periods import iso_utc

SCOPE_NAMES = {"tenant": "tenant_id", "tenant_id": "tenant_id", "use_case": "use_case_id",
               "use_case_id": "use_case_id", "model": "model"}


def parse_scope(pairs: tuple[str, ...]) -> dict[str, str]:
    """``tenant=acme use_case=x model=m`` as Override fields; ConfigError on anything else."""
    scope: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in SCOPE_NAMES or not value:
            raise ConfigError(f"{pair!r}: scope is given as tenant=ID [use_case=ID] [model=NAME]")
        if SCOPE_NAMES[name] in scope:
            raise ConfigError(f"{pair!r}: {SCOPE_NAMES[name].removesuffix('_id')} is given twice in the scope")
        scope[SCOPE_NAMES[name]] = value
    if "tenant_id" not in scope:
        raise ConfigError("a scope needs tenant=ID")
    return scope


def author_name(given: Optional[str]) -> str:
    """Who sets the override: --author, else SPENDWARDEN_OPERATOR, else the login name."""
    if given:
        return given
    if os.environ.get("SPENDWARDEN_OPERATOR"):
        return os.environ["SPENDWARDEN_OPERATOR"]
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        raise ConfigError("cannot tell who you are: pass --author or set SPENDWARDEN_OPERATOR") from None


def _connection() -> tuple[str, str, dict[str, Any]]:
    from spendwarden.kafka_security import aiokafka_options
    from spendwarden.settings import load_settings

    settings = load_settings()
    if not settings.kafka_bootstrap:
        raise ConfigError("set SPENDWARDEN_KAFKA_BOOTSTRAP (host:port) to say which Kafka holds the overrides")
    return settings.kafka_bootstrap, settings.overrides_topic, aiokafka_options(settings)


def _run(coro: Any) -> Any:
    from aiokafka.errors import KafkaError

    try:
        return asyncio.run(coro)
    except OverrideError as exc:
        raise ConfigError(str(exc)) from None
    except KafkaError as exc:
        raise ConfigError(f"Kafka: {type(exc).__name__} {str(exc)[:200]}") from None


@click.group("override")
def override_group() -> None:
    """Manual overrides: block, unblock or degrade a scope for a while, over whatever rules decide."""


@override_group.command("set")
@click.argument("scope", nargs=-1, required=True)
@click.option("--block", is_flag=True, help="Refuse calls of the scope.")
@click.option("--unblock", is_flag=True, help="Lift what the rules decided on the scope.")
@click.option("--degrade", "degrade_to", metavar="MODEL", default=None, help="Route the scope to MODEL (L1).")
@click.option("--max-output-tokens", type=int, default=None, help="With --degrade: cap answers at this many tokens.")
@click.option("--for", "duration", required=True, help="How long, e.g. 30m, 2h, 1d (at most 90d).")
@click.option("--reason", required=True, help="Why; shown to gateways' callers and in the audit trail.")
@click.option("--tiers", default="low,medium,high", show_default=True,
              help="Risk tiers covered (comma-separated).")
@click.option("--author", default=None, help="Who decides (default: SPENDWARDEN_OPERATOR or the login name).")
def override_set(scope: tuple[str, ...], block: bool, unblock: bool, degrade_to: Optional[str],
                 max_output_tokens: Optional[int], duration: str, reason: str, tiers: str,
                 author: Optional[str]) -> None:
    """Override SCOPE (tenant=ID [use_case=ID] [model=NAME]) with exactly one of
    --block, --unblock or --degrade MODEL."""
    given = [flag for flag, on in (("--block", block), ("--unblock", unblock), ("--degrade", degrade_to is not None))
             if on]
    if len(given) != 1:
        raise ConfigError("say exactly one of --block, --unblock or --degrade MODEL"
                          + (f" (given: {' '.join(given)})" if given else ""))
    action = "block" if block else "unblock" if unblock else "degrade"
    now = time.time()
    seconds = _run_parse(duration)
    try:
        override = Override(
            **parse_scope(scope), action=action, model_alias=degrade_to,
            max_output_tokens=max_output_tokens, reason=reason, author=author_name(author),
            tiers=tuple(t.strip() for t in tiers.split(",") if t.strip()), created_at=now, expires_at=now + seconds)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"override: {_first_error(exc)}") from None
    bootstrap, topic, options = _connection()
    replaced = _run(_replace(bootstrap, topic, override, options))
    click.echo(f"override set: {override.action} {override.scope_text} tiers={','.join(override.tiers)} "
               f"until {iso_utc(override.expires_at)} by {override.author}")
    if replaced is not None:
        click.echo(f"replaces the active {replaced.action} on {replaced.scope_text} "
                   f"(tiers {','.join(replaced.tiers)}) set by {replaced.author}")
    if override.covers_high_risk and override.action != "unblock":
        click.echo("note: this override covers high-risk traffic; its verdict says a person decided so")


async def _replace(bootstrap: str, topic: str, override: Override,
                   options: dict[str, Any]) -> Optional[Override]:
    """Send the override; return the active one on its scope it replaces. Knowing that needs
    Read on the topic: without it (or when reading fails) a warning says so and the override is
    sent all the same."""
    from aiokafka.errors import KafkaError

    from spendwarden.streams.override_feed import read_book, send

    current = None
    try:
        book, _ = await read_book(bootstrap, topic, options, timeout_s=READ_BEFORE_SET_S)
        current = book.get(override.scope_key)
    except (OverrideError, KafkaError) as exc:
        click.echo(f"warning: could not read {topic} to tell what this override replaces: "
                   f"{type(exc).__name__} {str(exc)[:200]}", err=True)
    await send(bootstrap, topic, override, options)
    return current if current is not None and current.active(time.time()) else None


READ_BEFORE_SET_S = 5.0


@override_group.command("clear")
@click.argument("scope", nargs=-1, required=True)
@click.option("--reason", required=True, help="Why the override ends early (kept in the audit trail).")
@click.option("--author", default=None, help="Who decides (default: SPENDWARDEN_OPERATOR or the login name).")
def override_clear(scope: tuple[str, ...], reason: str, author: Optional[str]) -> None:
    """End the override on SCOPE now (its record stays, marked cleared, for the audit trail)."""
    wanted = parse_scope(scope)
    key = scope_key(wanted["tenant_id"], wanted.get("use_case_id"), wanted.get("model"))
    bootstrap, topic, options = _connection()
    from spendwarden.streams.override_feed import read_book, send

    book, _ = _run(read_book(bootstrap, topic, options))
    current = book.get(key)
    now = time.time()
    if current is None or not current.active(now):
        raise ConfigError(f"no override in force on {' '.join(scope)} (see `spendwarden override list --all`)")
    cleared = current.model_copy(update={"cleared_by": author_name(author), "cleared_at": now, "clear_reason": reason})
    _run(send(bootstrap, topic, cleared, options))
    click.echo(f"override cleared: {current.action} {current.scope_text} by {cleared.cleared_by}")


@override_group.command("list")
@click.argument("scope", nargs=-1)
@click.option("--all", "show_all", is_flag=True, help="Also expired and cleared overrides still on the topic.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def override_list(scope: tuple[str, ...], show_all: bool, as_json: bool) -> None:
    """Overrides in force (optionally only those of tenant=ID [use_case=ID] [model=NAME]), newest last."""
    wanted = parse_scope(scope) if scope else {}
    bootstrap, topic, options = _connection()
    from spendwarden.streams.override_feed import read_book

    book, problems = _run(read_book(bootstrap, topic, options))
    now = time.time()
    shown = [o for o in book.all() if all(getattr(o, name) == value for name, value in wanted.items())
             and (show_all or o.active(now))]
    for override in shown:
        if as_json:
            click.echo(json.dumps(dict(override.model_dump(exclude_none=True), state=_state(override, now))))
        else:
            click.echo(_line(override, now))
    if not shown and not as_json:
        click.echo("no overrides in force" if not show_all else "no overrides on the topic")
    for problem in problems:
        click.echo(f"warning: {problem}", err=True)


def _state(override: Override, now: float) -> str:
    if override.cleared_at is not None:
        return "cleared"
    return "active" if override.active(now) else "expired"


def _line(override: Override, now: float) -> str:
    text = (f"{_state(override, now):8} {override.action:8} {override.scope_text} tiers={','.join(override.tiers)} "
            f"until {iso_utc(override.expires_at)} by {override.author}: {override.reason}")
    if override.model_alias:
        text += f" (to {override.model_alias})"
    if override.cleared_at is not None:
        text += f" [cleared {iso_utc(override.cleared_at)} by {override.cleared_by}: {override.clear_reason}]"
    return text


def _run_parse(duration: str) -> float:
    try:
        return parse_duration(duration)
    except OverrideError as exc:
        raise ConfigError(f"--for: {exc}") from None


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        return f"{where}: {first['msg']}" if where else str(first["msg"])
    return str(exc)
