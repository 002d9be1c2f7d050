"""Order lifecycle: statuses, the one transition table, event types, and pricing rules."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from domain.errors import DomainError, ErrorCode
from domain.money import Money, same_currency


class OrderStatus(StrEnum):
    PENDING = "PENDING"
    CONFIRMED = "CONFIRMED"
    BACKORDERED = "BACKORDERED"
    PROCESSING = "PROCESSING"
    PARTIALLY_SHIPPED = "PARTIALLY_SHIPPED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


class PaymentStatus(StrEnum):
    PENDING = "PENDING"
    AUTHORIZED = "AUTHORIZED"
    PAID = "PAID"
    REFUNDED = "REFUNDED"
    VOIDED = "VOIDED"


class SalesChannel(StrEnum):
    WEB = "WEB"
    MOBILE = "MOBILE"
    MARKETPLACE = "MARKETPLACE"
    POS = "POS"
    PHONE = "PHONE"


class PaymentMethod(StrEnum):
    CARD = "CARD"
    INVOICE = "INVOICE"
    CASH_ON_DELIVERY = "CASH_ON_DELIVERY"
    BANK_TRANSFER = "BANK_TRANSFER"
    MARKETPLACE = "MARKETPLACE"
    CASH = "CASH"


class OrderEventType(StrEnum):
    PLACED = "PLACED"
    CONFIRMED = "CONFIRMED"
    BACKORDER_FILLED = "BACKORDER_FILLED"
    PROCESSING_STARTED = "PROCESSING_STARTED"
    PARTIALLY_SHIPPED = "PARTIALLY_SHIPPED"
    SHIPPED = "SHIPPED"
    DELIVERED = "DELIVERED"
    CANCELLED = "CANCELLED"


S = OrderStatus
# The one transition table. A BACKORDERED order goes back to PENDING once every unit is
# reserved (replenishment), and is confirmed from there; shipping steps are driven by
# fulfilment. DELIVERED and CANCELLED are final.
TRANSITIONS: Mapping[OrderStatus, frozenset[OrderStatus]] = {
    S.PENDING: frozenset({S.CONFIRMED, S.CANCELLED}),
    S.BACKORDERED: frozenset({S.PENDING, S.CANCELLED}),
    S.CONFIRMED: frozenset({S.PROCESSING, S.CANCELLED}),
    S.PROCESSING: frozenset({S.PARTIALLY_SHIPPED, S.SHIPPED, S.CANCELLED}),
    S.PARTIALLY_SHIPPED: frozenset({S.SHIPPED}),
    S.SHIPPED: frozenset({S.DELIVERED}),
    S.DELIVERED: frozenset(),
    S.CANCELLED: frozenset(),
}

EVENT_FOR_TARGET: Mapping[OrderStatus, OrderEventType] = {
    S.PENDING: OrderEventType.BACKORDER_FILLED,
    S.CONFIRMED: OrderEventType.CONFIRMED,
    S.PROCESSING: OrderEventType.PROCESSING_STARTED,
    S.PARTIALLY_SHIPPED: OrderEventType.PARTIALLY_SHIPPED,
    S.SHIPPED: OrderEventType.SHIPPED,
    S.DELIVERED: OrderEventType.DELIVERED,
    S.CANCELLED: OrderEventType.CANCELLED,
}

# Statuses whose reserved stock is still held (and so released on cancel).
HOLDS_RESERVATION: frozenset[OrderStatus] = frozenset(
    {S.PENDING, S.BACKORDERED, S.CONFIRMED, S.PROCESSING}
)


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in TRANSITIONS[current]


def check_transition(current: OrderStatus, target: OrderStatus) -> OrderEventType:
    """The event type recording ``current → target``, or INVALID_TRANSITION."""
    if not can_transition(current, target):
        allowed = ", ".join(sorted(TRANSITIONS[current])) or "none (final status)"
        raise DomainError(
            ErrorCode.INVALID_TRANSITION,
            f"An order in status {current} cannot become {target}; allowed next: {allowed}.",
            ["input", "orderId"],
        )
    return EVENT_FOR_TARGET[target]


def is_final(status: OrderStatus) -> bool:
    return not TRANSITIONS[status]


def format_order_number(order_id: int) -> str:
    return f"ORD-{order_id:06d}"


def parse_order_number(number: str) -> int | None:
    prefix, _, digits = number.strip().upper().partition("-")
    # isascii: str.isdigit() also accepts '²' (int() fails) and non-ASCII digits.
    if prefix != "ORD" or not (digits.isascii() and digits.isdigit()) or len(digits) > 12:
        return None
    return int(digits)


@dataclass(frozen=True, slots=True)
class PricingPolicy:
    """Shipping: a flat rate, free from a subtotal threshold. Tax: a rate in basis points on
    subtotal plus shipping, rounded half-even to the minor unit."""

    flat_shipping_minor: int = 500
    free_shipping_from_minor: int = 10_000
    tax_rate_bp: int = 0


@dataclass(frozen=True, slots=True)
class OrderTotals:
    subtotal: Money
    shipping: Money
    tax: Money
    total: Money


def price_order(line_totals: list[Money], currency: str, policy: PricingPolicy) -> OrderTotals:
    # In minor units, with one Money per total: a Money per step cost half the time.
    subtotal = 0
    for line_total in line_totals:
        same_currency(currency, line_total.currency)
        subtotal += line_total.minor
    free = subtotal >= policy.free_shipping_from_minor or subtotal == 0
    shipping = 0 if free else policy.flat_shipping_minor
    tax = Money(subtotal + shipping, currency).apply_rate(policy.tax_rate_bp)
    return OrderTotals(
        Money(subtotal, currency),
        Money(shipping, currency),
        tax,
        Money(subtotal + shipping + tax.minor, currency),
    )
