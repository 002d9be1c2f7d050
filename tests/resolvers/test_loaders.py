"""The DataLoader batch functions and pages read plain rows: each must read exactly like the
ORM instance of the same database row (every mapped attribute, with its conversions: aware
datetimes, JSON addresses, NULLs), in the order of the keys asked for."""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect, select

from db.database import Database
from db.models import (
    Allocation,
    Customer,
    InventoryLevel,
    Order,
    OrderEvent,
    OrderLine,
    Product,
    Warehouse,
)
from db.queries import PageArgs, model_columns
from resolvers.loaders import load_by_id, load_grouped
from resolvers.orders import OrderFilterArgs, list_orders
from tests import factories


def attributes(model: type[Any], value: Any) -> dict[str, Any]:
    return {prop.key: getattr(value, prop.key) for prop in inspect(model).column_attrs}


async def orm_rows(db: Database, model: type[Any]) -> list[Any]:
    async with db.reader() as s:
        return list((await s.execute(select(model).order_by(model.id))).scalars())


async def shop(db: Database) -> None:
    await factories.warehouse(db, "EU", 1)
    await factories.warehouse(db, "US", 2)
    await factories.product(db, "TEE", "19.90")
    await factories.product(db, "MUG", "7.00")
    await factories.stock(db, "TEE", "EU", 1)
    await factories.stock(db, "TEE", "US", 2)
    await factories.stock(db, "MUG", "US", 10)
    await factories.order(db, [("TEE", 3), ("MUG", 1)])  # TEE splits over EU and US
    await factories.order(db, [("MUG", 2)])


async def test_rows_by_id_read_like_the_orm_instances_in_the_order_asked(db: Database) -> None:
    await shop(db)
    for model in (Order, Customer, Product, Warehouse, OrderLine, InventoryLevel):
        expected = await orm_rows(db, model)
        assert expected, model
        ids = [*(e.id for e in reversed(expected)), 999_999]
        found = await load_by_id(db, model, ids)
        assert found[-1] is None
        assert [attributes(model, r) for r in found[:-1]] == [
            attributes(model, e) for e in reversed(expected)
        ], model


async def test_grouped_rows_follow_the_keys_and_the_order_by(db: Database) -> None:
    await shop(db)
    lines = await orm_rows(db, OrderLine)
    allocations = await orm_rows(db, Allocation)
    events = await orm_rows(db, OrderEvent)
    order_ids = [*sorted({line.order_id for line in lines}, reverse=True), 999_999]

    grouped = await load_grouped(db, OrderLine, OrderLine.order_id, order_ids, [OrderLine.id])
    assert [[attributes(OrderLine, r) for r in g] for g in grouped] == [
        [attributes(OrderLine, line) for line in lines if line.order_id == k] for k in order_ids
    ]
    line_ids = [line.id for line in lines]
    by_line = await load_grouped(
        db, Allocation, Allocation.order_line_id, line_ids, [Allocation.id.desc()]
    )
    assert [[attributes(Allocation, r) for r in g] for g in by_line] == [
        [attributes(Allocation, a) for a in reversed(allocations) if a.order_line_id == k]
        for k in line_ids
    ]
    assert max(len(g) for g in by_line) == 2  # the split line
    by_order = await load_grouped(
        db, OrderEvent, OrderEvent.order_id, order_ids, [OrderEvent.sequence]
    )
    assert [[attributes(OrderEvent, r) for r in g] for g in by_order] == [
        [attributes(OrderEvent, e) for e in events if e.order_id == k] for k in order_ids
    ]


async def test_a_page_reads_like_the_orm_instances(db: Database) -> None:
    await shop(db)
    expected = await orm_rows(db, Order)
    page = await list_orders(db, OrderFilterArgs(), "NUMBER_DESC", PageArgs(first=10))
    assert [attributes(Order, r) for r in page.items] == [
        attributes(Order, e) for e in reversed(expected)
    ]
    assert await page.count() == len(expected)
    assert [c.name for c in model_columns(Order)] == [p.key for p in inspect(Order).column_attrs]
