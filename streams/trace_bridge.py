"""One OTLP trace export in, cost-event records keyed by tenant out (docs/traces.md).

Why a bridge to the cost topic rather than counting spans where they arrive: the engine needs a
tenant's events in one partition, in one offset space (its position fences); an OTLP export
mixes tenants and arrives keyed by trace or not at all. So each export is split by tenant into
JSON-array records of cost events and produced to the cost topic keyed by tenant, where they are
counted like any other. A re-sent export (a crash before the commit) produces the same
``cost_event_id``s (the span ids), which the engine counts once.

Pure: bytes in, records and rejections out; the worker (streams/service.py) sends them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from spendwarden.exceptions import RejectedEvent
from spendwarden.streams.ingest import Rejection
from spendwarden.streams.otlp import check_encoding, decode_export, spans_to_events
from spendwarden.streams.otlp_mapping import TraceMapping
from spendwarden.streams.pricebook import Pricebook


@dataclass
class Bridged:
    """What one export became: (key, value) records for the cost topic, and what was refused."""

    records: list[tuple[bytes, bytes]] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    stats: dict[str, int] = field(default_factory=dict)


class TraceBridge:
    """Converts OTLP exports with one mapping, pricebook and encoding."""

    def __init__(self, mapping: TraceMapping, pricebook: Pricebook, *, encoding: str = "otlp_json",
                 max_events_per_record: int = 500, max_record_bytes: int = 1_048_576) -> None:
        check_encoding(encoding)
        self.mapping = mapping
        self.pricebook = pricebook
        self.encoding = encoding
        self.max_events = max_events_per_record
        self.max_bytes = max_record_bytes

    def convert(self, raw: bytes | None) -> Bridged:
        """Never raises on input: an unreadable export is one rejection."""
        found = Bridged()
        try:
            if raw is None:
                raise RejectedEvent("decode", "empty record (no value): not an OTLP export")
            request = decode_export(raw, self.encoding, max_bytes=None)
            by_tenant, found.rejections = spans_to_events(request, self.mapping, pricebook=self.pricebook,
                                                          stats=found.stats)
        except RejectedEvent as exc:
            found.rejections.append(Rejection.of(exc))
            return found
        except Exception as exc:  # noqa: BLE001 - a shape the converter did not foresee must not stop the worker
            found.rejections.append(Rejection("invalid", f"unreadable export: {type(exc).__name__}: {exc}"[:300]))
            return found
        for tenant, events in by_tenant.items():
            key = tenant.encode()
            for chunk in self._chunks(events, found.rejections):
                found.records.append((key, chunk))
        return found

    def _chunks(self, events: list[dict[str, Any]], rejections: list[Rejection]) -> list[bytes]:
        return json_chunks(events, self.max_events, self.max_bytes, rejections,
                           lambda event: f"span {event.get('cost_event_id')} makes a cost event")


def json_chunks(items: list[dict[str, Any]], max_items: int, max_bytes: int, rejections: list[Rejection],
                name: Callable[[dict[str, Any]], str]) -> list[bytes]:
    """JSON arrays of at most ``max_items`` items and under ``max_bytes`` each (the producer and
    the cost topic's reader refuse bigger records); split in halves until they fit. One item
    alone over the limit is refused here (``too_large``, detail starting with ``name(item)``).
    Shared by the trace and outcome bridges."""
    pending = [items[i:i + max_items] for i in range(0, len(items), max_items)]
    out: list[bytes] = []
    while pending:
        part = pending.pop(0)
        body = orjson.dumps(part)
        if len(body) <= max_bytes:
            out.append(body)
        elif len(part) == 1:
            rejections.append(Rejection("too_large",
                                        f"{name(part[0])} of {len(body)} bytes; the limit is {max_bytes}"))
        else:
            half = len(part) // 2
            pending[:0] = [part[:half], part[half:]]
    return out
