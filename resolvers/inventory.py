"""Inventory use cases: stock adjustments (with backorder filling) and stock queries."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from db.database import Database
from db.models import (
    Allocation,
    InventoryLevel,
    Order,
    OrderLine,
    Product,
    StockMovement,
    Warehouse,
    utcnow,
)
from db.queries import ModelRow, Page, PageArgs, SortKey, model_columns, paginate
from db.uow import UnitOfWork
from domain import validation as v
from domain.access import Principal
from domain.errors import DomainError, ErrorCode, raise_if_any
from domain.inventory import ADJUSTMENT_REASONS, StockMovementReason
from domain.orders import OrderEventType, OrderStatus, format_order_number


@dataclass(slots=True)
class AdjustInventoryCommand:
    sku: str
    warehouse_code: str
    delta: int
    reason: StockMovementReason
    note: str | None = None
    reorder_point: int | None = None


def _validate(cmd: AdjustInventoryCommand) -> list[DomainError]:
    errors = v.sku(cmd.sku, ["input", "sku"])
    errors += v.warehouse_code(cmd.warehouse_code, ["input", "warehouseCode"])
    errors += v.stock_delta(cmd.delta, ["input", "delta"])
    if cmd.reason not in ADJUSTMENT_REASONS:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT,
                f"{cmd.reason} is recorded by orders, not set by hand.",
                ["input", "reason"],
            )
        )
    errors += v.text(cmd.note, ["input", "note"], max_length=v.MAX_NOTE_LENGTH, required=False)
    if cmd.reorder_point is not None:
        errors += v.non_negative(
            cmd.reorder_point, ["input", "reorderPoint"], maximum=v.MAX_STOCK_DELTA
        )
    return errors


async def adjust_inventory(
    db: Database, cmd: AdjustInventoryCommand, actor: Principal
) -> InventoryLevel:
    """A signed change of on-hand stock, recorded in the ledger with its reason.

    Stock can never go below what is reserved. New stock first fills backorders of the
    product, oldest order first; an order whose every unit is then reserved goes from
    BACKORDERED back to PENDING.
    """
    raise_if_any(_validate(cmd))
    for attempt in range(2):
        try:
            return await _adjust_once(db, cmd, actor)
        except IntegrityError:
            if attempt == 1:  # two requests created the same level row at once; retry once
                raise
    raise AssertionError("unreachable")


async def _adjust_once(
    db: Database, cmd: AdjustInventoryCommand, actor: Principal
) -> InventoryLevel:
    async with UnitOfWork(db, actor) as uow:
        s = uow.session
        # The product row serializes us with place_order (which locks it too), so an order
        # backordered while we run is either in the list below or sees our new stock.
        # NO KEY UPDATE: rows that merely reference the product are not blocked.
        product = (
            await s.execute(
                select(Product).where(Product.sku == cmd.sku).with_for_update(key_share=True)
            )
        ).scalar_one_or_none()
        warehouse = (
            await s.execute(select(Warehouse).where(Warehouse.code == cmd.warehouse_code))
        ).scalar_one_or_none()
        errors = []
        if product is None:
            errors.append(
                DomainError(ErrorCode.NOT_FOUND, f"Unknown SKU {cmd.sku!r}.", ["input", "sku"])
            )
        if warehouse is None:
            errors.append(
                DomainError(
                    ErrorCode.NOT_FOUND,
                    f"Unknown warehouse {cmd.warehouse_code!r}.",
                    ["input", "warehouseCode"],
                )
            )
        raise_if_any(errors)
        assert product is not None and warehouse is not None

        # Lock order: the product, backordered orders (by id), then the stock row, as
        # cancel_order (order, then stock rows) and place_order (products, then stock rows).
        backorders = await _backordered_lines(s, product.id) if cmd.delta > 0 else []

        level = (
            await s.execute(
                select(InventoryLevel)
                .where(
                    InventoryLevel.product_id == product.id,
                    InventoryLevel.warehouse_id == warehouse.id,
                )
                .with_for_update()
            )
        ).scalar_one_or_none()
        if level is None:
            level = InventoryLevel(
                product_id=product.id,
                warehouse_id=warehouse.id,
                on_hand=0,
                reserved=0,
                reorder_point=cmd.reorder_point or 0,
            )
            s.add(level)
            await s.flush()
        if level.on_hand + cmd.delta < level.reserved:
            raise DomainError(
                ErrorCode.INSUFFICIENT_STOCK,
                f"Cannot remove {-cmd.delta}: {level.on_hand} on hand, {level.reserved} "
                f"reserved, so at most {level.on_hand - level.reserved} can go.",
                ["input", "delta"],
            )
        level.on_hand += cmd.delta
        if cmd.reorder_point is not None:
            level.reorder_point = cmd.reorder_point
        level.updated_at = utcnow()
        s.add(
            StockMovement(
                product_id=product.id,
                warehouse_id=warehouse.id,
                on_hand_delta=cmd.delta,
                reason=cmd.reason.value,
                note=cmd.note,
                actor=actor.id,
            )
        )
        if backorders:
            await _fill_backorders(uow, level, backorders)
        await uow.commit()
        return level


async def _backordered_lines(s: AsyncSession, product_id: int) -> list[tuple[OrderLine, Order]]:
    """Lines of BACKORDERED orders still waiting for ``product_id``, oldest order first,
    with those orders locked. Callers hold the product's row lock."""
    rows = await s.execute(
        select(OrderLine, Order)
        .join(Order, Order.id == OrderLine.order_id)
        .where(
            OrderLine.product_id == product_id,
            OrderLine.backordered_quantity > 0,
            Order.status == OrderStatus.BACKORDERED.value,
        )
        .order_by(Order.id, OrderLine.id)
        .with_for_update(of=Order)
    )
    return [(line, order) for line, order in rows.all()]


