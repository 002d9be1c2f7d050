"""Order use cases on a real database (SQLite, and PostgreSQL when configured): placing and
pricing, the warehouse rule, shortages and backorders, status changes, cancellation,
idempotent retries, the stock ledger and the event sequence."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy import inspect as sa_inspect

from db.database import Database
from db.models import (
    Allocation,
    Customer,
    EventCounter,
    IdempotencyRecord,
    InventoryLevel,
    Order,
    OrderEvent,
    OrderLine,
    Product,
    StockMovement,
    Warehouse,
)
from domain.access import Principal, Role
from domain.errors import DomainError, DomainErrors, ErrorCode
from domain.orders import PaymentMethod, PricingPolicy, SalesChannel, format_order_number
from resolvers.common import request_hash
from resolvers.customers import NewCustomer
from resolvers.orders import (
    NOT_REPLAYABLE,
    LineInput,
    PlacedOrder,
    PlaceOrderCommand,
    _draft,
    _fingerprint,
    cancel_order,
    confirm_order,
    place_order,
    start_processing,
)
from tests import factories as f

# Who acts: the factories as the system ("system:test", ADMIN), staff through their API keys,
# support as another system principal. Events and the ledger record the principal's id.
TEST = f.ACTOR.id
CLERK = Principal.for_api_key(2, "clerk", Role.STAFF)
PICKER = Principal.for_api_key(3, "picker", Role.STAFF)
SUPPORT = Principal.system("support")

# Helpers shared in spirit with test_inventory.py and test_concurrency.py -----------------


async def level(db: Database, sku: str, code: str = "MAIN") -> tuple[int, int]:
    """(on_hand, reserved) of one inventory level."""
    async with db.reader() as s:
        row = (
            await s.execute(
                select(InventoryLevel.on_hand, InventoryLevel.reserved)
                .join(Product, Product.id == InventoryLevel.product_id)
                .join(Warehouse, Warehouse.id == InventoryLevel.warehouse_id)
                .where(Product.sku == sku, Warehouse.code == code)
            )
        ).one()
    return row.on_hand, row.reserved


async def movements(db: Database) -> list[tuple[Any, ...]]:
    """The ledger, oldest first: (sku, warehouse, Δon_hand, Δreserved, reason, reference, actor)."""
    async with db.reader() as s:
        rows = await s.execute(
            select(
                Product.sku,
                Warehouse.code,
                StockMovement.on_hand_delta,
                StockMovement.reserved_delta,
                StockMovement.reason,
                StockMovement.reference,
                StockMovement.actor,
            )
            .join(Product, Product.id == StockMovement.product_id)
            .join(Warehouse, Warehouse.id == StockMovement.warehouse_id)
            .order_by(StockMovement.id)
        )
        return [tuple(r) for r in rows.all()]


async def allocations(db: Database, order_id: int) -> dict[tuple[str, str], int]:
    """Units held per (sku, warehouse) by one order (zero rows left out)."""
    async with db.reader() as s:
        rows = await s.execute(
            select(OrderLine.sku, Warehouse.code, Allocation.quantity)
            .join(OrderLine, OrderLine.id == Allocation.order_line_id)
            .join(Warehouse, Warehouse.id == Allocation.warehouse_id)
            .where(OrderLine.order_id == order_id)
        )
        held: dict[tuple[str, str], int] = {}
        for sku, code, qty in rows.all():
            if qty:
                held[(sku, code)] = held.get((sku, code), 0) + qty
        return held


async def lines(db: Database, order_id: int) -> list[tuple[str, int, int, int, int]]:
    """(sku, quantity, unit price, line total, backordered) per line, in line order."""
    async with db.reader() as s:
        rows = await s.execute(
            select(
                OrderLine.sku,
                OrderLine.quantity,
                OrderLine.unit_price_minor,
                OrderLine.total_minor,
                OrderLine.backordered_quantity,
            )
            .where(OrderLine.order_id == order_id)
            .order_by(OrderLine.id)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


async def status_of(db: Database, order_id: int) -> str:
    async with db.reader() as s:
        return (await s.execute(select(Order.status).where(Order.id == order_id))).scalar_one()


async def events(
    db: Database, order_id: int
) -> list[tuple[str, str | None, str | None, str, str | None, str | None]]:
    """One order's events in sequence order: (type, from, to, actor, actor role, note)."""
    async with db.reader() as s:
        rows = await s.execute(
            select(
                OrderEvent.type,
                OrderEvent.from_status,
                OrderEvent.to_status,
                OrderEvent.actor,
                OrderEvent.actor_role,
                OrderEvent.note,
            )
            .where(OrderEvent.order_id == order_id)
            .order_by(OrderEvent.sequence)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


_COUNTED = (Customer, Order, OrderLine, Allocation, OrderEvent, StockMovement, IdempotencyRecord)


async def snapshot(db: Database) -> dict[str, Any]:
    """Everything a refused or replayed use case must leave exactly as it was."""
    async with db.reader() as s:
        counts = {
            model.__tablename__: (
                await s.execute(select(func.count()).select_from(model))
            ).scalar_one()
            for model in _COUNTED
        }
        stock = (
            await s.execute(
                select(InventoryLevel.id, InventoryLevel.on_hand, InventoryLevel.reserved).order_by(
                    InventoryLevel.id
                )
            )
        ).all()
        orders = (
            await s.execute(select(Order.id, Order.status, Order.updated_at).order_by(Order.id))
        ).all()
        backorders = (
            await s.execute(
                select(OrderLine.id, OrderLine.backordered_quantity).order_by(OrderLine.id)
            )
        ).all()
        held = (
            await s.execute(select(Allocation.id, Allocation.quantity).order_by(Allocation.id))
        ).all()
        counter = (await s.execute(select(EventCounter.last_sequence))).scalar_one()
    return {
        "counts": counts,
        "stock": [tuple(r) for r in stock],
        "orders": [tuple(r) for r in orders],
        "backorders": [tuple(r) for r in backorders],
        "allocations": [tuple(r) for r in held],
        "counter": counter,
    }


async def assert_ledger_adds_up(db: Database) -> None:
    """For every inventory level the ledger's deltas sum to its on_hand and reserved."""
    async with db.reader() as s:
        sums = {
            (p, w): (int(on_hand), int(reserved))
            for p, w, on_hand, reserved in (
                await s.execute(
                    select(
                        StockMovement.product_id,
                        StockMovement.warehouse_id,
                        func.sum(StockMovement.on_hand_delta),
                        func.sum(StockMovement.reserved_delta),
                    ).group_by(StockMovement.product_id, StockMovement.warehouse_id)
                )
            ).all()
        }
        levels = {
            (lv.product_id, lv.warehouse_id): (lv.on_hand, lv.reserved)
            for lv in (await s.execute(select(InventoryLevel))).scalars()
        }
    assert levels
    assert sums == levels


async def assert_sequences_dense(db: Database) -> None:
    """Event sequences are 1..n with no gap or repeat, and the counter row says n."""
    async with db.reader() as s:
        sequences = list(
            (await s.execute(select(OrderEvent.sequence).order_by(OrderEvent.sequence))).scalars()
        )
        counter = (await s.execute(select(EventCounter.last_sequence))).scalar_one()
    assert sequences == list(range(1, len(sequences) + 1))
    assert counter == len(sequences)


async def seed(db: Database, stock: dict[tuple[str, str], int], **products: Any) -> None:
    """Warehouses NEAR (priority 1) and FAR (priority 2), and on-hand stock per (sku, code).

    ``products`` maps a SKU to its price, or to (price, allow_backorder)."""
    await f.warehouse(db, "NEAR", priority=1)
    await f.warehouse(db, "FAR", priority=2)
    for sku, spec in products.items():
        price, backorder = spec if isinstance(spec, tuple) else (spec, False)
        await f.product(db, sku, price, allow_backorder=backorder)
    for (sku, code), qty in stock.items():
        await f.stock(db, sku, code, qty)


# Placing an order ---------------------------------------------------------------------


async def test_place_order_reserves_stock_and_records_placed_event(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", 5)

    order = await f.order(db, [("TEE", 2)], note="gift wrap")

    number = format_order_number(order.id)
    assert order.status == "PENDING"
    assert await status_of(db, order.id) == "PENDING"
    assert await level(db, "TEE") == (5, 2)
    assert await allocations(db, order.id) == {("TEE", "MAIN"): 2}
    assert await lines(db, order.id) == [("TEE", 2, 1999, 3998, 0)]
    assert await movements(db) == [
        ("TEE", "MAIN", 5, 0, "RECEIVED", None, "system:test"),
        ("TEE", "MAIN", 0, 2, "ORDER_RESERVED", number, "system:test"),
    ]
    assert await events(db, order.id) == [
        ("PLACED", None, "PENDING", "system:test", "ADMIN", "gift wrap")
    ]
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


CATALOGUE = {"TEE": "19.99", "MUG": "7.50", "TEN": "100.00", "ONE": "1.00"}


@pytest.mark.parametrize(
    ("order_lines", "policy", "expected"),
    [
        # (subtotal, shipping, tax, total) in cents
        ([("TEE", 2), ("MUG", 1)], PricingPolicy(), (4748, 500, 0, 5248)),
        # 8.25% of 52.48 is 4.3296
        ([("TEE", 2), ("MUG", 1)], PricingPolicy(tax_rate_bp=825), (4748, 500, 433, 5681)),
        ([("TEE", 5)], PricingPolicy(), (9995, 500, 0, 10495)),
        ([("TEE", 6)], PricingPolicy(), (11994, 0, 0, 11994)),
        # free shipping starts at the threshold itself
        ([("TEN", 1)], PricingPolicy(), (10000, 0, 0, 10000)),
        ([("TEN", 1)], PricingPolicy(tax_rate_bp=2000), (10000, 0, 2000, 12000)),
        # tax is rounded half-even: 4.5 cents → 4, 1.5 cents → 2
        ([("ONE", 1)], PricingPolicy(tax_rate_bp=75), (100, 500, 4, 604)),
        ([("ONE", 1)], PricingPolicy(tax_rate_bp=25), (100, 500, 2, 602)),
        (
            [("MUG", 6)],
            PricingPolicy(flat_shipping_minor=799, free_shipping_from_minor=5000),
            (4500, 799, 0, 5299),
        ),
    ],
)
async def test_place_order_prices_lines_from_the_catalogue(
    db: Database,
    order_lines: list[tuple[str, int]],
    policy: PricingPolicy,
    expected: tuple[int, int, int, int],
) -> None:
    await seed(db, {(sku, "NEAR"): 10 for sku in CATALOGUE}, **CATALOGUE)

    order = await place_order(db, f.order_command(order_lines), f.ACTOR, policy)

    totals = (order.subtotal_minor, order.shipping_minor, order.tax_minor, order.total_minor)
    assert (order.currency, totals) == ("USD", expected)
    async with db.reader() as s:
        stored = await s.get(Order, order.id)
        assert stored is not None
        assert (
            stored.subtotal_minor,
            stored.shipping_minor,
            stored.tax_minor,
            stored.total_minor,
        ) == expected
    unit = {sku: int(price.replace(".", "")) for sku, price in CATALOGUE.items()}
    assert await lines(db, order.id) == [
        (sku, qty, unit[sku], unit[sku] * qty, 0) for sku, qty in order_lines
    ]


async def test_place_order_uses_one_warehouse_that_fills_every_line(db: Database) -> None:
    await seed(
        db,
        {("TEE", "NEAR"): 5, ("TEE", "FAR"): 5, ("MUG", "FAR"): 5},
        TEE="19.99",
        MUG="7.50",
    )

    order = await f.order(db, [("TEE", 2), ("MUG", 1)])

    # NEAR ranks first but cannot ship the mug, so the whole order ships from FAR.
    assert await allocations(db, order.id) == {("TEE", "FAR"): 2, ("MUG", "FAR"): 1}
    assert await level(db, "TEE", "NEAR") == (5, 0)
    assert await level(db, "TEE", "FAR") == (5, 2)
    assert await level(db, "MUG", "FAR") == (5, 1)
    await assert_ledger_adds_up(db)


async def test_place_order_prefers_the_best_ranked_warehouse(db: Database) -> None:
    # FAR is created first (lower id) but NEAR has the better priority.
    await f.warehouse(db, "FAR", priority=2)
    await f.warehouse(db, "NEAR", priority=1)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "FAR", 5)
    await f.stock(db, "TEE", "NEAR", 5)

    order = await f.order(db, [("TEE", 3)])

    assert await allocations(db, order.id) == {("TEE", "NEAR"): 3}
    assert await level(db, "TEE", "FAR") == (5, 0)


async def test_place_order_splits_by_priority_when_no_warehouse_fills_it(db: Database) -> None:
    await seed(
        db,
        {("TEE", "NEAR"): 3, ("TEE", "FAR"): 5, ("MUG", "FAR"): 2},
        TEE="19.99",
        MUG="7.50",
    )
    await f.warehouse(db, "LAST", priority=3)
    await f.stock(db, "TEE", "LAST", 4)

    order = await f.order(db, [("TEE", 7), ("MUG", 2)])

    assert order.status == "PENDING"
    assert await allocations(db, order.id) == {
        ("TEE", "NEAR"): 3,
        ("TEE", "FAR"): 4,
        ("MUG", "FAR"): 2,
    }
    assert await level(db, "TEE", "NEAR") == (3, 3)
    assert await level(db, "TEE", "FAR") == (5, 4)
    assert await level(db, "TEE", "LAST") == (4, 0)
    assert await level(db, "MUG", "FAR") == (2, 2)
    number = format_order_number(order.id)
    reserved = [m for m in await movements(db) if m[4] == "ORDER_RESERVED"]
    assert sorted(reserved) == sorted(
        [
            ("TEE", "NEAR", 0, 3, "ORDER_RESERVED", number, TEST),
            ("TEE", "FAR", 0, 4, "ORDER_RESERVED", number, TEST),
            ("MUG", "FAR", 0, 2, "ORDER_RESERVED", number, TEST),
        ]
    )
    await assert_ledger_adds_up(db)


async def test_place_order_two_lines_of_one_sku_share_its_stock(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")

    with pytest.raises(DomainErrors) as caught:
        await f.order(db, [("TEE", 3), ("TEE", 3)])
    assert [e.code for e in caught.value.errors] == [ErrorCode.INSUFFICIENT_STOCK]

    order = await f.order(db, [("TEE", 3), ("TEE", 2)])
    assert await level(db, "TEE", "NEAR") == (5, 5)
    await assert_ledger_adds_up(db)
    assert order.status == "PENDING"


async def line_allocations(db: Database, order_id: int) -> list[tuple[str, int, dict[str, int]]]:
    """(sku, quantity, units held per warehouse) of every line of one order, in line order."""
    async with db.reader() as s:
        order_lines = (
            await s.execute(
                select(OrderLine.id, OrderLine.sku, OrderLine.quantity)
                .where(OrderLine.order_id == order_id)
                .order_by(OrderLine.id)
            )
        ).all()
        held = (
            await s.execute(
                select(Allocation.order_line_id, Warehouse.code, Allocation.quantity)
                .join(Warehouse, Warehouse.id == Allocation.warehouse_id)
                .join(OrderLine, OrderLine.id == Allocation.order_line_id)
                .where(OrderLine.order_id == order_id)
            )
        ).all()
    by_line: dict[int, dict[str, int]] = {}
    for line_id, code, qty in held:
        by_line.setdefault(line_id, {})[code] = qty
    return [(sku, qty, by_line.get(line_id, {})) for line_id, sku, qty in order_lines]


async def test_place_order_allocations_belong_to_their_own_lines(db: Database) -> None:
    """Lines keep their order and each holds its own units, with one SKU on two lines and
    its stock split over two warehouses (PostgreSQL writes lines and allocations in one
    statement, matching them by position)."""
    await seed(
        db, {("TEE", "NEAR"): 3, ("TEE", "FAR"): 4, ("MUG", "FAR"): 2}, TEE="19.99", MUG="7.50"
    )

    order = await f.order(db, [("TEE", 1), ("MUG", 2), ("TEE", 4)])

    got = await line_allocations(db, order.id)
    assert [(sku, qty) for sku, qty, _ in got] == [("TEE", 1), ("MUG", 2), ("TEE", 4)]
    assert [sum(held.values()) for _, _, held in got] == [1, 2, 4]
    assert got[1][2] == {"FAR": 2}
    assert await allocations(db, order.id) == {
        ("TEE", "NEAR"): 3,
        ("TEE", "FAR"): 2,
        ("MUG", "FAR"): 2,
    }
    await assert_ledger_adds_up(db)


async def test_place_order_short_lines_fail_and_write_nothing(db: Database) -> None:
    await seed(
        db,
        {("TEE", "NEAR"): 2, ("TEE", "FAR"): 2, ("CAP", "NEAR"): 10, ("MUG", "FAR"): 1},
        TEE="19.99",
        CAP="12.00",
        MUG="7.50",
    )
    await f.order(db, [("TEE", 1)], email="first@example.com")
    before = await snapshot(db)

    with pytest.raises(DomainErrors) as caught:
        await f.order(db, [("TEE", 5), ("CAP", 2), ("MUG", 4)], email="new@example.com")

    assert [(e.code, e.field, e.message) for e in caught.value.errors] == [
        (
            ErrorCode.INSUFFICIENT_STOCK,
            ("input", "lines", "0", "quantity"),
            "Only 3 of TEE available; 5 requested.",
        ),
        (
            ErrorCode.INSUFFICIENT_STOCK,
            ("input", "lines", "2", "quantity"),
            "Only 1 of MUG available; 4 requested.",
        ),
    ]
    assert await snapshot(db) == before


async def test_place_order_one_short_line_fails_alone(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 1}, TEE="19.99", CAP="12.00")
    before = await snapshot(db)

    with pytest.raises(DomainErrors) as caught:
        await f.order(db, [("CAP", 1)])

    assert [(e.code, e.message) for e in caught.value.errors] == [
        (ErrorCode.INSUFFICIENT_STOCK, "Only 0 of CAP available; 1 requested.")
    ]
    assert await snapshot(db) == before


@pytest.mark.parametrize("lines", [[("TEE", 1)], [("NOPE", 1)], [("NOPE", 1), ("TEE", 1)]])
async def test_place_order_for_an_unknown_customer_is_refused_first(
    db: Database, lines: list[tuple[str, int]]
) -> None:
    """The customer is checked in the products' read (on each of its rows), and apart when
    that read finds no row at all; either way the customer's error comes first and alone."""
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")
    customer_id = (await f.order(db, [("TEE", 1)])).customer_id
    before = await snapshot(db)
    cmd = dataclasses.replace(f.order_command(lines), new_customer=None, customer_id=10_000)

    with pytest.raises(DomainError) as caught:
        await place_order(db, cmd, f.ACTOR, f.PRICING)

    assert (caught.value.code, caught.value.field) == (ErrorCode.NOT_FOUND, ("input", "customerId"))
    assert await snapshot(db) == before
    # The same on locked stock (the retry after a plan went stale), which reads apart.
    for lock_stock in (False, True):
        with pytest.raises(DomainError) as caught:
            await db.read_core(
                functools.partial(
                    _draft, actor=f.ACTOR, cmd=cmd, fingerprint="x", lock_stock=lock_stock
                )
            )
        assert caught.value.code == ErrorCode.NOT_FOUND
    known = dataclasses.replace(cmd, customer_id=customer_id, lines=[LineInput("TEE", 1)])
    draft = await db.read_core(
        functools.partial(_draft, actor=f.ACTOR, cmd=known, fingerprint="x", lock_stock=False)
    )
    assert getattr(draft, "customer_id", None) == customer_id


async def test_place_order_backorders_what_is_missing(db: Database) -> None:
    await seed(db, {("BOOK", "NEAR"): 2, ("TEE", "NEAR"): 5}, BOOK=("15.00", True), TEE="19.99")

    order = await f.order(db, [("BOOK", 5), ("TEE", 1)])

    assert order.status == "BACKORDERED"
    assert await lines(db, order.id) == [("BOOK", 5, 1500, 7500, 3), ("TEE", 1, 1999, 1999, 0)]
    assert await allocations(db, order.id) == {("BOOK", "NEAR"): 2, ("TEE", "NEAR"): 1}
    assert await level(db, "BOOK", "NEAR") == (2, 2)
    assert await level(db, "TEE", "NEAR") == (5, 1)
    assert await events(db, order.id) == [("PLACED", None, "BACKORDERED", TEST, "ADMIN", None)]
    # the whole order is priced, backordered units included
    assert order.subtotal_minor == 9499
    await assert_ledger_adds_up(db)


async def test_place_order_backorders_a_product_never_stocked(db: Database) -> None:
    await seed(db, {}, BOOK=("15.00", True))

    order = await f.order(db, [("BOOK", 3)])

    assert order.status == "BACKORDERED"
    assert await lines(db, order.id) == [("BOOK", 3, 1500, 4500, 3)]
    assert await allocations(db, order.id) == {}
    assert await movements(db) == []


async def test_place_order_backorder_does_not_excuse_another_short_line(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 1}, BOOK=("15.00", True), TEE="19.99")
    before = await snapshot(db)

    with pytest.raises(DomainErrors) as caught:
        await f.order(db, [("BOOK", 4), ("TEE", 2)])

    assert [(e.code, e.field) for e in caught.value.errors] == [
        (ErrorCode.INSUFFICIENT_STOCK, ("input", "lines", "1", "quantity"))
    ]
    assert await snapshot(db) == before


