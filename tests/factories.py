"""Plain functions that make test data through the real use cases."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from db.database import Database
from domain.access import Principal, Role, Scope
from domain.inventory import StockMovementReason
from domain.orders import PaymentMethod, PricingPolicy, SalesChannel
from resolvers.catalog import ProductInput, WarehouseInput, create_product, create_warehouse
from resolvers.customers import NewCustomer
from resolvers.inventory import AdjustInventoryCommand, adjust_inventory
from resolvers.orders import LineInput, PlaceOrderCommand, place_order

ACTOR = Principal.system("test")
PRICING = PricingPolicy()
ADDRESS: dict[str, str | None] = {
    "name": "Ada Lovelace",
    "line1": "1 Analytical Way",
    "city": "London",
    "postalCode": "N1 1AA",
    "country": "GB",
}


async def warehouse(db: Database, code: str = "MAIN", priority: int = 1) -> Any:
    return await create_warehouse(
        db, WarehouseInput(code=code, name=f"Warehouse {code}", priority=priority), ACTOR
    )


async def product(
    db: Database,
    sku: str = "SKU-1",
    price: str = "10.00",
    allow_backorder: bool = False,
    currency: str = "USD",
) -> Any:
    return await create_product(
        db,
        ProductInput(
            sku=sku,
            name=f"Product {sku}",
            price=Decimal(price),
            currency=currency,
            allow_backorder=allow_backorder,
        ),
        ACTOR,
    )


async def stock(db: Database, sku: str, code: str, delta: int) -> Any:
    return await adjust_inventory(
        db,
        AdjustInventoryCommand(
            sku=sku, warehouse_code=code, delta=delta, reason=StockMovementReason.RECEIVED
        ),
        ACTOR,
    )


def order_command(
    lines: list[tuple[str, int]], *, email: str = "ada@example.com", **extra: Any
) -> PlaceOrderCommand:
    return PlaceOrderCommand(
        channel=extra.pop("channel", SalesChannel.WEB),
        payment_method=extra.pop("payment_method", PaymentMethod.CARD),
        lines=[LineInput(sku, qty) for sku, qty in lines],
        shipping_address=dict(ADDRESS),
        new_customer=NewCustomer(name="Ada Lovelace", email=email),
        **extra,
    )


async def order(db: Database, lines: list[tuple[str, int]], **extra: Any) -> Any:
    return await place_order(db, order_command(lines, **extra), ACTOR, PRICING)


PLACE_ORDER = """
mutation Place($input: PlaceOrderInput!) {
  placeOrder(input: $input) {
    order { id number status total { amount currency }
            lines { sku quantity backorderedQuantity allocations { quantity warehouse { code } } } }
    userErrors { field message code }
  }
}"""


def place_order_input(lines: list[tuple[str, int]], **extra: Any) -> dict[str, Any]:
    return {
        "channel": "WEB",
        "paymentMethod": "CARD",
        "customer": {"name": "Ada Lovelace", "email": "ada@example.com"},
        "lines": [{"sku": s, "quantity": q} for s, q in lines],
        "shippingAddress": dict(ADDRESS),
        **extra,
    }


async def api_key(
    db: Database, role: Role = Role.ADMIN, scopes: tuple[Scope, ...] = (), name: str = ""
) -> str:
    """A new API key's secret, as ``ordergraph api-key create`` prints it."""
    from resolvers.access import create_api_key

    created = await create_api_key(db, name or f"test {role.value.lower()}", role, scopes)
    return created.key


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}
