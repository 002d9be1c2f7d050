"""Customer A can neither read, nor change, nor subscribe to customer B's orders: by id, by
number, by node(id), by list filters, by mutations, by orderStatusChanged and by orderEvents.
And customers see none of the staff-only fields of their own orders."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette

from app.main import Services
from db.models import OrderEvent, StockMovement
from domain.access import Principal, Role
from domain.orders import OrderStatus, format_order_number
from resolvers.orders import confirm_order, start_processing
from schema.common import to_global_id
from tests import factories, principals
from tests.conftest import GraphQLClient

SYSTEM = principals.SYSTEM


@dataclass
class World:
    a_token: str
    b_token: str
    a_id: int
    b_id: int
    a_order: Any
    b_order: Any

    @property
    def a(self) -> dict[str, str]:
        return factories.bearer(self.a_token)

    @property
    def b(self) -> dict[str, str]:
        return factories.bearer(self.b_token)


@pytest.fixture
async def world(app: Starlette) -> World:
    services: Services = app.state.services
    db = services.db
    await factories.warehouse(db)
    await factories.product(db, "TEE", "20.00")
    await factories.stock(db, "TEE", "MAIN", 100)
    a, a_token = await principals.customer_token(db, services.settings, "a@example.com")
    b, b_token = await principals.customer_token(db, services.settings, "b@example.com")
    a_order = await factories.order(db, [("TEE", 1)], email="a@example.com")
    b_order = await factories.order(db, [("TEE", 2)], email="b@example.com")
    assert a_order.customer_id == a.id and b_order.customer_id == b.id
    return World(a_token, b_token, a.id, b.id, a_order, b_order)


def gid(type_name: str, id_: int) -> str:
    return str(to_global_id(type_name, id_))


async def test_customer_reads_own_order_by_id_number_and_node(
    gql: GraphQLClient, world: World
) -> None:
    own = gid("Order", world.a_order.id)
    body = await gql(
        """query ($id: ID!, $n: String!) {
             byId: order(id: $id) { id status trackingToken customer { email } }
             byNumber: order(number: $n) { id }
             node(id: $id) { ... on Order { id } }
           }""",
        {"id": own, "n": format_order_number(world.a_order.id)},
        headers=world.a,
    )
    assert "errors" not in body, body
    data = body["data"]
    assert data["byId"]["id"] == own and data["byId"]["customer"]["email"] == "a@example.com"
    assert data["byId"]["trackingToken"] == world.a_order.tracking_token
    assert len(world.a_order.tracking_token) >= 32
    assert data["byNumber"] == {"id": own} and data["node"] == {"id": own}


async def test_customer_cannot_read_another_customers_order(
    gql: GraphQLClient, world: World
) -> None:
    other = gid("Order", world.b_order.id)
    body = await gql(
        """query ($id: ID!, $n: String!, $c: ID!) {
             byId: order(id: $id) { id }
             byNumber: order(number: $n) { id }
             node(id: $id) { id }
             customer(id: $c) { email }
             customerNode: node(id: $c) { id }
           }""",
        {"id": other, "n": format_order_number(world.b_order.id), "c": gid("Customer", world.b_id)},
        headers=world.a,
    )
    # Indistinguishable from an order that does not exist.
    assert body == {
        "data": {
            "byId": None,
            "byNumber": None,
            "node": None,
            "customer": None,
            "customerNode": None,
        },
        "extensions": body["extensions"],
    }


async def test_customer_lists_only_own_orders(gql: GraphQLClient, world: World) -> None:
    body = await gql("{ orders(first: 50) { totalCount nodes { id } } }", headers=world.a)
    assert body["data"]["orders"] == {
        "totalCount": 1,
        "nodes": [{"id": gid("Order", world.a_order.id)}],
    }
    # Staff see both.
    body = await gql("{ orders(first: 50) { totalCount } }")
    assert body["data"]["orders"]["totalCount"] == 2


async def test_customer_filtering_by_another_customer_is_forbidden(
    gql: GraphQLClient, world: World
) -> None:
    body = await gql(
        "query ($c: ID!) { orders(first: 5, filter: {customerId: $c}) { totalCount } }",
        {"c": gid("Customer", world.b_id)},
        headers=world.a,
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert "own" in body["errors"][0]["message"]
    own = await gql(
        "query ($c: ID!) { orders(first: 5, filter: {customerId: $c}) { totalCount } }",
        {"c": gid("Customer", world.a_id)},
        headers=world.a,
    )
    assert own["data"]["orders"]["totalCount"] == 1


async def test_customer_cannot_cancel_another_customers_order(
    app: Starlette, gql: GraphQLClient, world: World
) -> None:
    body = await gql(
        """mutation ($id: ID!) { cancelOrder(input: {orderId: $id, reason: "mine now"}) {
             order { id } userErrors { code message field } } }""",
        {"id": gid("Order", world.b_order.id)},
        headers=world.a,
    )
    assert body["data"]["cancelOrder"] == {
        "order": None,
        "userErrors": [
            {
                "code": "NOT_FOUND",
                "message": "No order with this id.",
                "field": ["input", "orderId"],
            }
        ],
    }
    db = app.state.services.db
    async with db.reader() as s:
        events = await s.scalar(
            select(func.count())
            .select_from(OrderEvent)
            .where(OrderEvent.order_id == world.b_order.id)
        )
        released = await s.scalar(
            select(func.count())
            .select_from(StockMovement)
            .where(StockMovement.reason == "ORDER_RELEASED")
        )
    assert events == 1 and released == 0  # only PLACED; nothing released


async def test_customer_cannot_confirm_even_own_order(gql: GraphQLClient, world: World) -> None:
    body = await gql(
        "mutation ($id: ID!) { confirmOrder(input: {orderId: $id}) { order { status } } }",
        {"id": gid("Order", world.a_order.id)},
        headers=world.a,
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"] == {
        "code": "FORBIDDEN",
        "field": "Mutation.confirmOrder",
    }


CANCEL = """mutation ($id: ID!) { cancelOrder(input: {orderId: $id, reason: "changed my mind"}) {
  order { status events(first: 10) { nodes { type toStatus actorRole } } }
  userErrors { code message } } }"""


async def test_customer_cancels_own_order_while_pending_or_confirmed(
    app: Starlette, gql: GraphQLClient, world: World
) -> None:
    body = await gql(CANCEL, {"id": gid("Order", world.a_order.id)}, headers=world.a)
    assert body["data"]["cancelOrder"]["userErrors"] == []
    order = body["data"]["cancelOrder"]["order"]
    assert order["status"] == "CANCELLED"
    assert order["events"]["nodes"][-1] == {
        "type": "CANCELLED",
        "toStatus": "CANCELLED",
        "actorRole": "CUSTOMER",
    }
    async with app.state.services.db.reader() as s:
        actor = await s.scalar(
            select(OrderEvent.actor)
            .where(OrderEvent.order_id == world.a_order.id)
            .order_by(OrderEvent.sequence.desc())
        )
    assert actor == f"customer:{world.a_id}"


async def test_customer_cannot_cancel_own_order_once_processing(
    app: Starlette, gql: GraphQLClient, world: World
) -> None:
    db = app.state.services.db
    await confirm_order(db, world.a_order.id, SYSTEM)
    await start_processing(db, world.a_order.id, SYSTEM)
    body = await gql(CANCEL, {"id": gid("Order", world.a_order.id)}, headers=world.a)
    assert body["data"]["cancelOrder"]["order"] is None
    [error] = body["data"]["cancelOrder"]["userErrors"]
    assert error["code"] == "FORBIDDEN" and "PROCESSING" in error["message"]
    # Staff still may.
    staff = await factories.api_key(db, Role.STAFF)
    body = await gql(
        CANCEL, {"id": gid("Order", world.a_order.id)}, headers=factories.bearer(staff)
    )
    assert body["data"]["cancelOrder"]["order"]["status"] == OrderStatus.CANCELLED.value


PLACE = """mutation ($input: PlaceOrderInput!) { placeOrder(input: $input) {
  order { customer { email } } userErrors { code field message } } }"""


def place_input(**extra: Any) -> dict[str, Any]:
    return {
        "channel": "MOBILE",
        "paymentMethod": "CARD",
        "lines": [{"sku": "TEE", "quantity": 1}],
        "shippingAddress": dict(factories.ADDRESS),
        **extra,
    }


async def test_customer_places_orders_only_for_themselves(gql: GraphQLClient, world: World) -> None:
    own = await gql(PLACE, {"input": place_input()}, headers=world.a)
    assert own["data"]["placeOrder"] == {
        "order": {"customer": {"email": "a@example.com"}},
        "userErrors": [],
    }
    for extra, field in (
        ({"customerId": gid("Customer", world.b_id)}, ["input", "customerId"]),
        ({"customer": {"name": "B", "email": "b@example.com"}}, ["input", "customer"]),
    ):
        body = await gql(PLACE, {"input": place_input(**extra)}, headers=world.a)
        [error] = body["data"]["placeOrder"]["userErrors"]
        assert (error["code"], error["field"]) == ("FORBIDDEN", field)
    listed = await gql("{ orders(first: 50) { totalCount } }", headers=world.b)
    assert listed["data"]["orders"]["totalCount"] == 1  # nothing was placed for B


async def test_idempotency_keys_are_per_caller(gql: GraphQLClient, world: World) -> None:
    a = await gql(PLACE + "", {"input": place_input(idempotencyKey="cart-1")}, headers=world.a)
    b = await gql(PLACE, {"input": place_input(idempotencyKey="cart-1")}, headers=world.b)
    assert a["data"]["placeOrder"]["order"]["customer"]["email"] == "a@example.com"
    assert b["data"]["placeOrder"]["order"]["customer"]["email"] == "b@example.com"


@pytest.mark.parametrize(
    "selection",
    [
        "lines { allocations { quantity } }",
        "events(first: 5) { nodes { actor } }",
        "events(first: 5) { nodes { note } }",
        "lines { product { costPrice { amount } } }",
        "lines { product { inventory { onHand } } }",
    ],
)
async def test_customer_cannot_see_staff_only_fields(
    gql: GraphQLClient, world: World, selection: str
) -> None:
    body = await gql(
        f"query ($id: ID!) {{ order(id: $id) {{ {selection} }} }}",
        {"id": gid("Order", world.a_order.id)},
        headers=world.a,
    )
    assert body["data"] is None
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_customer_sees_what_a_customer_app_needs(gql: GraphQLClient, world: World) -> None:
    body = await gql(
        """query ($id: ID!) { order(id: $id) { number status total { amount }
             lines { sku quantity product { name totalAvailable } }
             events(first: 5) { nodes { type toStatus actorRole } } } }""",
        {"id": gid("Order", world.a_order.id)},
        headers=world.a,
    )
    assert "errors" not in body, body
    assert body["data"]["order"]["lines"] == [
        {"sku": "TEE", "quantity": 1, "product": {"name": "Product TEE", "totalAvailable": 97}}
    ]
    assert body["data"]["order"]["events"]["nodes"] == [
        {"type": "PLACED", "toStatus": "PENDING", "actorRole": "ADMIN"}
    ]


# -- subscriptions -------------------------------------------------------------------------


async def test_customer_cannot_subscribe_to_another_customers_order(
    app: Starlette, world: World
) -> None:
    result = await principals.first_result(
        app,
        Principal.for_customer(world.a_id),
        "subscription ($id: ID!) { orderStatusChanged(orderId: $id) { toStatus } }",
        {"id": gid("Order", world.b_order.id)},
    )
    assert result.data is None
    assert [e.message for e in result.errors] == ["No order with this id."]


async def test_customer_order_events_carry_only_their_own_orders(
    app: Starlette, world: World
) -> None:
    """Replay from the beginning, then live: B's events never reach A, whatever the filter."""
    schema = app.state.schema
    db = app.state.services.db
    a = Principal.for_customer(world.a_id)
    await principals.hub_caught_up(app, 2)  # both PLACED events: the live stream starts after
    stream = await schema.subscribe(
        "subscription { orderEvents(after: null) { sequence type order { id } } }",
        context_value=principals.context_for(app, a),
    )
    replay_all = await schema.subscribe(
        'subscription { orderEvents(after: "T3JkZXJFdmVudDow") { sequence order { id } } }',
        context_value=principals.context_for(app, a),
    )
    received: list[dict[str, Any]] = []
    replayed: list[dict[str, Any]] = []

    async def collect(source: Any, into: list[dict[str, Any]], n: int) -> None:
        async for result in source:
            assert not result.errors, result.errors
            into.append(result.data["orderEvents"])
            if len(into) == n:
                return

    try:
        async with asyncio.timeout(10):
            live = asyncio.create_task(collect(stream, received, 2))
            await collect(replay_all, replayed, 1)  # A's PLACED only, not B's
            await asyncio.sleep(0.2)  # the live subscription is attached
            await confirm_order(db, world.b_order.id, SYSTEM)
            await confirm_order(db, world.a_order.id, SYSTEM)
            await start_processing(db, world.b_order.id, SYSTEM)
            await start_processing(db, world.a_order.id, SYSTEM)
            await live
    finally:
        await stream.aclose()
        await replay_all.aclose()
    own = gid("Order", world.a_order.id)
    assert replayed == [{"sequence": replayed[0]["sequence"], "order": {"id": own}}]
    assert [(e["type"], e["order"]["id"]) for e in received] == [
        ("CONFIRMED", own),
        ("PROCESSING_STARTED", own),
    ]


async def test_customer_order_events_filtered_by_another_customer_is_forbidden(
    app: Starlette, world: World
) -> None:
    result = await principals.first_result(
        app,
        Principal.for_customer(world.a_id),
        "subscription ($c: ID!) { orderEvents(filter: {customerId: $c}) { sequence } }",
        {"c": gid("Customer", world.b_id)},
    )
    assert result.data is None
    assert result.errors[0].extensions["code"] == "FORBIDDEN"
