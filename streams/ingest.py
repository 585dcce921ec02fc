"""Decode → validate → price: turns raw Kafka/file records into PricedEvents or rejections.

Every failure is a RejectedEvent with a short reason (``decode``, ``too_large``, ``invalid``,
``future``, ``unpriced``) so a bad record goes to the dead-letter topic instead of stopping
the stream. Whatever the bytes, nothing else escapes.

The cost topic also carries business outcomes, written there by the outcomes bridge
(streams/outcome_bridge.py): an item ``{"record_type": "outcome", ...}`` is an ``Outcome``,
everything else a cost event. ``parse_items`` reads both; ``parse_record`` cost events only.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import orjson
from pydantic import ValidationError

from spendwarden.exceptions import RejectedEvent
from spendwarden.streams.events import CostEvent, Outcome, PricedEvent, epoch_seconds
from spendwarden.streams.money import usd_to_nanos
from spendwarden.streams.pricebook import Pricebook

# Sanity ceilings so one bad record cannot blow up int64 Redis counters (≈9.2e9 USD in nanos)
# or make Decimal → int conversion of '1e999999999' run for minutes.
MAX_TOKENS = 10**12
MAX_CALLS = 10**9
MAX_GPU_SECONDS = 1e9
MAX_COST_USD = Decimal(10**9)
_MIN_COST_USD = -MAX_COST_USD  # negated once, not per event
_GOT_CHARS = 60

# The marker of an outcome item on the cost topic: {"record_type": "outcome", ...outcome fields}.
RECORD_TYPE = "record_type"
OUTCOME = "outcome"
# A record that is one object without these bytes is no outcome, so a single cost event skips the
# check (a substring search, ~0.2 µs on a 300-byte event). Write the key plainly: a JSON escape
# inside it (``"record\u005ftype"``) would hide the marker and the item is read as a cost event.
OUTCOME_MARK = b'"record_type"'


@dataclass(frozen=True)
class Rejection:
    """Why one record (or one item of an array record) was not counted."""

    reason: str
    detail: str
    field: str | None = None
    index: int | None = None

    @classmethod
    def of(cls, exc: RejectedEvent, index: int | None = None) -> "Rejection":
        return cls(exc.reason, exc.detail, exc.field, index)

    def to_dead_letter(self, raw: bytes, source: dict[str, Any]) -> dict[str, Any]:
        """Dead-letter payload: the reason, where the record came from, and the record itself."""
        try:
            text: str | None = bytes(raw).decode("utf-8")
            b64: str | None = None
        except UnicodeDecodeError:
            text, b64 = None, base64.b64encode(raw).decode("ascii")
        return {**asdict(self), "source": dict(source), "raw": text, "raw_base64": b64}


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _GOT_CHARS else text[: _GOT_CHARS - 1] + "…"


def _invalid(exc: ValidationError) -> RejectedEvent:
    """First pydantic error as 'field: message (got value)', the field as dotted loc."""
    errors = exc.errors(include_url=False)
    err = errors[0]
    field = ".".join(str(part) for part in err["loc"]) or None
    message = err["msg"].removeprefix("Value error, ")
    detail = f"{field}: {message}" if field else message
    if field and err["type"] != "missing":
        detail += f" (got {_got(err.get('input'))})"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return RejectedEvent("invalid", detail, field)


def _too_big(event: CostEvent) -> None:
    """Name the first quantity above its ceiling (kept off the hot path)."""
    for name, ceiling in (
        ("input_tokens", MAX_TOKENS),
        ("output_tokens", MAX_TOKENS),
        ("api_calls", MAX_CALLS),
        ("gpu_seconds", MAX_GPU_SECONDS),
    ):
        value = getattr(event, name)
        if value > ceiling:
            raise RejectedEvent("invalid", f"{name}: {_got(value)} is above the limit {ceiling:g}", name)


def decode_items(raw: bytes, max_bytes: float = float("inf"), max_items: float = float("inf")
                 ) -> tuple[list[object], bool]:
    """A record's items and whether it was an array (array items get an index): one JSON object
    or an array of them; RejectedEvent ``decode`` or ``too_large`` otherwise."""
    if len(raw) > max_bytes:
        raise RejectedEvent("too_large", f"record is {len(raw)} bytes; the limit is {max_bytes}")
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError, ValueError, RecursionError) as exc:
        raise RejectedEvent("decode", f"not UTF-8 JSON: {str(exc)[:200]}") from None
    if isinstance(value, dict):
        return [value], False
    if isinstance(value, list):
        if len(value) > max_items:
            raise RejectedEvent("too_large", f"array holds {len(value)} items; the limit is {max_items}")
        return value, True
    raise RejectedEvent("decode", f"expected a JSON object or an array of objects, got {type(value).__name__}")


def validate_outcome(obj: object) -> Outcome:
    """An Outcome, or RejectedEvent('invalid') naming the field at fault (the marker is ignored)."""
    if not isinstance(obj, dict):
        raise RejectedEvent("invalid", f"expected a JSON object, got {type(obj).__name__}")
    try:
        return Outcome.model_validate(obj)
    except ValidationError as exc:
        raise _invalid(exc) from None
    except Exception as exc:  # noqa: BLE001 - a validator bug must not stop the stream
        raise RejectedEvent("invalid", f"cannot validate: {type(exc).__name__}: {str(exc)[:200]}") from None


class Ingest:
    """Stateless apart from its pricebook and limits; safe to share across partitions."""

    def __init__(
        self,
        pricebook: Pricebook,
        max_record_bytes: int = 1_048_576,
        max_future_skew_s: float = 300.0,
        max_batch: int = 10_000,
        reprice: bool = False,
    ) -> None:
        self.pricebook = pricebook
        # Replay after a pricing fix (`replay --reprice VERSION`): metered usage costs the
        # pricebook's figure even when it carries its own allocated_cost_usd. Corrections
        # (`adjustment`), allocations other than direct metering, and events the pricebook
        # cannot price keep their own cost: there is no list price to replace it with.
        self.reprice = reprice
        self.max_record_bytes = max_record_bytes
        self.max_future_skew_s = max_future_skew_s
        self.max_batch = max_batch

    def decode(self, raw: bytes) -> list[object]:
        """A JSON object or array of objects as a list; refuses oversized or non-JSON bytes."""
        return self._decode(raw)[0]

    def _decode(self, raw: bytes) -> tuple[list[object], bool]:
        return decode_items(raw, self.max_record_bytes, self.max_batch)

    def validate(self, obj: object, now: float | None = None) -> CostEvent:
        """A CostEvent, or RejectedEvent('invalid'|'future') naming the field at fault."""
        if not isinstance(obj, dict):
            raise RejectedEvent("invalid", f"expected a JSON object, got {type(obj).__name__}")
        try:
            event = CostEvent.model_validate(obj)
        except ValidationError as exc:
            raise _invalid(exc) from None
        except Exception as exc:  # noqa: BLE001 - a validator bug (OverflowError) must not stop the stream
            detail = f"cannot validate: {type(exc).__name__}: {str(exc)[:200]}"
            raise RejectedEvent("invalid", detail) from None
        self.check(event, now)
        return event

    def check(self, event: CostEvent, now: float | None = None, ts: float | None = None) -> None:
        """Rules beyond the schema: cached ⊆ input, sane magnitudes, not from the future.

        ``ts`` is ``epoch_seconds(event.ts)`` when the caller already has it.
        """
        if event.cached_tokens > event.input_tokens:
            raise RejectedEvent(
                "invalid",
                f"cached_tokens ({event.cached_tokens}) exceeds input_tokens ({event.input_tokens}); "
                "cached tokens are counted inside input_tokens",
                "cached_tokens",
            )
        if (
            event.input_tokens > MAX_TOKENS
            or event.output_tokens > MAX_TOKENS
            or event.api_calls > MAX_CALLS
            or event.gpu_seconds > MAX_GPU_SECONDS
        ):
            _too_big(event)
        cost = event.allocated_cost_usd
        if cost is not None and not _MIN_COST_USD <= cost <= MAX_COST_USD:  # abs() may overflow
            raise RejectedEvent(
                "invalid",
                f"allocated_cost_usd: {_got(cost)} is beyond ±{MAX_COST_USD} USD for one event",
                "allocated_cost_usd",
            )
        if now is not None:
            ahead = (epoch_seconds(event.ts) if ts is None else ts) - now
            if ahead > self.max_future_skew_s:
                raise RejectedEvent(
                    "future",
                    f"ts {event.ts.isoformat()} is {ahead:.0f} s ahead of now; "
                    f"allowed clock skew is {self.max_future_skew_s:g} s",
                    "ts",
                )

    def price(self, event: CostEvent, ts: float | None = None) -> PricedEvent:
        """Own allocated cost when given (list price kept beside it), else the pricebook's.

        ``ts`` is ``epoch_seconds(event.ts)`` when the caller already has it.
        """
        if ts is None:
            ts = epoch_seconds(event.ts)
        list_cost, version = self.pricebook.price(event, ts)
        cost = event.allocated_cost_usd
        if cost is not None and (not self.reprice or list_cost is None or event.component == "adjustment"
                                 or event.allocation_method != "direct_metered"):
            return PricedEvent(event, usd_to_nanos(cost), list_cost, version, ts)
        if list_cost is None:
            what = f"{event.provider or '<no provider>'}/{event.model_or_service or '<no model>'}"
            where = (
                f"pricebook version {version}"
                if version
                else f"any pricebook version (none in force at {event.ts.isoformat()})"
            )
            raise RejectedEvent(
                "unpriced",
                f"no allocated_cost_usd and no price for {what} in {where}",
                "model_or_service",
            )
        return PricedEvent(event, list_cost, list_cost, version, ts)

    def _one(self, obj: object, now: float | None) -> PricedEvent:
        return self.price(self.validate(obj, now))

    def _item(self, obj: object, now: float | None) -> PricedEvent | Outcome:
        """An item marked ``"record_type": "outcome"`` as an Outcome, any other as a cost event."""
        if obj.__class__ is dict and obj.get(RECORD_TYPE) == OUTCOME:  # type: ignore[attr-defined]
            return self.outcome(obj, now)
        return self._one(obj, now)

    def parse_object(self, obj: object, now: float | None = None
                     ) -> tuple[list[PricedEvent | Outcome], list[Rejection]]:
        """Like parse_items for a record already decoded (CSV and Parquet rows): a row marked
        ``"record_type": "outcome"`` is an Outcome, any other a cost event."""
        try:
            return [self._item(obj, now)], []
        except RejectedEvent as exc:
            return [], [Rejection.of(exc)]

    def parse_record(
        self, raw: bytes, now: float | None = None
    ) -> tuple[list[PricedEvent], list[Rejection]]:
        """Good events and rejections of one record (array items carry their index)."""
        if len(raw) <= self.max_record_bytes and raw[:1] == b"{":
            # Fast path: pydantic's own JSON parser beats orjson + model_validate. On any
            # error fall through, so the slow path reports the right reason and field.
            # The validator is called directly: model_validate_json only adds a Python frame.
            try:
                event = CostEvent.__pydantic_validator__.validate_json(raw)
            except Exception:  # noqa: BLE001 - the slow path below names the reason
                pass
            else:
                try:
                    ts = epoch_seconds(event.ts)  # once, for check, pricebook and PricedEvent
                    self.check(event, now, ts)
                    return [self.price(event, ts)], []
                except RejectedEvent as exc:
                    return [], [Rejection.of(exc)]
        try:
            items, is_array = self._decode(raw)
        except RejectedEvent as exc:
            return [], [Rejection.of(exc)]
        events: list[PricedEvent] = []
        rejections: list[Rejection] = []
        for index, obj in enumerate(items):
            try:
                events.append(self._one(obj, now))
            except RejectedEvent as exc:
                rejections.append(Rejection.of(exc, index if is_array else None))
        return events, rejections

    def outcome(self, obj: object, now: float | None = None) -> Outcome:
        """An Outcome not from the future (an outcome moves its tenant's engine clock like an event)."""
        outcome = validate_outcome(obj)
        if now is not None:
            ahead = epoch_seconds(outcome.ts) - now
            if ahead > self.max_future_skew_s:
                raise RejectedEvent(
                    "future",
                    f"ts {outcome.ts.isoformat()} is {ahead:.0f} s ahead of now; "
                    f"allowed clock skew is {self.max_future_skew_s:g} s",
                    "ts",
                )
        return outcome

    def parse_items(
        self, raw: bytes, now: float | None = None
    ) -> tuple[list[PricedEvent | Outcome], list[Rejection]]:
        """``parse_record``, and items marked ``"record_type": "outcome"`` as Outcomes, all in record
        order (a caller numbers them for positions). A record that is no array and lacks the
        marker's bytes is exactly ``parse_record`` (its fast path); an array's items are checked
        one by one, a dict lookup each, cheaper than searching the bytes of a large record."""
        if raw[:1] != b"[" and OUTCOME_MARK not in raw:
            return self.parse_record(raw, now)  # type: ignore[return-value]
        try:
            items, is_array = self._decode(raw)
        except RejectedEvent as exc:
            return [], [Rejection.of(exc)]
        found: list[PricedEvent | Outcome] = []
        rejections: list[Rejection] = []
        for index, obj in enumerate(items):
            try:
                found.append(self._item(obj, now))
            except RejectedEvent as exc:
                rejections.append(Rejection.of(exc, index if is_array else None))
        return found, rejections
