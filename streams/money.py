"""Money as integer nano-dollars (1e-9 USD): exact sums, no float drift.

Token prices go below a micro-dollar, so cents or micros are too coarse; an event's cost is
rounded once (half-even) to a whole nano-dollar when it is priced or read, and every total
after that is an exact integer sum.
"""

from __future__ import annotations

from decimal import Decimal

NANOS_PER_USD = 1_000_000_000
_NANO = Decimal("1e-9")
_NANOS = Decimal(NANOS_PER_USD)  # Decimal × Decimal skips converting the int on every call


def usd_to_nanos(usd: Decimal | int | str) -> int:
    """Convert a dollar amount to integer nano-dollars, rounding half-even once.

    On the ingest hot path: ``round(d)`` is ``int(d.to_integral_value(ROUND_HALF_EVEN))``
    (the same libmpdec rounding, and the same errors for NaN and infinity) in one call.
    """
    value = usd if isinstance(usd, Decimal) else Decimal(usd)
    return round(value * _NANOS)


def nanos_to_usd(nanos: int) -> Decimal:
    """Exact Decimal dollars for a nano-dollar amount (for reports and JSON)."""
    return (Decimal(nanos) * _NANO).normalize() if nanos else Decimal(0)


def usd_text(nanos: int) -> str:
    """Exact dollars as plain decimal text ("10", "0.000000037"), never exponent form."""
    return format(nanos_to_usd(nanos), "f")


def nanos_to_float(nanos: int) -> float:
    """Dollars as float, only for ratios and rule conditions, never for sums."""
    return nanos / NANOS_PER_USD


def format_usd(nanos: int) -> str:
    """Human text: $1,234.57 for large amounts, more digits below a cent."""
    usd = nanos / NANOS_PER_USD
    if abs(usd) >= 0.01 or nanos == 0:
        return f"${usd:,.2f}"
    return f"${usd:.6f}"
