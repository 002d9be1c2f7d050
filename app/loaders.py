"""Per-request DataLoaders (and per-event ones on subscription paths)."""

from __future__ import annotations

from strawberry.dataloader import DataLoader

from db.database import Database
from db.models import (
    Allocation,
    Customer,
    InventoryLevel,
    Order,
    OrderEvent,
    OrderLine,
    Product,
    Warehouse,
)
from resolvers.loaders import load_by_id, load_grouped


class Loaders:
    def __init__(self, db: Database) -> None:
        self.order_by_id: DataLoader[int, Order | None] = DataLoader(
            lambda keys: load_by_id(db, Order, keys)
        )
        self.customer_by_id: DataLoader[int, Customer | None] = DataLoader(
            lambda keys: load_by_id(db, Customer, keys)
        )
        self.product_by_id: DataLoader[int, Product | None] = DataLoader(
            lambda keys: load_by_id(db, Product, keys)
        )
        self.warehouse_by_id: DataLoader[int, Warehouse | None] = DataLoader(
            lambda keys: load_by_id(db, Warehouse, keys)
        )
        self.order_lines_by_order_id: DataLoader[int, list[OrderLine]] = DataLoader(
            lambda keys: load_grouped(db, OrderLine, OrderLine.order_id, keys, [OrderLine.id])
        )
        self.allocations_by_order_line_id: DataLoader[int, list[Allocation]] = DataLoader(
            lambda keys: load_grouped(
                db, Allocation, Allocation.order_line_id, keys, [Allocation.id]
            )
        )
        self.inventory_levels_by_product_id: DataLoader[int, list[InventoryLevel]] = DataLoader(
            lambda keys: load_grouped(
                db, InventoryLevel, InventoryLevel.product_id, keys, [InventoryLevel.warehouse_id]
            )
        )
        self.order_events_by_order_id: DataLoader[int, list[OrderEvent]] = DataLoader(
            lambda keys: load_grouped(
                db, OrderEvent, OrderEvent.order_id, keys, [OrderEvent.sequence]
            )
        )