# Status changes -----------------------------------------------------------------------


async def test_order_lifecycle_writes_one_event_per_step(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")
    order = await f.order(db, [("TEE", 2)])

    confirmed = await confirm_order(db, order.id, CLERK, "paid by phone")
    assert confirmed.status == "CONFIRMED"
    assert await status_of(db, order.id) == "CONFIRMED"
    processing = await start_processing(db, order.id, PICKER)
    assert processing.status == "PROCESSING"
    assert await level(db, "TEE", "NEAR") == (5, 2)
    cancelled = await cancel_order(db, order.id, "customer changed their mind", SUPPORT)
    assert cancelled.status == "CANCELLED"

    assert await status_of(db, order.id) == "CANCELLED"
    assert await events(db, order.id) == [
        ("PLACED", None, "PENDING", "system:test", "ADMIN", None),
        ("CONFIRMED", "PENDING", "CONFIRMED", "api-key:2", "STAFF", "paid by phone"),
        ("PROCESSING_STARTED", "CONFIRMED", "PROCESSING", "api-key:3", "STAFF", None),
        (
            "CANCELLED",
            "PROCESSING",
            "CANCELLED",
            "system:support",
            "ADMIN",
            "customer changed their mind",
        ),
    ]
    assert await level(db, "TEE", "NEAR") == (5, 0)
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


Move = Callable[[Database, int], Awaitable[Any]]
MOVES: dict[str, Move] = {
    "confirm": lambda db, order_id: confirm_order(db, order_id, CLERK),
    "start_processing": lambda db, order_id: start_processing(db, order_id, CLERK),
    "cancel": lambda db, order_id: cancel_order(db, order_id, "mistake", CLERK),
}


@pytest.mark.parametrize(
    ("history", "move"),
    [
        (["place"], "start_processing"),
        (["place", "confirm"], "confirm"),
        (["place", "cancel"], "confirm"),
        (["place", "cancel"], "start_processing"),
        (["place", "cancel"], "cancel"),
        (["place", "confirm", "cancel"], "cancel"),
        (["backorder"], "confirm"),
        (["backorder"], "start_processing"),
    ],
)
async def test_change_status_illegal_transition_changes_nothing(
    db: Database, history: list[str], move: str
) -> None:
    await seed(db, {("TEE", "NEAR"): 5, ("BOOK", "NEAR"): 1}, TEE="19.99", BOOK=("15.00", True))
    # A second order keeps some stock reserved, so a wrong release would show.
    await f.order(db, [("TEE", 1), ("BOOK", 1)], email="other@example.com")
    first, *steps = history
    order = await f.order(db, [("TEE", 2)] if first == "place" else [("TEE", 2), ("BOOK", 2)])
    for step in steps:
        await MOVES[step](db, order.id)
    status = await status_of(db, order.id)
    before = await snapshot(db)

    with pytest.raises(DomainError) as caught:
        await MOVES[move](db, order.id)

    assert caught.value.code == ErrorCode.INVALID_TRANSITION
    assert caught.value.field == ("input", "orderId")
    assert status in caught.value.message
    assert await snapshot(db) == before
    await assert_ledger_adds_up(db)


async def test_change_status_unknown_order_is_not_found(db: Database) -> None:
    with pytest.raises(DomainError) as caught:
        await confirm_order(db, 12345, CLERK)
    assert caught.value.code == ErrorCode.NOT_FOUND


async def test_cancel_order_releases_every_reservation(db: Database) -> None:
    await seed(
        db,
        {("TEE", "NEAR"): 2, ("TEE", "FAR"): 3, ("MUG", "FAR"): 3},
        TEE="19.99",
        MUG="7.50",
    )
    other = await f.order(db, [("MUG", 1)], email="other@example.com")
    before = {
        key: await level(db, *key) for key in [("TEE", "NEAR"), ("TEE", "FAR"), ("MUG", "FAR")]
    }
    order = await f.order(db, [("TEE", 4), ("MUG", 2)])
    assert await allocations(db, order.id) == {
        ("TEE", "NEAR"): 2,
        ("TEE", "FAR"): 2,
        ("MUG", "FAR"): 2,
    }
    await confirm_order(db, order.id, CLERK)
    ledger_before = await movements(db)

    await cancel_order(db, order.id, "out of budget", SUPPORT)

    after = {key: await level(db, *key) for key in before}
    assert after == before
    number = format_order_number(order.id)
    released = (await movements(db))[len(ledger_before) :]
    assert sorted(released) == sorted(
        [
            ("TEE", "NEAR", 0, -2, "ORDER_RELEASED", number, "system:support"),
            ("TEE", "FAR", 0, -2, "ORDER_RELEASED", number, "system:support"),
            ("MUG", "FAR", 0, -2, "ORDER_RELEASED", number, "system:support"),
        ]
    )
    assert await allocations(db, order.id) == {}
    assert await allocations(db, other.id) == {("MUG", "FAR"): 1}
    assert (await events(db, order.id))[-1] == (
        "CANCELLED",
        "CONFIRMED",
        "CANCELLED",
        "system:support",
        "ADMIN",
        "out of budget",
    )
    await assert_ledger_adds_up(db)


async def test_cancel_order_backordered_releases_the_reserved_part(db: Database) -> None:
    await seed(db, {("BOOK", "NEAR"): 2}, BOOK=("15.00", True))
    order = await f.order(db, [("BOOK", 5)])
    assert await level(db, "BOOK", "NEAR") == (2, 2)

    await cancel_order(db, order.id, "too slow", SUPPORT)

    assert await level(db, "BOOK", "NEAR") == (2, 0)
    assert await lines(db, order.id) == [("BOOK", 5, 1500, 7500, 0)]
    assert (await events(db, order.id))[-1][:3] == ("CANCELLED", "BACKORDERED", "CANCELLED")
    await assert_ledger_adds_up(db)


# Retries: idempotency keys and external ids -------------------------------------------


async def test_place_order_idempotent_replay_returns_first_order(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 2}, TEE="19.99")
    first = await f.order(db, [("TEE", 2)], idempotency_key="checkout-1")
    before = await snapshot(db)

    # The stock is gone now: a replay must not plan again, only return the first order.
    again = await f.order(db, [("TEE", 2)], idempotency_key="checkout-1")

    assert again == first  # every column, as stored
    assert await snapshot(db) == before


