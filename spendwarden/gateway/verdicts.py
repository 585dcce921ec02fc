"""What a gateway does with the decision hash it read (contract v1, docs/redis.md). Pure: no I/O.

This module and the client beside it import only redis-py and the standard library, so a gateway
can vendor ``spendwarden/gateway/`` without the rest of spendwarden (no orjson, no pydantic).
The rules it applies:

* the strictest verdict found wins (own use case, tenant-wide ``*``, and their model-specific
  fields), by ``L0 < L1 < L2 < L3 < L4 < throttle < block``; no verdict at all means allow;
* past ``_expires_at`` nobody keeps the hash fresh, and past its own ``expires_at`` a verdict is
  about an ended period: in both cases the tenant's stale policy (``_on_stale``: ``open`` allows,
  ``closed`` refuses) decides, never the old verdict alone;
* an unreadable verdict is treated like stale state rather than guessed at.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Mapping, Optional, Union

Action = Literal["allow", "degrade", "throttle", "block"]
OnStale = Literal["open", "closed"]

EXPIRES_FIELD = "_expires_at"
ON_STALE_FIELD = "_on_stale"
RISK_TIERS = ("low", "medium", "high")
LEVEL_ORDER: dict[str, int] = {"L0": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4, "throttle": 5, "block": 6}
STALE_LEVEL = "stale"
# A refused call on stale state is retried soon: the worker may be back within seconds.
STALE_RETRY_AFTER_S = 5.0
# Throttle with only a token rate: a minute is the window the rate is counted over.
THROTTLE_DEFAULT_RETRY_S = 60.0

Raw = Union[bytes, str, None]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one call. ``level`` keeps the contract level (or ``stale``) so a gateway
    can tell an L2 spill from an L3 fallback although both are ``degrade``."""

    action: Action
    level: str
    model_alias: Optional[str] = None
    max_output_tokens: Optional[int] = None
    rate: Optional[int] = None  # requests per minute (throttle)
    tokens_per_minute: Optional[int] = None
    reason: str = ""
    retry_after: Optional[float] = None  # seconds, for a Retry-After header
    rule: Optional[str] = None
    stale: bool = False
    review: bool = False  # L4 hold: let the call through, flag it for a human

    @property
    def allowed(self) -> bool:
        """Whether the call may go ahead (possibly degraded); False for throttle and block."""
        return self.action in ("allow", "degrade")


def normalise_tier(tier: Optional[str]) -> str:
    """``low``/``medium``/``high`` in any case; None or anything else is ``high``: an unknown
    risk tier must never fall under a laxer tier's decisions."""
    if isinstance(tier, str):
        value = tier.strip().lower()
        if value in RISK_TIERS:
            return value
    return "high"


def verdict_fields(use_case: str, tier: str, model: Optional[str] = None) -> tuple[str, ...]:
    """The HMGET fields for one call, verdicts first (own, tenant-wide, then per model), then metadata."""
    scopes = [use_case] if use_case == "*" else [use_case, "*"]
    fields = [f"{scope}:{tier}" for scope in scopes]
    if model:
        fields += [f"{scope}:{tier}:{model}" for scope in scopes]
    return (*fields, EXPIRES_FIELD, ON_STALE_FIELD)


def stale_policy(values: Mapping[str, Raw], default: str) -> str:
    """The tenant's ``_on_stale`` when the worker wrote a valid one, else ``default``."""
    raw = _text(values.get(ON_STALE_FIELD))
    return raw if raw in ("open", "closed") else default


def stale_verdict(policy: str, why: str, tenant: str = "") -> Verdict:
    """The answer when the decisions cannot be trusted: ``open`` allows, ``closed`` refuses."""
    if policy == "closed":
        who = f"tenant {tenant}" if tenant else "this tenant"
        return Verdict("block", STALE_LEVEL, reason=f"decisions for {who} are stale ({why}); on_stale closed",
                       retry_after=STALE_RETRY_AFTER_S, stale=True)
    return Verdict("allow", STALE_LEVEL, reason=f"decisions are stale ({why}); on_stale open", stale=True)


