"""Drive the engine over recorded events with a simulated clock, as fast as the CPU allows.

The same ``Engine`` as the live service; only the driver differs. The clock advances in
ticks of simulated time as event times pass, so periods end, decisions lift and alerts
resolve exactly as they would live. Effects go to a sink (JSONL files, a list in tests).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Protocol

import orjson

from spendwarden.gc_policy import engine_thresholds
from spendwarden.rules.compiler import RuleSet
from spendwarden.streams.effects import Effect
from spendwarden.streams.engine import Engine
from spendwarden.streams.engine_state import position
from spendwarden.streams.events import Outcome, epoch_seconds
from spendwarden.streams.ingest import Ingest, Rejection
from spendwarden.streams.money import format_usd

SINK_FILES = {
    "decision": "decisions.jsonl",
    "alert_firing": "alerts.jsonl",
    "alert_resolved": "alerts.jsonl",
    "late_spend": "late.jsonl",
    "too_late": "late.jsonl",
}


class EffectSink(Protocol):
    def effect(self, effect: Effect) -> None: ...
    def rejected(self, where: int, rejection: Rejection, raw: bytes) -> None: ...
    def close(self) -> None: ...


class JsonlSink:
    """Writes effects to decisions.jsonl, alerts.jsonl, late.jsonl and dead-letter.jsonl in a folder."""

    def __init__(self, folder: str | Path, locate: Callable[[int], dict[str, Any]] | None = None) -> None:
        self.folder = Path(folder)
        self.locate = locate  # where a rejected record came from; default {"line": position}
        self.folder.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[bytes]] = {}

    def _file(self, name: str) -> IO[bytes]:
        handle = self._files.get(name)
        if handle is None:
            handle = self._files[name] = open(self.folder / name, "wb")
        return handle

    def effect(self, effect: Effect) -> None:
        self._file(SINK_FILES[effect.kind]).write(orjson.dumps(effect.to_dict()) + b"\n")

    def rejected(self, where: int, rejection: Rejection, raw: bytes) -> None:
        record = rejection.to_dead_letter(raw, self.locate(where) if self.locate else {"line": where})
        self._file("dead-letter.jsonl").write(orjson.dumps(record) + b"\n")

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()


class NullSink:
    """Keeps nothing: for benchmarks and for replays whose effects another sink taps."""

    def effect(self, effect: Any) -> None:
        pass

    def rejected(self, where: int, rejection: Any, raw: bytes) -> None:
        pass

    def close(self) -> None:
        pass


class ListSink:
    """Keeps effects and rejections in memory (tests, notebooks)."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []
        self.rejections: list[tuple[int, Rejection]] = []

    def effect(self, effect: Effect) -> None:
        self.effects.append(effect)

    def rejected(self, where: int, rejection: Rejection, raw: bytes) -> None:
        self.rejections.append((where, rejection))

    def close(self) -> None:
        pass


@dataclass
class ReplayResult:
    """What a replay counted, for the summary table and for scripts (``--json``)."""

    records: int = 0
    events: int = 0
    outcomes: int = 0
    events_with_effects: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    effects: Counter[str] = field(default_factory=Counter)
    elapsed_s: float = 0.0
    first_ts: float | None = None
    last_ts: float | None = None
    engine: Engine | None = None

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s else 0.0

    def to_dict(self) -> dict[str, Any]:
        stats = self.engine.stats if self.engine else None
        return {
            "records": self.records,
            "events": self.events,
            "outcomes": self.outcomes,
            "rejected": dict(self.rejected),
            "effects": dict(self.effects),
            "duplicates": stats.duplicates if stats else 0,
            "elapsed_s": round(self.elapsed_s, 3),
            "events_per_s": round(self.events_per_s),
        }


def replay(
    records: Iterable[tuple[int, bytes | dict[str, Any]]],
    rules: RuleSet,
    ingest: Ingest,
    sink: EffectSink,
    *,
    tick_s: float = 60.0,
    advance_to: float | None = None,
    progress: Callable[[ReplayResult], None] | None = None,
    progress_every: int = 50_000,
    engine: Engine | None = None,
) -> ReplayResult:
    """Run ``records`` through ingest and the engine; ticks follow event time in ``tick_s`` steps.
    The garbage collector runs with thresholds for a large state meanwhile (gc_policy.py)."""
    with engine_thresholds():
        return _replay(records, rules, ingest, sink, tick_s, advance_to, progress, progress_every,
                       engine or Engine(rules))


