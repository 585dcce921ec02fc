"""The rule file schema: tenants, budgets and rules, validated by pydantic.

A rules directory holds one or more YAML files; their sections are merged (names unique).
Conditions (``when``) are CEL, compiled in ``spendwarden.rules.compiler``. The safety rule of
the domain is enforced here: a rule that degrades, throttles or blocks must exclude
high-risk traffic, or it is refused at load.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from spendwarden.streams.events import DIMENSIONS, RISK_TIERS
from spendwarden.streams.periods import WEEKDAYS, zone

Severity = Literal["info", "low", "medium", "high", "critical"]
Level = Literal["L0", "L1", "L2", "L3", "L4", "throttle", "block"]
# Order of precedence when several rules decide on the same scope: the strictest wins.
LEVEL_ORDER: dict[str, int] = {"L0": 0, "L1": 1, "L2": 2, "L3": 3, "L4": 4, "throttle": 5, "block": 6}
# What a gateway does at each level (ARCHITECTURE.md §6).
LEVEL_ACTION: dict[str, str] = {
    "L0": "allow",
    "L1": "degrade",
    "L2": "spill",
    "L3": "fallback",
    "L4": "hold",
    "throttle": "throttle",
    "block": "block",
}

Dimension = Literal[
    "tenant_id",
    "use_case_id",
    "workflow_step",
    "risk_tier",
    "cost_center",
    "business_unit",
    "environment",
    "component",
    "provider",
    "model_or_service",
]
assert set(Dimension.__args__) == set(DIMENSIONS)  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TenantSpec(_Strict):
    """How a tenant's calendar and stale policy work; unknown tenants get ``defaults``."""

    timezone: str = "UTC"
    tier: str = "default"
    week_start: Literal[
        "monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"
    ] = "monday"
    on_stale: Literal["open", "closed"] = "open"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        zone(value)
        return value


assert tuple(TenantSpec.model_fields["week_start"].annotation.__args__) == WEEKDAYS  # type: ignore[union-attr]


class Budget(_Strict):
    """Spend limit over a calendar period, for every combination of ``for_each`` values.

    ``scope`` keeps only matching events (a value or a list of allowed values per
    dimension). The limit is ``limit_usd``, or ``limit_by_tier`` looked up by the tenant's
    tier (a tier missing from it means the budget does not apply to that tenant).
    """

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,99}$")
    description: str = ""
    scope: dict[Dimension, Union[str, list[str]]] = Field(default_factory=dict)
    for_each: list[Dimension] = Field(default_factory=list)
    period: Literal["day", "week", "month"]
    limit_usd: Optional[Decimal] = Field(default=None, gt=0)
    limit_by_tier: Optional[dict[str, Decimal]] = None
    # Gateways may reserve a call's expected cost against this budget before making it
    # (docs/redis.md, "Reservations"): the worker then publishes its exact spend to Redis.
    reservations: bool = False

    @model_validator(mode="after")
    def _reservable(self) -> "Budget":
        if not self.reservations:
            return self
        if "tenant_id" not in self.for_each or not set(self.for_each) <= {"tenant_id", "use_case_id"}:
            raise ValueError("reservations need for_each [tenant_id] or [tenant_id, use_case_id]: a gateway "
                             "reserves by tenant, use case and risk tier")
        extra = set(self.scope) - {"use_case_id", "risk_tier"}
        if extra:
            raise ValueError(f"reservations allow scope on use_case_id and risk_tier only (not {sorted(extra)[0]}): "
                             "a gateway cannot tell which calls another scope covers")
        return self

    @model_validator(mode="after")
    def _one_limit(self) -> "Budget":
        if (self.limit_usd is None) == (self.limit_by_tier is None):
            raise ValueError("give exactly one of limit_usd or limit_by_tier")
        if self.limit_by_tier is not None:
            if "tenant_id" not in self.for_each and "tenant_id" not in self.scope:
                raise ValueError("limit_by_tier needs tenant_id in for_each or scope")
            bad = [tier for tier, usd in self.limit_by_tier.items() if usd <= 0]
            if bad:
                raise ValueError(f"limit_by_tier values must be > 0 (tier {bad[0]!r})")
        overlap = set(self.for_each) & set(self.scope)
        if overlap:
            raise ValueError(f"{sorted(overlap)[0]} is in both scope and for_each; keep one")
        if len(set(self.for_each)) != len(self.for_each):
            raise ValueError("for_each lists a dimension twice")
        tiers = self.scope.get("risk_tier")
        for tier in [tiers] if isinstance(tiers, str) else tiers or []:
            if tier not in RISK_TIERS:
                raise ValueError(f"scope risk_tier {tier!r} must be one of {', '.join(RISK_TIERS)}")
        return self

    def scope_values(self, dimension: str) -> tuple[str, ...] | None:
        """Allowed values of a scoped dimension, or None when unscoped."""
        value = self.scope.get(dimension)  # type: ignore[call-overload]
        if value is None:
            return None
        return (value,) if isinstance(value, str) else tuple(value)

    def risk_tiers(self) -> tuple[str, ...]:
        """The risk tiers this budget's traffic can have."""
        scoped = self.scope_values("risk_tier")
        if scoped is not None:
            return scoped
        return RISK_TIERS


