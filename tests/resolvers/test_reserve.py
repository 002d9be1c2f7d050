"""placeOrder's reservation step. SQLite (``_reserve_and_record``): every guarded update
reserves and gets its ledger row, or the whole step reports that stock moved. PostgreSQL
(``_PLACE_ORDER_PG``): the whole write of an order is one statement, run without a
transaction for an existing customer: it writes everything (order, lines, allocations,
reservations, ledger, idempotency record, event), or nothing when a reservation no longer
fits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Executable, func, select, text

from db import uow as uow_module
from db.database import Database, StatementCounter, statement_counter
from db.models import (
    Allocation,
    EventCounter,
    IdempotencyRecord,
    InventoryLevel,
    Order,
    OrderEvent,
    OrderLine,
    Product,
    StockMovement,
    utcnow,
)
from db.uow import CoreWork, run_core
from domain.errors import DomainErrors, ErrorCode
from domain.orders import format_order_number
from resolvers import orders as orders_module
from resolvers.customers import NewCustomer, create_customer
from resolvers.orders import ORDER_NUMBER_SQL, _reserve_and_record, _StockMoved, place_order
from tests import factories as f
from tests.conftest import fresh_postgres_url
from tests.principals import SYSTEM
from tests.resolvers.test_orders import (
    assert_ledger_adds_up,
    assert_sequences_dense,
    level,
    line_allocations,
)
from tests.test_prepared import fresh_sqlite

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
async def db(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Database]:
    """SQLite only: PostgreSQL reserves in placeOrder's one statement (tests below)."""
    database, _ = fresh_sqlite(tmp_path, sqlite_template, "reserve")
    try:
        yield database
    finally:
        await database.dispose()


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
    db: Database, stocked: list[Reservation]
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
    # The ledger's executemany and the updates'. (The rest is the transaction's own: BEGIN.)
    assert statements - await _statements(db, lambda _: None) == 2


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


async def test_the_recorded_event_is_written_at_commit(
    db: Database, stocked: list[Reservation]
) -> None:
    a, b, _ = stocked
    order = await f.order(db, [("C", 1)])
    counter, events = await _events(db)
    with_event = await _reserve(db, [_of(a, 2), _of(b, 1)], "ORD-9", event_for=order.id)
    without = await _reserve(db, [_of(a, 1), _of(b, 1)], "ORD-9")
    # The event is there, with the next sequence.
    assert await _events(db) == (
        counter + 1,
        [*events, (counter + 1, order.id, "PLACED", "via reserve")],
    )
    assert [await level(db, sku) for sku in "AB"] == [(5, 3), (2, 2)]
    # The counter's statement and the event's, at commit.
    assert with_event - without == 2


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


# PostgreSQL: the whole write in one statement -------------------------------------------


@pytest.fixture
def pg_url() -> str:
    return fresh_postgres_url()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url)
    try:
        yield database
    finally:
        await database.dispose()


async def _written(db: Database) -> dict[str, int]:
    """What placeOrder writes, counted; units reserved; the event counter."""
    out = {}
    for name, model in (
        ("orders", Order),
        ("lines", OrderLine),
        ("allocations", Allocation),
        ("ledger", StockMovement),
        ("events", OrderEvent),
        ("idempotency", IdempotencyRecord),
    ):
        [(out[name],)] = await _rows(db, select(func.count()).select_from(model))
    [(out["reserved"],)] = await _rows(db, select(func.sum(InventoryLevel.reserved)))
    [(out["counter"],)] = await _rows(db, select(EventCounter.last_sequence))
    return out


async def _customer_command(db: Database, lines: list[tuple[str, int]], **extra: Any) -> Any:
    customer = await create_customer(db, NewCustomer(name="Ada", email="ada@example.com"), SYSTEM)
    return replace(f.order_command(lines, **extra), new_customer=None, customer_id=customer.id)


