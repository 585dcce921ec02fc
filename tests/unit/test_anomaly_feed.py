"""AnomalyFeed's call-profile bucket: what reaches the detector from events (pure, no I/O)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from spendwarden.streams.anomaly import TRACE_IDLE_MIN, TRACES_KEPT, AnomalyFeed
from spendwarden.streams.events import CostEvent
from spendwarden.streams.periods import Calendar

KEY = ("acme", "uc-day", ("acme", "support"))
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def feed() -> tuple[AnomalyFeed, dict[Any, Any]]:
    state: dict[Any, Any] = {}
    return AnomalyFeed(state, {}, lambda tenant: Calendar("UTC")), state


def event(n: int, ts: float, *, trace: str | None = None, output: int = 100, model: str = "gpt-4o") -> CostEvent:
    return CostEvent(cost_event_id=f"e{n}", ts=datetime.fromtimestamp(ts, timezone.utc), tenant_id="acme",
                     use_case_id="support", workflow_step="answer", model_or_service=model, input_tokens=500,
                     output_tokens=output, trace_id=trace)


def observe(anomaly: AnomalyFeed, n: int, ts: float, **kw: Any) -> None:
    anomaly.observe(KEY[0], KEY[1], KEY[2], ts, n, 1000, event(n, ts, **kw))


def open_sums(state: dict[Any, Any]) -> dict[str, float]:
    return state[("pbkt",) + KEY][2]


def test_an_event_of_an_earlier_minute_still_counts() -> None:
    """A producer whose clock is a few minutes behind must not have its calls dropped."""
    anomaly, state = feed()
    observe(anomaly, 1, T0 + 300)
    observe(anomaly, 2, T0 + 60)  # four minutes earlier, later position
    assert open_sums(state)["calls"] == 2


def test_a_redelivered_event_counts_once() -> None:
    anomaly, state = feed()
    observe(anomaly, 1, T0 + 1)
    observe(anomaly, 1, T0 + 1)
    assert open_sums(state)["calls"] == 1


def test_the_closed_minute_is_learned_and_the_open_one_scored() -> None:
    """A burst of failures inside the current minute shows in the score before the minute ends,
    and the memo is taken again as the minute's calls grow."""
    anomaly, state = feed()
    n = 0
    for minute in range(3 * 1440):  # three days of five good calls a minute
        for i in range(5):
            n += 1
            observe(anomaly, n, T0 + minute * 60 + i)
    now = T0 + 3 * 1440 * 60
    quiet = anomaly.context(KEY, now)["profile"]
    assert quiet["warm"] and quiet["score"] < 6
    for i in range(40):
        n += 1
        observe(anomaly, n, now + 1 + i / 10, output=0, trace=f"stuck-{i // 4}")
    burst = anomaly.context(KEY, now + 5)["profile"]
    assert burst["score"] > 6, burst
    assert ("detp",) + KEY not in state  # taught detectors are written at a flush, not each minute
    assert anomaly.flush() == 4 and state[("detp",) + KEY]["t"] == now  # the three minute ones and "det"
    assert anomaly.flush() == 0  # nothing taught since


def test_deep_traces_are_counted_in_a_busy_scope() -> None:
    """100 traces open at once, 15 calls each, interleaved: every trace is counted once as it
    reaches 8 calls, however many traces are open (up to TRACES_KEPT)."""
    anomaly, state = feed()
    n = 0
    for call in range(15):
        for trace in range(100):
            n += 1
            observe(anomaly, n, T0 + n * 0.01, trace=f"trace-{trace}")
    assert 100 < TRACES_KEPT
    sums = open_sums(state)
    assert sums["depth:8-15"] == 100 and sums["traces"] == 100 and sums["calls"] == 1500


def test_a_failure_right_after_a_failure_of_its_trace_is_a_failed_retry() -> None:
    anomaly, state = feed()
    observe(anomaly, 1, T0, trace="a", output=0)
    observe(anomaly, 2, T0 + 1, trace="a")  # the retry succeeded
    observe(anomaly, 3, T0 + 2, trace="a", output=0)
    observe(anomaly, 4, T0 + 3, trace="a", output=0)  # failed again right after: a failed retry
    observe(anomaly, 5, T0 + 4, trace="b", output=0)
    sums = open_sums(state)
    assert sums["failed"] == 4 and sums["refail"] == 1


def test_only_the_detectors_a_budget_reads_learn_and_score() -> None:
    from spendwarden.rules.compiler import detectors_read

    assert detectors_read("anomaly.profile.score > 6 && anomaly.profile.warm") == {"profile"}
    assert detectors_read('anomaly.unit_cost.score > 4 && "anomaly.spend" != ""') == {"unit_cost"}
    assert detectors_read("has(anomaly)") == {"spend", "unit_cost", "tokens", "profile", "new_model", "cache"}
    anomaly, state = feed()
    for n in range(1, 200):
        anomaly.observe(KEY[0], KEY[1], KEY[2], T0 + n * 60, n, 1000, event(n, T0 + n * 60), frozenset({"profile"}))
    anomaly.flush()
    assert ("pbkt",) + KEY in state and ("detp",) + KEY in state
    assert ("abkt",) + KEY not in state and ("det",) + KEY not in state
    assert set(anomaly.context(KEY, T0 + 200 * 60, frozenset({"profile"}))) == {"profile"}


