"""Concurrent use cases on one database: no oversell, one order per retried request, one
release per cancelled order. Every call runs in its own transaction, as requests do."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from functools import partial
from typing import Any

import pytest
from sqlalchemy import event, func, select

from db.database import Database
from db.models import IdempotencyRecord, Order, OrderEvent
from domain.errors import DomainError, DomainErrors, ErrorCode
from domain.orders import PaymentMethod, SalesChannel
from resolvers.customers import NewCustomer, create_customer
from resolvers.orders import PlacedOrder, cancel_order, confirm_order, place_order
from tests import factories as f
from tests.resolvers.test_orders import (
    CLERK,
    SUPPORT,
    assert_ledger_adds_up,
    assert_sequences_dense,
    events,
    level,
)

CALLS = 30


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    # Room for every racing transaction at once on PostgreSQL (one connection each).
    database = Database(db_url, pool_size=CALLS)
    try:
        yield database
    finally:
        await database.dispose()


async def count(db: Database, model: type[Any]) -> int:
    async with db.reader() as s:
        return int((await s.execute(select(func.count()).select_from(model))).scalar_one())


async def buyers(db: Database, who: str) -> list[Callable[[list[tuple[str, int]]], Any]]:
    """``CALLS`` ways to place an order, one per buyer: guests (a new customer each, found
    or created in the order's transaction) or existing customers (on PostgreSQL, an order
    for one is a single statement without a transaction)."""
    if who == "guests":
        return [partial(f.order, db, email=f"buyer{i}@example.com") for i in range(CALLS)]
    ids = [
        (
            await create_customer(
                db, NewCustomer(name="Buyer", email=f"buyer{i}@example.com"), CLERK
            )
        ).id
        for i in range(CALLS)
    ]

    def for_customer(customer_id: int) -> Callable[[list[tuple[str, int]]], Any]:
        def place(lines: list[tuple[str, int]]) -> Any:
            cmd = replace(f.order_command(lines), new_customer=None, customer_id=customer_id)
            return place_order(db, cmd, f.ACTOR, f.PRICING)

        return place

    return [for_customer(customer_id) for customer_id in ids]


BUYERS = pytest.mark.parametrize("who", ["guests", "customers"])


def only_code(exc: BaseException) -> ErrorCode | None:
    """The one code an expected failure carries (on one line or several); None for
    anything else, which would be a bug."""
    if isinstance(exc, DomainErrors):
        codes = {e.code for e in exc.errors}
        return codes.pop() if len(codes) == 1 else None
    if isinstance(exc, DomainError):
        return exc.code
    return None


@BUYERS
@pytest.mark.parametrize(
    "layout",
    [{"MAIN": 10}, {"MAIN": 4, "EAST": 6}],
    ids=["one-warehouse", "two-warehouses"],
)
async def test_place_order_last_units_race(db: Database, layout: dict[str, int], who: str) -> None:
    for priority, code in enumerate(layout):
        await f.warehouse(db, code, priority=priority)
    await f.product(db, "TEE", "19.99")
    for code, qty in layout.items():
        await f.stock(db, "TEE", code, qty)
    quantities = [2 if i % 5 == 0 else 1 for i in range(CALLS)]
    place = await buyers(db, who)

    results = await asyncio.gather(
        *(place[i]([("TEE", qty)]) for i, qty in enumerate(quantities)),
        return_exceptions=True,
    )

    sold = [qty for qty, r in zip(quantities, results, strict=True) if isinstance(r, PlacedOrder)]
    refused = [r for r in results if not isinstance(r, PlacedOrder)]
    assert [only_code(r) for r in refused] == [ErrorCode.INSUFFICIENT_STOCK] * len(refused), [
        repr(r) for r in refused
    ]
    assert sum(sold) == 10
    assert len({r.id for r in results if isinstance(r, PlacedOrder)}) == len(sold)
    for code, qty in layout.items():
        assert await level(db, "TEE", code) == (qty, qty)
    assert await count(db, Order) == len(sold)
    assert await count(db, OrderEvent) == len(sold)
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


@BUYERS
async def test_place_order_orders_for_many_products_race(db: Database, who: str) -> None:
    """Orders touching several stock rows in different line orders: no deadlock, no oversell."""
    await f.warehouse(db)
    for sku in ("A", "B", "C"):
        await f.product(db, sku, "5.00")
        await f.stock(db, sku, "MAIN", 6)
    shapes = [[("A", 1), ("B", 1)], [("B", 1), ("C", 1)], [("C", 1), ("A", 1)]]
    place = await buyers(db, who)

    results = await asyncio.gather(
        *(place[i](shapes[i % 3]) for i in range(CALLS)),
        return_exceptions=True,
    )

    placed = [shapes[i % 3] for i, r in enumerate(results) if isinstance(r, PlacedOrder)]
    refused = [(shapes[i % 3], r) for i, r in enumerate(results) if not isinstance(r, PlacedOrder)]
    assert [only_code(r) for _, r in refused] == [ErrorCode.INSUFFICIENT_STOCK] * len(refused), [
        repr(r) for _, r in refused
    ]
    assert placed
    available = {}
    for sku in ("A", "B", "C"):
        on_hand, reserved = await level(db, sku)
        assert reserved == sum(qty for shape in placed for s, qty in shape if s == sku)
        available[sku] = on_hand - reserved
    # Stock only goes down here, so every refused order still finds a product sold out.
    for shape, _ in refused:
        assert any(available[sku] == 0 for sku, _ in shape), (shape, available)
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_place_order_racing_idempotent_retries_make_one_order(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", 10)

    results = await asyncio.gather(
        *(f.order(db, [("TEE", 3)], idempotency_key="checkout-42") for _ in range(20)),
        return_exceptions=True,
    )

    assert all(isinstance(r, PlacedOrder) for r in results), [repr(r) for r in results]
    assert len({r.id for r in results if isinstance(r, PlacedOrder)}) == 1
    assert await count(db, Order) == 1
    assert await count(db, IdempotencyRecord) == 1
    assert await level(db, "TEE") == (10, 3)
    assert await count(db, OrderEvent) == 1
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_place_order_racing_same_external_id_makes_one_order(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", 10)

    results = await asyncio.gather(
        *(
            f.order(
                db,
                [("TEE", 2)],
                channel=SalesChannel.MARKETPLACE,
                payment_method=PaymentMethod.MARKETPLACE,
                external_id="amz-123",
            )
            for _ in range(20)
        ),
        return_exceptions=True,
    )

    assert all(isinstance(r, PlacedOrder) for r in results), [repr(r) for r in results]
    assert len({r.id for r in results if isinstance(r, PlacedOrder)}) == 1
    assert await count(db, Order) == 1
    assert await level(db, "TEE") == (10, 2)
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_cancel_order_racing_cancels_release_once(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", 10)
    keep = await f.order(db, [("TEE", 3)], email="keep@example.com")
    order = await f.order(db, [("TEE", 4)])

    results = await asyncio.gather(
        *(cancel_order(db, order.id, f"try {i}", SUPPORT) for i in range(10)),
        return_exceptions=True,
    )

    done = [r for r in results if isinstance(r, Order)]
    refused = [r for r in results if not isinstance(r, Order)]
    assert len(done) == 1
    assert [only_code(r) for r in refused] == [ErrorCode.INVALID_TRANSITION] * 9
    assert await level(db, "TEE") == (10, 3)
    assert [e[0] for e in await events(db, order.id)] == ["PLACED", "CANCELLED"]
    assert [e[0] for e in await events(db, keep.id)] == ["PLACED"]
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_change_status_racing_confirm_and_cancel_one_wins(db: Database) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", 10)
    order = await f.order(db, [("TEE", 4)])

    results = await asyncio.gather(
        *(
            confirm_order(db, order.id, CLERK)
            if i % 2
            else cancel_order(db, order.id, "oops", SUPPORT)
            for i in range(10)
        ),
        return_exceptions=True,
    )

    # Whichever wins, the other kind can still follow once (CONFIRMED → CANCELLED) but
    # never twice, and nothing is released twice.
    succeeded = [r for r in results if isinstance(r, Order)]
    refused = [r for r in results if not isinstance(r, Order)]
    assert [only_code(r) for r in refused] == [ErrorCode.INVALID_TRANSITION] * len(refused)
    history = [e[0] for e in await events(db, order.id)]
    assert history in (["PLACED", "CANCELLED"], ["PLACED", "CONFIRMED", "CANCELLED"])
    assert len(succeeded) == len(history) - 1
    assert await level(db, "TEE") == (10, 0)
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_adjust_inventory_racing_receipts_and_orders(db: Database) -> None:
    """Receipts filling backorders while new orders reserve: no order is left backordered
    while its stock sits free, and the ledger still adds up."""
    await f.warehouse(db)
    for run in range(3):
        sku = f"BOOK-{run}"
        await f.product(db, sku, "15.00", allow_backorder=True)
        await f.stock(db, sku, "MAIN", 5)
        calls: list[Any] = []
        for i in range(CALLS):
            if i % 3 == 0:
                calls.append(f.stock(db, sku, "MAIN", 2))
            else:
                calls.append(f.order(db, [(sku, 1)], email=f"reader{run}-{i}@example.com"))

        results = await asyncio.gather(*calls, return_exceptions=True)

        assert not [r for r in results if isinstance(r, BaseException)], results
        # 5 + 10 receipts of 2 = 25 units for 20 orders of 1: every order ends up reserved.
        assert await level(db, sku) == (25, 20)
    async with db.reader() as s:
        statuses = list((await s.execute(select(Order.status))).scalars())
    assert statuses == ["PENDING"] * 60
    await assert_ledger_adds_up(db)
    await assert_sequences_dense(db)


async def test_orders_of_one_process_queue_for_their_products_on_postgres(
    db: Database, backend: str
) -> None:
    """On PostgreSQL an order waits in the process for its products (db/keylocks.py) before
    its transaction starts, while orders for other products go ahead; on SQLite the write
    lock queues every writer already."""
    if backend != "postgres":
        assert db.product_locks is None
        return
    assert db.product_locks is not None
    await f.warehouse(db)
    for sku in ("A", "B"):
        await f.product(db, sku, "5.00")
        await f.stock(db, sku, "MAIN", 10)
    async with db.product_locks.hold(["A"]):
        waiting = asyncio.create_task(f.order(db, [("A", 1)], email="a@example.com"))
        other = await asyncio.wait_for(f.order(db, [("B", 2)], email="b@example.com"), 10)
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert await count(db, Order) == 1 and other.id is not None
        assert await level(db, "A", "MAIN") == (10, 0)
    placed = await asyncio.wait_for(waiting, 10)
    assert await level(db, "A", "MAIN") == (10, 1)
    assert placed.id != other.id


async def test_replays_and_refused_orders_do_not_queue_for_their_products_on_postgres(
    db: Database, backend: str
) -> None:
    """An order reads and plans before it queues for its products: a retry of an order
    already placed, or an order the reads refuse, answers while others hold the products."""
    if backend != "postgres":
        return
    assert db.product_locks is not None
    await f.warehouse(db)
    await f.product(db, "A", "5.00")
    await f.stock(db, "A", "MAIN", 1)
    first = await f.order(db, [("A", 1)], idempotency_key="k-1")
    async with db.product_locks.hold(["A"]):
        replay = await asyncio.wait_for(f.order(db, [("A", 1)], idempotency_key="k-1"), 5)
        assert replay.id == first.id
        with pytest.raises(DomainErrors) as short:
            await asyncio.wait_for(f.order(db, [("A", 1)], email="b@example.com"), 5)
        assert only_code(short.value) == ErrorCode.INSUFFICIENT_STOCK
        with pytest.raises(DomainError) as unknown:
            unknown_customer = replace(
                f.order_command([("A", 1)]), new_customer=None, customer_id=10**6
            )
            await asyncio.wait_for(place_order(db, unknown_customer, f.ACTOR, f.PRICING), 5)
        assert unknown.value.code == ErrorCode.NOT_FOUND
    assert await count(db, Order) == 1


async def test_the_next_order_for_a_product_goes_once_the_stock_is_reserved_on_postgres(
    db: Database, backend: str
) -> None:
    """An order lets its products go in the process once its reservation is made: the next
    order for them starts while this one commits (PostgreSQL's row locks cover the rest)."""
    if backend != "postgres":
        return
    locks = db.product_locks
    assert locks is not None
    await f.warehouse(db)
    await f.product(db, "A", "5.00")
    await f.stock(db, "A", "MAIN", 5)
    held_at_commit: list[bool] = []

    def on_commit(_conn: Any) -> None:
        held_at_commit.append("A" in locks.held)

    event.listen(db.write_engine.sync_engine, "commit", on_commit)
    try:
        await f.order(db, [("A", 1)])
    finally:
        event.remove(db.write_engine.sync_engine, "commit", on_commit)
    assert held_at_commit == [False]
    assert locks.held == frozenset() and await level(db, "A", "MAIN") == (5, 1)
