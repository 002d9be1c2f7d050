"""An event's selection runs once for all subscribers of the same document and variables,
and each of them still gets exactly its own, correct result."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette

from domain.access import Principal
from resolvers.orders import confirm_order
from schema import orders as order_types
from schema.common import to_global_id
from tests import factories, principals

SYSTEM = principals.SYSTEM
SAME = "subscription { orderEvents { sequence type order { number status } } }"
OTHER = "subscription { orderEvents { sequence order { number total { amount } } } }"
WITH_VARIABLES = """subscription ($types: [OrderEventType!]) {
  orderEvents(filter: {type: $types}) { sequence type order { number status } } }"""


async def test_identical_subscriptions_share_one_execution(
    app: Starlette, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = app.state.services.db
    await factories.warehouse(db)
    await factories.product(db, "TEE")
    await factories.stock(db, "TEE", "MAIN", 10)
    order = await factories.order(db, [("TEE", 1)])
    await principals.hub_caught_up(app, 1)
    conversions = 0
    original = order_types.Order.from_model

    def counting(o: Any) -> Any:
        nonlocal conversions
        conversions += 1
        return original(o)

    monkeypatch.setattr(order_types.Order, "from_model", staticmethod(counting))
    schema = app.state.schema
    admin = Principal.system("a")
    customer = Principal.for_customer(order.customer_id)
    specs = [
        (SAME, None, admin),
        (SAME, None, admin),
        (SAME, None, customer),  # another principal, same document: shares too
        (OTHER, None, admin),
        (WITH_VARIABLES, {"types": ["CONFIRMED"]}, admin),
        (WITH_VARIABLES, {"types": ["CONFIRMED", "CANCELLED"]}, admin),
    ]
    streams = [
        await schema.subscribe(q, variable_values=v, context_value=principals.context_for(app, p))
        for q, v, p in specs
    ]
    tasks = [asyncio.create_task(anext(s)) for s in streams]
    await asyncio.sleep(0.3)
    try:
        await confirm_order(db, order.id, SYSTEM)
        async with asyncio.timeout(10):
            results = await asyncio.gather(*tasks)
    finally:
        for s in streams:
            await s.aclose()
    data = [r.data["orderEvents"] for r in results]
    assert all(not r.errors for r in results)
    number = f"ORD-{order.id:06d}"
    same = {"sequence": 2, "type": "CONFIRMED", "order": {"number": number, "status": "CONFIRMED"}}
    assert data == [
        same,
        same,
        same,
        {"sequence": 2, "order": {"number": number, "total": {"amount": "15.00"}}},
        same,
        same,
    ]
    # SAME x3 once, OTHER once, WITH_VARIABLES once per distinct variables.
    assert conversions == 4


async def test_a_subscriber_leaving_does_not_take_the_shared_result_with_it(
    app: Starlette,
) -> None:
    db = app.state.services.db
    await factories.warehouse(db)
    await factories.product(db, "TEE")
    await factories.stock(db, "TEE", "MAIN", 10)
    order = await factories.order(db, [("TEE", 1)])
    await principals.hub_caught_up(app, 1)
    schema = app.state.schema
    admin = Principal.system("a")
    streams = [
        await schema.subscribe(SAME, context_value=principals.context_for(app, admin))
        for _ in range(3)
    ]
    tasks = [asyncio.create_task(anext(s)) for s in streams]
    await asyncio.sleep(0.3)
    await confirm_order(db, order.id, SYSTEM)
    await asyncio.sleep(0)  # the first subscriber starts executing
    tasks[0].cancel()
    try:
        async with asyncio.timeout(10):
            rest = await asyncio.gather(*tasks[1:])
    finally:
        for s in streams:
            await s.aclose()
    assert [r.data["orderEvents"]["type"] for r in rest] == ["CONFIRMED", "CONFIRMED"]


async def test_each_event_is_resolved_with_fresh_data_not_the_connections_cache(
    app: Starlette,
) -> None:
    """A WebSocket connection keeps one context for its life: nested fields of a later event
    must not come from loaders cached while resolving an earlier one."""
    db = app.state.services.db
    await factories.warehouse(db)
    await factories.product(db, "PRE", allow_backorder=True)
    order = await factories.order(db, [("PRE", 2)])  # nothing in stock: backordered
    query = """subscription ($id: ID!) {
      orderStatusChanged(orderId: $id, after: "T3JkZXJFdmVudDow") {
        type order { status lines { backorderedQuantity } } } }"""
    stream = await app.state.schema.subscribe(
        query,
        variable_values={"id": str(to_global_id("Order", order.id))},
        context_value=principals.context_for(app, SYSTEM),
    )
    try:
        async with asyncio.timeout(10):
            placed = await anext(stream)  # replayed: loads the lines (2 backordered)
            await factories.stock(db, "PRE", "MAIN", 2)  # fills the backorder
            filled = await anext(stream)
    finally:
        await stream.aclose()
    assert placed.data["orderStatusChanged"] == {
        "type": "PLACED",
        "order": {"status": "BACKORDERED", "lines": [{"backorderedQuantity": 2}]},
    }
    assert filled.data["orderStatusChanged"] == {
        "type": "BACKORDER_FILLED",
        "order": {"status": "PENDING", "lines": [{"backorderedQuantity": 0}]},
    }
