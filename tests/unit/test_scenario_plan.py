"""Named scenarios: tenants, placement of windows, the labels file and ``spendwarden scenario``."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import orjson
import pytest
from click.testing import CliRunner

from spendwarden.cli import main
from spendwarden.exceptions import ConfigError
from spendwarden.replay.incidents import KINDS, MISROUTE_RANGE, MODEL_SHARE, cached_share, step_share
from spendwarden.replay.plan import MIN_NORMAL, _expected, labels, plan
from spendwarden.replay.prices import CALL_PRICES_NANOS, TOKEN_PRICES_NANOS, cost_nanos
from spendwarden.replay.scenario import Tenant, use_case_of
from spendwarden.replay.tenants import TOP_CALLS_PER_HOUR, zipf_tenants
from spendwarden.streams.events import CostEvent
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

START = datetime(2026, 11, 2, tzinfo=UTC)
PLAYBOOK = Path(__file__).resolve().parents[2] / "rules" / "packs" / "playbook"


def test_tenants_are_zipf_sized_seeded_and_varied() -> None:
    tenants = zipf_tenants(50, seed=3)
    assert [t.tenant_id for t in tenants[:2]] == ["t00", "t01"] and tenants[-1].tenant_id == "t49"
    assert [t.calls_per_hour for t in tenants[:3]] == [TOP_CALLS_PER_HOUR, TOP_CALLS_PER_HOUR / 2,
                                                       round(TOP_CALLS_PER_HOUR / 3, 3)]
    assert zipf_tenants(50, seed=3) == tenants and zipf_tenants(50, seed=4) != tenants
    assert len({t.timezone for t in tenants}) >= 6
    weekends = [t.weekend for t in tenants]
    assert sum(w < 0.5 for w in weekends) > 20 and sum(w >= 0.8 for w in weekends) > 5
    hits = [h for t in tenants for h in t.cache_hit or ()]
    assert sum(cached_share(h) >= 0.45 for h in hits) > 10


def test_load_has_a_daily_and_a_weekly_cycle_and_noise_per_day() -> None:
    """A business tenant: nights at 8% of the peak, weekends at its weekend factor, days vary."""
    profile = next(t for t in zipf_tenants(20, seed=3) if t.weekend < 0.5)
    tenant = Tenant(profile, seed=3)
    zone = ZoneInfo(profile.timezone)

    def load(day: int, hour: int) -> float:  # 2 November 2026 is a Monday
        return tenant.load(int(datetime(2026, 11, day, hour, tzinfo=zone).timestamp() * 1000))

    weekdays = [load(d, 12) for d in range(2, 7)]
    assert len(set(weekdays)) == 5 and all(0.7 < w < 1.4 for w in weekdays)  # lognormal day noise, sigma 0.1
    assert load(3, 3) / load(3, 12) == pytest.approx(0.08)
    assert load(7, 12) / load(7, 12) == 1 and 0.15 < load(7, 12) < 0.6  # Saturday
    assert load(7, 12) / load(9, 12) < 0.6


def test_mixed_places_every_kind_after_the_warmup_one_window_per_tenant_at_a_time() -> None:
    tenants = zipf_tenants(50, seed=5)
    result = plan("mixed", tenants, seed=5, start=START, days=30)
    assert Counter(w.kind for w in result.windows) == {k: 5 for k in KINDS} and not result.notes
    assert result.warmup_end == START + timedelta(days=14)
    profiles = {t.tenant_id: t for t in tenants}
    by_tenant: dict[str, list] = {}
    for w in result.windows:
        assert START + timedelta(days=14) <= w.start < w.end <= START + timedelta(days=30, hours=-1)
        assert w.is_incident == (w.kind not in ("growth", "surge"))
        by_tenant.setdefault(w.tenant_id, []).append(w)
        minutes = (w.end - w.start) / timedelta(minutes=1)
        profile = profiles[w.tenant_id]
        use_case = use_case_of(profile, w.use_case_id)
        hit = Tenant(profile, 5).hit[w.use_case_id]
        share = {"retry-storm": MODEL_SHARE * 0.04, "slow-leak": 1, "growth": 1, "surge": 1}.get(w.kind, MODEL_SHARE)
        if w.kind == "agent-loop":
            share = step_share(use_case[2], w.workflow_step or "")
        assert _expected(Tenant(profile, 5), w.use_case_id, w.start, w.end) * share >= MIN_NORMAL[w.kind]
        if w.kind == "agent-loop":
            assert 20 <= minutes <= 60 and w.workflow_step in use_case[2]
        elif w.kind == "retry-storm":
            assert 10 <= minutes <= 30
        elif w.kind == "prompt-bloat":
            assert minutes >= 120
        elif w.kind == "misroute":
            assert MISROUTE_RANGE[0] <= w.facts["price_ratio"] <= MISROUTE_RANGE[1] and w.model in TOKEN_PRICES_NANOS
        elif w.kind == "cache-collapse":
            assert cached_share(hit) >= 0.45
        elif w.kind == "slow-leak":
            assert minutes == 10 * 1440
        elif w.kind == "growth":
            assert minutes == 7 * 1440
        elif w.kind == "surge":
            local = w.start.astimezone(ZoneInfo(profile.timezone))
            assert (local.hour, local.minute) == (0, 0) and 23 * 60 <= minutes <= 25 * 60
    for windows in by_tenant.values():
        windows.sort(key=lambda w: w.start)
        assert all(b.start >= a.end + timedelta(days=1) for a, b in zip(windows, windows[1:]))


def test_plans_are_seeded_and_single_kind_scenarios_hold_that_kind() -> None:
    tenants = zipf_tenants(20, seed=1)
    one = labels(plan("mixed", tenants, seed=1, start=START, days=30), tenants)
    assert one == labels(plan("mixed", tenants, seed=1, start=START, days=30), tenants)
    assert one["incidents"] != labels(plan("mixed", tenants, seed=2, start=START, days=30), tenants)["incidents"]
    misroutes = plan("misroute", tenants, seed=1, start=START, days=16, per_kind=3).windows
    assert [w.kind for w in misroutes] == ["misroute"] * 3
    assert [w.id for w in misroutes] == ["misroute-01", "misroute-02", "misroute-03"]
    assert plan("quiet", tenants, seed=1, start=START, days=16).windows == []
    with pytest.raises(ConfigError, match="slow-leak.*warm-up \\+ 10 days 1 h"):
        plan("slow-leak", tenants, seed=1, start=START, days=20)
    with pytest.raises(ConfigError, match="unknown scenario"):
        plan("meteor", tenants, seed=1, start=START, days=20)


def test_labels_name_every_window_with_its_size() -> None:
    tenants = zipf_tenants(10, seed=2)
    result = plan("mixed", tenants, seed=2, start=START, days=30, per_kind=1)
    data = json.loads(orjson.dumps(labels(result, tenants)))
    assert (data["seed"], data["scenario"], data["start"], data["warmup_end"]) == (
        2, "mixed", "2026-11-02T00:00:00Z", "2026-11-16T00:00:00Z")
    assert [t["tenant_id"] for t in data["tenants"]] == [t.tenant_id for t in tenants]
    kinds = {i["kind"]: i for i in data["incidents"]}
    assert set(kinds) == set(KINDS)
    assert kinds["agent-loop"]["workflow_step"] and kinds["misroute"]["model"]
    assert {k for k, i in kinds.items() if not i["is_incident"]} == {"growth", "surge"}
    assert kinds["agent-loop"]["size"]["step_calls_factor"] == 5 and kinds["slow-leak"]["size"]["days"] == 10
    for entry in data["incidents"]:
        assert {"id", "kind", "tenant_id", "use_case_id", "start", "end", "is_incident", "size"} <= set(entry)
        assert data["warmup_end"] <= entry["start"] < entry["end"] <= data["end"]


def test_generator_prices_match_the_bundled_pricebook() -> None:
    """Half the events carry the generator's cost, half are priced by the pricebook: same money."""
    book = Pricebook.default()
    for model, (provider, *_rest) in {**TOKEN_PRICES_NANOS, **CALL_PRICES_NANOS}.items():
        event = CostEvent.model_validate({
            "cost_event_id": "x", "ts": "2026-11-02T00:00:00Z", "tenant_id": "t", "provider":
            "internal" if model in CALL_PRICES_NANOS else provider, "model_or_service": model,
            "input_tokens": 1000, "output_tokens": 100, "cached_tokens": 400})
        assert book.price(event)[0] == cost_nanos(model, 1000, 100, 400), model


