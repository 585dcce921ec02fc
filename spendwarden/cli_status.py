"""``spendwarden status tenant=ID [use_case=ID]``: a tenant's budgets, burn rates and forecasts,
asked of the worker that counts the tenant (its ``/status`` page)."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Optional

import click

from spendwarden.exceptions import ConfigError


def fetch_status(workers: list[str], tenant: str, use_case: Optional[str], timeout_s: float = 5.0) -> dict[str, Any]:
    """Ask each worker in turn; the one counting the tenant answers 200, the others 404."""
    query = {"tenant": tenant} | ({"use_case": use_case} if use_case else {})
    problems = []
    for base in workers:
        url = f"{base.rstrip('/')}/status?{urllib.parse.urlencode(query)}"
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 400:
                raise ConfigError(f"{base}: {exc.read()[:200].decode(errors='replace')}") from None
            if exc.code != 404:  # another worker may still count the tenant
                problems.append(f"{base} (HTTP {exc.code})")
        except (urllib.error.URLError, OSError) as exc:
            problems.append(f"{base} ({getattr(exc, 'reason', exc)})")
    where = f"; no answer from: {', '.join(problems)}" if problems else ""
    raise ConfigError(f"no worker asked counts tenant {tenant!r} (give every worker with --worker){where}")


def render(report: dict[str, Any]) -> str:
    """A table an operator reads at a glance (money rounded to cents; --json keeps exact text)."""
    rows = [("budget", "scope", "period", "spend", "limit", "used", "burn/h 1h", "burn/h 24h",
             "forecast end [80%]", "end/limit", "exhausts at", "method")]
    for b in report["budgets"]:
        f = b["forecast"]
        scope = ",".join(f"{k.removesuffix('_id')}={v}" for k, v in b["scope"].items() if k != "tenant_id") or "-"
        rows.append((
            b["budget"], scope, f"{b['period']} {b['period_id']}", _usd(b["spend_usd"]), _usd(b["limit_usd"]),
            "-" if b["used_ratio"] is None else f"{b['used_ratio']:.0%}", _usd(b["burn_1h_usd_per_hour"]),
            _usd(b["burn_24h_usd_per_hour"]), f"{_usd(f['end_usd'])} [{_usd(f['low_usd'])}-{_usd(f['high_usd'])}]",
            "-" if f["end_ratio"] is None else f"{f['end_ratio']:.0%}", b["exhausts_at"] or "-", f["method"]))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = [f"tenant {report['tenant']} at {report['at']} (rules {report['rules_version']})"]
    lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not report["budgets"]:
        lines.append("no spend counted for this tenant in the current periods or the last 8 days")
    return "\n".join(lines)


def _usd(text: Optional[str]) -> str:
    return "-" if text is None else f"${float(text):,.2f}"


@click.command("status")
@click.argument("scope", nargs=-1, required=True)
@click.option("--worker", "workers", multiple=True,
              help="Worker base URL (repeat for several); default http://SPENDWARDEN_HTTP_HOST:SPENDWARDEN_HTTP_PORT.")
@click.option("--json", "as_json", is_flag=True, help="The worker's answer as JSON (exact dollar text).")
def status_command(scope: tuple[str, ...], workers: tuple[str, ...], as_json: bool) -> None:
    """Budgets of SCOPE (tenant=ID [use_case=ID]): spend, limit, burn rates, forecast, exhaustion."""
    from spendwarden.cli_overrides import parse_scope

    wanted = parse_scope(scope)
    if "model" in wanted:
        raise ConfigError("status takes tenant=ID [use_case=ID]")
    if not workers:
        from spendwarden.settings import load_settings

        settings = load_settings()
        workers = (f"http://{settings.http_host}:{settings.http_port}",)
    report = fetch_status(list(workers), wanted["tenant_id"], wanted.get("use_case_id"))
    click.echo(json.dumps(report, indent=2) if as_json else render(report))