async def test_the_placed_order_is_the_stored_order_column_for_column(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 5, ("MUG", "FAR"): 5}, TEE="19.99", MUG="7.50")
    placed = await f.order(db, [("TEE", 2), ("MUG", 1)], note="gift")

    async with db.reader() as s:
        stored = await s.get(Order, placed.id)
    columns = [prop.key for prop in sa_inspect(Order).column_attrs]
    assert sorted(PlacedOrder._fields) == sorted(columns)
    assert stored is not None
    assert placed == PlacedOrder(**{name: getattr(stored, name) for name in columns})


async def test_only_an_order_that_can_be_replayed_keeps_its_requests_fingerprint(
    db: Database,
) -> None:
    await seed(db, {("TEE", "NEAR"): 9}, TEE="19.99")
    plain = await f.order(db, [("TEE", 1)])
    keyed = await f.order(db, [("TEE", 1)], idempotency_key="k-1")
    external = await f.order(db, [("TEE", 1)], external_id="ext-1")

    async with db.reader() as s:
        stored = dict(
            (await s.execute(select(Order.id, Order.request_hash).order_by(Order.id))).all()
        )
    assert stored[plain.id] == NOT_REPLAYABLE == plain.request_hash
    assert len(stored[keyed.id]) == len(stored[external.id]) == 64
    assert stored[keyed.id] != stored[external.id]
    # The external id's replay still compares fingerprints: the same request returns the
    # order, another one is refused.
    assert (await f.order(db, [("TEE", 1)], external_id="ext-1")).id == external.id
    with pytest.raises(DomainError) as caught:
        await f.order(db, [("TEE", 2)], external_id="ext-1")
    assert caught.value.code == ErrorCode.DUPLICATE_EXTERNAL_ID


