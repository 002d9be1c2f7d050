"""Order use cases: place, confirm, start processing, cancel; and order queries."""

from __future__ import annotations

import secrets
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, insert, select, update
from sqlalchemy.exc import IntegrityError

from db.database import Database
from db.models import (
    Allocation,
    Customer,
    InventoryLevel,
    Order,
    OrderLine,
    Product,
    StockMovement,
    Warehouse,
    utcnow,
)
from db.queries import Page, PageArgs, SortKey, paginate
from db.uow import UnitOfWork
from domain import validation as v
from domain.access import Principal, check_customer_may_cancel
from domain.allocation import LineDemand, WarehouseRank, plan_allocation
from domain.errors import DomainError, DomainErrors, ErrorCode, raise_if_any
from domain.inventory import StockMovementReason
from domain.money import Money
from domain.orders import (
    HOLDS_RESERVATION,
    OrderEventType,
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
    PricingPolicy,
    SalesChannel,
    check_transition,
    format_order_number,
    parse_order_number,
    price_order,
)
from resolvers.common import get_or_not_found, idempotency_scope, remember, replay, request_hash
from resolvers.customers import NewCustomer, find_or_create_customer, validate_new_customer
from resolvers.inventory import refill_backorders

PLACE_ORDER_SCOPE = "placeOrder"
_MAX_ATTEMPTS = 3


@dataclass(slots=True)
class LineInput:
    sku: str
    quantity: int


@dataclass(slots=True)
class PlaceOrderCommand:
    channel: SalesChannel
    lines: list[LineInput]
    shipping_address: dict[str, str | None]
    payment_method: PaymentMethod
    customer_id: int | None = None
    new_customer: NewCustomer | None = None
    external_id: str | None = None
    idempotency_key: str | None = None
    note: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _StockMoved(Exception):
    """A guarded reservation found less stock than planned: plan again."""


def validate_place_order(cmd: PlaceOrderCommand) -> list[DomainError]:
    errors: list[DomainError] = []
    if (cmd.customer_id is None) == (cmd.new_customer is None):
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT,
                "Give either customerId or customer, not both or neither.",
                ["input", "customerId"],
            )
        )
    if cmd.new_customer is not None:
        errors += validate_new_customer(cmd.new_customer, ["input", "customer"])
    if not cmd.lines:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT, "An order needs at least one line.", ["input", "lines"]
            )
        )
    if len(cmd.lines) > v.MAX_ORDER_LINES:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT,
                f"An order has at most {v.MAX_ORDER_LINES} lines.",
                ["input", "lines"],
            )
        )
    for i, line in enumerate(cmd.lines[: v.MAX_ORDER_LINES]):
        errors += v.sku(line.sku, ["input", "lines", str(i), "sku"])
        errors += v.quantity(line.quantity, ["input", "lines", str(i), "quantity"])
    errors += v.address(cmd.shipping_address, ["input", "shippingAddress"])
    if cmd.external_id is not None:
        errors += v.text(
            cmd.external_id, ["input", "externalId"], max_length=v.MAX_EXTERNAL_ID_LENGTH
        )
    if cmd.idempotency_key is not None:
        errors += v.text(
            cmd.idempotency_key,
            ["input", "idempotencyKey"],
            max_length=v.MAX_IDEMPOTENCY_KEY_LENGTH,
        )
    errors += v.text(cmd.note, ["input", "note"], max_length=v.MAX_NOTE_LENGTH, required=False)
    return errors


def _fingerprint(cmd: PlaceOrderCommand) -> str:
    data = asdict(cmd)
    data.pop("idempotency_key")
    return request_hash(data)