def decide(values: Mapping[str, Raw], tier: Optional[str], now: float, on_stale_default: str,
           *, tenant: str = "") -> Verdict:
    """The verdict for one call from its HMGET answer (field -> raw value, None when absent).

    Every field not starting with ``_`` is a verdict; ties go to the first field in ``values``
    (the caller's own use case before the tenant-wide one).
    """
    policy = stale_policy(values, on_stale_default)
    expires_raw = _text(values.get(EXPIRES_FIELD))
    try:
        expires_at = float(expires_raw) if expires_raw is not None else None
    except ValueError:
        expires_at = None
    if expires_at is None or not math.isfinite(expires_at):
        return stale_verdict(policy, "no heartbeat (_expires_at missing)", tenant)
    if expires_at <= now:
        return stale_verdict(policy, f"heartbeat expired {now - expires_at:.1f} s ago", tenant)

    best: Optional[_Parsed] = None
    best_rank = -1
    stale_why: Optional[str] = None
    for name, raw in values.items():
        if raw is None or name[:1] == "_":
            continue
        parsed = _parsed(raw)
        if parsed is None:
            stale_why = stale_why or f"unreadable verdict in {name}"
            continue
        ends = parsed[3]
        if ends is not None and ends <= now:
            stale_why = stale_why or f"verdict {name} expired at {parsed[2].get('expires_at')}"
            continue
        if parsed[1] > best_rank:
            best, best_rank = parsed, parsed[1]
    chosen = None
    if best is not None:
        chosen = best[4] if best[4] is not None else _map(best[0], best[2], best[3], now)
    if stale_why is not None:
        fallback = stale_verdict(policy, stale_why, tenant)
        # A valid verdict stricter than the policy's answer still counts (an expired L1 must not
        # lift a valid block); a valid block beats a closed policy's block for its Retry-After.
        fallback_rank = LEVEL_ORDER["block"] if fallback.action == "block" else LEVEL_ORDER["L0"]
        if best_rank <= fallback_rank and not (chosen is not None and chosen.action == "block"):
            return fallback
    if chosen is None:
        return _NO_DECISION[normalise_tier(tier)]
    return chosen


# (level, rank, verdict JSON, expires_at epoch, the Verdict when it does not depend on ``now``)
_Parsed = tuple[str, int, dict[str, Any], Optional[float], Optional["Verdict"]]
# Verdict bytes repeat across calls until the worker changes them: parse each text once.
_MEMO: dict[Union[bytes, str], Optional[_Parsed]] = {}
_MEMO_MAX = 4096
_NO_DECISION = {t: Verdict("allow", "L0", reason=f"no decision for this scope at tier {t}") for t in RISK_TIERS}


def _parsed(raw: Union[bytes, str]) -> Optional[_Parsed]:
    try:
        return _MEMO[raw]
    except KeyError:
        pass
    except TypeError:  # unhashable: not something redis-py returns
        return None
    parsed = _parse(raw)
    if len(_MEMO) >= _MEMO_MAX:
        _MEMO.clear()
    _MEMO[raw] = parsed
    return parsed


def _map(level: str, doc: Mapping[str, Any], ends: Optional[float], now: float) -> Verdict:
    """Levels -> gateway action (docs/redis.md, ARCHITECTURE.md §6)."""
    common: dict[str, Any] = {"level": level, "reason": str(doc.get("reason") or ""),
                              "rule": _opt_str(doc.get("rule"))}
    if level == "L0":
        return Verdict("allow", **common)
    if level in ("L1", "L2", "L3"):
        return Verdict("degrade", model_alias=_opt_str(doc.get("model_alias")),
                       max_output_tokens=_opt_int(doc.get("max_output_tokens")), **common)
    if level == "L4":
        return Verdict("allow", review=True, **common)
    if level == "throttle":
        rate = _opt_int(doc.get("rate_per_minute"))
        retry = float(math.ceil(60 / rate)) if rate and rate > 0 else THROTTLE_DEFAULT_RETRY_S
        return Verdict("throttle", rate=rate, tokens_per_minute=_opt_int(doc.get("tokens_per_minute")),
                       retry_after=retry, **common)
    # block: come back when the period the verdict is about has ended
    retry = max(1.0, float(math.ceil(ends - now))) if ends is not None else THROTTLE_DEFAULT_RETRY_S
    return Verdict("block", retry_after=retry, **common)


def _parse(raw: Raw) -> Optional[_Parsed]:
    """The parsed verdict, or None when the field cannot be understood."""
    try:
        doc = json.loads(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("level") not in LEVEL_ORDER:
        return None
    ends: Optional[float] = None
    if doc.get("expires_at") is not None:
        ends = _iso_epoch(doc["expires_at"])
        if ends is None:
            return None
    level = doc["level"]
    ready = None if level == "block" else _map(level, doc, ends, 0.0)  # only block depends on now
    return level, LEVEL_ORDER[level], doc, ends, ready


def _iso_epoch(value: Any) -> Optional[float]:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # the contract writes UTC
    return parsed.timestamp()


def _text(raw: Raw) -> Optional[str]:
    if raw is None:
        return None
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _opt_str(value: Any) -> Optional[str]:
    return str(value) if value is not None else None


def _opt_int(value: Any) -> Optional[int]:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