async def refill_backorders(uow: UnitOfWork, product_ids: list[int]) -> None:
    """Give free stock of these products to waiting backorders (oldest order first, from
    warehouses in priority order). The caller holds the products' row locks."""
    s = uow.session
    for product_id in sorted(product_ids):
        backorders = await _backordered_lines(s, product_id)
        if not backorders:
            continue
        levels = (
            await s.execute(
                select(InventoryLevel)
                .join(Warehouse, Warehouse.id == InventoryLevel.warehouse_id)
                .where(InventoryLevel.product_id == product_id)
                .order_by(Warehouse.priority, Warehouse.id)
                .with_for_update(of=InventoryLevel)
                # Reservations may have been changed by UPDATE statements in this transaction.
                .execution_options(populate_existing=True)
            )
        ).scalars()
        for level in levels:
            waiting = [(line, order) for line, order in backorders if line.backordered_quantity > 0]
            if not waiting:
                break
            await _fill_backorders(uow, level, waiting)


async def _fill_backorders(
    uow: UnitOfWork, level: InventoryLevel, backorders: list[tuple[OrderLine, Order]]
) -> None:
    s = uow.session
    touched: dict[int, Order] = {}
    for line, order in backorders:
        free = level.on_hand - level.reserved
        if free <= 0:
            break
        take = min(free, line.backordered_quantity)
        level.reserved += take
        line.backordered_quantity -= take
        allocation = (
            await s.execute(
                select(Allocation).where(
                    Allocation.order_line_id == line.id,
                    Allocation.warehouse_id == level.warehouse_id,
                )
            )
        ).scalar_one_or_none()
        if allocation is None:
            s.add(Allocation(order_line_id=line.id, warehouse_id=level.warehouse_id, quantity=take))
        else:
            allocation.quantity += take
        s.add(
            StockMovement(
                product_id=level.product_id,
                warehouse_id=level.warehouse_id,
                reserved_delta=take,
                reason=StockMovementReason.BACKORDER_RESERVED.value,
                reference=format_order_number(order.id),
                actor=uow.actor.id,
            )
        )
        touched[order.id] = order
    await s.flush()
    for order in touched.values():
        still = (
            await s.execute(
                select(OrderLine.id).where(
                    OrderLine.order_id == order.id, OrderLine.backordered_quantity > 0
                )
            )
        ).first()
        if still is None:
            order.status = OrderStatus.PENDING.value
            order.updated_at = utcnow()
            uow.record_event(
                order.id,
                OrderEventType.BACKORDER_FILLED,
                OrderStatus.BACKORDERED.value,
                OrderStatus.PENDING.value,
                "Every unit is now reserved.",
            )


@dataclass(slots=True)
class InventoryFilterArgs:
    sku: str | None = None
    warehouse_code: str | None = None
    below_reorder_point: bool | None = None


INVENTORY_SORT = SortKey("id", InventoryLevel.id, InventoryLevel.id, False, "int")


async def list_inventory_levels(
    db: Database, f: InventoryFilterArgs, args: PageArgs
) -> Page[ModelRow]:
    stmt = select(*model_columns(InventoryLevel))
    if f.sku is not None:
        stmt = stmt.where(
            InventoryLevel.product_id.in_(select(Product.id).where(Product.sku == f.sku))
        )
    if f.warehouse_code is not None:
        stmt = stmt.where(
            InventoryLevel.warehouse_id.in_(
                select(Warehouse.id).where(Warehouse.code == f.warehouse_code)
            )
        )
    if f.below_reorder_point:
        stmt = stmt.where(
            InventoryLevel.on_hand - InventoryLevel.reserved <= InventoryLevel.reorder_point
        )

    return await paginate(db, stmt, INVENTORY_SORT, args, lambda lv: lv.id)