async def place_order(
    db: Database, cmd: PlaceOrderCommand, actor: Principal, pricing: PricingPolicy
) -> Order:
    """Validate, price from the catalogue, reserve stock and record the order, atomically.

    Either the whole order is written (with every unit reserved, or backordered where the
    product allows it) or nothing is. A retry with the same ``idempotency_key``, or the same
    channel and ``external_id``, returns the first order and writes nothing.
    """
    cmd = _for_caller(cmd, actor)
    raise_if_any(validate_place_order(cmd))
    fingerprint = _fingerprint(cmd)
    for attempt in range(_MAX_ATTEMPTS):
        try:
            return await _place_order_once(db, cmd, fingerprint, actor, pricing)
        except (IntegrityError, _StockMoved):
            # A concurrent request won a unique key (idempotency key, external id, email)
            # or moved stock between our read and our guarded update: look again.
            if attempt == _MAX_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _for_caller(cmd: PlaceOrderCommand, actor: Principal) -> PlaceOrderCommand:
    """Customers place orders for themselves only: their own id fills ``customerId``."""
    if not actor.is_customer:
        return cmd
    if cmd.new_customer is not None:
        raise DomainError(
            ErrorCode.FORBIDDEN,
            "Customers place orders for themselves: leave out `customer`.",
            ["input", "customer"],
        )
    if cmd.customer_id is not None and cmd.customer_id != actor.customer_id:
        raise DomainError(
            ErrorCode.FORBIDDEN,
            "Customers may place orders only for themselves.",
            ["input", "customerId"],
        )
    return replace(cmd, customer_id=actor.customer_id)


async def _existing_order(
    uow: UnitOfWork, cmd: PlaceOrderCommand, fingerprint: str
) -> Order | None:
    s = uow.session
    replayed: Order | None = await replay(
        s, idempotency_scope(PLACE_ORDER_SCOPE, uow.actor), cmd.idempotency_key, fingerprint, Order
    )
    if replayed is not None:
        return replayed
    if cmd.external_id is not None:
        order = (
            await s.execute(
                select(Order).where(
                    Order.channel == cmd.channel.value, Order.external_id == cmd.external_id
                )
            )
        ).scalar_one_or_none()
        if order is not None:
            if order.request_hash != fingerprint:
                # Name the order only to a caller who may see it.
                which = (
                    "Another order"
                    if uow.actor.is_customer and not uow.actor.owns(order.customer_id)
                    else format_order_number(order.id)
                )
                raise DomainError(
                    ErrorCode.DUPLICATE_EXTERNAL_ID,
                    f"{which} already has this externalId "
                    f"on channel {cmd.channel.value}, with different contents.",
                    ["input", "externalId"],
                )
            return order
    return None


