"""placeOrder's reservation step on its own: every guarded update reserves and gets its
ledger row, or the whole step reports that stock moved. On PostgreSQL all of an order's
reservations, their ledger rows and the order's event are one statement, the transaction's
last, so the stock rows and the event counter stay locked for the commit's round trip only."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Executable, select

from db.database import Database, StatementCounter, statement_counter
from db.models import EventCounter, InventoryLevel, OrderEvent, Product, StockMovement, utcnow
from db.uow import CoreWork, run_core
from resolvers.orders import _reserve_and_record, _StockMoved
from tests import factories as f
from tests.principals import SYSTEM
from tests.resolvers.test_orders import level

Reservation = tuple[int, tuple[int, int], int]


async def _rows(db: Database, stmt: Executable) -> list[tuple[Any, ...]]:
    async with db.reader() as s:
        return [tuple(r) for r in await s.execute(stmt)]


async def _levels(db: Database) -> dict[str, Reservation]:
    """A reservation of nothing yet on each product's one stock row, by SKU."""
    rows = await _rows(
        db,
        select(
            Product.sku, InventoryLevel.id, InventoryLevel.product_id, InventoryLevel.warehouse_id
        ).join(Product, Product.id == InventoryLevel.product_id),
    )
    return {
        sku: (level_id, (product_id, warehouse_id), 0)
        for sku, level_id, product_id, warehouse_id in rows
    }


def _of(entry: Reservation, qty: int) -> Reservation:
    return (entry[0], entry[1], qty)


async def _ledger(db: Database) -> list[tuple[object, ...]]:
    """(product id, reserved delta, reference, reason) of every ledger row of reservations."""
    return await _rows(
        db,
        select(
            StockMovement.product_id,
            StockMovement.reserved_delta,
            StockMovement.reference,
            StockMovement.reason,
        )
        .where(StockMovement.reserved_delta != 0)
        .order_by(StockMovement.id),
    )


@pytest.fixture
async def stocked(db: Database) -> list[Reservation]:
    await f.warehouse(db)
    for sku, qty in (("A", 5), ("B", 2), ("C", 9)):
        await f.product(db, sku, "1.00")
        await f.stock(db, sku, "MAIN", qty)
    by_sku = await _levels(db)
    return [by_sku[sku] for sku in "ABC"]


async def _statements(db: Database, fn: Callable[[CoreWork], object]) -> int:
    """Run ``fn`` in a transaction of its own; the statements it took."""
    counter = StatementCounter()
    token = statement_counter.set(counter)
    try:
        await run_core(db, SYSTEM, fn)
    finally:
        statement_counter.reset(token)
    return counter.count


async def _reserve(
    db: Database, reservations: list[Reservation], reference: str = "R", event_for: int = 0
) -> int:
    """Reserve in a transaction of its own, first recording a PLACED event for order
    ``event_for`` if one is given; the statements it took."""

    def run(work: CoreWork) -> None:
        if event_for:
            work.record_event(event_for, "PLACED", None, "PENDING", "via reserve")
        _reserve_and_record(work, sorted(reservations), reference, utcnow())

    return await _statements(db, run)


async def _events(db: Database) -> tuple[int, list[tuple[object, ...]]]:
    """The event counter and (sequence, order id, type, note) of every event."""
    [(counter,)] = await _rows(db, select(EventCounter.last_sequence))
    events = await _rows(
        db,
        select(OrderEvent.sequence, OrderEvent.order_id, OrderEvent.type, OrderEvent.note).order_by(
            OrderEvent.sequence
        ),
    )
    return counter, events


async def test_every_row_reserves_with_its_ledger_row(
    db: Database, stocked: list[Reservation], backend: str
) -> None:
    a, b, c = stocked
    before = await _ledger(db)
    statements = await _reserve(db, [_of(a, 5), _of(b, 1), _of(c, 3)], "ORD-7")
    assert [await level(db, sku) for sku in "ABC"] == [(5, 5), (2, 1), (9, 3)]
    assert (await _ledger(db))[len(before) :] == [
        (a[1][0], 5, "ORD-7", "ORDER_RESERVED"),
        (b[1][0], 1, "ORD-7", "ORDER_RESERVED"),
        (c[1][0], 3, "ORD-7", "ORDER_RESERVED"),
    ]
    # PostgreSQL: one statement. SQLite: the ledger's executemany and the updates'. (The
    # rest is the transaction's own: BEGIN on SQLite's driver.)
    assert statements - await _statements(db, lambda _: None) == (1 if backend == "postgres" else 2)


async def test_one_short_row_reserves_nothing(db: Database, stocked: list[Reservation]) -> None:
    a, b, c = stocked
    before = await _ledger(db)
    with pytest.raises(_StockMoved):
        await _reserve(db, [_of(a, 1), _of(b, 3), _of(c, 1)])  # B has 2
    assert [await level(db, sku) for sku in "ABC"] == [(5, 0), (2, 0), (9, 0)]
    assert await _ledger(db) == before


async def test_reservations_add_up_on_rows_already_reserved(
    db: Database, stocked: list[Reservation]
) -> None:
    a, b, _ = stocked
    await _reserve(db, [_of(a, 2), _of(b, 1)])
    await _reserve(db, [_of(a, 3)])
    await _reserve(db, [_of(b, 1)])
    assert [await level(db, sku) for sku in "AB"] == [(5, 5), (2, 2)]
    with pytest.raises(_StockMoved):
        await _reserve(db, [_of(a, 1), _of(b, 1)])
    assert [await level(db, sku) for sku in "AB"] == [(5, 5), (2, 2)]


async def test_the_recorded_event_is_appended_in_the_same_statement_on_postgres(
    db: Database, stocked: list[Reservation], backend: str
) -> None:
    a, b, _ = stocked
    order = await f.order(db, [("C", 1)])
    counter, events = await _events(db)
    with_event = await _reserve(db, [_of(a, 2), _of(b, 1)], "ORD-9", event_for=order.id)
    without = await _reserve(db, [_of(a, 1), _of(b, 1)], "ORD-9")
    # The event is there, with the next sequence, whichever statement wrote it.
    assert await _events(db) == (
        counter + 1,
        [*events, (counter + 1, order.id, "PLACED", "via reserve")],
    )
    assert [await level(db, sku) for sku in "AB"] == [(5, 3), (2, 2)]
    # PostgreSQL: the event costs no statement of its own (SQLite: the counter's and the
    # event's, at commit).
    assert with_event - without == (0 if backend == "postgres" else 2)


async def test_no_event_and_no_sequence_when_stock_moved(
    db: Database, stocked: list[Reservation]
) -> None:
    a, b, _ = stocked
    order = await f.order(db, [("C", 1)])
    before = await _events(db)
    with pytest.raises(_StockMoved):
        await _reserve(db, [_of(a, 1), _of(b, 3)], event_for=order.id)  # B has 2
    assert await _events(db) == before
    assert [await level(db, sku) for sku in "AB"] == [(5, 0), (2, 0)]
    # The next event gets the next sequence: none was used up.
    await _reserve(db, [_of(a, 1)], event_for=order.id)
    assert (await _events(db))[0] == before[0] + 1
