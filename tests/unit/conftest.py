"""Shared helpers for the engine and period tests: priced events and rule sets from YAML text.

Helpers are plain functions exposed as session fixtures (so hypothesis tests may use them too).
"""

from __future__ import annotations

import itertools
import textwrap
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendwarden.rules.compiler import RuleSet, SourceFile, compile_ruleset
from spendwarden.rules.schema import RuleFile
from spendwarden.streams.events import CostEvent, PricedEvent
from spendwarden.streams.money import usd_to_nanos

_ids = itertools.count(1)


def epoch(ts: str | float | datetime) -> float:
    """UTC epoch seconds of ISO text (``...Z``), a datetime or a number."""
    if isinstance(ts, (int, float)):
        return float(ts)
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    return ts.timestamp()


def build_event(cost: Decimal | str = "1", *, tenant: str = "acme",
                ts: str | float | datetime = "2026-01-15T12:00:00Z", use_case: str = "chat",
                risk_tier: str = "low", model: str = "model-a",
                cost_event_id: str | None = None, **fields: Any) -> PricedEvent:
    """A priced cost event whose cost is its own ``allocated_cost_usd``."""
    usd = Decimal(cost)
    event = CostEvent(
        cost_event_id=cost_event_id or f"ev-{next(_ids)}",
        ts=datetime.fromtimestamp(epoch(ts), timezone.utc),
        tenant_id=tenant, use_case_id=use_case, risk_tier=risk_tier, model_or_service=model,
        allocated_cost_usd=usd, **fields,
    )
    return PricedEvent(event, usd_to_nanos(usd))


def build_ruleset(text: str, path: str = "rules.yaml") -> RuleSet:
    """Validate and compile one rule file given as YAML text (no disk, no line numbers)."""
    model = RuleFile.model_validate(yaml.safe_load(textwrap.dedent(text)))
    return compile_ruleset([SourceFile(path, model, lambda *_a, **_k: (None, None))])


@pytest.fixture(scope="session")
def make_event() -> Any:
    return build_event


@pytest.fixture(scope="session")
def ruleset_from_yaml() -> Any:
    return build_ruleset


@pytest.fixture
def rules_dir(tmp_path: Path) -> Any:
    """Write YAML text to ``tmp_path/rules.yaml`` and load it with the real loader."""
    from spendwarden.rules.loader import load_ruleset

    def load(text: str) -> RuleSet:
        (tmp_path / "rules.yaml").write_text(textwrap.dedent(text))
        return load_ruleset(tmp_path)

    return load
