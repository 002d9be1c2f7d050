"""Order pricing: flat shipping below a threshold, tax half-even on subtotal plus shipping."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.money import Money, MoneyError
from domain.orders import OrderTotals, PricingPolicy, price_order


def usd(minor: int) -> Money:
    return Money(minor, "USD")


def test_price_order_flat_shipping_below_threshold() -> None:
    totals = price_order([usd(1000), usd(500)], "USD", PricingPolicy())
    assert totals == OrderTotals(usd(1500), usd(500), usd(0), usd(2000))


def test_price_order_free_shipping_at_threshold() -> None:
    totals = price_order([usd(4000), usd(6000)], "USD", PricingPolicy())
    assert totals == OrderTotals(usd(10_000), usd(0), usd(0), usd(10_000))


def test_price_order_flat_shipping_just_below_threshold() -> None:
    totals = price_order([usd(9999)], "USD", PricingPolicy())
    assert totals.shipping == usd(500)
    assert totals.total == usd(10_499)


def test_price_order_empty_order_ships_free() -> None:
    assert price_order([], "USD", PricingPolicy()) == OrderTotals(usd(0), usd(0), usd(0), usd(0))


def test_price_order_tax_on_subtotal_plus_shipping() -> None:
    policy = PricingPolicy(
        flat_shipping_minor=500, free_shipping_from_minor=10_000, tax_rate_bp=825
    )
    totals = price_order([usd(1999)], "USD", policy)
    # (19.99 + 5.00) * 8.25% = 2.061675 -> 2.06
    assert totals == OrderTotals(usd(1999), usd(500), usd(206), usd(2705))


@pytest.mark.parametrize(
    ("subtotal", "tax"),
    [
        (9985, 1048),  # (9985 + 500) * 10% = 1048.5 -> 1048 (even)
        (9995, 1050),  # (9995 + 500) * 10% = 1049.5 -> 1050 (even)
        (10_005, 1000),  # free shipping: 1000.5 -> 1000 (even)
        (10_015, 1002),  # free shipping: 1001.5 -> 1002 (even)
    ],
)
def test_price_order_tax_rounds_half_even(subtotal: int, tax: int) -> None:
    totals = price_order([usd(subtotal)], "USD", PricingPolicy(tax_rate_bp=1000))
    assert totals.tax == usd(tax)
    assert totals.total == totals.subtotal + totals.shipping + usd(tax)


def test_price_order_in_yen() -> None:
    policy = PricingPolicy(flat_shipping_minor=800, free_shipping_from_minor=5000, tax_rate_bp=1000)
    totals = price_order([Money(1250, "JPY"), Money(1250, "JPY")], "JPY", policy)
    assert totals == OrderTotals(
        Money(2500, "JPY"), Money(800, "JPY"), Money(330, "JPY"), Money(3630, "JPY")
    )


def test_price_order_rejects_lines_in_another_currency() -> None:
    with pytest.raises(MoneyError):
        price_order([usd(100), Money(100, "EUR")], "USD", PricingPolicy())
    with pytest.raises(MoneyError):
        price_order([Money(100, "EUR")], "USD", PricingPolicy())


policies = st.builds(
    PricingPolicy,
    flat_shipping_minor=st.integers(0, 5_000),
    free_shipping_from_minor=st.integers(0, 50_000),
    tax_rate_bp=st.integers(0, 3_000),
)


@settings(max_examples=200, deadline=None)
@given(
    lines=st.lists(st.integers(0, 30_000), max_size=8),
    policy=policies,
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_price_order_properties(lines: list[int], policy: PricingPolicy, currency: str) -> None:
    totals = price_order([Money(m, currency) for m in lines], currency, policy)
    subtotal = sum(lines)
    free = subtotal == 0 or subtotal >= policy.free_shipping_from_minor
    shipping = 0 if free else policy.flat_shipping_minor
    taxed = subtotal + shipping
    assert totals.subtotal == Money(subtotal, currency)
    assert totals.shipping == Money(shipping, currency)
    # round() of a Fraction is exact and half-even.
    assert totals.tax == Money(round(Fraction(taxed * policy.tax_rate_bp, 10_000)), currency)
    assert totals.total == totals.subtotal + totals.shipping + totals.tax
    assert {m.currency for m in (totals.subtotal, totals.shipping, totals.tax)} == {currency}
