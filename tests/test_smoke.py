from __future__ import annotations

from tests.conftest import GraphQLClient
from tests.factories import PLACE_ORDER, place_order_input


async def test_place_order_through_api_reserves_stock(gql: GraphQLClient) -> None:
    await gql(
        'mutation { createWarehouse(input: {code: "MAIN", name: "Main", priority: 1}) '
        "{ userErrors { code } } }"
    )
    await gql(
        'mutation { createProduct(input: {sku: "TEE", name: "Tee", price: "19.99", '
        'currency: "USD"}) { userErrors { code } } }'
    )
    await gql(
        'mutation { adjustInventory(input: {sku: "TEE", warehouseCode: "MAIN", delta: 5, '
        "reason: RECEIVED}) { userErrors { code } } }"
    )
    body = await gql(PLACE_ORDER, {"input": place_order_input([("TEE", 2)])})
    assert body["data"]["placeOrder"] == {
        "order": {
            "id": "T3JkZXI6MQ==",
            "number": "ORD-000001",
            "status": "PENDING",
            "total": {"amount": "44.98", "currency": "USD"},
            "lines": [
                {
                    "sku": "TEE",
                    "quantity": 2,
                    "backorderedQuantity": 0,
                    "allocations": [{"quantity": 2, "warehouse": {"code": "MAIN"}}],
                }
            ],
        },
        "userErrors": [],
    }
    body = await gql('{ product(sku: "TEE") { totalAvailable inventory { onHand reserved } } }')
    assert body["data"]["product"] == {
        "totalAvailable": 3,
        "inventory": [{"onHand": 5, "reserved": 2}],
    }


async def test_place_order_retry_with_same_idempotency_key_returns_first_order(
    gql: GraphQLClient,
) -> None:
    await gql(
        'mutation { createWarehouse(input: {code: "MAIN", name: "Main"}) { userErrors { code } } }'
    )
    await gql(
        'mutation { createProduct(input: {sku: "TEE", name: "Tee", price: "5.00", '
        'currency: "USD"}) { userErrors { code } } }'
    )
    await gql(
        'mutation { adjustInventory(input: {sku: "TEE", warehouseCode: "MAIN", delta: 5, '
        "reason: RECEIVED}) { userErrors { code } } }"
    )
    variables = {"input": place_order_input([("TEE", 1)], idempotencyKey="k-1")}
    first = await gql(PLACE_ORDER, variables)
    again = await gql(PLACE_ORDER, variables)
    assert "errors" not in again
    assert again["data"] == first["data"]
    body = await gql(
        "{ orders(first: 100, filter: {status: [PENDING]}) { totalCount } "
        'product(sku: "TEE") { totalAvailable } }'
    )
    assert body["data"] == {"orders": {"totalCount": 1}, "product": {"totalAvailable": 4}}