class Decide(_Strict):
    """What a firing rule asks gateways to do for its scope."""

    level: Level
    only_risk_tiers: Optional[list[Literal["low", "medium", "high"]]] = None
    model_alias: Optional[str] = None
    max_output_tokens: Optional[int] = Field(default=None, gt=0)
    rate_per_minute: Optional[int] = Field(default=None, gt=0)
    tokens_per_minute: Optional[int] = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _throttle_has_rate(self) -> "Decide":
        if self.level == "throttle" and not (self.rate_per_minute or self.tokens_per_minute):
            raise ValueError("level throttle needs rate_per_minute or tokens_per_minute")
        return self


class Rule(_Strict):
    """An alert condition over a budget's figures, with an optional decision."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.\-]{0,99}$")
    budget: str
    when: str = Field(min_length=1)
    severity: Severity = "medium"
    summary: str = ""
    decide: Optional[Decide] = None
    notify: list[str] = Field(default_factory=list)
    runbook: Optional[str] = None
    mode: Literal["enforce", "shadow"] = "enforce"
    labels: dict[str, str] = Field(default_factory=dict)
    # Like Prometheus' keep_firing_for: once firing, stay firing until the condition has been
    # false this long ("30m", "2h"), so a score hovering at its threshold is one alert, not ten.
    keep_firing_for: Optional[str] = None

    @field_validator("notify", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class DetectorsSpec(_Strict):
    """Parameters of the anomaly detectors that `anomaly.*` in rules reads (docs/detectors.md);
    empty means the detectors' defaults. The seasonal detector's zone is the tenant's."""

    spend: dict[str, Any] = Field(default_factory=dict)
    unit_cost: dict[str, Any] = Field(default_factory=dict)
    tokens: dict[str, Any] = Field(default_factory=dict)
    profile: dict[str, Any] = Field(default_factory=dict)
    new_model: dict[str, Any] = Field(default_factory=dict)
    cache: dict[str, Any] = Field(default_factory=dict)


class UnitSpec(_Strict):
    """How `unit.*` joins outcomes to cost and what counts as a repeated call (docs/unit-economics.md)."""

    # A trace is held for outcomes this long after its last event or outcome (event time).
    outcome_wait_minutes: int = Field(default=360, ge=1, le=7 * 24 * 60)
    # A call is a repeat (retry, tool loop) once its trace made this many calls of the same
    # workflow step and model or tool.
    repeat_after: int = Field(default=3, ge=1, le=1000)


class RuleFile(_Strict):
    """One YAML file of a rules directory; every section is optional."""

    version: Literal[1] = 1
    tenants: dict[str, TenantSpec] = Field(default_factory=dict)
    detectors: Optional[DetectorsSpec] = None
    unit: Optional[UnitSpec] = None
    budgets: list[Budget] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)
