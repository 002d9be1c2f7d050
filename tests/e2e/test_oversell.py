"""No oversell across processes: two real uvicorn servers on one database, many buyers at
once. On SQLite the two processes share one file (BEGIN IMMEDIATE and the busy timeout are
all that order them); on PostgreSQL row locks do."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from db.database import Database
from db.models import IdempotencyRecord, Order, OrderEvent
from resolvers.customers import NewCustomer, create_customer
from schema.common import to_global_id
from tests import factories as f
from tests.e2e.servers import Server, create_api_key, running_servers
from tests.resolvers.test_orders import assert_ledger_adds_up, assert_sequences_dense, level

pytestmark = pytest.mark.e2e

UNITS = 20
REQUESTS = 80


async def seed(db_url: str, units: int) -> None:
    db = Database(db_url)
    try:
        await f.warehouse(db)
        await f.product(db, "TEE", "19.99")
        await f.stock(db, "TEE", "MAIN", units)
    finally:
        await db.dispose()


async def fire(
    servers: list[Server], inputs: list[dict[str, Any]], key: str
) -> list[httpx.Response]:
    """Post every placeOrder at once, alternating between the servers, all with one key."""
    limits = httpx.Limits(max_connections=len(inputs), max_keepalive_connections=len(inputs))
    async with httpx.AsyncClient(timeout=120, limits=limits, headers=f.bearer(key)) as client:
        return await asyncio.gather(
            *(
                client.post(
                    servers[i % len(servers)].graphql_url,
                    json={"query": f.PLACE_ORDER, "variables": {"input": value}},
                )
                for i, value in enumerate(inputs)
            )
        )


def payloads(responses: list[httpx.Response], logs: list[str]) -> list[dict[str, Any]]:
    """The placeOrder payloads, after checking that no request failed outright."""
    assert [r.status_code for r in responses] == [200] * len(responses), logs
    bodies = [r.json() for r in responses]
    assert [b for b in bodies if "errors" in b] == [], logs
    for log in logs:
        assert "Traceback" not in log, log
    return [b["data"]["placeOrder"] for b in bodies]


async def customers(db_url: str, n: int) -> list[str]:
    """``n`` existing customers' global ids (on PostgreSQL, an order for one is a single
    statement without a transaction)."""
    db = Database(db_url)
    try:
        return [
            str(
                to_global_id(
                    "Customer",
                    (
                        await create_customer(
                            db, NewCustomer(name="Buyer", email=f"c{i}@example.com"), f.ACTOR
                        )
                    ).id,
                )
            )
            for i in range(n)
        ]
    finally:
        await db.dispose()


async def buyer_inputs(
    db_url: str, who: str, lines: list[list[tuple[str, int]]], **extra: Any
) -> list[dict[str, Any]]:
    """placeOrder inputs, one per entry of ``lines``: from guests (a new customer each) or
    from existing customers."""
    if who == "guests":
        return [
            f.place_order_input(
                shape, customer={"name": f"Buyer {i}", "email": f"buyer{i}@example.com"}, **extra
            )
            for i, shape in enumerate(lines)
        ]
    ids = await customers(db_url, len(lines))
    out = []
    for shape, customer_id in zip(lines, ids, strict=True):
        value = f.place_order_input(shape, customerId=customer_id, **extra)
        del value["customer"]
        out.append(value)
    return out


BUYERS = pytest.mark.parametrize("who", ["guests", "customers"])


async def count(db: Database, model: type[Any], *where: Any) -> int:
    async with db.reader() as s:
        stmt = select(func.count()).select_from(model).where(*where)
        return int((await s.execute(stmt)).scalar_one())


@BUYERS
async def test_place_order_across_two_servers_never_oversells(
    db_url: str, tmp_path: Path, who: str
) -> None:
    await seed(db_url, UNITS)
    quantities = [2 if i % 7 == 0 else 1 for i in range(REQUESTS)]
    inputs = await buyer_inputs(db_url, who, [[("TEE", qty)] for qty in quantities])

    key = await asyncio.to_thread(create_api_key, db_url)

    with running_servers(db_url, tmp_path, count=2) as servers:
        responses = await fire(servers, inputs, key)
        logs = [s.log() for s in servers]

    results = payloads(responses, logs)
    sold = 0
    order_ids = set()
    for qty, result in zip(quantities, results, strict=True):
        if result["order"] is None:
            assert [e["code"] for e in result["userErrors"]] == ["INSUFFICIENT_STOCK"], result
            continue
        assert result["userErrors"] == []
        assert result["order"]["status"] == "PENDING"
        assert result["order"]["lines"] == [
            {
                "sku": "TEE",
                "quantity": qty,
                "backorderedQuantity": 0,
                "allocations": [{"quantity": qty, "warehouse": {"code": "MAIN"}}],
            }
        ]
        sold += qty
        order_ids.add(result["order"]["id"])
    assert sold == UNITS

    db = Database(db_url)
    try:
        on_hand, reserved = await level(db, "TEE")
        assert (on_hand, reserved, on_hand - reserved) == (UNITS, UNITS, 0)
        orders = await count(db, Order)
        assert orders == len(order_ids)
        assert await count(db, OrderEvent, OrderEvent.type == "PLACED") == orders
        await assert_ledger_adds_up(db)
        await assert_sequences_dense(db)
    finally:
        await db.dispose()


@BUYERS
async def test_place_order_racing_retries_across_two_servers_make_one_order(
    db_url: str, tmp_path: Path, who: str
) -> None:
    await seed(db_url, UNITS)
    [same] = await buyer_inputs(db_url, who, [[("TEE", 3)]], idempotencyKey="checkout-7")
    # One key on both servers: idempotency keys belong to the caller that sent them.
    key = await asyncio.to_thread(create_api_key, db_url)

    with running_servers(db_url, tmp_path, count=2) as servers:
        responses = await fire(servers, [same] * 10, key)
        logs = [s.log() for s in servers]

    results = payloads(responses, logs)
    assert [r["userErrors"] for r in results] == [[]] * 10
    assert len({r["order"]["id"] for r in results}) == 1

    db = Database(db_url)
    try:
        assert await count(db, Order) == 1
        assert await count(db, IdempotencyRecord) == 1
        assert await count(db, OrderEvent) == 1
        assert await level(db, "TEE") == (UNITS, 3)
        await assert_ledger_adds_up(db)
    finally:
        await db.dispose()
