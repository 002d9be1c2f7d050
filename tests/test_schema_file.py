"""schema.graphql is the committed contract: it must match what the code serves."""

from __future__ import annotations

from pathlib import Path

from app.cli import schema_sdl

ROOT = Path(__file__).resolve().parents[1]


def test_schema_file_is_current() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == schema_sdl(), (
        "schema.graphql is stale: run `make schema` (ordergraph export-schema -o schema.graphql)"
        " and commit it"
    )


def test_outline_names_are_in_schema() -> None:
    sdl = schema_sdl()
    for name in [
        "node(id: ID!): Node",
        "order(id: ID",
        "orders(filter: OrderFilter",
        "product(id: ID",
        "products(",
        "warehouses: [Warehouse!]!",
        "inventoryLevels(filter: InventoryFilter",
        "customer(id: ID!): Customer",
        "customers(",
        "createProduct(",
        "updateProduct(",
        "createWarehouse(",
        "createCustomer(",
        "adjustInventory(",
        "placeOrder(input: PlaceOrderInput!): PlaceOrderPayload!",
        "confirmOrder(",
        "cancelOrder(",
        "orderStatusChanged(orderId: ID!, after: String",
        "orderEvents(filter: OrderEventFilter",
        "type UserError",
        "code: UserErrorCode!",
        "type Money",
        "amount: Decimal!",
        "totalCount: Int!",
        "pageInfo: PageInfo!",
    ]:
        assert name in sdl, name
