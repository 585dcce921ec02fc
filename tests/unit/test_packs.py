"""The shipped rule packs: their tests pass, every rule is needed by a test, local time is right."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

import spendwarden.rules
from spendwarden.exceptions import RuleFileError
from spendwarden.rules.loader import lint, load_ruleset, rule_files
from spendwarden.rules.testing import run_rule_tests

PACKS = Path(spendwarden.rules.__file__).parent / "packs"
PACK_DIRS = sorted(p for p in PACKS.iterdir() if p.is_dir() and not p.name.startswith(("_", ".")))
RULES = [(pack, rule.name) for pack in PACK_DIRS for rule in load_ruleset(pack).rules]


def test_the_three_packs_exist() -> None:
    assert {p.name for p in PACK_DIRS} >= {"playbook", "tiers", "ladder"}


def test_all_pack_tests_pass() -> None:
    results = run_rule_tests(PACKS)
    failed = [str(r) for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert {Path(r.file).parent.parent for r in results} == set(PACK_DIRS)


@pytest.mark.parametrize("pack", PACK_DIRS, ids=lambda p: p.name)
def test_pack_lints_clean_and_documents_rules(pack: Path) -> None:
    assert lint(pack) == []  # no unguarded rule, no unused budget
    ruleset = load_ruleset(pack)
    assert ruleset.tenants, "a pack shows example tenants"
    assert any(spec.timezone != "UTC" for spec in ruleset.tenants.values())
    for rule in ruleset.rules:
        assert rule.spec.runbook == f"https://runbooks.example/{rule.name}"
        assert rule.spec.notify, rule.name
        assert rule.guards, f"{rule.name} has no guard"


def _without_rule(pack: Path, rule: str, target: Path) -> Path:
    """A copy of a pack with one rule entry removed (its budget stays, only unused)."""
    shutil.copytree(pack, target)
    for file in rule_files(target):
        data = yaml.safe_load(file.read_text())
        kept = [r for r in data.get("rules", []) if r["name"] != rule]
        if len(kept) != len(data.get("rules", [])):
            data["rules"] = kept
            file.write_text(yaml.safe_dump(data, sort_keys=False))
            return target
    raise AssertionError(f"rule {rule} not found in {pack}")


@pytest.mark.parametrize(("pack", "rule"), RULES, ids=[f"{p.name}:{r}" for p, r in RULES])
def test_removing_any_rule_fails_a_test(pack: Path, rule: str, tmp_path: Path) -> None:
    mutant = _without_rule(pack, rule, tmp_path / pack.name)
    assert rule not in {r.name for r in load_ruleset(mutant).rules}
    results = run_rule_tests(mutant)
    assert any(not r.passed for r in results), f"no test of pack {pack.name} notices that {rule} is gone"


def test_high_risk_sandbox_block_is_refused(tmp_path: Path) -> None:
    """The playbook's comment holds: a hard cap reaching high-risk traffic does not load."""
    target = tmp_path / "playbook"
    shutil.copytree(PACKS / "playbook", target)
    path = target / "rules.yaml"
    text = path.read_text()
    path.write_text(text.replace("only_risk_tiers: [low, medium]}", "only_risk_tiers: [low, medium, high]}"))
    with pytest.raises(RuleFileError, match="high-risk"):
        load_ruleset(target)


