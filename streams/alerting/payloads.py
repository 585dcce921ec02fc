"""What each receiver is sent: pure functions from a ``Notification`` to a JSON body, no I/O.

* ``webhook_body``: Alertmanager's webhook JSON (version 4), so any existing Alertmanager
  webhook consumer takes ours unchanged; ``sign`` / ``signature_headers`` sign it.
* ``slack_message``: Block Kit, truncated to Slack's limits (a message over them is refused).
* ``pagerduty_event``: Events API v2, one incident per group (``dedup_key``).
* ``alertmanager_alerts``: the body of Alertmanager API v2 ``POST /api/v2/alerts``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Optional
from urllib.parse import quote

from spendwarden.streams.alerting.model import Alert, Notification, epoch_of

ZERO_TIME = "0001-01-01T00:00:00Z"  # Go's zero time: Alertmanager's endsAt of a firing alert

# Slack Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
SLACK_MAX_BLOCKS = 50
SLACK_SECTION_TEXT = 3000
SLACK_MAX_FIELDS = 10
SLACK_FIELD_TEXT = 2000
SLACK_HEADER_TEXT = 150
SLACK_BUTTON_TEXT = 75
SLACK_URL = 3000
SLACK_MAX_ACTIONS = 25
SLACK_FULL_ALERTS = 5  # alerts shown with all their evidence; the rest are listed by one line each
FEW = 3  # contributors per kind and trace ids shown

PD_SUMMARY = 1024
PD_DETAILED_ALERTS = 10
_PD_SEVERITY = {"critical": "critical", "high": "error", "medium": "warning", "low": "info", "info": "info"}
_SEVERITY_ORDER = ["info", "low", "medium", "high", "critical"]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


# ---------------------------------------------------------------------------- webhook

def webhook_body(n: Notification, external_url: str, max_alerts: int = 0) -> dict[str, Any]:
    """Alertmanager's webhook message (notify/webhook ``Message``); ``max_alerts`` > 0 keeps the
    first N alerts and says in ``truncatedAlerts`` how many were left out. Status and common
    labels are those of the whole group, so truncation never turns a firing group resolved."""
    alerts = n.alerts[:max_alerts] if max_alerts > 0 else n.alerts
    return {
        "version": "4", "groupKey": n.group_key, "truncatedAlerts": len(n.alerts) - len(alerts),
        "status": n.status, "receiver": n.receiver, "groupLabels": dict(n.group_labels),
        "commonLabels": n.common_labels(), "commonAnnotations": n.common_annotations(),
        "externalURL": external_url,
        "alerts": [{"status": a.status, "labels": dict(a.labels), "annotations": dict(a.annotations),
                    "startsAt": rfc3339(a.starts_at), "endsAt": _ends_at(a, n.created_at),
                    "generatorURL": a.generator_url or "", "fingerprint": a.fingerprint} for a in alerts],
    }


def sign(key: bytes, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``timestamp + "." + body`` under ``key``.

    How a consumer verifies a request: take the ``X-Spendwarden-Timestamp`` header (Unix
    seconds, decimal ASCII) and the raw request body bytes as received (before any JSON
    parsing), compute ``hmac_sha256(key, timestamp.encode("ascii") + b"." + body).hexdigest()``
    and compare it, with a constant-time comparison, to ``X-Spendwarden-Signature`` minus its
    ``sha256=`` prefix; reject timestamps more than a few minutes from its own clock (replays).
    The same notification sent again has the same ``Idempotency-Key`` header.
    """
    return hmac.new(key, timestamp.encode("ascii") + b"." + body, hashlib.sha256).hexdigest()


def signature_headers(key: bytes, body: bytes, now: float) -> dict[str, str]:
    """``X-Spendwarden-Timestamp`` and ``X-Spendwarden-Signature: sha256=<hex>`` (scheme: ``sign``)."""
    timestamp = str(int(now))
    return {"X-Spendwarden-Timestamp": timestamp, "X-Spendwarden-Signature": "sha256=" + sign(key, timestamp, body)}


# ---------------------------------------------------------------------------- Slack

