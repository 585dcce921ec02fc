"""Showback (``replay/showback.py``, ``spendwarden report showback``): exact figures on a
hand-made mix.

The mix: acme in New York and globex in Tokyo around November 2026, so UTC and local months
disagree at both ends; a duplicate in a second file, an adjustment, outcomes joined by trace
and by business outcome id, two outcomes on one trace, an outcome that joins nothing, a
duplicate outcome, events with no outcome, and a globex event whose trace id equals an acme
trace (joins must stay within the tenant). Every figure below is worked out by hand.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from fractions import Fraction
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from spendwarden.cli import main
from spendwarden.replay.showback import ReportPeriod, Showback, ShowbackRow
from spendwarden.streams.events import Outcome, PricedEvent
from spendwarden.streams.ingest import Ingest
from spendwarden.streams.pricebook import Pricebook

USD = 10**9
ZONES = {"acme": "America/New_York", "globex": "Asia/Tokyo"}
RULES = "tenants:\n  acme: {timezone: America/New_York}\n  globex: {timezone: Asia/Tokyo}\n"


def ev(event_id: str, ts: str, cost: str, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    record = {"cost_event_id": event_id, "ts": ts, "tenant_id": tenant, "allocated_cost_usd": cost}
    return record | fields


RETAIL = {"business_unit": "retail"}
SUPPORT = RETAIL | {"cost_center": "cc1", "use_case_id": "support"}
DRAFTING = RETAIL | {"cost_center": "cc2", "use_case_id": "drafting", "model_or_service": "gpt-4o"}
CLAIMS = {"business_unit": "wholesale", "use_case_id": "claims", "model_or_service": "claude"}

# New York: November is [2026-11-01T04:00Z, 2026-12-01T05:00Z) (DST ends on 1 November).
ACME = [
    ev("a1", "2026-11-01T03:59:59Z", "100", **SUPPORT),  # 31 October in New York: out
    ev("a2", "2026-11-01T04:00:00Z", "10", trace_id="t1", model_or_service="gpt-4o",
       input_tokens=1000, output_tokens=200, **SUPPORT),
    ev("a3", "2026-11-15T12:00:00Z", "5", trace_id="t1", model_or_service="gpt-4o-mini",
       input_tokens=500, output_tokens=100, **SUPPORT),
    ev("a4", "2026-11-20T12:00:00Z", "7", business_outcome_id="case-9", **DRAFTING),
    ev("a5", "2026-11-30T23:00:00Z", "3", **DRAFTING),  # no outcome; 1 December in UTC
    ev("a6", "2026-12-01T04:59:59Z", "-2", trace_id="t1", component="adjustment",
       model_or_service="gpt-4o", **SUPPORT),  # a refund, 30 November 23:59:59 in New York
    ev("a7", "2026-12-01T05:00:00Z", "50", **SUPPORT),  # 1 December in New York: out
]
# Tokyo: November is [2026-10-31T15:00Z, 2026-11-30T15:00Z).
GLOBEX = [
    ev("g1", "2026-10-31T15:00:00Z", "20", "globex", trace_id="gt", **CLAIMS),
    ev("g2", "2026-11-30T15:00:00Z", "40", "globex", **CLAIMS),  # 1 December in Tokyo: out
    ev("g3", "2026-11-30T14:59:59Z", "1.5", "globex", trace_id="t1", **CLAIMS),  # acme's trace id
]
COPIES = [ev("a2", "2026-11-01T04:00:00Z", "10", trace_id="t1", model_or_service="gpt-4o", **SUPPORT),
          ev("g1", "2026-10-31T15:00:00Z", "999", "globex", **CLAIMS)]  # copies: first read wins


def oc(outcome_id: str, kind: str, tenant: str = "acme", **fields: Any) -> dict[str, Any]:
    return {"business_outcome_id": outcome_id, "outcome": kind, "tenant_id": tenant,
            "ts": "2026-11-15T13:00:00Z"} | fields


OUTCOMES = [
    oc("o-1", "resolved", trace_id="t1"),          # joins a2, a3, a6
    oc("case-9", "accepted"),                       # joins a4 by business_outcome_id
    oc("o-3", "escalated", trace_id="t1"),         # the same trace: a second outcome
    oc("gx-1", "resolved", "globex", trace_id="gt"),  # joins g1
    oc("lonely", "rejected", trace_id="t-none"),   # joins nothing
    oc("o-1", "rejected", trace_id="t1"),          # a duplicate: ignored
    oc("old", "resolved", trace_id="t-old", ts="2026-10-31T23:00:00Z"),  # October in New York
]
INGEST = Ingest(Pricebook.default())


def priced(record: dict[str, Any]) -> PricedEvent:
    events, rejections = INGEST.parse_object(record)
    assert not rejections, rejections
    return events[0]


def build(period: str = "2026-11", zones: dict[str, str] | None = ZONES,
          outcomes_first: bool = True) -> Showback:
    showback = Showback(ReportPeriod.parse(period), (zones or {}).get if zones else lambda _t: "UTC")
    outcomes = [Outcome.model_validate(o) for o in OUTCOMES]
    if outcomes_first:
        for outcome in outcomes:
            showback.add_outcome(outcome)
    for record in ACME + GLOBEX + COPIES:
        showback.add_event(priced(record))
    if not outcomes_first:
        for outcome in outcomes:
            showback.add_outcome(outcome)
    return showback


def figures(row: ShowbackRow) -> tuple[Any, ...]:
    """(spend, events, outcomes, cost/outcome, cost/resolved, unjoined share) in USD."""
    def usd(nanos: int | None) -> Decimal | None:
        return None if nanos is None else Decimal(nanos) / USD
    return (usd(row.spend_nanos), row.events, row.outcomes, usd(row.cost_per_outcome_nanos),
            usd(row.cost_per_resolved_nanos), row.unjoined_share)


# ---------------------------------------------------------------- periods
@pytest.mark.parametrize("text, kind, first", [
    ("2026-11", "month", "2026-11-01"), ("2026-11-25", "day", "2026-11-25"),
    ("2026-W48", "week", "2026-11-23"), ("2026-W53", "week", "2026-12-28"),
])
def test_period_forms(text: str, kind: str, first: str) -> None:
    period = ReportPeriod.parse(text)
    assert (period.kind, period.first.isoformat()) == (kind, first)


@pytest.mark.parametrize("text", ["2026-13", "2026-11-31", "2027-W53", "2026-W00", "Nov 2026", "2026", ""])
def test_bad_period_names_the_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r"not a period: use a month \(2026-11\), a day"):
        ReportPeriod.parse(text)


def test_period_bounds_follow_the_zone() -> None:
    november = ReportPeriod.parse("2026-11")
    assert november.bounds("America/New_York") == (1793505600.0, 1796101200.0)  # 04:00Z .. 05:00Z
    assert november.bounds("Asia/Tokyo") == (1793458800.0, 1796050800.0)  # 31 Oct 15:00Z .. 30 Nov 15:00Z
    assert ReportPeriod.parse("2026-W48").bounds("UTC") == (1795392000.0, 1795996800.0)  # Mon 23 .. Mon 30


# ---------------------------------------------------------------- exact figures
def test_month_figures_by_default_dimensions() -> None:
    showback = build()
    rows = showback.rows()
    assert [row.key for row in rows] == [
        ("wholesale", "(none)", "claims", "claude"),
        ("retail", "cc2", "drafting", "gpt-4o"),
        ("retail", "cc1", "support", "gpt-4o"),
        ("retail", "cc1", "support", "gpt-4o-mini"),
    ]
    assert [figures(row) for row in rows] == [
        (Decimal("21.5"), 2, 1, Decimal(20), Decimal(20), Fraction(3, 43)),  # g3 (acme's trace id) unjoined
        (Decimal(10), 2, 1, Decimal(7), None, Fraction(3, 10)),  # a4 joined by id; a5 not
        (Decimal(8), 2, 2, Decimal(4), Decimal(8), Fraction(0)),  # a2 + the a6 refund; o-1 and o-3
        (Decimal(5), 1, 2, Decimal("2.5"), Decimal(5), Fraction(0)),
    ]
    assert rows[2].by_kind == {"resolved": 1, "accepted": 0, "rejected": 0, "escalated": 1,
                               "human_rejected": 0}
    assert (rows[2].input_tokens, rows[2].output_tokens) == (1000, 200)


def test_total_counts_each_outcome_once() -> None:
    total = build().total()
    # 10 + 5 + 7 + 3 - 2 + 20 + 1.5; joined 13 (trace t1) + 7 (case-9) + 20 (gt) = 40 over 4 outcomes;
    # resolved: o-1 (13) and gx-1 (20) = 33 over 2.
    assert figures(total) == (Decimal("44.5"), 7, 4, Decimal(10), Decimal("16.5"), Fraction(9, 89))
    assert (total.joined_nanos, total.resolved_nanos) == (40 * USD, 33 * USD)
    assert total.by_kind == {"resolved": 2, "accepted": 1, "rejected": 0, "escalated": 1, "human_rejected": 0}
    assert (total.input_tokens, total.output_tokens) == (1500, 300)


def test_groups_add_up_to_the_total_spend() -> None:
    showback = build()
    for by in (["tenant_id"], ["environment", "model_or_service"], ["cost_center"]):
        assert sum(row.spend_nanos for row in showback.rows(by)) == showback.total().spend_nanos


def test_stats_count_duplicates_and_outside() -> None:
    stats = build().stats
    # outside: a1, a7, g2; duplicates: the a2 and g1 copies, and outcome o-1 again.
    assert (stats.events, stats.duplicates, stats.outside_period) == (7, 2, 3)
    assert (stats.outcomes, stats.outcome_duplicates) == (6, 1)


def test_join_does_not_depend_on_arrival_order() -> None:
    early, late = build(outcomes_first=True), build(outcomes_first=False)
    assert [figures(r) for r in early.rows()] == [figures(r) for r in late.rows()]


def test_outcome_that_joins_nothing_is_listed() -> None:
    # "old" joins nothing either, but is stamped 31 October in New York (1 November in UTC).
    assert [o.business_outcome_id for o in build().unjoined_outcomes()] == ["lonely"]


def test_utc_calendar_without_zones() -> None:
    # In UTC November holds a1 and g2 (and a5, g3), not a6 (1 Dec) or g1 (31 Oct).
    by_tenant = {row.key: row for row in build(zones=None).rows(["tenant_id"])}
    assert by_tenant[("acme",)].spend_nanos == (100 + 10 + 5 + 7 + 3) * USD
    assert by_tenant[("globex",)].spend_nanos == Decimal("41.5") * USD


def test_iso_week_and_day() -> None:
    assert build("2026-W48").total().events == 0  # Monday 23 to Sunday 29 November, local: no event
    week = build("2026-W49")  # from Monday 30 November, local: a5, a6, a7; g2 and g3
    assert {row.key: row.spend_nanos for row in week.rows(["tenant_id"])} == {
        ("acme",): 51 * USD, ("globex",): Decimal("41.5") * USD}
    day = build("2026-11-30")  # a5 and a6 in New York, g3 in Tokyo
    assert {row.key: row.spend_nanos for row in day.rows(["tenant_id"])} == {
        ("acme",): 1 * USD, ("globex",): Decimal("1.5") * USD}


def test_copy_just_outside_the_period_keeps_the_event_out() -> None:
    showback = Showback(ReportPeriod.parse("2026-11"))
    showback.add_event(priced(ev("x", "2026-10-31T23:59:50Z", "4")))  # first copy: October
    showback.add_event(priced(ev("x", "2026-11-01T00:00:10Z", "4")))  # its copy: November
    assert (showback.total().events, showback.stats.duplicates) == (0, 1)


def test_unit_costs_round_half_even_to_the_nano_dollar() -> None:
    four = {("acme", f"o{i}") for i in range(4)}
    assert ShowbackRow((), joined_nanos=10, outcome_ids=four).cost_per_outcome_nanos == 2  # 2.5 -> 2
    assert ShowbackRow((), joined_nanos=14, outcome_ids=four).cost_per_outcome_nanos == 4  # 3.5 -> 4
    assert ShowbackRow((), joined_nanos=-7, outcome_ids=four).cost_per_outcome_nanos == -2  # -1.75
    assert ShowbackRow((), spend_nanos=5).cost_per_outcome_nanos is None  # no outcome: no figure


def test_unknown_dimension_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot group by risk: choose from"):
        build().rows(["risk"])


# ---------------------------------------------------------------- the command
def write_jsonl(path: Path, records: list[Any], extra: Sequence[bytes] = ()) -> Path:
    lines = [orjson.dumps(record) for record in records] + list(extra)
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["report", "showback", *args])


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "tenants.yaml").write_text(RULES)
    return {
        "events": write_jsonl(tmp_path / "events.jsonl", ACME + GLOBEX,
                              [b"{not json", b'{"cost_event_id": "z"}']),
        "copies": write_jsonl(tmp_path / "copies.jsonl", COPIES),
        "outcomes": write_jsonl(tmp_path / "outcomes.jsonl", OUTCOMES,
                                [b'{"business_outcome_id": "b", "outcome": "meh"}']),
        "rules": tmp_path / "rules",
    }


def test_cli_writes_csv_and_table(inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "showback.csv"
    result = run(str(inputs["events"]), str(inputs["copies"]), "--period", "2026-11", "--outcomes",
                 str(inputs["outcomes"]), "--rules", str(inputs["rules"]), "--csv", str(out), "--no-progress")
    assert result.exit_code == 0, result.output
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["row"], r["business_unit"], r["model_or_service"], r["spend_usd"]) for r in rows] == [
        ("group", "wholesale", "claude", "21.5"), ("group", "retail", "gpt-4o", "10"),
        ("group", "retail", "gpt-4o", "8"), ("group", "retail", "gpt-4o-mini", "5"),
        ("total", "", "", "44.5")]
    total = rows[-1]
    assert {k: total[k] for k in ("events", "outcomes", "resolved", "accepted", "escalated",
                                  "joined_spend_usd", "unjoined_spend_usd", "unjoined_share",
                                  "cost_per_outcome_usd",
                                  "resolved_spend_usd", "cost_per_resolved_usd")} == {
        "events": "7", "outcomes": "4", "resolved": "2", "accepted": "1", "escalated": "1",
        "joined_spend_usd": "40", "unjoined_spend_usd": "4.5", "unjoined_share": "0.101124",
        "cost_per_outcome_usd": "10", "resolved_spend_usd": "33", "cost_per_resolved_usd": "16.5"}
    assert rows[1]["cost_per_resolved_usd"] == ""  # no resolved outcome: blank, not 0
    last = result.stdout.splitlines()[-1].split()
    assert last[:2] == ["TOTAL", "44.5"] and last[-3:] == ["10", "16.5", "10.1%"]
    assert "2 rejected (decode 1, invalid 1)" in result.stderr  # bad events counted, not fatal
    assert "2 duplicates" in result.stderr and "3 outside it" in result.stderr
    assert "1 rejected (invalid 1)" in result.stderr
    assert "1 stamped in the period joined no event (acme/lonely)" in result.stderr


def test_cli_table_is_aligned(inputs: dict[str, Path]) -> None:
    result = run(str(inputs["events"]), "--period", "2026-11", "--by", "tenant_id",
                 "--rules", str(inputs["rules"]), "--no-progress")
    assert result.exit_code == 0, result.output
    table = result.stdout.split("\n\n", 1)[1].splitlines()
    assert len({len(line) for line in table}) == 1, table  # every line as wide (numbers right-aligned)
    assert [line.split()[:2] for line in (table[2], table[3], table[-1])] == [
        ["acme", "23"], ["globex", "21.5"], ["TOTAL", "44.5"]]


@pytest.mark.parametrize("period", ["2026-13", "2026/11", "W48"])
def test_cli_bad_period_exits_2(inputs: dict[str, Path], period: str) -> None:
    result = run(str(inputs["events"]), "--period", period)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--period'" in result.stderr and "is not a period: use a month" in result.stderr
    assert "Traceback" not in result.output


def test_cli_bad_by_and_missing_file_exit_2(inputs: dict[str, Path], tmp_path: Path) -> None:
    result = run(str(inputs["events"]), "--period", "2026-11", "--by", "business_unit,risk")
    assert result.exit_code == 2 and "Invalid value for '--by'" in result.stderr
    result = run(str(tmp_path / "nope.jsonl"), "--period", "2026-11")
    assert result.exit_code == 2 and result.stderr.startswith("spendwarden: error: cannot read")


def test_cli_reads_marked_outcomes_among_the_events(inputs: dict[str, Path], tmp_path: Path) -> None:
    """A replay of the live cost topic holds outcomes marked ``record_type: outcome`` (the outcome
    bridge writes them there as arrays): they join like outcomes from --outcomes."""
    marked = [{**o, "record_type": "outcome"} for o in OUTCOMES]
    mixed = write_jsonl(tmp_path / "mixed.jsonl", ACME + GLOBEX + [marked[:2]] + marked[2:])
    separate, together = tmp_path / "separate.csv", tmp_path / "together.csv"
    first = run(str(inputs["events"]), "--period", "2026-11", "--outcomes", str(inputs["outcomes"]),
                "--rules", str(inputs["rules"]), "--csv", str(separate), "--no-progress")
    second = run(str(mixed), "--period", "2026-11", "--rules", str(inputs["rules"]), "--csv", str(together),
                 "--no-progress")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    assert together.read_text() == separate.read_text()
    assert "outcome" in together.read_text().splitlines()[0]
