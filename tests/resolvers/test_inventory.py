"""adjust_inventory on a real database: the ledger, the floor at reserved stock, and
filling backorders oldest first."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.database import Database
from db.models import StockMovement
from domain.access import Principal, Role, Scope
from domain.errors import DomainError, ErrorCode
from domain.inventory import StockMovementReason
from domain.orders import format_order_number
from resolvers.inventory import AdjustInventoryCommand, adjust_inventory
from resolvers.orders import cancel_order, confirm_order
from tests import factories as f
from tests.resolvers.test_orders import (
    allocations,
    assert_ledger_adds_up,
    assert_sequences_dense,
    events,
    level,
    lines,
    movements,
    snapshot,
    status_of,
)

# Goods come in through a warehouse system's integration key; an auditor and a clerk use
# staff keys. The ledger and the events record the principal's id (and events its role).
RECEIVER = Principal.for_api_key(
    4, "receiver", Role.INTEGRATION, frozenset({Scope.INVENTORY_WRITE})
)
AUDITOR = Principal.for_api_key(5, "auditor", Role.STAFF)
CLERK = Principal.for_api_key(2, "clerk", Role.STAFF)
SUPPORT = Principal.system("support")


def adjust(
    sku: str,
    delta: int,
    reason: StockMovementReason = StockMovementReason.RECEIVED,
    code: str = "MAIN",
    note: str | None = None,
) -> AdjustInventoryCommand:
    return AdjustInventoryCommand(
        sku=sku, warehouse_code=code, delta=delta, reason=reason, note=note
    )


async def test_adjust_inventory_records_each_change_with_its_reason(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")

    created = await adjust_inventory(db, adjust("TEE", 5, note="PO-17"), RECEIVER)
    assert (created.on_hand, created.reserved) == (5, 0)
    changed = await adjust_inventory(
        db, adjust("TEE", -2, StockMovementReason.DAMAGED, note="crushed"), AUDITOR
    )

    assert (changed.on_hand, changed.reserved) == (3, 0)
    assert await level(db, "TEE") == (3, 0)
    async with db.reader() as s:
        rows = (
            await s.execute(
                select(
                    StockMovement.on_hand_delta,
                    StockMovement.reason,
                    StockMovement.note,
                    StockMovement.actor,
                ).order_by(StockMovement.id)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (5, "RECEIVED", "PO-17", "api-key:4"),
        (-2, "DAMAGED", "crushed", "api-key:5"),
    ]
    await assert_ledger_adds_up(db)


async def test_adjust_inventory_cannot_go_below_reserved(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", 5)
    await f.order(db, [("TEE", 3)])
    before = await snapshot(db)

    with pytest.raises(DomainError) as caught:
        await adjust_inventory(db, adjust("TEE", -3, StockMovementReason.LOST), AUDITOR)

    assert caught.value.code == ErrorCode.INSUFFICIENT_STOCK
    assert caught.value.field == ("input", "delta")
    assert "at most 2 can go" in caught.value.message
    assert await snapshot(db) == before

    await adjust_inventory(db, adjust("TEE", -2, StockMovementReason.LOST), AUDITOR)
    assert await level(db, "TEE") == (3, 3)
    await assert_ledger_adds_up(db)


async def test_adjust_inventory_refuses_reasons_that_orders_record(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    before = await snapshot(db)

    with pytest.raises(DomainError) as caught:
        await adjust_inventory(db, adjust("TEE", 5, StockMovementReason.ORDER_RELEASED), f.ACTOR)

    assert caught.value.code == ErrorCode.INVALID_INPUT
    assert await snapshot(db) == before


async def test_adjust_inventory_fills_backorders_oldest_first(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "BOOK", "15.00", allow_backorder=True)
    first = await f.order(db, [("BOOK", 3)], email="first@example.com")
    second = await f.order(db, [("BOOK", 2)], email="second@example.com")
    third = await f.order(db, [("BOOK", 4)], email="third@example.com")
    assert [o.status for o in (first, second, third)] == ["BACKORDERED"] * 3

    await adjust_inventory(db, adjust("BOOK", 4), RECEIVER)

    assert await level(db, "BOOK") == (4, 4)
    assert await status_of(db, first.id) == "PENDING"
    assert await lines(db, first.id) == [("BOOK", 3, 1500, 4500, 0)]
    assert await allocations(db, first.id) == {("BOOK", "MAIN"): 3}
    assert await events(db, first.id) == [
        ("PLACED", None, "BACKORDERED", "system:test", "ADMIN", None),
        (
            "BACKORDER_FILLED",
            "BACKORDERED",
            "PENDING",
            "api-key:4",
            "INTEGRATION",
            "Every unit is now reserved.",
        ),
    ]
    assert await status_of(db, second.id) == "BACKORDERED"
    assert await lines(db, second.id) == [("BOOK", 2, 1500, 3000, 1)]
    assert await allocations(db, second.id) == {("BOOK", "MAIN"): 1}
    assert [e[0] for e in await events(db, second.id)] == ["PLACED"]
    assert await lines(db, third.id) == [("BOOK", 4, 1500, 6000, 4)]
    assert await allocations(db, third.id) == {}

    await adjust_inventory(db, adjust("BOOK", 10), RECEIVER)

    assert await level(db, "BOOK") == (14, 9)
    for order in (second, third):
        assert await status_of(db, order.id) == "PENDING"
        assert [e[0] for e in await events(db, order.id)] == ["PLACED", "BACKORDER_FILLED"]
    assert await allocations(db, second.id) == {("BOOK", "MAIN"): 2}
    assert await allocations(db, third.id) == {("BOOK", "MAIN"): 4}
    filled = [m for m in await movements(db) if m[4] == "BACKORDER_RESERVED"]
    by = "api-key:4"  # the receiver's stock filled them
    assert filled == [
        ("BOOK", "MAIN", 0, 3, "BACKORDER_RESERVED", format_order_number(first.id), by),
        ("BOOK", "MAIN", 0, 1, "BACKORDER_RESERVED", format_order_number(second.id), by),
        ("BOOK", "MAIN", 0, 1, "BACKORDER_RESERVED", format_order_number(second.id), by),
        ("BOOK", "MAIN", 0, 4, "BACKORDER_RESERVED", format_order_number(third.id), by),
    ]
    # A filled order goes on like any pending one.
    confirmed = await confirm_order(db, first.id, CLERK)
    assert confirmed.status == "CONFIRMED"
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_adjust_inventory_keeps_order_backordered_until_every_line_is_filled(
    db: Database,
) -> None:
    await f.warehouse(db)
    await f.product(db, "BOOK", "15.00", allow_backorder=True)
    await f.product(db, "PEN", "2.00", allow_backorder=True)
    order = await f.order(db, [("BOOK", 2), ("PEN", 2)])

    await adjust_inventory(db, adjust("BOOK", 2), RECEIVER)

    assert await status_of(db, order.id) == "BACKORDERED"
    assert await lines(db, order.id) == [("BOOK", 2, 1500, 3000, 0), ("PEN", 2, 200, 400, 2)]
    assert [e[0] for e in await events(db, order.id)] == ["PLACED"]

    await adjust_inventory(db, adjust("PEN", 5), RECEIVER)

    assert await status_of(db, order.id) == "PENDING"
    assert await lines(db, order.id) == [("BOOK", 2, 1500, 3000, 0), ("PEN", 2, 200, 400, 0)]
    assert [e[0] for e in await events(db, order.id)] == ["PLACED", "BACKORDER_FILLED"]
    assert await level(db, "PEN") == (5, 2)
    await assert_ledger_adds_up(db)


async def test_adjust_inventory_fills_from_another_warehouse(db: Database) -> None:
    await f.warehouse(db, "MAIN", priority=1)
    await f.warehouse(db, "EAST", priority=2)
    await f.product(db, "BOOK", "15.00", allow_backorder=True)
    await f.stock(db, "BOOK", "MAIN", 1)
    order = await f.order(db, [("BOOK", 3)])
    assert await allocations(db, order.id) == {("BOOK", "MAIN"): 1}

    await adjust_inventory(db, adjust("BOOK", 5, code="EAST"), RECEIVER)

    assert await status_of(db, order.id) == "PENDING"
    assert await allocations(db, order.id) == {("BOOK", "MAIN"): 1, ("BOOK", "EAST"): 2}
    assert await level(db, "BOOK", "EAST") == (5, 2)

    await cancel_order(db, order.id, "changed plans", SUPPORT)

    assert await level(db, "BOOK", "MAIN") == (1, 0)
    assert await level(db, "BOOK", "EAST") == (5, 0)
    await assert_ledger_adds_up(db)


async def test_adjust_inventory_skips_cancelled_backorders(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "BOOK", "15.00", allow_backorder=True)
    cancelled = await f.order(db, [("BOOK", 2)], email="gone@example.com")
    await cancel_order(db, cancelled.id, "changed plans", SUPPORT)
    waiting = await f.order(db, [("BOOK", 1)], email="waiting@example.com")

    await adjust_inventory(db, adjust("BOOK", 5), RECEIVER)

    assert await level(db, "BOOK") == (5, 1)
    assert await status_of(db, cancelled.id) == "CANCELLED"
    assert await allocations(db, cancelled.id) == {}
    assert [e[0] for e in await events(db, cancelled.id)] == ["PLACED", "CANCELLED"]
    assert await status_of(db, waiting.id) == "PENDING"
    await assert_ledger_adds_up(db)


async def test_adjust_inventory_removal_fills_nothing(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "BOOK", "15.00", allow_backorder=True)
    await f.stock(db, "BOOK", "MAIN", 5)
    order = await f.order(db, [("BOOK", 7)])
    assert await level(db, "BOOK") == (5, 5)

    with pytest.raises(DomainError):
        await adjust_inventory(db, adjust("BOOK", -1, StockMovementReason.LOST), AUDITOR)

    assert await status_of(db, order.id) == "BACKORDERED"
    assert await lines(db, order.id) == [("BOOK", 7, 1500, 10500, 2)]


async def test_cancel_order_gives_released_stock_to_waiting_backorders(db: Database) -> None:
    await f.warehouse(db, "EAST", priority=1)
    await f.warehouse(db, "WEST", priority=2)
    await f.product(db, "LAMP", "30.00", allow_backorder=True)
    await adjust_inventory(db, adjust("LAMP", 2, code="EAST"), RECEIVER)
    await adjust_inventory(db, adjust("LAMP", 1, code="WEST"), RECEIVER)
    holder = await f.order(db, [("LAMP", 3)], email="holder@example.com")
    waiting = await f.order(db, [("LAMP", 2)], email="waiting@example.com")
    later = await f.order(db, [("LAMP", 2)], email="later@example.com")
    assert (holder.status, waiting.status, later.status) == (
        "PENDING",
        "BACKORDERED",
        "BACKORDERED",
    )

    await cancel_order(db, holder.id, "changed mind", CLERK)

    # The oldest waiting order is filled first, from the best-ranked warehouse first.
    assert await status_of(db, waiting.id) == "PENDING"
    assert await allocations(db, waiting.id) == {("LAMP", "EAST"): 2}
    assert [e[:3] for e in await events(db, waiting.id)] == [
        ("PLACED", None, "BACKORDERED"),
        ("BACKORDER_FILLED", "BACKORDERED", "PENDING"),
    ]
    assert await status_of(db, later.id) == "BACKORDERED"
    assert await lines(db, later.id) == [("LAMP", 2, 3000, 6000, 1)]
    assert await allocations(db, later.id) == {("LAMP", "WEST"): 1}
    assert await level(db, "LAMP", "EAST") == (2, 2)
    assert await level(db, "LAMP", "WEST") == (1, 1)
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)
