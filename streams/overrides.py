"""Manual overrides: a person's decision on a scope, which wins over the rules until it expires.

An override names a tenant, optionally a use case and a model, the risk tiers it covers and
one action: ``block``, ``unblock`` (lift whatever the rules decided) or ``degrade`` (L1 to a
cheaper model). It travels on a compacted topic keyed by its scope, so setting the same scope
again replaces it, and every worker follows that topic (``streams/follow.py``).

How it meets the rules (pure, here): on every Redis field the override *covers* (its tiers, its
use case or any when tenant-wide, its model or any) the rules' verdict is withdrawn; on the
fields it *owns* (``<use_case or *>:<tier>[:<model>]``) its own verdict is written, an explicit
``L0`` for an unblock so the gateway and the on-call both see who lifted what. Gateways take
the strictest of a call's fields (docs/redis.md), so a use-case override cannot loosen a
tenant-wide decision: override the tenant for that.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Literal, Mapping, Optional

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from spendwarden.rules.schema import LEVEL_ACTION
from spendwarden.streams.events import _ID, _NAME
from spendwarden.streams.periods import iso_utc

RISK_TIERS: tuple[str, ...] = ("low", "medium", "high")
Action = Literal["block", "unblock", "degrade"]
ACTION_LEVEL: dict[str, str] = {"block": "block", "unblock": "L0", "degrade": "L1"}
OVERRIDE_RULE = "manual-override"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_DURATION_S = 90 * 86400
_ID_RE = re.compile(_ID)
_NAME_RE = re.compile(_NAME)


class OverrideError(ValueError):
    """An override record or request that cannot be used, with the reason."""


class Override(BaseModel):
    """One override as it travels on the topic (also its audit record: who, why, when, until)."""

    # Built strictly by the CLI; records read from the topic go through parse_record, which
    # passes over fields a newer CLI may add.
    model_config = ConfigDict(frozen=True, extra="forbid")

    # The ids of cost events (streams/events.py): they become Redis keys and fields, so '_x'
    # (a metadata field), '*' (any use case), ':', '|' (the scope key's separator) and braces
    # are refused. A model name may hold ':' (llama3:8b) but not '|'.
    tenant_id: str
    use_case_id: Optional[str] = None
    model: Optional[str] = None
    tiers: tuple[Literal["low", "medium", "high"], ...] = RISK_TIERS
    action: Action
    model_alias: Optional[str] = None
    max_output_tokens: Optional[int] = Field(None, gt=0)
    reason: str = Field(min_length=1)
    author: str = Field(min_length=1)
    created_at: float
    expires_at: float
    cleared_by: Optional[str] = None
    cleared_at: Optional[float] = None
    clear_reason: Optional[str] = None

    @field_validator("tenant_id", "use_case_id")
    @classmethod
    def _an_id(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _ID_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not an id as cost events carry it: a letter or digit, then letters, "
                             "digits or . _ - / @ + = (at most 128)")
        return value

    @field_validator("model")
    @classmethod
    def _a_model(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and (not _NAME_RE.fullmatch(value) or "|" in value):
            raise ValueError(f"{value!r} is not a model name: no spaces, braces or '|' (at most 200 characters)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> "Override":
        if not self.tiers:
            raise ValueError("tiers: at least one risk tier")
        if self.action == "degrade" and not self.model_alias:
            raise ValueError("degrade needs the model to route to (model_alias)")
        if self.action != "degrade" and (self.model_alias or self.max_output_tokens):
            raise ValueError("model_alias and max_output_tokens only go with degrade")
        if self.expires_at <= self.created_at:
            raise ValueError("expires_at must be after created_at")
        return self

    # ------------------------------------------------------------ identity
    @property
    def scope_key(self) -> bytes:
        """Topic key: one override per scope (tenant, use case, model); setting it again replaces it."""
        return scope_key(self.tenant_id, self.use_case_id, self.model)

    @property
    def scope_text(self) -> str:
        parts = [f"tenant={self.tenant_id}"]
        if self.use_case_id:
            parts.append(f"use_case={self.use_case_id}")
        if self.model:
            parts.append(f"model={self.model}")
        return " ".join(parts)

    @property
    def covers_high_risk(self) -> bool:
        return "high" in self.tiers

    def active(self, now: float) -> bool:
        """In force from the moment it is read until it expires or is cleared. ``created_at`` is
        the CLI host's clock, kept for the audit trail only: a host a few seconds ahead of the
        worker must not delay a block."""
        return self.cleared_at is None and now < self.expires_at

    # ------------------------------------------------------------ fields
    def covers(self, field: str) -> bool:
        """Whether the rules' verdict on this Redis field gives way to the override."""
        parts = field.split(":")
        if len(parts) < 2 or parts[1] not in self.tiers:
            return False
        if self.use_case_id is not None and parts[0] != self.use_case_id:
            return False
        if self.model is not None and (len(parts) < 3 or ":".join(parts[2:]) != self.model):
            return False
        return True

    def own_fields(self) -> list[str]:
        """The fields carrying the override's own verdict."""
        base = self.use_case_id or "*"
        suffix = f":{self.model}" if self.model else ""
        return [f"{base}:{tier}{suffix}" for tier in self.tiers]

    def verdict(self) -> dict[str, Any]:
        """The verdict JSON a gateway reads (docs/redis.md), with the audit trail attached."""
        level = ACTION_LEVEL[self.action]
        reason = f"manual override by {self.author}: {self.reason}"
        if self.covers_high_risk:
            reason += " (covers high-risk traffic, set by a person)"
        verdict: dict[str, Any] = {
            "level": level, "action": LEVEL_ACTION[level], "reason": reason, "rule": OVERRIDE_RULE,
            "expires_at": iso_utc(self.expires_at), "since": iso_utc(self.created_at),
            "override": {"author": self.author, "reason": self.reason, "scope": self.scope_text,
                         "set_at": iso_utc(self.created_at), "high_risk": self.covers_high_risk},
        }
        if self.model_alias:
            verdict["model_alias"] = self.model_alias
        if self.max_output_tokens:
            verdict["max_output_tokens"] = self.max_output_tokens
        return verdict

    def to_record(self) -> bytes:
        return orjson.dumps(self.model_dump(exclude_none=True))


