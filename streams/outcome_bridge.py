"""Business outcomes in: one record of the outcomes topic → outcome records keyed by tenant for
the cost topic (docs/traces.md, "Outcomes in").

Why through the cost topic: the engine fences its state by source position, and positions only
grow within one partition's offsets. An outcome joins the cost of its trace inside the engine of
its tenant, so it must get a position in the same offset space as that tenant's cost events:
the bridge re-keys each tenant's outcomes into the cost topic, where ``Ingest.parse_items``
tells them from cost events by the marker ``"record_type": "outcome"``. A re-sent record (a
crash before the commit) repeats the ``business_outcome_id``s, which the engine counts once.

Pure: bytes in, records and rejections out; the worker (streams/service.py) sends them.
"""

from __future__ import annotations

from typing import Any

from spendwarden.exceptions import RejectedEvent
from spendwarden.streams.ingest import OUTCOME, RECORD_TYPE, Rejection, decode_items, validate_outcome
from spendwarden.streams.trace_bridge import Bridged, json_chunks

# What ``Bridged.stats`` counts (spendwarden_outcomes_total{kind}).
BRIDGE_KINDS = ("read", "bridged", "rejected")


def marked(outcome: dict[str, Any]) -> dict[str, Any]:
    """An outcome dict as the cost topic carries it: the marker first, then the outcome's fields."""
    return {RECORD_TYPE: OUTCOME, **outcome}


class OutcomeBridge:
    """Validates outcome records and groups them by tenant, within the cost topic's limits."""

    def __init__(self, *, max_outcomes_per_record: int = 500, max_record_bytes: int = 1_048_576) -> None:
        self.max_items = max_outcomes_per_record
        self.max_bytes = max_record_bytes

    def convert(self, raw: bytes | None) -> Bridged:
        """One outcome object or a JSON array of them (tenants mixed) → one record per tenant
        (more only past the record limits), outcomes in record order; never raises on input.

        Each element is validated as an ``Outcome`` (without the clock: the counting side
        refuses outcomes from the future); a bad one is a rejection carrying its index in the
        array, and the others still go on.
        """
        found = Bridged(stats={kind: 0 for kind in BRIDGE_KINDS})
        try:
            if raw is None:
                raise RejectedEvent("decode", "empty record (no value): not an outcome")
            items, is_array = decode_items(raw)  # no limits in: the records out are chunked
        except RejectedEvent as exc:
            found.rejections.append(Rejection.of(exc))
            found.stats["rejected"] += 1
            return found
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for index, obj in enumerate(items):
            found.stats["read"] += 1
            try:
                outcome = validate_outcome(obj)
            except RejectedEvent as exc:
                found.rejections.append(Rejection.of(exc, index if is_array else None))
                found.stats["rejected"] += 1
                continue
            by_tenant.setdefault(outcome.tenant_id, []).append(marked(outcome.model_dump(mode="json")))
        for tenant, outcomes in by_tenant.items():
            refused = len(found.rejections)
            chunks = json_chunks(outcomes, self.max_items, self.max_bytes, found.rejections,
                                 lambda item: f"outcome {item.get('business_outcome_id')} is a record")
            too_large = len(found.rejections) - refused
            found.stats["bridged"] += len(outcomes) - too_large
            found.stats["rejected"] += too_large
            key = tenant.encode()
            found.records.extend((key, chunk) for chunk in chunks)
        return found
