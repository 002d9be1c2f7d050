"""Malformed input of every kind: the exact error, and nothing written.

Each case sends one bad request and checks the whole answer (a ``userErrors`` payload, or
the GraphQL error messages), then that no table changed: no half-written order, no stray
customer, no stock moved. No answer is ever a 500, an internal error, or leaks a traceback
or SQL.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from db.database import Database
from tests.factories import ADDRESS
from tests.factories import product as make_product
from tests.factories import stock as add_stock
from tests.factories import warehouse as make_warehouse

Snapshot = dict[str, Any]

COUNTED_TABLES = (
    "sales_order",
    "order_line",
    "order_event",
    "stock_movement",
    "customer",
    "allocation",
    "product",
    "warehouse",
    "idempotency_record",
)
LEAKS = ("Traceback", "SELECT", "INSERT", "UPDATE ", "sqlalchemy", "asyncpg", "sqlite3")

PRODUCT_ID = "UHJvZHVjdDox"  # Product:1
CUSTOMER_ID = "Q3VzdG9tZXI6MQ=="  # Customer:1

PLACE = """
mutation Place($input: PlaceOrderInput!) {
  placeOrder(input: $input) { order { id } userErrors { field message code } }
}"""
CREATE_PRODUCT = """
mutation Create($input: CreateProductInput!) {
  createProduct(input: $input) { product { id } userErrors { field message code } }
}"""
CREATE_CUSTOMER = """
mutation Create($input: CreateCustomerInput!) {
  createCustomer(input: $input) { customer { id } userErrors { field message code } }
}"""
ADJUST = """
mutation Adjust($input: AdjustInventoryInput!) {
  adjustInventory(input: $input) {
    inventoryLevel { onHand reserved } userErrors { field message code }
  }
}"""
CANCEL = """
mutation Cancel($input: CancelOrderInput!) {
  cancelOrder(input: $input) { order { id } userErrors { field message code } }
}"""


def order_input(lines: list[tuple[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "channel": "WEB",
        "paymentMethod": "CARD",
        "customer": {"name": "Grace Hopper", "email": "grace@example.com"},
        "lines": [{"sku": s, "quantity": q} for s, q in (lines or [("TEE", 1)])],
        "shippingAddress": dict(ADDRESS),
    }
    data.update(extra)
    return {"input": data}


def without(variables: dict[str, Any], key: str) -> dict[str, Any]:
    return {"input": {k: v for k, v in variables["input"].items() if k != key}}


def cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(parts)).encode()).decode().rstrip("=")


def user_error(field: list[str] | None, message: str, code: str = "INVALID_INPUT") -> Any:
    return {"field": field, "message": message, "code": code}


@dataclass(frozen=True)
class Case:
    """One bad request. ``payload``: the expected mutation payload under ``data``;
    ``errors``: the expected top-level error messages (``data`` is then ``expected_data``)."""

    id: str
    query: str
    variables: dict[str, Any] | None = None
    payload: tuple[str, dict[str, Any]] | None = None
    errors: list[str] | None = None
    expected_data: Any = None


def place_failed(*errors: Any) -> tuple[str, dict[str, Any]]:
    return ("placeOrder", {"order": None, "userErrors": list(errors)})


def product_failed(*errors: Any) -> tuple[str, dict[str, Any]]:
    return ("createProduct", {"product": None, "userErrors": list(errors)})


def customer_failed(*errors: Any) -> tuple[str, dict[str, Any]]:
    return ("createCustomer", {"customer": None, "userErrors": list(errors)})


def adjust_failed(*errors: Any) -> tuple[str, dict[str, Any]]:
    return ("adjustInventory", {"inventoryLevel": None, "userErrors": list(errors)})


QTY = ["input", "lines", "0", "quantity"]

CASES = [
    # Order lines.
    Case(
        "quantity-zero",
        PLACE,
        order_input([("TEE", 0)]),
        payload=place_failed(user_error(QTY, "Quantity must be at least 1.")),
    ),
    Case(
        "quantity-negative",
        PLACE,
        order_input([("TEE", -3)]),
        payload=place_failed(user_error(QTY, "Quantity must be at least 1.")),
    ),
    Case(
        "quantity-above-10000",
        PLACE,
        order_input([("TEE", 10_001)]),
        payload=place_failed(user_error(QTY, "Quantity must be at most 10000.")),
    ),
    Case(
        "quantity-not-an-integer",
        PLACE,
        order_input([("TEE", 1.5)]),
        errors=[
            "Variable '$input' has invalid value at .lines[0].quantity: "
            "Int cannot represent non-integer value: 1.5"
        ],
    ),
    Case(
        "quantity-a-string",
        PLACE,
        order_input([("TEE", "2")]),
        errors=[
            "Variable '$input' has invalid value at .lines[0].quantity: "
            "Int cannot represent non-integer value: '2'"
        ],
    ),
    Case(
        "quantity-beyond-32-bits",
        PLACE,
        order_input([("TEE", 2**31)]),
        errors=[
            "Variable '$input' has invalid value at .lines[0].quantity: "
            "Int cannot represent non 32-bit signed integer value: 2147483648"
        ],
    ),
    Case(
        "too-many-lines",
        PLACE,
        order_input([("TEE", 1)] * 101),
        payload=place_failed(
            user_error(["input", "lines"], "An order has at most 100 lines."),
        ),
    ),
    Case(
        "no-lines",
        PLACE,
        {"input": {**order_input()["input"], "lines": []}},
        payload=place_failed(user_error(["input", "lines"], "An order needs at least one line.")),
    ),
    Case(
        "unknown-sku",
        PLACE,
        order_input([("NOPE", 1)]),
        payload=place_failed(
            user_error(["input", "lines", "0", "sku"], "Unknown SKU 'NOPE'.", "NOT_FOUND")
        ),
    ),
    Case(
        "malformed-sku",
        PLACE,
        order_input([("no spaces", 1)]),
        payload=place_failed(
            user_error(
                ["input", "lines", "0", "sku"],
                "SKU must be 1-64 characters: letters, digits, '.', '_' or '-', "
                "starting with a letter or digit.",
            )
        ),
    ),
    Case(
        "inactive-product",
        PLACE,
        order_input([("OLD", 1)]),
        payload=place_failed(
            user_error(["input", "lines", "0", "sku"], "OLD is not for sale.", "PRODUCT_INACTIVE")
        ),
    ),
    # A bad line among good ones: nothing at all is written, not even the new customer.
    Case(
        "unknown-sku-among-good-lines",
        PLACE,
        order_input([("TEE", 1), ("MUG", 2), ("NOPE", 1)]),
        payload=place_failed(
            user_error(["input", "lines", "2", "sku"], "Unknown SKU 'NOPE'.", "NOT_FOUND")
        ),
    ),
    Case(
        "short-stock-among-good-lines",
        PLACE,
        order_input([("TEE", 1), ("MUG", 2), ("TEE", 3)]),
        payload=place_failed(
            user_error(
                ["input", "lines", "2", "quantity"],
                "Only 2 of TEE available; 3 requested.",
                "INSUFFICIENT_STOCK",
            )
        ),
    ),
    Case(
        "several-bad-lines-all-reported",
        PLACE,
        order_input([("TEE", 0), ("MUG", 1), ("TEE", 10_001)]),
        payload=place_failed(
            user_error(QTY, "Quantity must be at least 1."),
            user_error(["input", "lines", "2", "quantity"], "Quantity must be at most 10000."),
        ),
    ),
    # The customer.
    Case(
        "bad-email",
        PLACE,
        order_input(customer={"name": "Grace", "email": "grace@"}),
        payload=place_failed(
            user_error(["input", "customer", "email"], "'grace@' is not a valid email address.")
        ),
    ),
    Case(
        "name-too-long",
        PLACE,
        order_input(customer={"name": "G" * 201, "email": "grace@example.com"}),
        payload=place_failed(
            user_error(["input", "customer", "name"], "name must be at most 200 characters.")
        ),
    ),
    Case(
        "name-blank",
        CREATE_CUSTOMER,
        {"input": {"name": "   ", "email": "grace@example.com"}},
        payload=customer_failed(user_error(["input", "name"], "name must not be empty.")),
    ),
    Case(
        "control-characters-in-name",
        PLACE,
        order_input(customer={"name": "Grace\x07Hopper", "email": "grace@example.com"}),
        payload=place_failed(
            user_error(["input", "customer", "name"], "name must not contain control characters.")
        ),
    ),
    Case(
        "external-id-too-long",
        PLACE,
        order_input(externalId="x" * 101),
        payload=place_failed(
            user_error(["input", "externalId"], "externalId must be at most 100 characters.")
        ),
    ),
    Case(
        "country-three-letters",
        PLACE,
        order_input(shippingAddress={**ADDRESS, "country": "GBR"}),
        payload=place_failed(
            user_error(
                ["input", "shippingAddress", "country"],
                "Country must be an ISO 3166-1 alpha-2 code such as 'US' or 'DE'.",
            )
        ),
    ),
    Case(
        "country-lower-case",
        PLACE,
        order_input(shippingAddress={**ADDRESS, "country": "gb"}),
        payload=place_failed(
            user_error(
                ["input", "shippingAddress", "country"],
                "Country must be an ISO 3166-1 alpha-2 code such as 'US' or 'DE'.",
            )
        ),
    ),
    Case(
        "customer-id-and-customer",
        PLACE,
        order_input(customerId=CUSTOMER_ID),
        payload=place_failed(
            user_error(
                ["input", "customerId"], "Give either customerId or customer, not both or neither."
            )
        ),
    ),
    Case(
        "neither-customer-id-nor-customer",
        PLACE,
        without(order_input(), "customer"),
        payload=place_failed(
            user_error(
                ["input", "customerId"], "Give either customerId or customer, not both or neither."
            )
        ),
    ),
    Case(
        "malformed-customer-id",
        PLACE,
        {"input": {**without(order_input(), "customer")["input"], "customerId": "!!not-an-id"}},
        payload=place_failed(
            user_error(["input", "customerId"], "'!!not-an-id' is not a valid ID.")
        ),
    ),
    Case(
        "customer-id-of-a-product",
        PLACE,
        {"input": {**without(order_input(), "customer")["input"], "customerId": PRODUCT_ID}},
        payload=place_failed(
            user_error(
                ["input", "customerId"], "Expected the ID of a Customer, got the ID of a Product."
            )
        ),
    ),
    Case(
        "unknown-customer-id",
        PLACE,
        {
            "input": {
                **without(order_input(), "customer")["input"],
                "customerId": "Q3VzdG9tZXI6OTk5",  # Customer:999
            }
        },
        payload=place_failed(
            user_error(["input", "customerId"], "No customer with this id.", "NOT_FOUND")
        ),
    ),
    # Schema-level validation: GraphQL errors, nothing executed.
    Case(
        "missing-required-field",
        PLACE,
        without(order_input(), "channel"),
        errors=[
            "Variable '$input' has invalid value: Expected value of type 'PlaceOrderInput' to "
            "include required field 'channel', found: {'paymentMethod': 'CARD', 'customer': "
            "{'name': 'Grace Hopper', 'email': 'grace@example.com'}, 'lines': [{...}], "
            "'shippingAddress': {'name': 'Ada Lovelace', 'line1': '1 Analytical Way', "
            "'city': 'London', 'postalCode': 'N1 1AA', 'country': 'GB'}}."
        ],
    ),
    Case(
        "missing-required-field-inline",
        'mutation { createWarehouse(input: {name: "North"}) { userErrors { code } } }',
        errors=[
            "Expected value of type 'CreateWarehouseInput' to include required field 'code', "
            'found: { name: "North" }.'
        ],
    ),
    Case(
        "invalid-enum-value",
        PLACE,
        order_input(channel="FAX"),
        errors=[
            "Variable '$input' has invalid value at .channel: "
            "Value 'FAX' does not exist in 'SalesChannel' enum."
        ],
    ),
    Case(
        "invalid-enum-value-inline",
        'mutation { adjustInventory(input: {sku: "TEE", warehouseCode: "MAIN", delta: 1, '
        "reason: STOLEN}) { userErrors { code } } }",
        errors=["Value 'STOLEN' does not exist in 'StockMovementReason' enum."],
    ),
    Case(
        "unknown-input-field",
        PLACE,
        order_input(discountCode="FREE"),
        errors=[
            "Variable '$input' has invalid value: Expected value of type 'PlaceOrderInput' not "
            "to include unknown field 'discountCode', found: {'channel': 'WEB', 'paymentMethod': "
            "'CARD', 'customer': {'name': 'Grace Hopper', 'email': 'grace@example.com'}, 'lines': "
            "[{...}], 'shippingAddress': {'name': 'Ada Lovelace', 'line1': '1 Analytical Way', "
            "'city': 'London', 'postalCode': 'N1 1AA', 'country': 'GB'}, 'discountCode': 'FREE'}."
        ],
    ),
    # Global IDs.
    Case(
        "malformed-global-id",
        '{ node(id: "%%%") { id } }',
        errors=["Argument `id`: '%%%' is not a valid ID."],
        expected_data={"node": None},
    ),
    Case(
        "global-id-without-number",
        '{ node(id: "T3JkZXI6") { id } }',  # "Order:"
        errors=["Argument `id`: 'T3JkZXI6' is not a valid ID."],
        expected_data={"node": None},
    ),
    Case(
        "global-id-of-wrong-type",
        '{ order(id: "' + PRODUCT_ID + '") { id } }',
        errors=["Argument `id`: Expected the ID of an Order, got the ID of a Product."],
        expected_data={"order": None},
    ),
    Case(
        "customer-global-id-of-wrong-type",
        '{ customer(id: "' + PRODUCT_ID + '") { id } }',
        errors=["Argument `id`: Expected the ID of a Customer, got the ID of a Product."],
        expected_data={"customer": None},
    ),
    Case(
        "mutation-id-of-wrong-type",
        CANCEL,
        {"input": {"orderId": PRODUCT_ID, "reason": "changed my mind"}},
        payload=(
            "cancelOrder",
            {
                "order": None,
                "userErrors": [
                    user_error(
                        ["input", "orderId"],
                        "Expected the ID of an Order, got the ID of a Product.",
                    )
                ],
            },
        ),
    ),
    Case(
        "filter-id-of-wrong-type",
        '{ orders(first: 10, filter: {customerId: "' + PRODUCT_ID + '"}) { totalCount } }',
        errors=[
            "Argument `filter.customerId`: Expected the ID of a Customer, got the ID of a Product."
        ],
    ),
    Case(
        "order-by-id-and-number",
        '{ order(id: "T3JkZXI6MQ==", number: "ORD-000001") { id } }',
        errors=["Pass exactly one of `id` and `number`."],
        expected_data={"order": None},
    ),
    # Pagination.
    Case(
        "malformed-cursor",
        '{ orders(first: 10, after: "not a cursor") { totalCount } }',
        errors=["`after` is not a valid cursor for this list."],
    ),
    Case(
        "cursor-of-another-list",
        '{ orders(last: 10, before: "' + cursor("sku", "TEE", 1) + '") { totalCount } }',
        errors=["`before` is not a valid cursor for this list."],
    ),
    Case(
        "cursor-of-another-sort",
        '{ orders(first: 10, sort: TOTAL_ASC, after: "'
        + cursor("number", 1, 1)
        + '") { totalCount } }',
        errors=["`after` is not a valid cursor for this list."],
    ),
    Case(
        "forged-cursor-huge-timestamp",
        '{ orders(first: 10, after: "' + cursor("placedAt", 10**20, 1) + '") { totalCount } }',
        errors=["`after` is not a valid cursor for this list."],
    ),
    Case(
        "forged-cursor-huge-id",
        '{ orders(first: 10, sort: NUMBER_ASC, after: "'
        + cursor("number", 1, 10**30)
        + '") { totalCount } }',
        errors=["`after` is not a valid cursor for this list."],
    ),
    Case(
        "forged-cursor-boolean-value",
        '{ orders(first: 10, sort: NUMBER_ASC, after: "'
        + cursor("number", True, 1)
        + '") { totalCount } }',
        errors=["`after` is not a valid cursor for this list."],
    ),
    Case(
        "forged-cursor-nul-in-value",
        '{ products(first: 10, after: "' + cursor("sku", "T\x00", 1) + '") { totalCount } }',
        errors=["`after` is not a valid cursor for this list."],
    ),
    Case(
        "first-above-100",
        "{ orders(first: 101) { totalCount } }",
        errors=["`orders`: `first` must be from 0 to 100, not 101."],
    ),
    Case(
        "last-above-100",
        "{ customers(last: 101) { totalCount } }",
        errors=["`customers`: `last` must be from 0 to 100, not 101."],
    ),
    Case(
        "first-negative",
        "{ orders(first: -1) { totalCount } }",
        errors=["`orders`: `first` must be from 0 to 100, not -1."],
    ),
    Case(
        "first-and-last",
        "{ orders(first: 1, last: 1) { totalCount } }",
        errors=["Pass `first` or `last`, not both."],
    ),
    Case(
        "first-not-an-integer",
        '{ orders(first: "ten") { totalCount } }',
        errors=['Int cannot represent non-integer value: "ten"'],
    ),
    Case(
        "filter-invalid-enum",
        "{ orders(filter: {status: [LOST]}) { totalCount } }",
        errors=["Value 'LOST' does not exist in 'OrderStatus' enum."],
    ),
    Case(
        "filter-time-without-zone",
        '{ orders(first: 10, filter: {placedAfter: "2026-01-01T00:00:00"}) { totalCount } }',
        errors=["`filter.placed_after` needs a time zone, e.g. 2026-01-31T00:00:00Z."],
    ),
    # Catalogue.
    Case(
        "price-too-many-decimals",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "New", "price": "1.234", "currency": "USD"}},
        payload=product_failed(
            user_error(["input", "price"], "Price: USD amounts have at most 2 decimal places.")
        ),
    ),
    Case(
        "price-decimals-for-yen",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "New", "price": "100.5", "currency": "JPY"}},
        payload=product_failed(
            user_error(["input", "price"], "Price: JPY amounts have at most 0 decimal places.")
        ),
    ),
    Case(
        "price-negative",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "New", "price": "-1.00", "currency": "USD"}},
        payload=product_failed(user_error(["input", "price"], "Price must not be negative.")),
    ),
    Case(
        "price-not-a-number",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "New", "price": "NaN", "currency": "USD"}},
        payload=product_failed(
            user_error(["input", "price"], "Price: amount must be a finite number.")
        ),
    ),
    Case(
        "price-not-a-decimal",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "New", "price": "ten", "currency": "USD"}},
        errors=[
            "Variable '$input' has invalid value at .price: Value cannot represent a Decimal: "
            '"ten".'
        ],
    ),
    Case(
        "unknown-currency",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "New", "price": "1.00", "currency": "XXX"}},
        payload=product_failed(
            user_error(["input", "price"], "Price: unsupported currency 'XXX'.")
        ),
    ),
    Case(
        "product-name-too-long",
        CREATE_PRODUCT,
        {"input": {"sku": "NEW", "name": "n" * 201, "price": "1.00", "currency": "USD"}},
        payload=product_failed(
            user_error(["input", "name"], "name must be at most 200 characters.")
        ),
    ),
    Case(
        "duplicate-sku",
        CREATE_PRODUCT,
        {"input": {"sku": "TEE", "name": "Tee again", "price": "1.00", "currency": "USD"}},
        payload=product_failed(
            user_error(["input", "sku"], "SKU TEE already exists.", "ALREADY_EXISTS")
        ),
    ),
    # Stock.
    Case(
        "adjust-delta-zero",
        ADJUST,
        {"input": {"sku": "TEE", "warehouseCode": "MAIN", "delta": 0, "reason": "CORRECTION"}},
        payload=adjust_failed(user_error(["input", "delta"], "Delta must not be zero.")),
    ),
    Case(
        "adjust-removes-reserved-stock",
        ADJUST,
        {"input": {"sku": "TEE", "warehouseCode": "MAIN", "delta": -4, "reason": "DAMAGED"}},
        payload=adjust_failed(
            user_error(
                ["input", "delta"],
                "Cannot remove 4: 5 on hand, 2 reserved, so at most 3 can go.",
                "INSUFFICIENT_STOCK",
            )
        ),
    ),
    Case(
        "adjust-order-only-reason",
        ADJUST,
        {"input": {"sku": "TEE", "warehouseCode": "MAIN", "delta": 1, "reason": "ORDER_RESERVED"}},
        payload=adjust_failed(
            user_error(
                ["input", "reason"], "ORDER_RESERVED is recorded by orders, not set by hand."
            )
        ),
    ),
    Case(
        "adjust-unknown-sku-and-warehouse",
        ADJUST,
        {"input": {"sku": "NOPE", "warehouseCode": "NOWHERE", "delta": 1, "reason": "RECEIVED"}},
        payload=adjust_failed(
            user_error(["input", "sku"], "Unknown SKU 'NOPE'.", "NOT_FOUND"),
            user_error(["input", "warehouseCode"], "Unknown warehouse 'NOWHERE'.", "NOT_FOUND"),
        ),
    ),
]


async def snapshot_of(db: Database) -> Snapshot:
    """Row counts of every table a write could touch, and every stock level."""
    async with db.reader() as s:
        counts = {
            table: (await s.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            for table in COUNTED_TABLES
        }
        levels = (
            await s.execute(
                text(
                    "SELECT product_id, warehouse_id, on_hand, reserved, reorder_point "
                    "FROM inventory_level ORDER BY id"
                )
            )
        ).all()
    return {"counts": counts, "levels": [tuple(row) for row in levels]}


@pytest.fixture
async def seeded(db: Database, client: httpx.AsyncClient) -> Database:
    """MAIN holds 5 TEE (2 reserved by ORD-000001) and 10 MUG; OLD is not for sale."""
    await make_warehouse(db, "MAIN")
    await make_product(db, "TEE", "19.99")
    await make_product(db, "MUG", "8.50")
    await make_product(db, "OLD", "1.00")
    await add_stock(db, "TEE", "MAIN", 5)
    await add_stock(db, "MUG", "MAIN", 10)
    response = await send(
        client,
        'mutation { updateProduct(input: {id: "UHJvZHVjdDoz", active: false}) '
        "{ userErrors { code } } }",
    )
    assert response.json()["data"] == {"updateProduct": {"userErrors": []}}
    response = await send(client, PLACE, order_input([("TEE", 2)]))
    assert response.json()["data"] == {
        "placeOrder": {"order": {"id": "T3JkZXI6MQ=="}, "userErrors": []}
    }
    return db


async def send(
    client: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None
) -> httpx.Response:
    response = await client.post("/graphql", json={"query": query, "variables": variables or {}})
    assert_safe(response)
    return response


def assert_safe(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    for leak in LEAKS:
        assert leak.lower() not in response.text.lower(), response.text
    assert "INTERNAL_SERVER_ERROR" not in response.text
    assert "Internal error" not in response.text


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_bad_input_is_refused_and_changes_nothing(
    case: Case, seeded: Database, client: httpx.AsyncClient
) -> None:
    before = await snapshot_of(seeded)

    response = await send(client, case.query, case.variables)

    assert response.status_code == 200, response.text
    body = response.json()
    if case.payload is not None:
        name, expected = case.payload
        assert body.get("errors") is None, body
        assert body["data"] == {name: expected}
    else:
        assert case.errors is not None
        assert [e["message"] for e in body["errors"]] == case.errors
        assert body["data"] == case.expected_data
    assert await snapshot_of(seeded) == before


async def test_snapshot_sees_a_good_order(seeded: Database, client: httpx.AsyncClient) -> None:
    # The guard of the test above: a request that does write shows up in the snapshot.
    before = await snapshot_of(seeded)
    response = await send(client, PLACE, order_input([("TEE", 1), ("MUG", 2)]))
    assert response.json()["data"] == {
        "placeOrder": {"order": {"id": "T3JkZXI6Mg=="}, "userErrors": []}
    }
    after = await snapshot_of(seeded)
    assert after != before
    changed = {t for t in COUNTED_TABLES if after["counts"][t] != before["counts"][t]}
    assert changed == {"sales_order", "order_line", "order_event", "stock_movement", "allocation"}
    assert after["counts"]["order_line"] == before["counts"]["order_line"] + 2


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        (
            b'{"query": "{ warehouses { code } }"',
            "application/json",
            400,
            "Unable to parse request body as JSON",
        ),
        (b"\xff\xfe", "application/json", 400, "Unable to parse request body as JSON"),
        (b"", "application/json", 400, "Unable to parse request body as JSON"),
        (b"[1, 2]", "application/json", 400, "Batching is not enabled"),
        (
            b'{"query": 42}',
            "application/json",
            400,
            "The GraphQL operation's `query` must be a string or null, if provided.",
        ),
        (
            b'{"query": "{ warehouses { code } }", "variables": [1]}',
            "application/json",
            400,
            "The GraphQL operation's `variables` must be an object or null, if provided.",
        ),
        (b'{"query": "{ warehouses { code } }"}', "text/plain", 400, "Unsupported content type"),
        (
            b"query={warehouses{code}}",
            "application/x-www-form-urlencoded",
            400,
            "Unsupported content type",
        ),
    ],
    ids=[
        "truncated-json",
        "not-utf8",
        "empty-body",
        "batch",
        "query-not-string",
        "variables-not-object",
        "text-plain",
        "form-encoded",
    ],
)
async def test_malformed_http_body_is_a_client_error_and_changes_nothing(
    content: bytes,
    content_type: str,
    status: int,
    message: str,
    seeded: Database,
    client: httpx.AsyncClient,
) -> None:
    before = await snapshot_of(seeded)
    response = await client.post(
        "/graphql", content=content, headers={"content-type": content_type}
    )
    assert_safe(response)
    assert (response.status_code, response.text) == (status, message)
    assert await snapshot_of(seeded) == before


async def test_syntax_error_is_reported_not_executed(
    seeded: Database, client: httpx.AsyncClient
) -> None:
    before = await snapshot_of(seeded)
    response = await send(client, 'mutation { createWarehouse(input: {code: "X", name: "X"} ')
    assert response.status_code == 200
    assert response.json()["data"] is None
    assert [e["message"] for e in response.json()["errors"]] == [
        "Syntax Error: Expected Name, found <EOF>."
    ]
    assert await snapshot_of(seeded) == before


@pytest.mark.parametrize(
    ("query", "variables"),
    [
        (CREATE_CUSTOMER, {"input": {"name": "Grace", "email": "gr\x00ace@example.com"}}),
        ("query($s: String!) { product(sku: $s) { id } }", {"s": "TEE\x00"}),
        (
            "query($e: String!) { orders(first: 10, filter: {externalId: $e}) { totalCount } }",
            {"e": "\x00"},
        ),
        (
            "query($n: String!) { orders(first: 10, filter: {number: $n}) { totalCount } }",
            {"n": "ORD-\x00"},
        ),
        (PLACE, order_input(shippingAddress={**ADDRESS, "line1": "1 Main\x00St"})),
    ],
    ids=["email", "sku", "external-id", "number", "address"],
)
async def test_nul_characters_are_a_malformed_request(
    query: str, variables: dict[str, Any] | None, seeded: Database, client: httpx.AsyncClient
) -> None:
    before = await snapshot_of(seeded)
    response = await send(client, query, variables)
    assert response.status_code == 400
    assert response.text == "Strings must not contain NUL (\\u0000) characters."
    assert await snapshot_of(seeded) == before


async def test_the_text_of_a_nul_escape_is_not_a_nul(client: httpx.AsyncClient) -> None:
    # The body holds the text \\u0000 (an escaped backslash, then "u0000"): no NUL, though
    # a quick look at the bytes for a NUL's escape finds one.
    response = await send(
        client, "query($s: String!) { product(sku: $s) { id } }", {"s": "\\u0000"}
    )
    assert b"\\\\u0000" in response.request.content
    assert response.status_code == 200
    assert response.json()["data"] == {"product": None}


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
async def test_out_of_range_filter_time_is_a_clear_error(
    value: str, client: httpx.AsyncClient
) -> None:
    response = await send(
        client,
        "query($t: DateTime!) { orders(first: 10, filter: {placedAfter: $t}) { totalCount } }",
        {"t": value},
    )
    assert response.json()["errors"][0]["message"] == "`filter.placed_after` is out of range."


async def test_nul_in_a_query_literal_is_a_validation_error(
    seeded: Database, client: httpx.AsyncClient
) -> None:
    response = await send(client, '{ product(sku: "TEE\\u0000") { id } }')
    body = response.json()
    body.pop("extensions", None)
    assert body == {
        "data": None,
        "errors": [
            {
                "message": "Strings must not contain NUL (\\u0000) characters.",
                "locations": [{"line": 1, "column": 16}],
            }
        ],
    }
