"""placeOrder's reservation step on its own: every guarded update reserves, or the whole
step reports that stock moved. On PostgreSQL all of an order's reservations are one
statement, so the stock rows stay locked for as few round trips as possible."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from db.database import Database, StatementCounter, statement_counter
from db.models import InventoryLevel, Product, utcnow
from db.uow import run_core
from resolvers.orders import _reserve_all, _StockMoved
from tests import factories as f
from tests.principals import SYSTEM
from tests.resolvers.test_orders import level


async def _levels(db: Database, skus: list[str]) -> list[int]:
    async with db.reader() as s:
        ids = dict(
            (
                await s.execute(
                    select(Product.sku, InventoryLevel.id).join(
                        Product, Product.id == InventoryLevel.product_id
                    )
                )
            ).all()
        )
    return sorted(ids[sku] for sku in skus)


@pytest.fixture
async def stocked(db: Database) -> list[int]:
    await f.warehouse(db)
    for sku, qty in (("A", 5), ("B", 2), ("C", 9)):
        await f.product(db, sku, "1.00")
        await f.stock(db, sku, "MAIN", qty)
    return await _levels(db, ["A", "B", "C"])


async def _reserve(db: Database, reservations: list[tuple[int, int]]) -> int:
    """Run the step in a transaction of its own; the statements it took."""
    counter = StatementCounter()
    token = statement_counter.set(counter)
    try:
        await run_core(db, SYSTEM, lambda work: _reserve_all(work.conn, reservations, utcnow()))
    finally:
        statement_counter.reset(token)
    return counter.count


async def test_every_row_reserves(db: Database, stocked: list[int]) -> None:
    a, b, c = stocked
    statements = await _reserve(db, [(a, 5), (b, 1), (c, 3)])
    assert [await level(db, sku) for sku in "ABC"] == [(5, 5), (2, 1), (9, 3)]
    # One statement on PostgreSQL; SQLite's executemany counts as one too (the rest is
    # the transaction's own: BEGIN on SQLite's driver).
    assert statements - await _reserve(db, []) == 1


async def test_one_short_row_reserves_nothing(db: Database, stocked: list[int]) -> None:
    a, b, c = stocked
    with pytest.raises(_StockMoved):
        await _reserve(db, [(a, 1), (b, 3), (c, 1)])  # B has 2
    assert [await level(db, sku) for sku in "ABC"] == [(5, 0), (2, 0), (9, 0)]


async def test_reservations_add_up_on_rows_already_reserved(
    db: Database, stocked: list[int]
) -> None:
    a, b, _ = stocked
    await _reserve(db, [(a, 2), (b, 1)])
    await _reserve(db, [(a, 3), (b, 1)])
    assert [await level(db, sku) for sku in "AB"] == [(5, 5), (2, 2)]
    with pytest.raises(_StockMoved):
        await _reserve(db, [(a, 1), (b, 1)])
    assert [await level(db, sku) for sku in "AB"] == [(5, 5), (2, 2)]
