"""Read queries through the API: cursor pagination both ways, every sort and filter, node
lookups, and the catalogue, stock and customer lists."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update

from db.database import Database
from db.models import Order
from domain.inventory import StockMovementReason
from domain.orders import SalesChannel
from resolvers.inventory import AdjustInventoryCommand, adjust_inventory
from resolvers.orders import cancel_order, confirm_order
from tests import factories
from tests.conftest import GraphQLClient

BASE = datetime(2026, 3, 1, tzinfo=UTC)

# number: (lines, channel, email, externalId, placed_at hours, updated_at hours)
ORDERS: dict[int, tuple[list[tuple[str, int]], SalesChannel, str, str | None, int, int]] = {
    1: ([("A", 1)], SalesChannel.WEB, "ada@example.com", "W-1", 3, 6),
    2: ([("B", 2)], SalesChannel.MOBILE, "bob@example.com", None, 1, 1),
    3: ([("A", 3)], SalesChannel.MARKETPLACE, "ada@example.com", "M-9", 5, 2),
    4: ([("B", 1)], SalesChannel.WEB, "bob@example.com", None, 2, 5),
    5: ([("A", 1)], SalesChannel.POS, "cy@example.com", None, 4, 4),
    6: ([("A", 2), ("B", 1)], SalesChannel.PHONE, "ada@example.com", None, 3, 3),
}
# Totals (flat 5.00 shipping below 100.00): 15.00, 55.00, 35.00, 30.00, 15.00, 50.00.

ADA, BOB, CY = "Q3VzdG9tZXI6MQ==", "Q3VzdG9tZXI6Mg==", "Q3VzdG9tZXI6Mw=="

NUMBERS = """
query Numbers($sort: OrderSort, $filter: OrderFilter, $first: Int, $after: String,
              $last: Int, $before: String) {
  orders(sort: $sort, filter: $filter, first: $first, after: $after, last: $last,
         before: $before) {
    totalCount
    edges { cursor node { number } }
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
  }
}"""


def ord_(n: int) -> str:
    return f"ORD-{n:06d}"


async def seed(db: Database) -> None:
    await factories.warehouse(db, "MAIN", priority=5)
    await factories.warehouse(db, "EAST", priority=1)
    await factories.warehouse(db, "WEST", priority=1)
    await factories.warehouse(db, "SOUTH", priority=3)
    await factories.product(db, "A", "10.00")
    await factories.product(db, "B", "25.00")
    await adjust_inventory(
        db,
        AdjustInventoryCommand("A", "MAIN", 1000, StockMovementReason.RECEIVED, reorder_point=995),
        factories.ACTOR,
    )
    await factories.stock(db, "B", "MAIN", 1000)
    await factories.stock(db, "B", "EAST", 3)
    for number, (lines, channel, email, external_id, _, _) in ORDERS.items():
        order = await factories.order(
            db, lines, email=email, channel=channel, external_id=external_id
        )
        assert order.id == number
    await confirm_order(db, 2, factories.ACTOR)
    await cancel_order(db, 4, "customer asked", factories.ACTOR)
    async with db.write_session() as s:
        for number, (*_, placed, updated) in ORDERS.items():
            await s.execute(
                update(Order)
                .where(Order.id == number)
                .values(
                    placed_at=BASE + timedelta(hours=placed),
                    updated_at=BASE + timedelta(hours=updated),
                )
            )
        await s.commit()


@pytest.fixture
async def shop(db_url: str) -> None:
    db = Database(db_url)
    try:
        await seed(db)
    finally:
        await db.dispose()


async def numbers(gql: GraphQLClient, **variables: Any) -> dict[str, Any]:
    body = await gql(NUMBERS, variables)
    assert "errors" not in body, body
    connection: dict[str, Any] = body["data"]["orders"]
    return connection


def nums(connection: dict[str, Any]) -> list[str]:
    return [e["node"]["number"] for e in connection["edges"]]


def page(
    orders: list[int], connection: dict[str, Any], *, has_next: bool, has_previous: bool
) -> dict[str, Any]:
    """The connection expected: ``orders`` in order, with the cursors the server gave."""
    cursors = [e["cursor"] for e in connection["edges"]]
    assert len(cursors) == len(orders)
    return {
        "totalCount": 6,
        "edges": [
            {"cursor": c, "node": {"number": ord_(n)}} for c, n in zip(cursors, orders, strict=True)
        ],
        "pageInfo": {
            "hasNextPage": has_next,
            "hasPreviousPage": has_previous,
            "startCursor": cursors[0] if cursors else None,
            "endCursor": cursors[-1] if cursors else None,
        },
    }


async def test_orders_paginate_forward(shop: None, gql: GraphQLClient) -> None:
    first = await numbers(gql, sort="NUMBER_ASC", first=2)
    assert first == page([1, 2], first, has_next=True, has_previous=False)
    second = await numbers(gql, sort="NUMBER_ASC", first=2, after=first["pageInfo"]["endCursor"])
    assert second == page([3, 4], second, has_next=True, has_previous=True)
    third = await numbers(gql, sort="NUMBER_ASC", first=2, after=second["pageInfo"]["endCursor"])
    assert third == page([5, 6], third, has_next=False, has_previous=True)
    beyond = await numbers(gql, sort="NUMBER_ASC", first=2, after=third["pageInfo"]["endCursor"])
    assert beyond == page([], beyond, has_next=False, has_previous=True)


async def test_orders_paginate_backward(shop: None, gql: GraphQLClient) -> None:
    last = await numbers(gql, sort="NUMBER_ASC", last=2)
    assert last == page([5, 6], last, has_next=False, has_previous=True)
    before = last["pageInfo"]["startCursor"]
    middle = await numbers(gql, sort="NUMBER_ASC", last=2, before=before)
    assert middle == page([3, 4], middle, has_next=True, has_previous=True)
    before = middle["pageInfo"]["startCursor"]
    start = await numbers(gql, sort="NUMBER_ASC", last=2, before=before)
    assert start == page([1, 2], start, has_next=True, has_previous=False)


async def test_cursors_point_at_their_own_edge(shop: None, gql: GraphQLClient) -> None:
    everything = await numbers(gql, sort="TOTAL_ASC", first=100)
    cursors = [e["cursor"] for e in everything["edges"]]
    for i, c in enumerate(cursors):
        after = await numbers(gql, sort="TOTAL_ASC", first=100, after=c)
        assert nums(after) == nums(everything)[i + 1 :]
        before = await numbers(gql, sort="TOTAL_ASC", last=100, before=c)
        assert nums(before) == nums(everything)[:i]
    between = await numbers(gql, sort="TOTAL_ASC", first=100, after=cursors[0], before=cursors[4])
    assert nums(between) == nums(everything)[1:4]


async def test_first_zero_gives_count_and_no_edges(shop: None, gql: GraphQLClient) -> None:
    empty = await numbers(gql, first=0)
    assert empty == page([], empty, has_next=True, has_previous=False)


SORTS = {
    "PLACED_AT_DESC": [3, 5, 6, 1, 4, 2],
    "PLACED_AT_ASC": [2, 4, 1, 6, 5, 3],
    "UPDATED_AT_DESC": [1, 4, 5, 6, 3, 2],
    "NUMBER_ASC": [1, 2, 3, 4, 5, 6],
    "NUMBER_DESC": [6, 5, 4, 3, 2, 1],
    "TOTAL_DESC": [2, 6, 3, 4, 5, 1],
    "TOTAL_ASC": [1, 5, 4, 3, 6, 2],
}


@pytest.mark.parametrize("sort", list(SORTS))
async def test_order_sort(sort: str, shop: None, gql: GraphQLClient) -> None:
    expected = [ord_(n) for n in SORTS[sort]]
    assert nums(await numbers(gql, sort=sort, first=100)) == expected
    # One at a time, forward and backward, across the ties (placed at, total).
    forward: list[str] = []
    after = None
    while True:
        one = await numbers(gql, sort=sort, first=1, after=after)
        forward += nums(one)
        if not one["pageInfo"]["hasNextPage"]:
            break
        after = one["pageInfo"]["endCursor"]
    assert forward == expected
    backward: list[str] = []
    before = None
    while True:
        one = await numbers(gql, sort=sort, last=1, before=before)
        backward = nums(one) + backward
        if not one["pageInfo"]["hasPreviousPage"]:
            break
        before = one["pageInfo"]["startCursor"]
    assert backward == expected


async def test_default_sort_is_newest_first(shop: None, gql: GraphQLClient) -> None:
    assert nums(await numbers(gql, first=100)) == [ord_(n) for n in SORTS["PLACED_AT_DESC"]]


FILTERS: list[tuple[str, dict[str, Any], list[int]]] = [
    ("status-pending", {"status": ["PENDING"]}, [1, 3, 5, 6]),
    ("status-several", {"status": ["CONFIRMED", "CANCELLED"]}, [2, 4]),
    ("status-none-match", {"status": ["SHIPPED"]}, []),
    ("channel", {"channel": ["WEB"]}, [1, 4]),
    ("channels", {"channel": ["POS", "PHONE"]}, [5, 6]),
    ("customer", {"customerId": BOB}, [2, 4]),
    ("customer-without-orders", {"customerId": "Q3VzdG9tZXI6OTk="}, []),
    ("placed-after-is-inclusive", {"placedAfter": "2026-03-01T02:00:00Z"}, [1, 3, 4, 5, 6]),
    ("placed-before-is-exclusive", {"placedBefore": "2026-03-01T03:00:00Z"}, [2, 4]),
    (
        "placed-between",
        {"placedAfter": "2026-03-01T02:00:00Z", "placedBefore": "2026-03-01T04:00:00Z"},
        [1, 4, 6],
    ),
    ("placed-after-other-zone", {"placedAfter": "2026-03-01T05:00:00+02:00"}, [1, 3, 5, 6]),
    ("number", {"number": "ORD-000003"}, [3]),
    ("number-lower-case-short", {"number": "ord-5"}, [5]),
    ("number-malformed", {"number": "three"}, []),
    ("external-id", {"externalId": "M-9"}, [3]),
    ("external-id-unknown", {"externalId": "M-10"}, []),
    ("combined", {"channel": ["WEB"], "status": ["PENDING"]}, [1]),
    ("combined-customer-status", {"customerId": ADA, "status": ["PENDING"]}, [1, 3, 6]),
]


@pytest.mark.parametrize(
    ("filter_", "expected"), [(f, e) for _, f, e in FILTERS], ids=[i for i, _, _ in FILTERS]
)
async def test_order_filter(
    filter_: dict[str, Any], expected: list[int], shop: None, gql: GraphQLClient
) -> None:
    connection = await numbers(gql, sort="NUMBER_ASC", filter=filter_, first=100)
    assert nums(connection) == [ord_(n) for n in expected]
    assert connection["totalCount"] == len(expected)


async def test_filtered_pages_count_the_filter(shop: None, gql: GraphQLClient) -> None:
    connection = await numbers(gql, sort="NUMBER_ASC", filter={"status": ["PENDING"]}, first=1)
    assert nums(connection) == [ord_(1)]
    assert connection["totalCount"] == 4
    assert connection["pageInfo"]["hasNextPage"] is True


NODE = """
query Node($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Order { number status channel externalId customer { email } total { amount } }
    ... on Product { sku name price { amount currency } active }
    ... on Customer { email name }
    ... on Warehouse { code name priority }
  }
}"""


@pytest.mark.parametrize(
    ("global_id", "expected"),
    [
        (
            "T3JkZXI6Mw==",
            {
                "__typename": "Order",
                "id": "T3JkZXI6Mw==",
                "number": "ORD-000003",
                "status": "PENDING",
                "channel": "MARKETPLACE",
                "externalId": "M-9",
                "customer": {"email": "ada@example.com"},
                "total": {"amount": "35.00"},
            },
        ),
        (
            "UHJvZHVjdDoy",
            {
                "__typename": "Product",
                "id": "UHJvZHVjdDoy",
                "sku": "B",
                "name": "Product B",
                "price": {"amount": "25.00", "currency": "USD"},
                "active": True,
            },
        ),
        (
            BOB,
            {
                "__typename": "Customer",
                "id": BOB,
                "email": "bob@example.com",
                "name": "Ada Lovelace",
            },
        ),
        (
            "V2FyZWhvdXNlOjI=",
            {
                "__typename": "Warehouse",
                "id": "V2FyZWhvdXNlOjI=",
                "code": "EAST",
                "name": "Warehouse EAST",
                "priority": 1,
            },
        ),
        ("T3JkZXI6OTk=", None),  # Order:99
        ("T3JkZXJMaW5lOjE=", None),  # OrderLine:1 is not fetchable as a node
    ],
    ids=["order", "product", "customer", "warehouse", "missing-order", "unsupported-type"],
)
async def test_node(global_id: str, expected: Any, shop: None, gql: GraphQLClient) -> None:
    body = await gql(NODE, {"id": global_id})
    assert "errors" not in body, body
    assert body["data"] == {"node": expected}


async def test_order_by_number_and_by_id(shop: None, gql: GraphQLClient) -> None:
    query = """
    query O($n: String, $id: ID) {
      byNumber: order(number: $n) {
        number status paymentStatus placedAt updatedAt
        subtotal { amount } shippingTotal { amount } taxTotal { amount } total { amount }
        shippingAddress { name city country }
        lines { sku quantity unitPrice { amount } total { amount } backorderedQuantity
                allocations { quantity warehouse { code } } }
        events { totalCount edges { node { type fromStatus toStatus note } } }
      }
      byId: order(id: $id) { number }
      missing: order(number: "ORD-000099") { number }
    }"""
    body = await gql(query, {"n": "ORD-000006", "id": "T3JkZXI6Ng=="})
    assert body["data"] == {
        "byNumber": {
            "number": "ORD-000006",
            "status": "PENDING",
            "paymentStatus": "PENDING",
            "placedAt": "2026-03-01T03:00:00+00:00",
            "updatedAt": "2026-03-01T03:00:00+00:00",
            "subtotal": {"amount": "45.00"},
            "shippingTotal": {"amount": "5.00"},
            "taxTotal": {"amount": "0.00"},
            "total": {"amount": "50.00"},
            "shippingAddress": {"name": "Ada Lovelace", "city": "London", "country": "GB"},
            "lines": [
                {
                    "sku": "A",
                    "quantity": 2,
                    "unitPrice": {"amount": "10.00"},
                    "total": {"amount": "20.00"},
                    "backorderedQuantity": 0,
                    "allocations": [{"quantity": 2, "warehouse": {"code": "MAIN"}}],
                },
                {
                    "sku": "B",
                    "quantity": 1,
                    "unitPrice": {"amount": "25.00"},
                    "total": {"amount": "25.00"},
                    "backorderedQuantity": 0,
                    "allocations": [{"quantity": 1, "warehouse": {"code": "MAIN"}}],
                },
            ],
            "events": {
                "totalCount": 1,
                "edges": [
                    {
                        "node": {
                            "type": "PLACED",
                            "fromStatus": None,
                            "toStatus": "PENDING",
                            "note": None,
                        }
                    }
                ],
            },
        },
        "byId": {"number": "ORD-000006"},
        "missing": None,
    }


async def test_product_by_sku(shop: None, gql: GraphQLClient) -> None:
    body = await gql(
        """{
          b: product(sku: "B") {
            sku totalAvailable
            inventory { warehouse { code } onHand reserved available reorderPoint }
          }
          missing: product(sku: "NOPE") { sku }
          byId: product(id: "UHJvZHVjdDox") { sku }
        }"""
    )
    # B: order 2 holds 2 in EAST (priority 1), order 4's unit went back when it was
    # cancelled, order 6 holds 1 in MAIN.
    assert body["data"] == {
        "b": {
            "sku": "B",
            "totalAvailable": 1000,
            "inventory": [
                {
                    "warehouse": {"code": "MAIN"},
                    "onHand": 1000,
                    "reserved": 1,
                    "available": 999,
                    "reorderPoint": 0,
                },
                {
                    "warehouse": {"code": "EAST"},
                    "onHand": 3,
                    "reserved": 2,
                    "available": 1,
                    "reorderPoint": 0,
                },
            ],
        },
        "missing": None,
        "byId": {"sku": "A"},
    }


INVENTORY = """
query Levels($filter: InventoryFilter) {
  inventoryLevels(filter: $filter, first: 100) {
    totalCount
    nodes { product { sku } warehouse { code } onHand reserved available reorderPoint }
  }
}"""

LEVEL_A_MAIN = {
    "product": {"sku": "A"},
    "warehouse": {"code": "MAIN"},
    "onHand": 1000,
    "reserved": 7,
    "available": 993,
    "reorderPoint": 995,
}
LEVEL_B_MAIN = {
    "product": {"sku": "B"},
    "warehouse": {"code": "MAIN"},
    "onHand": 1000,
    "reserved": 1,
    "available": 999,
    "reorderPoint": 0,
}
LEVEL_B_EAST = {
    "product": {"sku": "B"},
    "warehouse": {"code": "EAST"},
    "onHand": 3,
    "reserved": 2,
    "available": 1,
    "reorderPoint": 0,
}


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        (None, [LEVEL_A_MAIN, LEVEL_B_MAIN, LEVEL_B_EAST]),
        ({"sku": "B"}, [LEVEL_B_MAIN, LEVEL_B_EAST]),
        ({"warehouseCode": "MAIN"}, [LEVEL_A_MAIN, LEVEL_B_MAIN]),
        ({"sku": "B", "warehouseCode": "EAST"}, [LEVEL_B_EAST]),
        ({"belowReorderPoint": True}, [LEVEL_A_MAIN]),
        ({"warehouseCode": "WEST"}, []),
        ({"sku": "NOPE"}, []),
    ],
    ids=["all", "sku", "warehouse", "sku-and-warehouse", "below-reorder", "empty", "unknown"],
)
async def test_inventory_levels(
    filter_: dict[str, Any] | None, expected: list[Any], shop: None, gql: GraphQLClient
) -> None:
    body = await gql(INVENTORY, {"filter": filter_})
    assert body["data"] == {"inventoryLevels": {"totalCount": len(expected), "nodes": expected}}


async def test_customers(shop: None, gql: GraphQLClient) -> None:
    query = """
    query C($filter: CustomerFilter, $first: Int, $after: String) {
      customers(filter: $filter, first: $first, after: $after) {
        totalCount
        edges { node { id email } }
        pageInfo { hasNextPage hasPreviousPage endCursor }
      }
    }"""
    body = await gql(query, {"first": 100})
    assert body["data"]["customers"]["edges"] == [
        {"node": {"id": ADA, "email": "ada@example.com"}},
        {"node": {"id": BOB, "email": "bob@example.com"}},
        {"node": {"id": CY, "email": "cy@example.com"}},
    ]
    assert body["data"]["customers"]["totalCount"] == 3

    first = (await gql(query, {"first": 2}))["data"]["customers"]
    assert [e["node"]["email"] for e in first["edges"]] == ["ada@example.com", "bob@example.com"]
    assert first["pageInfo"]["hasNextPage"] is True
    rest = (await gql(query, {"first": 2, "after": first["pageInfo"]["endCursor"]}))["data"]
    assert rest["customers"]["edges"] == [{"node": {"id": CY, "email": "cy@example.com"}}]
    assert rest["customers"]["pageInfo"]["hasNextPage"] is False

    by_email = await gql(query, {"filter": {"email": " BOB@Example.com "}, "first": 100})
    assert by_email["data"]["customers"]["edges"] == [
        {"node": {"id": BOB, "email": "bob@example.com"}}
    ]
    assert by_email["data"]["customers"]["totalCount"] == 1


async def test_customer_by_id(shop: None, gql: GraphQLClient) -> None:
    body = await gql(
        '{ cy: customer(id: "' + CY + '") { email } '
        'none: customer(id: "Q3VzdG9tZXI6OTk=") { email } }'
    )
    assert body["data"] == {"cy": {"email": "cy@example.com"}, "none": None}


async def test_warehouses_in_priority_order(shop: None, gql: GraphQLClient) -> None:
    body = await gql("{ warehouses { code priority } }")
    # Lower priority ships first; a tie keeps the order of creation.
    assert body["data"] == {
        "warehouses": [
            {"code": "EAST", "priority": 1},
            {"code": "WEST", "priority": 1},
            {"code": "SOUTH", "priority": 3},
            {"code": "MAIN", "priority": 5},
        ]
    }


async def test_products_list(shop: None, gql: GraphQLClient) -> None:
    body = await gql(
        "{ all: products(first: 100) { totalCount nodes { sku } } "
        'b: products(filter: {search: "duct b"}, first: 100) { nodes { sku } } }'
    )
    assert body["data"] == {
        "all": {"totalCount": 2, "nodes": [{"sku": "A"}, {"sku": "B"}]},
        "b": {"nodes": [{"sku": "B"}]},
    }