def slack_message(n: Notification, external_url: str, channel: Optional[str] = None) -> dict[str, Any]:
    """Block Kit message: header, the first few alerts with their evidence, a count of the rest,
    a context line and link buttons; always within Slack's limits, with a ``text`` fallback."""
    title = _title(n)
    emoji = ":white_check_mark:" if n.status == "resolved" else _SLACK_EMOJI.get(_max_severity(n), ":warning:")
    blocks: list[dict[str, Any]] = [{"type": "header", "text": _plain(f"{emoji} {n.status.upper()}: {title}",
                                                                      SLACK_HEADER_TEXT)}]
    for alert in n.alerts[:SLACK_FULL_ALERTS]:
        blocks.append(_section(_alert_line(alert)))
        fields = _alert_fields(alert)[:SLACK_MAX_FIELDS]
        if fields:
            blocks.append({"type": "section", "fields": [_mrkdwn(f, SLACK_FIELD_TEXT) for f in fields]})
        blocks.append({"type": "divider"})
    rest = n.alerts[SLACK_FULL_ALERTS:]
    if rest:
        lines = [f"…and {len(rest)} more alert{'s' if len(rest) > 1 else ''}:"]
        lines += [f"• {_esc(_alert_brief(a))}" for a in rest]
        blocks.append(_section("\n".join(lines)))
    firing = sum(a.status == "firing" for a in n.alerts)
    context = (f"spendwarden · receiver `{_esc(n.receiver)}` · {firing} firing, {len(n.alerts) - firing} resolved"
               f" · notification {n.sequence}")
    blocks.append({"type": "context", "elements": [_mrkdwn(context, SLACK_FIELD_TEXT)]})
    buttons = _buttons(n, external_url)
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:SLACK_MAX_ACTIONS]})
    message: dict[str, Any] = {"text": _cut(f"{n.status.upper()}: {title} ({firing} firing, "
                                            f"{len(n.alerts) - firing} resolved)", SLACK_SECTION_TEXT),
                               "blocks": blocks[:SLACK_MAX_BLOCKS]}
    if channel:
        message["channel"] = channel
    return message


_SLACK_EMOJI = {"critical": ":rotating_light:", "high": ":rotating_light:", "medium": ":warning:",
                "low": ":information_source:", "info": ":information_source:"}


def _alert_line(a: Alert) -> str:
    state = ":white_check_mark: *Resolved*" if a.status == "resolved" else ":fire: *Firing*"
    name = a.labels.get("alertname", "alert")
    summary = a.annotations.get("summary", "")
    text = f"{state} · *{_esc(name)}* ({_esc(a.labels.get('severity', ''))})"
    if summary:
        text += f"\n{_esc(summary)}"
    if a.status == "resolved" and a.ends_at:
        text += f"\nresolved at {_esc(a.ends_at)}"
    return text


def _alert_fields(a: Alert) -> list[str]:
    """Scope, actual vs expected, budget used, decision, contributors, traces, rule file, runbook."""
    ann, ev = a.annotations, a.evidence
    scope = [f"{k.replace('_', ' ')} `{_esc(a.labels[k])}`" for k in ("tenant", "use_case", "budget")
             if a.labels.get(k)]
    if a.labels.get("period") or ann.get("period_id"):
        scope.append(f"period `{_esc(' '.join(x for x in (a.labels.get('period'), ann.get('period_id')) if x))}`")
    fields = [f"*Scope*\n{' · '.join(scope) or 'global'}"]
    if ann.get("spend_usd"):
        figures = f"{_usd(ann['spend_usd'])} spent"
        if ann.get("expected_usd"):
            figures += f", {_usd(ann['expected_usd'])} expected by now"
        if ann.get("limit_usd"):
            figures += f", limit {_usd(ann['limit_usd'])}"
        fields.append(f"*Actual vs expected*\n{figures}")
    if ann.get("used_ratio"):
        try:
            fields.append(f"*Budget used*\n{float(ann['used_ratio']):.1%}")
        except ValueError:
            pass
    fields.append(f"*Decision*\n{_esc(_decision_text(ev.get('decision')))}")
    contributors = ev.get("contributors") or {}
    lines = []
    for kind, pairs in contributors.items():
        shown = ", ".join(f"{_esc(str(p[0]))} {_usd(str(p[1]))}" for p in (pairs or [])[:FEW] if len(p) >= 2)
        if shown:
            lines.append(f"{_esc(kind.replace('_', ' '))}: {shown}")
    if lines:
        fields.append("*Top contributors*\n" + "\n".join(lines))
    traces = [str(t) for t in (ev.get("sample_trace_ids") or [])[:FEW]]
    if traces:
        fields.append("*Sample traces*\n" + ", ".join(f"`{_esc(t)}`" for t in traces))
    if ann.get("rule_file"):
        fields.append(f"*Rule file*\n`{_esc(ann['rule_file'])}`")
    if ann.get("runbook_url") and len(ann["runbook_url"]) <= SLACK_URL:
        fields.append(f"*Runbook*\n<{_link_url(ann['runbook_url'])}|open the runbook>")
    return fields


