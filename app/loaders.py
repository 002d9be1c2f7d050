"""Per-request DataLoaders (and per-event ones on subscription paths). They load plain rows
that read like the models (``db.queries.ModelRow``), not ORM instances.

Each loader is made on first use: a request or a WebSocket connection usually needs only a
few of them, and a server holding thousands of idle subscriptions keeps one ``Loaders`` per
connection (about 5 KB when all eight were made up front)."""

from __future__ import annotations

from functools import cached_property, partial

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
from db.queries import ModelRow
from resolvers.loaders import load_by_id, load_grouped


class Loaders:
    """The batch functions get the database, not the ``Loaders``: a function holding the
    ``Loaders`` that holds it would make a reference cycle, and every request's loaders,
    with all they cached, would wait for the cyclic garbage collector."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @cached_property
    def order_by_id(self) -> DataLoader[int, ModelRow | None]:
        return DataLoader(partial(load_by_id, self.db, Order))

    @cached_property
    def customer_by_id(self) -> DataLoader[int, ModelRow | None]:
        return DataLoader(partial(load_by_id, self.db, Customer))

    @cached_property
    def product_by_id(self) -> DataLoader[int, ModelRow | None]:
        return DataLoader(partial(load_by_id, self.db, Product))

    @cached_property
    def warehouse_by_id(self) -> DataLoader[int, ModelRow | None]:
        return DataLoader(partial(load_by_id, self.db, Warehouse))

    @cached_property
    def order_lines_by_order_id(self) -> DataLoader[int, list[ModelRow]]:
        return DataLoader(
            partial(load_grouped, self.db, OrderLine, OrderLine.order_id, order_by=[OrderLine.id])
        )

    @cached_property
    def allocations_by_order_line_id(self) -> DataLoader[int, list[ModelRow]]:
        return DataLoader(
            partial(
                load_grouped,
                self.db,
                Allocation,
                Allocation.order_line_id,
                order_by=[Allocation.id],
            )
        )

    @cached_property
    def inventory_levels_by_product_id(self) -> DataLoader[int, list[ModelRow]]:
        return DataLoader(
            partial(
                load_grouped,
                self.db,
                InventoryLevel,
                InventoryLevel.product_id,
                order_by=[InventoryLevel.warehouse_id],
            )
        )

    @cached_property
    def order_events_by_order_id(self) -> DataLoader[int, list[ModelRow]]:
        return DataLoader(
            partial(
                load_grouped,
                self.db,
                OrderEvent,
                OrderEvent.order_id,
                order_by=[OrderEvent.sequence],
            )
        )
