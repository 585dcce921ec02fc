"""usd_to_nanos: exact integer nano-dollars, rounded half-even once, whatever the input form."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendwarden.streams.money import usd_to_nanos


def exact_nanos(usd: Decimal) -> int:
    """Independent reference: the exact rational value × 10**9, rounded half-even."""
    value = Fraction(usd) * 10**9
    floor = value.numerator // value.denominator
    rest = value - floor
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2):
        floor += 1
    return floor


@pytest.mark.parametrize(
    ("usd", "nanos"),
    [
        ("0.0000000005", 0),  # tie → even (0)
        ("0.0000000015", 2),  # tie → even (2)
        ("-0.0000000025", -2),
        ("0.00000000051", 1),
        ("0.270624", 270_624_000),
        ("1E+3", 1_000_000_000_000),
        ("-0", 0),
        (7, 7_000_000_000),
    ],
)
def test_half_even_examples(usd: str | int, nanos: int) -> None:
    """Ties go to the even nano-dollar, signs included; text and ints convert exactly."""
    assert usd_to_nanos(usd) == nanos
    assert usd_to_nanos(Decimal(usd)) == nanos


@settings(max_examples=500, deadline=None)
@given(st.integers(-(10**28) + 1, 10**28 - 1), st.integers(-40, 10))
def test_exact_up_to_28_digits(coefficient: int, exponent: int) -> None:
    """Up to the default context's 28 digits the result is the exact half-even rounding."""
    usd = Decimal(coefficient).scaleb(exponent)
    assert usd_to_nanos(usd) == exact_nanos(usd)
    assert usd_to_nanos(str(usd)) == exact_nanos(usd)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e9, max_value=1e9))
def test_float_reprs_match_the_decimal_formula(usd: float) -> None:
    """What pydantic makes of a JSON float (its repr as a Decimal) keeps the historic formula."""
    value = Decimal(repr(usd))
    expected = int((value * 10**9).to_integral_value(rounding=ROUND_HALF_EVEN))
    assert usd_to_nanos(value) == expected == exact_nanos(value)


@pytest.mark.parametrize(("usd", "error"), [("NaN", ValueError), ("Infinity", OverflowError)])
def test_non_finite_refused(usd: str, error: type[Exception]) -> None:
    """NaN and infinity have no nano-dollar value."""
    with pytest.raises(error):
        usd_to_nanos(usd)
