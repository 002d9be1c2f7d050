"""Stock rules: why stock moves."""

from __future__ import annotations

from enum import StrEnum


class StockMovementReason(StrEnum):
    # Set by staff through adjustInventory.
    RECEIVED = "RECEIVED"
    CYCLE_COUNT = "CYCLE_COUNT"
    DAMAGED = "DAMAGED"
    LOST = "LOST"
    RETURNED = "RETURNED"
    CORRECTION = "CORRECTION"
    # Written by the order use cases.
    ORDER_RESERVED = "ORDER_RESERVED"
    ORDER_RELEASED = "ORDER_RELEASED"
    BACKORDER_RESERVED = "BACKORDER_RESERVED"


ADJUSTMENT_REASONS = frozenset(
    {
        StockMovementReason.RECEIVED,
        StockMovementReason.CYCLE_COUNT,
        StockMovementReason.DAMAGED,
        StockMovementReason.LOST,
        StockMovementReason.RETURNED,
        StockMovementReason.CORRECTION,
    }
)
