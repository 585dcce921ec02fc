"""Verdicts for gateways: which Redis fields a rule's decision covers and which verdict wins.

A gateway reads one field per (use case, risk tier) of its tenant, and ``*:<tier>`` for
tenant-wide decisions; with a model budget the model is appended (``use_case:tier:model``).
When several rules decide on one field the strictest level wins (block > throttle > L4 … L1).
"""

from __future__ import annotations

from typing import Any, Mapping

from spendwarden.rules.compiler import CompiledBudget, CompiledRule
from spendwarden.rules.schema import LEVEL_ACTION, LEVEL_ORDER


def decision_fields(budget: CompiledBudget, instance: Mapping[str, str], tiers: tuple[str, ...]) -> list[str]:
    """Redis hash fields a decision on this budget instance applies to."""
    spec = budget.spec
    use_cases: tuple[str, ...]
    if "use_case_id" in instance:
        use_cases = (instance["use_case_id"],)
    else:
        use_cases = spec.scope_values("use_case_id") or ("*",)
    model: tuple[str, ...] = ()
    if "model_or_service" in instance:
        model = (instance["model_or_service"],)
    else:
        scoped = spec.scope_values("model_or_service")
        if scoped is not None:
            model = scoped
    if "risk_tier" in instance:  # a per-tier budget decides only for the tier that overspent
        tiers = tuple(t for t in tiers if t == instance["risk_tier"])
    fields = []
    for use_case in use_cases:
        for tier in tiers:
            if model:
                fields.extend(f"{use_case}:{tier}:{m}" for m in model)
            else:
                fields.append(f"{use_case}:{tier}")
    return fields


def make_verdict(rule: CompiledRule, reason: str, rules_version: str, expires_at: str, since: str) -> dict[str, Any]:
    """The compact verdict a gateway reads (fields documented in docs/redis.md)."""
    decide = rule.spec.decide
    assert decide is not None
    verdict: dict[str, Any] = {
        "level": decide.level,
        "action": LEVEL_ACTION[decide.level],
        "reason": reason,
        "rule": rule.name,
        "rules_version": rules_version,
        "expires_at": expires_at,
        "since": since,
    }
    for name in ("model_alias", "max_output_tokens", "rate_per_minute", "tokens_per_minute"):
        value = getattr(decide, name)
        if value is not None:
            verdict[name] = value
    return verdict


def strictest(contributions: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The winning verdict among rules deciding on one field (ties broken by rule name)."""
    best: dict[str, Any] | None = None
    best_key: tuple[int, str] | None = None
    for rule_name, verdict in contributions.items():
        key = (LEVEL_ORDER[verdict["level"]], rule_name)
        if best_key is None or key[0] > best_key[0] or (key[0] == best_key[0] and key[1] < best_key[1]):
            best, best_key = verdict, key
    return best