async def test_postgres_an_order_for_a_customer_is_one_statement_without_a_transaction(
    pg: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await f.warehouse(pg)
    for sku, qty in (("A", 5), ("B", 2)):
        await f.product(pg, sku, "1.00")
        await f.stock(pg, sku, "MAIN", qty)
    cmd = await _customer_command(
        pg, [("A", 2), ("B", 1), ("A", 1)], idempotency_key="k-1", note="ring twice"
    )
    ran: list[str] = []
    for name in ("_in_transaction", "_in_autocommit"):
        real = getattr(uow_module, name)

        def spy(*args: Any, _real: Any = real, _name: str = name) -> Any:
            ran.append(_name)
            return _real(*args)

        monkeypatch.setattr(uow_module, name, spy)
    counter = StatementCounter()
    token = statement_counter.set(counter)
    try:
        order = await place_order(pg, cmd, f.ACTOR, f.PRICING)
    finally:
        statement_counter.reset(token)

    assert ran == ["_in_autocommit"]
    # One read (the products with their stock, the customer and the idempotency key's
    # record), then one write.
    assert counter.count == 2
    assert await line_allocations(pg, order.id) == [
        ("A", 2, {"MAIN": 2}),
        ("B", 1, {"MAIN": 1}),
        ("A", 1, {"MAIN": 1}),
    ]
    number = format_order_number(order.id)
    levels = await _levels(pg)
    assert (await _ledger(pg))[-2:] == [
        (levels["A"][1][0], 3, number, "ORDER_RESERVED"),
        (levels["B"][1][0], 1, number, "ORDER_RESERVED"),
    ]
    counter_value, events = await _events(pg)
    assert events[-1] == (counter_value, order.id, "PLACED", "ring twice")
    before = await _written(pg)
    assert before["idempotency"] == 1 and before["reserved"] == 4
    # The idempotency record makes a retry a replay: the same order, nothing written.
    again = await place_order(pg, cmd, f.ACTOR, f.PRICING)
    assert again.id == order.id
    assert await _written(pg) == before
    await assert_ledger_adds_up(pg)
    await assert_sequences_dense(pg)


async def test_postgres_a_stale_plan_writes_nothing(pg: Database) -> None:
    """A plan made before another order took the stock: the statement writes nothing at
    all (not the line that still fits either), and placing it again, on locked rows,
    refuses it."""
    await f.warehouse(pg)
    for sku, qty in (("A", 5), ("B", 2)):
        await f.product(pg, sku, "1.00")
        await f.stock(pg, sku, "MAIN", qty)
    cmd = await _customer_command(pg, [("B", 1), ("A", 4)], idempotency_key="k-2")
    fingerprint = orders_module._fingerprint(cmd)
    draft = await pg.read_core(
        partial(
            orders_module._draft,
            actor=f.ACTOR,
            cmd=cmd,
            fingerprint=fingerprint,
            in_transaction=False,
        )
    )
    assert isinstance(draft, orders_module._Draft)
    await f.order(pg, [("A", 2)])  # 3 of A left, 4 planned
    before = await _written(pg)

    with pytest.raises(_StockMoved):
        await run_core(
            pg,
            f.ACTOR,
            partial(
                orders_module._place_order_tx,
                cmd=cmd,
                fingerprint=fingerprint,
                pricing=f.PRICING,
                lock_stock=False,
                draft=draft,
            ),
            transaction=False,
        )
    assert await _written(pg) == before
    with pytest.raises(DomainErrors) as refused:
        await place_order(pg, cmd, f.ACTOR, f.PRICING)
    assert [e.code for e in refused.value.errors] == [ErrorCode.INSUFFICIENT_STOCK]
    assert await _written(pg) == before


async def test_postgres_order_numbers_in_sql_are_pythons(pg: Database) -> None:
    query = text(f"SELECT {ORDER_NUMBER_SQL.format(id='CAST(:id AS BIGINT)')}")
    async with pg.read_engine.connect() as conn:
        for order_id in (1, 42, 999_999, 1_000_000, 123_456_789_012):
            got = (await conn.execute(query, {"id": order_id})).scalar_one()
            assert got == format_order_number(order_id)