def _scenario(tmp_path: Path, *args: str) -> tuple[bytes, dict, str]:
    labels_path = tmp_path / f"labels-{len(list(tmp_path.iterdir()))}.json"
    result = CliRunner().invoke(main, ["scenario", *args, "--labels", str(labels_path)])
    assert result.exit_code == 0, result.output
    return result.stdout_bytes, json.loads(labels_path.read_text()), result.stderr


def test_cli_is_deterministic_by_seed(tmp_path: Path) -> None:
    args = ["quiet", "--days", "0.04", "--tenants", "2", "--warmup-days", "0"]
    one, labels_one, err = _scenario(tmp_path, *args, "--seed", "8")
    assert one.count(b"\n") > 50 and "scenario quiet seed 8:" in err
    assert _scenario(tmp_path, *args, "--seed", "8")[:2] == (one, labels_one)
    assert _scenario(tmp_path, *args, "--seed", "9")[0] != one
    assert labels_one["incidents"] == [] and labels_one["seed"] == 8


def test_cli_events_validate_replay_and_carry_the_labelled_incident(tmp_path: Path) -> None:
    out, data, _ = _scenario(tmp_path, "agent-loop", "--days", "0.08", "--tenants", "1", "--warmup-days", "0.01",
                             "--seed", "4", "--start", "2026-11-03T06:00:00Z", "--no-progress")
    ingest = Ingest(Pricebook.default())
    lines = out.splitlines()
    stamps = []
    for line in lines:
        priced, rejected = ingest.parse_record(line)
        assert rejected == [] and len(priced) == 1
        stamps.append(priced[0].event.ts)
    assert stamps == sorted(stamps) and len({orjson.loads(x)["cost_event_id"] for x in lines}) == len(lines)
    (window,) = data["incidents"]
    loop = [orjson.loads(x) for x in lines if b"-loop" in x]
    assert loop and all(window["start"] <= e["ts"][:19] + "Z" < window["end"] for e in loop)
    assert {(e["tenant_id"], e["use_case_id"], e["workflow_step"]) for e in loop} == {
        (window["tenant_id"], window["use_case_id"], window["workflow_step"])}
    events = tmp_path / "events.jsonl"
    events.write_bytes(out)
    replayed = CliRunner().invoke(main, ["replay", str(events), "--rules", str(PLAYBOOK), "--json", "--no-progress"])
    summary = json.loads(replayed.stdout)
    assert replayed.exit_code == 0 and summary["events"] == len(lines) and summary["rejected"] == {}


def test_cli_refuses_bad_input_in_one_line(tmp_path: Path) -> None:
    runner = CliRunner()
    for args, message in [
        (["slow-leak", "--days", "12", "--seed", "1"],
         "no room for slow-leak windows: it needs --days of at least the warm-up + 10 days 1 h"),
        (["quiet", "--seed", "1", "--start", "yesterday"], "--start 'yesterday' is not an ISO 8601 time"),
        (["quiet", "--seed", "1", "--tenants", "0"], "--tenants must be at least 1"),
    ]:
        result = runner.invoke(main, ["scenario", *args, "--labels", str(tmp_path / "l.json")])
        assert result.exit_code == 2 and result.stderr.startswith("spendwarden: error: ") and message in result.stderr