async def test_place_order_idempotency_key_reused_for_other_input(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")
    await f.order(db, [("TEE", 2)], idempotency_key="checkout-1")
    before = await snapshot(db)

    with pytest.raises(DomainError) as caught:
        await f.order(db, [("TEE", 3)], idempotency_key="checkout-1")

    assert caught.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert caught.value.field == ("input", "idempotencyKey")
    assert await snapshot(db) == before


async def test_place_order_idempotency_key_is_checked_however_the_products_read_goes(
    db: Database,
) -> None:
    """The key's record comes with the products' read, and is looked up apart when that
    read finds no product (or plans on locked stock): a reuse is refused first either way,
    and a replay returns the first order."""
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")
    first = await f.order(db, [("TEE", 2)], idempotency_key="checkout-1")
    before = await snapshot(db)

    with pytest.raises(DomainError) as caught:
        await f.order(db, [("NOPE", 1)], idempotency_key="checkout-1")
    assert caught.value.code == ErrorCode.IDEMPOTENCY_KEY_REUSED
    cmd = dataclasses.replace(f.order_command([("TEE", 2)]), idempotency_key="checkout-1")
    for lock_stock in (False, True):
        again = await db.read_core(
            functools.partial(
                _draft,
                actor=f.ACTOR,
                cmd=cmd,
                fingerprint=_fingerprint(cmd),
                lock_stock=lock_stock,
            )
        )
        assert again == first
    assert await snapshot(db) == before


def _marketplace(**extra: Any) -> dict[str, Any]:
    return {
        "channel": SalesChannel.MARKETPLACE,
        "payment_method": PaymentMethod.MARKETPLACE,
        **extra,
    }


async def test_place_order_same_external_id_and_content_returns_first_order(
    db: Database,
) -> None:
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")
    first = await f.order(db, [("TEE", 2)], **_marketplace(external_id="amz-1"))
    before = await snapshot(db)

    again = await f.order(db, [("TEE", 2)], **_marketplace(external_id="amz-1"))

    assert again.id == first.id
    assert await snapshot(db) == before


async def test_place_order_same_external_id_other_content_is_duplicate(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")
    first = await f.order(db, [("TEE", 2)], **_marketplace(external_id="amz-1"))
    before = await snapshot(db)

    with pytest.raises(DomainError) as caught:
        await f.order(db, [("TEE", 1)], **_marketplace(external_id="amz-1"))

    assert caught.value.code == ErrorCode.DUPLICATE_EXTERNAL_ID
    assert caught.value.field == ("input", "externalId")
    assert format_order_number(first.id) in caught.value.message
    assert await snapshot(db) == before


async def test_place_order_external_id_is_unique_per_channel(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 5}, TEE="19.99")

    marketplace = await f.order(db, [("TEE", 1)], **_marketplace(external_id="X-1"))
    web = await f.order(db, [("TEE", 1)], external_id="X-1")

    assert marketplace.id != web.id
    assert await level(db, "TEE", "NEAR") == (5, 2)


# Sequences across a mixed history ------------------------------------------------------


async def test_event_sequences_are_dense_across_successes_and_failures(db: Database) -> None:
    await seed(db, {("TEE", "NEAR"): 3, ("BOOK", "NEAR"): 1}, TEE="19.99", BOOK=("15.00", True))
    a = await f.order(db, [("TEE", 1)])
    with pytest.raises(DomainErrors):
        await f.order(db, [("TEE", 10)])
    b = await f.order(db, [("BOOK", 3)])
    await confirm_order(db, a.id, CLERK)
    with pytest.raises(DomainError):
        await confirm_order(db, a.id, CLERK)
    await f.stock(db, "BOOK", "NEAR", 5)  # fills b: BACKORDER_FILLED
    await start_processing(db, a.id, PICKER)
    await cancel_order(db, b.id, "no longer needed", SUPPORT)
    with pytest.raises(DomainError):
        await cancel_order(db, b.id, "again", SUPPORT)

    await assert_sequences_dense(db)
    async with db.reader() as s:
        rows = (
            await s.execute(
                select(OrderEvent.order_id, OrderEvent.type).order_by(OrderEvent.sequence)
            )
        ).all()
    assert [tuple(r) for r in rows] == [
        (a.id, "PLACED"),
        (b.id, "PLACED"),
        (a.id, "CONFIRMED"),
        (b.id, "BACKORDER_FILLED"),
        (a.id, "PROCESSING_STARTED"),
        (b.id, "CANCELLED"),
    ]
    await assert_ledger_adds_up(db)


# The request fingerprint ---------------------------------------------------------------


@given(
    st.builds(
        PlaceOrderCommand,
        channel=st.sampled_from(SalesChannel),
        lines=st.lists(st.builds(LineInput, st.text(max_size=8), st.integers()), max_size=3),
        shipping_address=st.dictionaries(st.text(max_size=5), st.none() | st.text(max_size=5)),
        payment_method=st.sampled_from(PaymentMethod),
        customer_id=st.none() | st.integers(),
        new_customer=st.none()
        | st.builds(
            NewCustomer,
            st.text(max_size=5),
            st.text(max_size=5),
            st.none() | st.text(max_size=5),
            st.lists(st.dictionaries(st.text(max_size=3), st.text(max_size=3)), max_size=2),
        ),
        external_id=st.none() | st.text(max_size=5),
        idempotency_key=st.none() | st.text(max_size=5),
        note=st.none() | st.text(max_size=5),
        extra=st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    )
)
def test_fingerprint_is_every_field_but_the_idempotency_key(cmd: PlaceOrderCommand) -> None:
    # The hand-built fingerprint (asdict was slow) must equal what asdict gives, so that a
    # field added to the command cannot be left out of it, and a retry stays a retry.
    everything = dataclasses.asdict(cmd)
    del everything["idempotency_key"]
    assert _fingerprint(cmd) == request_hash(everything)
    assert _fingerprint(dataclasses.replace(cmd, idempotency_key="other")) == _fingerprint(cmd)