# ------------------------------------------------------------------ local time (playbook daily-burn)
def _daily_burn(tmp_path: Path, tenant: str, ts: str, advance_to: str | None = None, fires: bool = True,
                before: tuple[str, int] | None = None, cost: int = 850) -> list[str]:
    """Problems of one playbook case: ``cost`` dollars (850 = 71 %) on a use case at ``ts``.

    ``before`` is an earlier (ts, dollars) event of the same use case.
    """
    spends = ([before] if before else []) + [(ts, cost)]
    events = "".join(
        f"\n      - {{ts: '{at}', tenant_id: {tenant}, use_case_id: search, risk_tier: low, "
        f"allocated_cost_usd: {usd}}}"
        for at, usd in spends
    )
    expect = (f"expect_firing: [{{rule: daily-burn-before-2pm, scope: {{tenant_id: {tenant}}}}}]\n"
              f"    expect_decisions: {{{tenant}: {{'search:low': L1}}}}") if fires else \
        "expect_firing: []\n    expect_decisions: {}"
    advance = f"\n    advance_to: '{advance_to}'" if advance_to else ""
    path = tmp_path / "case.test.yaml"
    path.write_text(
        f"rules: {PACKS / 'playbook'}\ntests:\n  - name: case\n    events:{events}{advance}\n    {expect}\n"
    )
    (result,) = run_rule_tests(path)
    return result.problems


@pytest.mark.parametrize(
    ("tenant", "ts", "fires"),
    [
        # America/New_York, EST (UTC-5)
        ("acme", "2026-11-25T18:59:00Z", True),
        ("acme", "2026-11-25T19:00:00Z", False),
        # Europe/Berlin, CET (UTC+1)
        ("globex", "2026-11-25T12:59:00Z", True),
        ("globex", "2026-11-25T13:00:00Z", False),
        # Asia/Tokyo (UTC+9), no DST
        ("initech", "2026-11-25T04:59:00Z", True),
        ("initech", "2026-11-25T05:00:00Z", False),
        # DST end in New York, 2026-11-01 (a 25-hour day): after 06:00Z the zone is UTC-5
        ("acme", "2026-11-01T18:59:00Z", True),
        ("acme", "2026-11-01T19:00:00Z", False),
        # DST start in Berlin, 2026-03-29 (a 23-hour day): after 01:00Z the zone is UTC+2,
        # so 12:30Z is 14:30 local (a fixed UTC+1 would wrongly say 13:30)
        ("globex", "2026-03-29T11:59:00Z", True),
        ("globex", "2026-03-29T12:30:00Z", False),
        # the day before the switch, still CET
        ("globex", "2026-03-28T12:59:00Z", True),
    ],
)
def test_before_2pm_in_tenant_local_time(tmp_path: Path, tenant: str, ts: str, fires: bool) -> None:
    assert _daily_burn(tmp_path, tenant, ts, fires=fires) == []


def test_degradation_lifts_at_2pm_local_on_dst_day(tmp_path: Path) -> None:
    # Berlin 2026-03-29: 14:00 CEST is 12:00Z
    morning = "2026-03-29T08:00:00Z"
    assert _daily_burn(tmp_path, "globex", morning, advance_to="2026-03-29T11:59:00Z") == []
    assert _daily_burn(tmp_path, "globex", morning, advance_to="2026-03-29T12:00:00Z", fires=False) == []


def test_dst_day_boundaries_follow_local_midnight(tmp_path: Path) -> None:
    # New York 2026-11-01 is 25 hours long: from 04:00Z (00:00 EDT) to 05:00Z on 11-02 (00:00 EST).
    # $500 early, then $350 at 10:00 local: 71 % only when both fall on the same local day.
    def case(first: str, second: str, fires: bool) -> list[str]:
        return _daily_burn(tmp_path, "acme", second, cost=350, before=(first, 500), fires=fires)

    assert case("2026-11-01T04:00:00Z", "2026-11-01T15:00:00Z", fires=True) == []
    assert case("2026-11-01T03:59:00Z", "2026-11-01T15:00:00Z", fires=False) == []  # still Oct 31
    # 05:00Z on 11-02 starts the next local day; 04:59Z is still Nov 1 (a 24 h day would end at 04:00Z)
    assert case("2026-11-02T05:00:00Z", "2026-11-02T14:00:00Z", fires=True) == []
    assert case("2026-11-02T04:59:00Z", "2026-11-02T14:00:00Z", fires=False) == []