def _decision_text(decision: Any) -> str:
    if not isinstance(decision, dict) or not decision:
        return "none (alert only)"
    text = f"{decision.get('level', '?')} ({decision.get('action', '?')})"
    if decision.get("model_alias"):
        text += f" → {decision['model_alias']}"
    return text


def _buttons(n: Notification, external_url: str) -> list[dict[str, Any]]:
    base = external_url.rstrip("/")
    links: list[tuple[str, str]] = []
    runbook = next((a.annotations["runbook_url"] for a in n.alerts if a.annotations.get("runbook_url")), None)
    if runbook:
        links.append(("Runbook", runbook))
    if base:
        silence = f"{base}/silences/new?matchers={quote(silence_matchers(n), safe='')}"
        links.append(("Silence", silence if len(silence) <= SLACK_URL else f"{base}/silences/new"))
    view = next((a.generator_url for a in n.alerts if a.generator_url), None) or base
    if view:
        links.append(("View in spendwarden", view))
    return [{"type": "button", "text": _plain(text, SLACK_BUTTON_TEXT), "url": url,
             "action_id": f"sw-{i}"} for i, (text, url) in enumerate(links) if len(url) <= SLACK_URL]


def silence_matchers(n: Notification) -> str:
    """The group's labels as an Alertmanager matcher list, ``{tenant="acme",rule="x"}``
    (the common labels when the group has none)."""
    labels = n.group_labels or n.common_labels()
    inner = ",".join(f'{k}="{_quote_value(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _quote_value(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text, SLACK_SECTION_TEXT)}


def _mrkdwn(text: str, limit: int) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": _cut(text, limit)}


def _plain(text: str, limit: int) -> dict[str, Any]:
    return {"type": "plain_text", "text": _cut(text, limit), "emoji": True}


def _esc(text: str) -> str:
    """Slack's mrkdwn escaping: &, < and > are control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link_url(url: str) -> str:
    """A URL safe inside Slack's ``<url|text>``: no ``>``, ``|`` or ``<`` left raw."""
    return url.replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


# ---------------------------------------------------------------------------- PagerDuty

def pagerduty_event(n: Notification, routing_key: str, external_url: str = "") -> dict[str, Any]:
    """Events API v2 body: ``trigger`` while any alert of the group fires, else ``resolve``.

    One ``dedup_key`` per group, so every repeat updates the same incident and the resolve
    closes it; ``external_url`` (spendwarden's own address) fills ``client_url`` and a link.
    """
    dedup_key = hashlib.sha256(n.group_key.encode()).hexdigest()
    if n.status == "resolved":
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": dedup_key}
    firing = [a for a in n.alerts if a.status == "firing"]
    first = firing[0]
    severity = _max_severity(n)
    event: dict[str, Any] = {
        "routing_key": routing_key, "event_action": "trigger", "dedup_key": dedup_key,
        "payload": {
            "summary": _cut(f"[{severity}] {_title(n)}", PD_SUMMARY), "source": "spendwarden",
            "severity": _PD_SEVERITY.get(severity, "warning"), "timestamp": rfc3339(first.starts_at),
            "component": first.labels.get("budget", "budget"), "group": first.labels.get("tenant", "global"),
            "class": first.labels.get("rule", first.labels.get("alertname", "")),
            "custom_details": {
                "firing": len(firing), "resolved": len(n.alerts) - len(firing), "group_labels": dict(n.group_labels),
                "alerts": [_pd_details(a) for a in n.alerts[:PD_DETAILED_ALERTS]],
                "alerts_not_shown": max(0, len(n.alerts) - PD_DETAILED_ALERTS),
            },
        },
        "client": "spendwarden",
    }
    links = []
    runbook = next((a.annotations["runbook_url"] for a in n.alerts if a.annotations.get("runbook_url")), None)
    if runbook:
        links.append({"href": runbook, "text": "Runbook"})
    view = first.generator_url or external_url
    if view:
        links.append({"href": view, "text": "View in spendwarden"})
    if links:
        event["links"] = links
    if external_url:
        event["client_url"] = external_url
    return event


def _pd_details(a: Alert) -> dict[str, Any]:
    ann, ev = a.annotations, a.evidence
    return {"status": a.status, "rule": a.labels.get("rule"), "tenant": a.labels.get("tenant"),
            "use_case": a.labels.get("use_case"), "budget": a.labels.get("budget"),
            "period_id": ann.get("period_id"), "actual_usd": ann.get("spend_usd"),
            "expected_usd": ann.get("expected_usd"), "limit_usd": ann.get("limit_usd"),
            "used_ratio": ann.get("used_ratio"), "contributors": ev.get("contributors") or {},
            "sample_trace_ids": list(ev.get("sample_trace_ids") or [])[:FEW * 3],
            "decision": ev.get("decision"), "rule_file": ann.get("rule_file")}


# ---------------------------------------------------------------------------- Alertmanager

def alertmanager_alerts(n: Notification, hold_s: float, now: float) -> list[dict[str, Any]]:
    """Body of Alertmanager's ``POST /api/v2/alerts``.

    A firing alert gets ``endsAt = now + hold_s``: Alertmanager resolves an alert by itself once
    endsAt passes, so it stays firing only until our next repeat re-posts it. A resolved alert
    gets its resolved time (or ``now``). Label and annotation names are made valid
    (``[a-zA-Z_][a-zA-Z0-9_]*``), since Alertmanager refuses the whole batch otherwise.
    """
    body = []
    for a in n.alerts:
        starts = epoch_of(a.starts_at)
        if a.status == "firing":
            ends = max(now + hold_s, starts + 1)
        else:
            ends = max(epoch_of(a.ends_at) if a.ends_at else now, starts)
        item: dict[str, Any] = {"labels": sanitise_labels(a.labels), "annotations": sanitise_labels(a.annotations),
                                "startsAt": rfc3339(starts), "endsAt": rfc3339(ends)}
        if a.generator_url:
            item["generatorURL"] = a.generator_url
        body.append(item)
    return body


def sanitise_labels(labels: dict[str, str]) -> dict[str, str]:
    """Valid Alertmanager label names (others' characters become ``_``), empty values dropped;
    a name that already was valid wins over one that only became equal to it."""
    out: dict[str, str] = {}
    for name in sorted(labels, key=lambda k: not _LABEL_NAME.match(k)):
        value = labels[name]
        if value == "":
            continue
        clean = name if _LABEL_NAME.match(name) else re.sub(r"[^a-zA-Z0-9_]", "_", name)
        if not clean or clean[0].isdigit():
            clean = "_" + clean
        out.setdefault(clean, value)
    return out


# ---------------------------------------------------------------------------- shared

def rfc3339(value: str | float) -> str:
    """RFC 3339 UTC text (millisecond precision) of ISO 8601 text with a zone or epoch seconds."""
    ts = epoch_of(value) if isinstance(value, str) else float(value)
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")




def _ends_at(a: Alert, fallback: float) -> str:
    if a.status == "firing":
        return ZERO_TIME
    return rfc3339(a.ends_at) if a.ends_at else rfc3339(fallback)


def _max_severity(n: Notification) -> str:
    """Highest severity among firing alerts (all alerts when none fires)."""
    pool = [a for a in n.alerts if a.status == "firing"] or n.alerts
    found = [a.labels.get("severity", "medium") for a in pool]
    known = [s for s in found if s in _SEVERITY_ORDER]
    if known:
        return max(known, key=_SEVERITY_ORDER.index)
    return found[0] if found else "medium"


def _title(n: Notification) -> str:
    """One alert: its summary (or name); a group: the common alert name and the count."""
    if len(n.alerts) == 1:
        a = n.alerts[0]
        return a.annotations.get("summary") or a.labels.get("alertname", "alert")
    name = n.group_labels.get("alertname") or n.common_labels().get("alertname") or "spendwarden alerts"
    tenant = n.group_labels.get("tenant") or n.common_labels().get("tenant")
    return f"{name}{' · ' + tenant if tenant else ''} ({len(n.alerts)} alerts)"


def _alert_brief(a: Alert) -> str:
    parts = [a.labels.get("alertname", "alert"), a.labels.get("tenant", ""), a.labels.get("use_case", "")]
    used = a.annotations.get("used_ratio")
    text = " · ".join(p for p in parts if p)
    if used:
        try:
            text += f" ({float(used):.0%} used)"
        except ValueError:
            pass
    return text + (" (resolved)" if a.status == "resolved" else "")


def _usd(text: str) -> str:
    try:
        amount = Decimal(text)
    except (InvalidOperation, ValueError):
        return text
    if amount != 0 and abs(amount) < Decimal("0.01"):
        return f"${amount}"
    return f"${amount:,.2f}"
