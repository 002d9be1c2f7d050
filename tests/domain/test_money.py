"""Money: exact integer minor units, one currency per amount, half-even rates."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import MAX_MINOR, SUPPORTED_CURRENCIES, Money, MoneyError, exponent

CURRENCIES = sorted(SUPPORTED_CURRENCIES)

currencies = st.sampled_from(CURRENCIES)
minors = st.integers(min_value=-MAX_MINOR, max_value=MAX_MINOR)
# Line totals and order sums may exceed MAX_MINOR (a unit price times a quantity, summed).
sums = st.integers(min_value=-(10**20), max_value=10**20)
rates_bp = st.integers(min_value=-10_000, max_value=1_000_000)

domain_settings = settings(max_examples=150, deadline=None)


def _exact(coefficient: int, exp: int) -> Decimal:
    # Built from a string: Decimal.scaleb would round to the context's 28 digits.
    return Decimal(f"{coefficient}E{exp}")


def _amount(minor: int, currency: str) -> Decimal:
    return _exact(minor, -exponent(currency))


@domain_settings
@given(minor=minors, currency=currencies)
def test_from_decimal_amount_round_trips(minor: int, currency: str) -> None:
    amount = _amount(minor, currency)
    money = Money.from_decimal(amount, currency)
    assert money == Money(minor, currency)
    assert money.amount == amount
    # The amount always carries exactly the currency's number of decimals.
    assert money.amount.as_tuple().exponent == -exponent(currency)
    assert Money.from_decimal(str(money.amount), currency) == money


@domain_settings
@given(minor=minors, currency=currencies, zeros=st.integers(min_value=0, max_value=5))
def test_from_decimal_accepts_trailing_zeros(minor: int, currency: str, zeros: int) -> None:
    padded = _exact(minor * 10**zeros, -exponent(currency) - zeros)
    assert Money.from_decimal(padded, currency) == Money(minor, currency)


@domain_settings
@given(
    minor=st.integers(min_value=-(10**12), max_value=10**12),
    currency=currencies,
    extra=st.integers(min_value=1, max_value=40),
    last_digit=st.integers(min_value=1, max_value=9),
)
def test_from_decimal_too_many_decimals_is_money_error(
    minor: int, currency: str, extra: int, last_digit: int
) -> None:
    # ``minor`` followed by ``extra`` more decimal digits, the last of which is not zero.
    coefficient = minor * 10**extra + (last_digit if minor >= 0 else -last_digit)
    amount = _exact(coefficient, -exponent(currency) - extra)
    with pytest.raises(MoneyError, match="decimal places"):
        Money.from_decimal(amount, currency)


@pytest.mark.parametrize(
    ("amount", "currency"),
    [
        ("0.001", "USD"),
        ("1.5", "JPY"),
        ("0.0001", "KWD"),
        ("19.999", "EUR"),
        # More significant digits than the default decimal context keeps: must not be
        # rounded away into an acceptable amount.
        ("0.1000000000000000000000000000001", "USD"),
        ("1e-999999999", "USD"),
    ],
)
def test_from_decimal_excess_decimals_examples(amount: str, currency: str) -> None:
    with pytest.raises(MoneyError):
        Money.from_decimal(amount, currency)


def test_currency_exponents() -> None:
    assert exponent("JPY") == 0
    assert exponent("KWD") == 3
    assert exponent("USD") == 2
    assert Money.from_decimal("1500", "JPY") == Money(1500, "JPY")
    assert Money(1500, "JPY").amount == Decimal("1500")
    assert str(Money(1500, "JPY")) == "1500 JPY"
    assert Money.from_decimal("1.234", "KWD") == Money(1234, "KWD")
    assert str(Money(1234, "KWD")) == "1.234 KWD"
    assert str(Money(5, "USD")) == "0.05 USD"
    assert str(Money(-1999, "EUR")) == "-19.99 EUR"


@pytest.mark.parametrize("currency", ["XXX", "usd", "", "BTC"])
def test_unsupported_currency_is_money_error(currency: str) -> None:
    with pytest.raises(MoneyError, match="unsupported currency"):
        Money.from_decimal("1", currency)
    with pytest.raises(MoneyError):
        exponent(currency)


@domain_settings
@given(
    a=minors,
    b=minors,
    pair=st.lists(currencies, min_size=2, max_size=2, unique=True),
)
def test_mixing_currencies_raises(a: int, b: int, pair: list[str]) -> None:
    x, y = Money(a, pair[0]), Money(b, pair[1])
    with pytest.raises(MoneyError, match="cannot combine"):
        x + y
    with pytest.raises(MoneyError, match="cannot combine"):
        x - y


@domain_settings
@given(minor=sums, bp=rates_bp, currency=currencies)
def test_apply_rate_is_exact_half_even(minor: int, bp: int, currency: str) -> None:
    result = Money(minor, currency).apply_rate(bp)
    # Exact rational arithmetic; Python's round() of a Fraction is half-even.
    assert result == Money(round(Fraction(minor * bp, 10_000)), currency)
    with localcontext() as ctx:
        ctx.prec = 100
        exact = Decimal(minor) * Decimal(bp) / Decimal(10_000)
        assert result.minor == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@pytest.mark.parametrize(
    ("minor", "bp", "expected"),
    [
        (5, 1_000, 0),  # 0.5 -> 0 (even)
        (15, 1_000, 2),  # 1.5 -> 2 (even)
        (25, 1_000, 2),  # 2.5 -> 2 (even)
        (35, 1_000, 4),  # 3.5 -> 4
        (-25, 1_000, -2),
        (-15, 1_000, -2),
        (2499, 825, 206),  # 206.1675
        (10_000, 0, 0),
        (10_000, 10_000, 10_000),
    ],
)
def test_apply_rate_examples(minor: int, bp: int, expected: int) -> None:
    assert Money(minor, "USD").apply_rate(bp) == Money(expected, "USD")


@domain_settings
@given(a=sums, b=sums, c=sums, currency=currencies)
def test_add_sub_associative_and_inverse(a: int, b: int, c: int, currency: str) -> None:
    x, y, z = Money(a, currency), Money(b, currency), Money(c, currency)
    assert (x + y) + z == x + (y + z)
    assert x + y == y + x
    assert (x - y) - z == x - (y + z)
    assert x + y - y == x
    assert (x + y).minor == a + b
    assert (x - y).currency == currency
    assert x + Money.zero(currency) == x


@domain_settings
@given(minor=sums, quantity=st.integers(min_value=0, max_value=10_000), currency=currencies)
def test_times_multiplies_minor_units(minor: int, quantity: int, currency: str) -> None:
    assert Money(minor, currency).times(quantity) == Money(minor * quantity, currency)


@domain_settings
@given(currency=currencies, over=st.integers(min_value=1, max_value=10**20))
def test_too_large_amounts_refused(currency: str, over: int) -> None:
    for minor in (MAX_MINOR + over, -(MAX_MINOR + over)):
        with pytest.raises(MoneyError, match="too large"):
            Money.from_decimal(_amount(minor, currency), currency)


def test_largest_amount_accepted() -> None:
    assert Money.from_decimal(_amount(MAX_MINOR, "USD"), "USD").minor == MAX_MINOR
    assert Money.from_decimal(_amount(-MAX_MINOR, "JPY"), "JPY").minor == -MAX_MINOR


@pytest.mark.parametrize("amount", ["1e999999999", "-1e999999999", "1E+30", "9" * 40])
def test_huge_exponents_are_money_errors(amount: str) -> None:
    # Not decimal.Overflow (an ArithmeticError the API would not turn into a user error).
    with pytest.raises(MoneyError, match="too large"):
        Money.from_decimal(amount, "USD")


@pytest.mark.parametrize(
    "amount",
    ["NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "inf", Decimal("NaN"), Decimal("-Inf")],
)
def test_non_finite_amounts_refused(amount: str | Decimal) -> None:
    with pytest.raises(MoneyError, match="finite"):
        Money.from_decimal(amount, "USD")


@pytest.mark.parametrize("amount", ["", "abc", "1,00", "1.2.3", "$5"])
def test_non_decimal_strings_refused(amount: str) -> None:
    with pytest.raises(MoneyError, match="not a decimal"):
        Money.from_decimal(amount, "USD")