def test_the_hour_bucket_counts_tokens_of_answered_model_calls_only() -> None:
    """Token creep learns tokens per successful model call: a failed attempt (no output) and a
    redelivered event add nothing; the closed hour is taught when the next hour starts."""
    anomaly, state = feed()
    tokens_only = frozenset({"tokens"})
    for n, output in ((1, 100), (2, 0), (3, 300)):
        anomaly.observe(KEY[0], KEY[1], KEY[2], T0 + n, n, 1000, event(n, T0 + n, output=output), tokens_only)
    anomaly.observe(KEY[0], KEY[1], KEY[2], T0 + 3, 3, 1000, event(3, T0 + 3, output=300), tokens_only)
    assert state[("abkt",) + KEY][2:] == [3000, 3, 2, 600 + 800]
    assert anomaly.context(KEY, T0 + 10, tokens_only)["tokens"]["actual"] == 700  # the open hour, scored
    anomaly.observe(KEY[0], KEY[1], KEY[2], T0 + 3600, 4, 1000, event(4, T0 + 3600), tokens_only)
    anomaly.flush()
    learned = state[("det",) + KEY]["tokens"]
    assert learned["p"] == [1400.0, 2.0]  # under min_volume: pooled until 20 calls


def test_an_hour_bucket_of_an_older_version_keeps_counting() -> None:
    """A checkpoint written before token counts were kept holds four fields: the hour goes on."""
    anomaly, state = feed()
    state[("abkt",) + KEY] = [int(T0 // 3600), 1, 5000, 5]
    anomaly.observe(KEY[0], KEY[1], KEY[2], T0 + 5, 2, 1000, event(2, T0 + 5))
    assert state[("abkt",) + KEY] == [int(T0 // 3600), 2, 6000, 6, 1, 600]


def test_the_minute_bucket_keeps_usd_per_model_for_the_new_model_detector() -> None:
    """Model calls' cost per model joins the open minute; the closed minute teaches it, and a
    dear model's first call is scored at once, in the open minute."""
    anomaly, state = feed()
    debut_only = frozenset({"new_model"})
    n = 0
    for minute in range(3 * 24 * 60):  # three days of a call a minute at 0.002 USD
        n += 1
        anomaly.observe(KEY[0], KEY[1], KEY[2], T0 + minute * 60, n, 2_000_000, event(n, T0 + minute * 60),
                        debut_only)
    assert state[("pbkt",) + KEY][4] == {"gpt-4o": 0.002}
    anomaly.flush()
    assert ("detn",) + KEY in state and ("detp",) + KEY not in state
    now = T0 + 3 * 86400 + 5
    n += 1
    anomaly.observe(KEY[0], KEY[1], KEY[2], now, n, 60_000_000, event(n, now, model="claude-opus-4"), debut_only)
    score = anomaly.context(KEY, now + 1, debut_only)["new_model"]
    assert score["warm"] and score["score"] == pytest.approx(30) and score["severity"] == "high"


def _eight_scopes_three_minutes() -> dict[Any, Any]:
    anomaly, state = feed()
    keys = [("acme", "uc-day", ("acme", f"uc{i}")) for i in range(8)]
    n = 0
    for minute in range(4):
        for key in keys:
            for _ in range(minute + 1):
                n += 1
                ts = T0 + minute * 60
                anomaly.observe(key[0], key[1], key[2], ts, n, 1000, event(n, ts, output=100 * minute))
    anomaly.flush()
    return state


def test_detectors_dropped_from_the_live_cache_are_written_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Taught detectors live in memory until a flush; a full cache writes them before dropping
    them and rebuilds them from state later, so the states end as with a cache never full."""
    import spendwarden.streams.anomaly as anomaly_module

    roomy = _eight_scopes_three_minutes()
    monkeypatch.setattr(anomaly_module, "CACHE_MAX", 3)
    cramped = _eight_scopes_three_minutes()
    assert cramped == roomy
    assert sum(1 for key in roomy if key[0] == "detp") == 8


def test_a_trace_idle_for_two_hours_is_forgotten_and_an_active_one_kept() -> None:
    """A quiet scope does not carry its old traces for good: a trace without a call for
    TRACE_IDLE_MIN minutes leaves the bucket (its next call counts as a new trace), one that
    keeps calling keeps its count."""
    anomaly, state = feed()
    n = 0
    for i in range(50):  # fifty one-call traces, then silence
        n += 1
        observe(anomaly, n, T0 + i, trace=f"old-{i}")
    for minute in range(0, TRACE_IDLE_MIN + 30, 20):  # one trace calling every 20 minutes
        n += 1
        observe(anomaly, n, T0 + 60 + minute * 60, trace="busy")
    traces = state[("pbkt",) + KEY][3]
    assert len(traces) == 1  # only "busy" is left
    busy = next(iter(traces.values()))
    assert busy[0] == len(range(0, TRACE_IDLE_MIN + 30, 20))  # its calls all counted on one trace
    n += 1
    observe(anomaly, n, T0 + 60 + (TRACE_IDLE_MIN + 40) * 60, trace="old-3")
    assert open_sums(state)["traces"] == 1  # old-3 counted as a new trace in this minute


def test_trace_entries_of_an_older_version_expire_by_their_first_minute() -> None:
    anomaly, state = feed()
    minute = int(T0 // 60)
    state[("pbkt",) + KEY] = [minute, 1, {}, {"a1": [3, 0, minute, 1], "b2": [1, 0, minute + 100, 0]}, {}]
    observe(anomaly, 2, T0 + (TRACE_IDLE_MIN + 10) * 60, trace="new")
    assert list(state[("pbkt",) + KEY][3])[:1] == ["b2"]  # a1 started over two hours ago: gone