async def _place_order_once(
    db: Database, cmd: PlaceOrderCommand, fingerprint: str, actor: Principal, pricing: PricingPolicy
) -> Order:
    async with UnitOfWork(db, actor) as uow:
        s = uow.session
        existing = await _existing_order(uow, cmd, fingerprint)
        if existing is not None:
            return existing

        if cmd.customer_id is not None:
            customer = await get_or_not_found(
                s, Customer, cmd.customer_id, ["input", "customerId"], "customer"
            )
        else:
            assert cmd.new_customer is not None
            customer = await find_or_create_customer(s, cmd.new_customer)

        skus = sorted({line.sku for line in cmd.lines})
        # Lock the products (in id order) against adjust_inventory, which must not miss an
        # order backordered while it adds stock; NO KEY UPDATE leaves references unblocked.
        products = {
            p.sku: p
            for p in (
                await s.execute(
                    select(Product)
                    .where(Product.sku.in_(skus))
                    .order_by(Product.id)
                    .with_for_update(key_share=True)
                )
            ).scalars()
        }
        errors: list[DomainError] = []
        for i, line in enumerate(cmd.lines):
            product = products.get(line.sku)
            path = ["input", "lines", str(i), "sku"]
            if product is None:
                errors.append(DomainError(ErrorCode.NOT_FOUND, f"Unknown SKU {line.sku!r}.", path))
            elif not product.active:
                errors.append(
                    DomainError(ErrorCode.PRODUCT_INACTIVE, f"{line.sku} is not for sale.", path)
                )
        raise_if_any(errors)
        currencies = {p.currency for p in products.values()}
        if len(currencies) > 1:
            raise DomainError(
                ErrorCode.CURRENCY_MISMATCH,
                "All lines of an order must share one currency; got "
                + ", ".join(sorted(currencies))
                + ".",
                ["input", "lines"],
            )
        currency = currencies.pop()

        # Lock the stock rows in primary-key order (no deadlocks on PostgreSQL; SQLite
        # already holds the write lock), then plan on what is really there.
        product_ids = sorted({p.id for p in products.values()})
        levels = list(
            (
                await s.execute(
                    select(InventoryLevel)
                    .where(InventoryLevel.product_id.in_(product_ids))
                    .order_by(InventoryLevel.id)
                    .with_for_update()
                )
            ).scalars()
        )
        warehouses = [
            WarehouseRank(w_id, prio)
            for w_id, prio in (await s.execute(select(Warehouse.id, Warehouse.priority))).all()
        ]
        if not warehouses:
            raise DomainError(ErrorCode.NO_WAREHOUSE, "No warehouse is set up yet.", ["input"])
        demands = [
            LineDemand(i, products[line.sku].id, line.quantity, products[line.sku].allow_backorder)
            for i, line in enumerate(cmd.lines)
        ]
        plan = plan_allocation(
            demands, {(lv.product_id, lv.warehouse_id): lv.available for lv in levels}, warehouses
        )
        if not plan.ok:
            raise DomainErrors(
                [
                    DomainError(
                        ErrorCode.INSUFFICIENT_STOCK,
                        f"Only {sh.available} of {cmd.lines[sh.index].sku} available; "
                        f"{sh.requested} requested.",
                        ["input", "lines", str(sh.index), "quantity"],
                    )
                    for sh in plan.shortages
                ]
            )

        now = utcnow()
        status = OrderStatus.BACKORDERED if plan.backordered else OrderStatus.PENDING
        line_totals = [
            Money(products[line.sku].price_minor, currency).times(line.quantity)
            for line in cmd.lines
        ]
        totals = price_order(line_totals, currency, pricing)
        order = Order(
            tracking_token=secrets.token_urlsafe(24),
            customer_id=customer.id,
            channel=cmd.channel.value,
            external_id=cmd.external_id,
            status=status.value,
            payment_status=PaymentStatus.PENDING.value,
            payment_method=cmd.payment_method.value,
            currency=currency,
            subtotal_minor=totals.subtotal.minor,
            shipping_minor=totals.shipping.minor,
            tax_minor=totals.tax.minor,
            total_minor=totals.total.minor,
            shipping_address={k: val for k, val in cmd.shipping_address.items() if val},
            request_hash=fingerprint,
            placed_at=now,
            updated_at=now,
        )
        s.add(order)
        await s.flush()
        number = format_order_number(order.id)
        lines = [
            OrderLine(
                order_id=order.id,
                product_id=products[line.sku].id,
                sku=line.sku,
                name=products[line.sku].name,
                quantity=line.quantity,
                unit_price_minor=products[line.sku].price_minor,
                total_minor=line_totals[i].minor,
                backordered_quantity=plan.backordered.get(i, 0),
            )
            for i, line in enumerate(cmd.lines)
        ]
        s.add_all(lines)
        await s.flush()

        level_of = {(lv.product_id, lv.warehouse_id): lv for lv in levels}
        reservations = plan.reservations(demands)
        movements: list[dict[str, Any]] = []
        for (product_id, warehouse_id), qty in sorted(
            reservations.items(), key=lambda kv: level_of[kv[0]].id
        ):
            await _reserve(uow, level_of[(product_id, warehouse_id)], qty)
            movements.append(
                {
                    "product_id": product_id,
                    "warehouse_id": warehouse_id,
                    "on_hand_delta": 0,
                    "reserved_delta": qty,
                    "reason": StockMovementReason.ORDER_RESERVED.value,
                    "reference": number,
                    "actor": uow.actor.id,
                    "created_at": now,
                }
            )
        # One executemany each for the ledger and the allocations: on a hot path every
        # statement counts, and these rows are written, never read back here.
        if movements:
            await s.execute(insert(StockMovement), movements)
        allocations = [
            {"order_line_id": lines[index].id, "warehouse_id": warehouse_id, "quantity": qty}
            for (index, warehouse_id), qty in plan.allocations.items()
        ]
        if allocations:
            await s.execute(insert(Allocation), allocations)
        remember(
            s,
            idempotency_scope(PLACE_ORDER_SCOPE, uow.actor),
            cmd.idempotency_key,
            fingerprint,
            order.id,
        )
        uow.record_event(order.id, OrderEventType.PLACED, None, status.value, cmd.note)
        await uow.commit()
        return order


