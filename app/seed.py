"""Demo data: warehouses, a catalogue with stock, customers, and orders in every state."""

from __future__ import annotations

import random
import sys
import time
from decimal import Decimal

from sqlalchemy import select

from app.settings import Settings
from db.database import Database
from db.models import Product
from domain.access import Principal
from domain.errors import DomainError, DomainErrors
from domain.inventory import StockMovementReason
from domain.orders import PaymentMethod, SalesChannel
from resolvers.catalog import ProductInput, WarehouseInput, create_product, create_warehouse
from resolvers.customers import NewCustomer, create_customer
from resolvers.inventory import AdjustInventoryCommand, adjust_inventory
from resolvers.orders import (
    LineInput,
    PlaceOrderCommand,
    cancel_order,
    confirm_order,
    place_order,
    start_processing,
)

ACTOR = Principal.system("seed")
WAREHOUSES = [
    ("NYC", "New York", 1, "US"),
    ("LAX", "Los Angeles", 2, "US"),
    ("BER", "Berlin", 3, "DE"),
]
PRODUCTS = [
    ("TEE-BLK-M", "T-shirt, black, M", "19.99"),
    ("TEE-WHT-M", "T-shirt, white, M", "19.99"),
    ("HOODIE-GRY-L", "Hoodie, grey, L", "49.00"),
    ("CAP-NAVY", "Cap, navy", "15.50"),
    ("MUG-12OZ", "Mug, 12 oz", "9.75"),
    ("SOCKS-3PK", "Socks, 3 pack", "12.00"),
    ("BOTTLE-750", "Water bottle, 750 ml", "24.90"),
    ("TOTE-CANVAS", "Canvas tote", "18.00"),
    ("NOTEBOOK-A5", "Notebook, A5", "7.25"),
    ("PEN-GEL", "Gel pen", "2.40"),
    ("STICKER-PACK", "Sticker pack", "4.99"),
    ("JACKET-RAIN", "Rain jacket", "89.00"),
]
FIRST = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Frances",
    "Dennis",
    "Radia",
    "John",
]
LAST = [
    "Lovelace",
    "Hopper",
    "Turing",
    "Dijkstra",
    "Liskov",
    "Knuth",
    "Hamilton",
    "Thompson",
    "Allen",
    "Ritchie",
    "Perlman",
    "Backus",
]


class Progress:
    """A plain progress bar on stderr (no dependency)."""

    def __init__(self, total: int, label: str) -> None:
        self.total, self.label, self.done = total, label, 0
        self.start = time.monotonic()
        self.tty = sys.stderr.isatty()

    def step(self) -> None:
        self.done += 1
        if self.total and (self.tty or self.done == self.total or self.done % 500 == 0):
            width = 30
            filled = width * self.done // self.total
            rate = self.done / max(time.monotonic() - self.start, 1e-9)
            end = "\n" if self.done == self.total else ("\r" if self.tty else "\n")
            sys.stderr.write(
                f"{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                f"{self.done}/{self.total} ({rate:.0f}/s){end}"
            )
            sys.stderr.flush()


async def seed(
    settings: Settings, *, orders: int = 25, if_empty: bool = False, seed: int = 42
) -> str | None:
    """Load demo data through the real use cases. Returns a summary, or None when skipped."""
    db = Database(settings.database_url)
    try:
        async with db.reader() as s:
            has_products = (await s.execute(select(Product.id).limit(1))).first() is not None
        if if_empty and has_products:
            return None
        rng = random.Random(seed)
        if not has_products:
            for code, name, priority, country in WAREHOUSES:
                await create_warehouse(
                    db,
                    WarehouseInput(
                        code=code,
                        name=name,
                        priority=priority,
                        address={
                            "name": name,
                            "line1": "1 Depot Road",
                            "city": name,
                            "postalCode": "10001",
                            "country": country,
                        },
                    ),
                    ACTOR,
                )
            for i, (sku, name, price) in enumerate(PRODUCTS):
                await create_product(
                    db,
                    ProductInput(
                        sku=sku,
                        name=name,
                        price=Decimal(price),
                        currency=settings.currency,
                        allow_backorder=i % 4 == 3,
                    ),
                    ACTOR,
                )
            for first, last in zip(FIRST, LAST, strict=True):
                await create_customer(
                    db,
                    NewCustomer(
                        name=f"{first} {last}",
                        email=f"{first.lower()}.{last.lower()}@example.com",
                        addresses=[_address(rng, f"{first} {last}")],
                    ),
                    ACTOR,
                )
        per_level = max(50, orders // 2)
        progress = Progress(len(PRODUCTS) * len(WAREHOUSES), "stock ")
        for sku, _name, _price in PRODUCTS:
            for code, *_ in WAREHOUSES:
                if sku == "JACKET-RAIN" and code != "NYC":
                    progress.step()
                    continue  # a scarce product, to show split shipments and backorders
                await adjust_inventory(
                    db,
                    AdjustInventoryCommand(
                        sku=sku,
                        warehouse_code=code,
                        delta=per_level if sku != "JACKET-RAIN" else 3,
                        reason=StockMovementReason.RECEIVED,
                        reorder_point=10,
                    ),
                    ACTOR,
                )
                progress.step()
        placed = await _orders(db, settings, orders, rng)
        return (
            f"{len(WAREHOUSES)} warehouses, {len(PRODUCTS)} products, {len(FIRST)} "
            f"customers, {placed} orders"
        )
    finally:
        await db.dispose()


def _address(rng: random.Random, name: str) -> dict[str, str | None]:
    return {
        "name": name,
        "line1": f"{rng.randint(1, 999)} Market Street",
        "city": rng.choice(["Springfield", "Riverton", "Lakeside"]),
        "postalCode": f"{rng.randint(10000, 99999)}",
        "country": "US",
    }


async def _orders(db: Database, settings: Settings, count: int, rng: random.Random) -> int:
    progress = Progress(count, "orders")
    placed = 0
    channels = list(SalesChannel)
    for n in range(count):
        first, last = rng.choice(list(zip(FIRST, LAST, strict=True)))
        lines = rng.sample(PRODUCTS, rng.randint(1, 3))
        channel = channels[n % len(channels)]
        cmd = PlaceOrderCommand(
            channel=channel,
            payment_method=PaymentMethod.MARKETPLACE
            if channel is SalesChannel.MARKETPLACE
            else PaymentMethod.CARD,
            lines=[LineInput(sku, rng.randint(1, 3)) for sku, _n, _p in lines],
            shipping_address=_address(rng, f"{first} {last}"),
            new_customer=NewCustomer(
                name=f"{first} {last}", email=f"{first.lower()}.{last.lower()}@example.com"
            ),
            external_id=f"MP-{100000 + n}" if channel is SalesChannel.MARKETPLACE else None,
        )
        try:
            order = await place_order(db, cmd, ACTOR, settings.pricing)
        except (DomainError, DomainErrors):
            progress.step()
            continue  # out of stock: a real shop turns some orders away too
        placed += 1
        # Walk some orders along the lifecycle so every status shows up.
        roll = rng.random()
        try:
            if roll < 0.5:
                await confirm_order(db, order.id, ACTOR)
            if roll < 0.25:
                await start_processing(db, order.id, ACTOR)
            if 0.9 < roll:
                await cancel_order(db, order.id, "Customer changed their mind", ACTOR)
        except DomainError:
            pass  # e.g. a backordered order cannot be confirmed yet
        progress.step()
    return placed
