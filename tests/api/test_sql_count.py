"""No N+1: a page of orders with customers, lines, products and allocations costs the same
fixed number of SQL statements for 1 order as for 100 (DataLoaders batch each level)."""

from __future__ import annotations

from typing import Any

import pytest

from db.database import Database
from tests import factories
from tests.conftest import GraphQLClient

ORDERS = 100
LINES_PER_ORDER = 3
PRODUCTS = [f"SKU-{i}" for i in range(7)]
WAREHOUSES = [("EAST", 1), ("WEST", 2), ("NORTH", 3)]

QUERY = """
query Orders($first: Int!) {
  orders(first: $first, sort: NUMBER_ASC) {
    edges {
      node {
        number
        customer { name }
        lines {
          sku
          product { name price { amount } }
          allocations { quantity warehouse { code } }
        }
      }
    }
  }
}"""

# One statement per level: the page, then one batch each for customers, lines, products,
# allocations and warehouses; no transaction around any of them (no BEGIN on SQLite).
EXPECTED_STATEMENTS = {"sqlite": 6, "postgres": 6}


async def seed(db: Database) -> None:
    for code, priority in WAREHOUSES:
        await factories.warehouse(db, code, priority)
    for i, sku in enumerate(PRODUCTS):
        await factories.product(db, sku, f"{i + 1}.25")
        # Little stock in the first warehouses, so orders split across all three.
        for w, (code, _) in enumerate(WAREHOUSES):
            await factories.stock(db, sku, code, (20, 30, 200)[w] + 5 * i)
    for n in range(ORDERS):
        lines = [
            (PRODUCTS[(n + k * 2) % len(PRODUCTS)], 1 + (n + k) % 3) for k in range(LINES_PER_ORDER)
        ]
        await factories.order(db, lines, email=f"customer{n % 9}@example.com")


@pytest.fixture
async def hundred_orders(db_url: str) -> None:
    db = Database(db_url)
    try:
        await seed(db)
    finally:
        await db.dispose()


async def count_statements(gql: GraphQLClient, first: int) -> tuple[int, list[Any]]:
    body = await gql(QUERY, {"first": first})
    assert "errors" not in body, body
    edges = body["data"]["orders"]["edges"]
    return body["extensions"]["debug"]["sqlStatements"], edges


async def test_orders_page_statement_count_does_not_grow_with_page_size(
    hundred_orders: None, gql: GraphQLClient, backend: str
) -> None:
    one, one_edges = await count_statements(gql, 1)
    hundred, edges = await count_statements(gql, 100)

    # The pages hold what they should, so the counts measure real work.
    assert len(one_edges) == 1
    assert len(edges) == ORDERS
    assert [e["node"]["number"] for e in edges] == [f"ORD-{n:06d}" for n in range(1, ORDERS + 1)]
    assert all(len(e["node"]["lines"]) == LINES_PER_ORDER for e in edges)
    assert len({e["node"]["customer"]["name"] for e in edges}) == 1  # the factory's name
    warehouses = {
        a["warehouse"]["code"]
        for e in edges
        for line in e["node"]["lines"]
        for a in line["allocations"]
    }
    assert warehouses == {code for code, _ in WAREHOUSES}
    assert one_edges[0] == edges[0]

    assert one == hundred == EXPECTED_STATEMENTS[backend]


async def test_first_order_of_the_page_in_full(hundred_orders: None, gql: GraphQLClient) -> None:
    _, edges = await count_statements(gql, 1)
    assert edges == [
        {
            "node": {
                "number": "ORD-000001",
                "customer": {"name": "Ada Lovelace"},
                "lines": [
                    {
                        "sku": "SKU-0",
                        "product": {"name": "Product SKU-0", "price": {"amount": "1.25"}},
                        "allocations": [{"quantity": 1, "warehouse": {"code": "EAST"}}],
                    },
                    {
                        "sku": "SKU-2",
                        "product": {"name": "Product SKU-2", "price": {"amount": "3.25"}},
                        "allocations": [{"quantity": 2, "warehouse": {"code": "EAST"}}],
                    },
                    {
                        "sku": "SKU-4",
                        "product": {"name": "Product SKU-4", "price": {"amount": "5.25"}},
                        "allocations": [{"quantity": 3, "warehouse": {"code": "EAST"}}],
                    },
                ],
            }
        }
    ]
