"""Products, warehouses and inventory levels."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import strawberry
from strawberry.types import Info

from domain.inventory import StockMovementReason
from resolvers import catalog, inventory
from schema.addresses import Address, AddressInput
from schema.common import Connection, Money, Node, UserError, to_global_id

StockMovementReasonEnum = strawberry.enum(StockMovementReason, name="StockMovementReason")


@strawberry.type
class Warehouse(Node):
    code: str
    name: str
    priority: int = strawberry.field(description="Lower ships first when an order is split.")
    address: Address | None

    @classmethod
    def from_model(cls, w: Any) -> Warehouse:
        return cls(
            id=to_global_id("Warehouse", w.id),
            code=w.code,
            name=w.name,
            priority=w.priority,
            address=Address.from_dict(w.address),
        )


@strawberry.type
class InventoryLevel(Node):
    on_hand: int
    reserved: int
    available: int = strawberry.field(description="onHand - reserved.")
    reorder_point: int
    product_id: strawberry.Private[int]
    warehouse_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, lv: Any) -> InventoryLevel:
        return cls(
            id=to_global_id("InventoryLevel", lv.id),
            on_hand=lv.on_hand,
            reserved=lv.reserved,
            available=lv.on_hand - lv.reserved,
            reorder_point=lv.reorder_point,
            product_id=lv.product_id,
            warehouse_id=lv.warehouse_id,
        )

    @strawberry.field
    async def product(self, info: Info[Any, Any]) -> Product:
        return Product.from_model(await info.context.loaders.product_by_id.load(self.product_id))

    @strawberry.field
    async def warehouse(self, info: Info[Any, Any]) -> Warehouse:
        return Warehouse.from_model(
            await info.context.loaders.warehouse_by_id.load(self.warehouse_id)
        )


@strawberry.type
class Product(Node):
    sku: str
    name: str
    price: Money
    active: bool
    allow_backorder: bool
    cost_price: Money | None = strawberry.field(
        description="What the product costs us. ADMIN, or INTEGRATION with `costs:read`."
    )
    product_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, p: Any) -> Product:
        return cls(
            id=to_global_id("Product", p.id),
            sku=p.sku,
            name=p.name,
            price=Money.of(p.price_minor, p.currency),
            active=p.active,
            allow_backorder=p.allow_backorder,
            cost_price=Money.of(p.cost_minor, p.currency) if p.cost_minor is not None else None,
            product_id=p.id,
        )

    @strawberry.field(description="Stock of this product in each warehouse that holds it.")
    async def inventory(self, info: Info[Any, Any]) -> list[InventoryLevel]:
        levels = await info.context.loaders.inventory_levels_by_product_id.load(self.product_id)
        return [InventoryLevel.from_model(lv) for lv in levels]

    @strawberry.field(description="Units available to sell across all warehouses.")
    async def total_available(self, info: Info[Any, Any]) -> int:
        levels = await info.context.loaders.inventory_levels_by_product_id.load(self.product_id)
        return sum(lv.on_hand - lv.reserved for lv in levels)


ProductConnection = Connection[Product]
InventoryLevelConnection = Connection[InventoryLevel]


@strawberry.input
class ProductFilter:
    search: str | None = strawberry.field(default=None, description="Part of the SKU or name.")
    active: bool | None = None


@strawberry.input
class InventoryFilter:
    sku: str | None = None
    warehouse_code: str | None = None
    below_reorder_point: bool | None = strawberry.field(
        default=None,
        description="Only levels whose available stock is at or below the reorder point.",
    )


@strawberry.input
class CreateProductInput:
    sku: str = strawberry.field(description="1-64 characters: letters, digits, '.', '_', '-'.")
    name: str
    price: Decimal = strawberry.field(description='Exact decimal, e.g. "12.50".')
    currency: str = strawberry.field(description='ISO 4217 code, e.g. "USD".')
    active: bool = True
    allow_backorder: bool = False
    cost_price: Decimal | None = strawberry.field(
        default=None, description="What the product costs us, in the same currency."
    )
    idempotency_key: str | None = None

    def command(self) -> catalog.ProductInput:
        return catalog.ProductInput(
            sku=self.sku,
            name=self.name,
            price=self.price,
            currency=self.currency,
            active=self.active,
            allow_backorder=self.allow_backorder,
            cost_price=self.cost_price,
        )


@strawberry.type
class CreateProductPayload:
    product: Product | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class UpdateProductInput:
    id: strawberry.ID
    name: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    active: bool | None = None
    allow_backorder: bool | None = None
    cost_price: Decimal | None = None

    def changes(self) -> catalog.ProductChanges:
        return catalog.ProductChanges(
            name=self.name,
            price=self.price,
            currency=self.currency,
            active=self.active,
            allow_backorder=self.allow_backorder,
            cost_price=self.cost_price,
        )


@strawberry.type
class UpdateProductPayload:
    product: Product | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class CreateWarehouseInput:
    code: str = strawberry.field(description="1-32 characters: A-Z, 0-9, '_', '-'.")
    name: str
    priority: int = 100
    address: AddressInput | None = None
    idempotency_key: str | None = None

    def command(self) -> catalog.WarehouseInput:
        return catalog.WarehouseInput(
            code=self.code,
            name=self.name,
            priority=self.priority,
            address=self.address.to_dict() if self.address else None,
        )


@strawberry.type
class CreateWarehousePayload:
    warehouse: Warehouse | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input
class AdjustInventoryInput:
    sku: str
    warehouse_code: str
    delta: int = strawberry.field(description="Signed change of on-hand units.")
    reason: StockMovementReasonEnum  # type: ignore[valid-type]
    note: str | None = None
    reorder_point: int | None = strawberry.field(
        default=None, description="Also set the reorder point."
    )

    def command(self) -> inventory.AdjustInventoryCommand:
        return inventory.AdjustInventoryCommand(
            sku=self.sku,
            warehouse_code=self.warehouse_code,
            delta=self.delta,
            reason=self.reason,
            note=self.note,
            reorder_point=self.reorder_point,
        )


@strawberry.type
class AdjustInventoryPayload:
    inventory_level: InventoryLevel | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