def scope_key(tenant_id: str, use_case_id: Optional[str] = None, model: Optional[str] = None) -> bytes:
    return f"{tenant_id}|{use_case_id or '*'}|{model or '*'}".encode()


def parse_record(value: bytes) -> Override:
    """An override from its topic record; OverrideError with the reason when unusable.

    Fields this version does not know are passed over (a newer CLI may add some); everything
    else is checked as strictly as when the CLI builds the override."""
    try:
        data = orjson.loads(value)
        if not isinstance(data, dict):
            raise OverrideError("unusable override record: not a JSON object")
        return Override.model_validate({k: v for k, v in data.items() if k in Override.model_fields})
    except (orjson.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise OverrideError(f"unusable override record: {' '.join(first[:3])[:300]}") from None


def parse_duration(text: str) -> float:
    """``30m``, ``2h``, ``1.5d``, ``1w`` in seconds (bounded: an override must end)."""
    found = _DURATION.match(text.strip())
    if not found:
        raise OverrideError(f"duration {text!r}: use a number and a unit s, m, h, d or w (e.g. 2h)")
    seconds = float(found.group(1)) * _UNIT_S[found.group(2)]
    if not 0 < seconds <= MAX_DURATION_S:
        raise OverrideError(f"duration {text!r}: must be more than 0 and at most 90d")
    return seconds


# ---------------------------------------------------------------- meeting the rules
def resolve_field(field: str, rule_verdict: Optional[dict[str, Any]],
                  overrides: Iterable[Override]) -> Optional[dict[str, Any]]:
    """What a field holds given the rules' verdict and the tenant's active overrides."""
    covered = False
    for override in overrides:
        if override.covers(field):
            if field in override.own_fields():
                return override.verdict()
            covered = True
    return None if covered else rule_verdict


def layer(rule_fields: Mapping[str, dict[str, Any]], overrides: Iterable[Override]) -> dict[str, dict[str, Any]]:
    """A tenant's whole published field set: the rules' verdicts with overrides on top."""
    active = list(overrides)
    result = {f: v for f, v in rule_fields.items() if not any(o.covers(f) for o in active)}
    for override in active:
        for field in override.own_fields():
            result[field] = override.verdict()
    return result


class OverrideBook:
    """Every override a worker has read from the topic, by scope, with an index by tenant."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, Override] = {}
        self._by_tenant: dict[str, dict[bytes, Override]] = {}
        self._live: set[bytes] = set()  # keys last seen active (for expiry on the clock)

    def apply(self, key: Optional[bytes], value: Optional[bytes], now: float) -> Optional[str]:
        """Take one topic record (a tombstone removes the scope); return the tenant it touched.

        OverrideError for a record that cannot be used: the caller reports it, the book is
        unchanged."""
        if key is None:
            raise OverrideError("override record without a key")
        old = self._by_key.get(key)
        if value is None:
            if old is None:
                return None
            self._remove(key, old)
            return old.tenant_id
        override = parse_record(value)
        if override.scope_key != key:
            raise OverrideError(f"record key {key!r} does not match its scope {override.scope_key!r}")
        if old is not None:
            self._remove(key, old)
        self._by_key[key] = override
        self._by_tenant.setdefault(override.tenant_id, {})[key] = override
        if override.active(now):
            self._live.add(key)
        return override.tenant_id

    def _remove(self, key: bytes, old: Override) -> None:
        self._by_key.pop(key, None)
        self._live.discard(key)
        tenant = self._by_tenant.get(old.tenant_id)
        if tenant is not None:
            tenant.pop(key, None)
            if not tenant:
                del self._by_tenant[old.tenant_id]

    def active(self, tenant_id: str, now: float) -> list[Override]:
        """The tenant's overrides in force at ``now``, oldest first."""
        found = self._by_tenant.get(tenant_id)
        if not found:
            return []
        return sorted((o for o in found.values() if o.active(now)), key=lambda o: o.created_at)

    def has_active(self, tenant_id: str, now: float) -> bool:
        found = self._by_tenant.get(tenant_id)
        return bool(found) and any(o.active(now) for o in found.values())  # type: ignore[union-attr]

    def get(self, key: bytes) -> Optional[Override]:
        """The newest record of a scope (active, expired or cleared), if any."""
        return self._by_key.get(key)

    def tenants(self) -> list[str]:
        """Every tenant with a record (active, expired or cleared) still on the topic."""
        return list(self._by_tenant)

    def all(self) -> list[Override]:
        return sorted(self._by_key.values(), key=lambda o: o.created_at)

    def expire(self, now: float) -> set[str]:
        """Tenants whose overrides stopped being in force since the last call (an override is in
        force from the moment it is applied, so none starts on the clock)."""
        changed = set()
        for key in [k for k in self._live if not self._by_key[k].active(now)]:
            self._live.discard(key)
            changed.add(self._by_key[key].tenant_id)
        return changed

    def counts(self, now: float) -> dict[str, int]:
        """Active overrides per action, for the metrics gauge."""
        counts = {action: 0 for action in ACTION_LEVEL}
        for key in self._live:
            override = self._by_key[key]
            if override.active(now):
                counts[override.action] += 1
        return counts