def _replay(records: Iterable[tuple[int, bytes | dict[str, Any]]], rules: RuleSet, ingest: Ingest,
            sink: EffectSink, tick_s: float, advance_to: float | None,
            progress: Callable[[ReplayResult], None] | None, progress_every: int, engine: Engine) -> ReplayResult:
    result = ReplayResult(engine=engine)
    effects_count = result.effects
    process = engine.process
    next_tick: float | None = None
    started = time.perf_counter()

    def emit(found: list[Effect]) -> None:
        for effect in found:
            effects_count[effect.kind] += 1
            sink.effect(effect)

    for where, record in records:
        result.records += 1
        items: list[Any]
        if isinstance(record, (bytes, bytearray, memoryview)):
            raw = bytes(record)
            # Items marked "record_type": "outcome" are outcomes, as on the live cost topic.
            items, rejections = ingest.parse_items(raw)
        else:
            raw = orjson.dumps(record, default=str)
            items, rejections = ingest.parse_object(record)
        for rejection in rejections:
            result.rejected[rejection.reason] += 1
            sink.rejected(where, rejection, raw)
        for index, priced in enumerate(items):
            if priced.__class__ is Outcome:
                next_tick = _take_outcome(engine, priced, position(where, index), result, next_tick, tick_s, emit)
                continue
            ts = priced.ts
            if next_tick is None:
                next_tick = (ts // tick_s + 1) * tick_s
                result.first_ts = ts
            while ts >= next_tick:  # every tick in a gap, so a period ends on time
                emit(engine.advance(next_tick))
                next_tick += tick_s
            if result.last_ts is None or ts > result.last_ts:
                result.last_ts = ts
            found = process(priced, position(where, index))
            if found:
                result.events_with_effects += 1
                emit(found)
            result.events += 1
        if progress is not None and result.records % progress_every == 0:
            result.elapsed_s = time.perf_counter() - started
            progress(result)
    emit(engine.catch_up())  # what a busy last minute left for the next tick, which will not come
    end = advance_to if advance_to is not None else result.last_ts
    if end is not None:
        while next_tick is not None and next_tick <= end:
            emit(engine.advance(next_tick))
            next_tick += tick_s
        emit(engine.advance(end))
    engine.sync_state()  # the returned engine's state is complete
    result.elapsed_s = time.perf_counter() - started
    sink.close()
    return result


def _take_outcome(engine: Engine, outcome: Outcome, pos: int, result: ReplayResult, next_tick: float | None,
                  tick_s: float, emit: Callable[[list[Effect]], None]) -> float | None:
    """An outcome moves the simulated clock like an event, then goes to ``process_outcome``."""
    ts = epoch_seconds(outcome.ts)
    if next_tick is None:
        next_tick = (ts // tick_s + 1) * tick_s
        result.first_ts = ts
    while ts >= next_tick:
        emit(engine.advance(next_tick))
        next_tick += tick_s
    if result.last_ts is None or ts > result.last_ts:
        result.last_ts = ts
    emit(engine.process_outcome(outcome, pos, ts))
    result.outcomes += 1
    return next_tick


def summary_table(result: ReplayResult) -> str:
    """A readable summary: counts, speed, and the ten largest budget counters."""
    engine = result.engine
    lines = [
        f"records read      {result.records:>12,}",
        f"events counted    {result.events - (engine.stats.duplicates if engine else 0):>12,}",
        f"duplicates        {engine.stats.duplicates if engine else 0:>12,}",
        *([f"outcomes          {result.outcomes:>12,}"] if result.outcomes else []),
        f"rejected          {sum(result.rejected.values()):>12,}  {dict(result.rejected) or ''}",
        f"alerts fired      {result.effects.get('alert_firing', 0):>12,}",
        f"alerts resolved   {result.effects.get('alert_resolved', 0):>12,}",
        f"decision changes  {result.effects.get('decision', 0):>12,}",
        f"late spend        {result.effects.get('late_spend', 0):>12,}",
        f"too late          {result.effects.get('too_late', 0):>12,}",
        f"elapsed           {result.elapsed_s:>12.2f} s  ({result.events_per_s:,.0f} events/s)",
    ]
    if engine is not None:
        top = sorted(engine.totals().items(), key=lambda item: -item[1])[:10]
        if top:
            lines.append("")
            lines.append(f"{'budget':<28} {'scope':<32} {'period':<11} {'spend':>14}")
            for (budget, inst, period_id), nanos in top:
                lines.append(f"{budget[:28]:<28} {'/'.join(inst)[:32] or '(all)':<32} {period_id:<11} "
                             f"{format_usd(nanos):>14}")
    return "\n".join(lines)