async def _reserve(uow: UnitOfWork, level: InventoryLevel, qty: int) -> None:
    """The guarded update: reserve only what is still available, or fail."""
    result = await uow.session.execute(
        update(InventoryLevel)
        .where(
            InventoryLevel.id == level.id, InventoryLevel.on_hand - InventoryLevel.reserved >= qty
        )
        .values(reserved=InventoryLevel.reserved + qty, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise _StockMoved()


async def _locked_order(uow: UnitOfWork, order_id: int) -> Order:
    order: Order = await get_or_not_found(
        uow.session, Order, order_id, ["input", "orderId"], "order", for_update=True
    )
    if uow.actor.is_customer and not uow.actor.owns(order.customer_id):
        # Someone else's order looks exactly like one that does not exist.
        raise DomainError(ErrorCode.NOT_FOUND, "No order with this id.", ["input", "orderId"])
    return order


async def _transition(uow: UnitOfWork, order: Order, target: OrderStatus, note: str | None) -> None:
    current = OrderStatus(order.status)
    event_type = check_transition(current, target)
    order.status = target.value
    order.updated_at = utcnow()
    uow.record_event(order.id, event_type, current.value, target.value, note)


async def change_status(
    db: Database, order_id: int, target: OrderStatus, actor: Principal, note: str | None = None
) -> Order:
    """Move an order along the transition table (confirm, start processing, ...)."""
    raise_if_any(v.text(note, ["input", "note"], max_length=v.MAX_NOTE_LENGTH, required=False))
    if actor.is_customer:
        raise DomainError(ErrorCode.FORBIDDEN, "Only staff move orders through fulfilment.")
    async with UnitOfWork(db, actor) as uow:
        order = await _locked_order(uow, order_id)
        await _transition(uow, order, target, note)
        await uow.commit()
        return order


async def confirm_order(
    db: Database, order_id: int, actor: Principal, note: str | None = None
) -> Order:
    """PENDING → CONFIRMED: staff accept the order for fulfilment."""
    return await change_status(db, order_id, OrderStatus.CONFIRMED, actor, note)


async def start_processing(
    db: Database, order_id: int, actor: Principal, note: str | None = None
) -> Order:
    """CONFIRMED → PROCESSING: the warehouse starts picking."""
    return await change_status(db, order_id, OrderStatus.PROCESSING, actor, note)


async def cancel_order(db: Database, order_id: int, reason: str, actor: Principal) -> Order:
    """Cancel an order that has not shipped, releasing every unit it holds; released units
    go to orders waiting on backorder for the same products."""
    raise_if_any(v.text(reason, ["input", "reason"], max_length=v.MAX_NOTE_LENGTH))
    async with UnitOfWork(db, actor) as uow:
        s = uow.session
        # Lock order, as in place_order and adjust_inventory: products (by id), then orders,
        # then stock rows. Order lines never change product, so reading them first is safe.
        product_ids = list(
            (
                await s.execute(
                    select(OrderLine.product_id)
                    .where(OrderLine.order_id == order_id)
                    .distinct()
                    .order_by(OrderLine.product_id)
                )
            ).scalars()
        )
        if product_ids:
            await s.execute(
                select(Product.id)
                .where(Product.id.in_(product_ids))
                .order_by(Product.id)
                .with_for_update(key_share=True)
            )
        order = await _locked_order(uow, order_id)
        if actor.is_customer:
            check_customer_may_cancel(OrderStatus(order.status))
        held = OrderStatus(order.status) in HOLDS_RESERVATION
        await _transition(uow, order, OrderStatus.CANCELLED, reason)
        if held:
            released = await _release_order_stock(uow, order)
            await refill_backorders(uow, released)
        await uow.commit()
        return order


async def _release_order_stock(uow: UnitOfWork, order: Order) -> list[int]:
    s = uow.session
    rows = (
        await s.execute(
            select(Allocation, OrderLine.product_id)
            .join(OrderLine, OrderLine.id == Allocation.order_line_id)
            .where(OrderLine.order_id == order.id)
        )
    ).all()
    release: dict[tuple[int, int], int] = defaultdict(int)
    for allocation, product_id in rows:
        release[(product_id, allocation.warehouse_id)] += allocation.quantity
        allocation.quantity = 0
    levels = {
        (lv.product_id, lv.warehouse_id): lv
        for lv in (
            await s.execute(
                select(InventoryLevel)
                .where(InventoryLevel.product_id.in_({p for p, _ in release}))
                .order_by(InventoryLevel.id)
                .with_for_update()
            )
        ).scalars()
    }
    reference = format_order_number(order.id)
    for key in sorted(release, key=lambda k: levels[k].id):
        qty = release[key]
        if qty == 0:
            continue
        await s.execute(
            update(InventoryLevel)
            .where(InventoryLevel.id == levels[key].id)
            .values(reserved=InventoryLevel.reserved - qty, updated_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        s.add(
            StockMovement(
                product_id=key[0],
                warehouse_id=key[1],
                reserved_delta=-qty,
                reason=StockMovementReason.ORDER_RELEASED.value,
                reference=reference,
                actor=uow.actor.id,
            )
        )
    await s.execute(
        update(OrderLine).where(OrderLine.order_id == order.id).values(backordered_quantity=0)
    )
    return sorted({product_id for (product_id, _), qty in release.items() if qty})


# Queries ---------------------------------------------------------------------------------

ORDER_SORTS: dict[str, SortKey] = {
    "PLACED_AT_DESC": SortKey("placedAt", Order.placed_at, Order.id, True, "datetime"),
    "PLACED_AT_ASC": SortKey("placedAt", Order.placed_at, Order.id, False, "datetime"),
    "UPDATED_AT_DESC": SortKey("updatedAt", Order.updated_at, Order.id, True, "datetime"),
    "NUMBER_ASC": SortKey("number", Order.id, Order.id, False, "int"),
    "NUMBER_DESC": SortKey("number", Order.id, Order.id, True, "int"),
    "TOTAL_DESC": SortKey("total", Order.total_minor, Order.id, True, "int"),
    "TOTAL_ASC": SortKey("total", Order.total_minor, Order.id, False, "int"),
}
_SORT_VALUE = {
    "placedAt": "placed_at",
    "updatedAt": "updated_at",
    "number": "id",
    "total": "total_minor",
}


@dataclass(slots=True)
class OrderFilterArgs:
    statuses: list[OrderStatus] | None = None
    channels: list[SalesChannel] | None = None
    customer_id: int | None = None
    placed_after: datetime | None = None
    placed_before: datetime | None = None
    number: str | None = None
    external_id: str | None = None


def _filtered_orders(f: OrderFilterArgs) -> Select[Any]:
    stmt = select(Order)
    if f.statuses:
        stmt = stmt.where(Order.status.in_([s.value for s in f.statuses]))
    if f.channels:
        stmt = stmt.where(Order.channel.in_([c.value for c in f.channels]))
    if f.customer_id is not None:
        stmt = stmt.where(Order.customer_id == f.customer_id)
    if f.placed_after is not None:
        stmt = stmt.where(Order.placed_at >= f.placed_after)
    if f.placed_before is not None:
        stmt = stmt.where(Order.placed_at < f.placed_before)
    if f.number is not None:
        stmt = stmt.where(Order.id == (parse_order_number(f.number) or -1))
    if f.external_id is not None:
        stmt = stmt.where(Order.external_id == f.external_id)
    return stmt


async def list_orders(db: Database, f: OrderFilterArgs, sort: str, args: PageArgs) -> Page[Order]:
    stmt = _filtered_orders(f)
    key = ORDER_SORTS[sort]
    attr = _SORT_VALUE[key.name]

    return await paginate(db, stmt, key, args, lambda o: getattr(o, attr))


async def get_order(
    db: Database, order_id: int | None = None, number: str | None = None
) -> Order | None:
    if order_id is None and number is not None:
        order_id = parse_order_number(number)
    if order_id is None:
        return None
    async with db.reader() as s:
        return await s.get(Order, order_id)
