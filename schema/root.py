"""Root fields. Each is thin: decode arguments, call a use case, convert the result."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.types import Info

from domain.access import Principal
from resolvers import catalog, customers, events, inventory, orders
from resolvers.orders import LineInput, PlaceOrderCommand
from schema.access import NODE_RULES, denial_message, permits_node
from schema.catalog import (
    AdjustInventoryInput,
    AdjustInventoryPayload,
    CreateProductInput,
    CreateProductPayload,
    CreateWarehouseInput,
    CreateWarehousePayload,
    InventoryFilter,
    InventoryLevel,
    InventoryLevelConnection,
    Product,
    ProductConnection,
    ProductFilter,
    UpdateProductInput,
    UpdateProductPayload,
    Warehouse,
)
from schema.common import (
    InputError,
    Node,
    decode_id,
    mutate,
    page_args,
    parse_global_id,
    query_id,
    run_query,
)
from schema.customers import (
    CreateCustomerInput,
    CreateCustomerPayload,
    Customer,
    CustomerConnection,
    CustomerFilter,
)
from schema.orders import (
    CancelOrderInput,
    CancelOrderPayload,
    ConfirmOrderInput,
    ConfirmOrderPayload,
    Order,
    OrderConnection,
    OrderEvent,
    OrderEventFilter,
    OrderFilter,
    OrderSort,
    PlaceOrderInput,
    PlaceOrderPayload,
    StartProcessingInput,
    StartProcessingPayload,
    parse_event_cursor,
)
from schema.viewer import Viewer

if TYPE_CHECKING:
    from domain.orders import OrderEventType, OrderStatus

Ctx = Info[Any, Any]


def _principal(info: Ctx) -> Principal:
    principal: Principal = info.context.principal
    return principal


def _visible_order(info: Ctx, order: Any) -> Any:
    """An order the caller may see, or None: another customer's order does not exist for
    a customer."""
    p = _principal(info)
    if order is None or (p.is_customer and not p.owns(order.customer_id)):
        return None
    return order


def _own_customer_id(info: Ctx, requested: int | None, argument: str) -> int | None:
    """For customers: their own id (asking for someone else's data is FORBIDDEN)."""
    p = _principal(info)
    if not p.is_customer:
        return requested
    if requested is not None and requested != p.customer_id:
        raise InputError(f"`{argument}`: customers see only their own data.", code="FORBIDDEN")
    return p.customer_id


async def _node(info: Ctx, type_name: str, id_: int) -> Node | None:
    loaders = info.context.loaders
    p = _principal(info)
    if type_name in NODE_RULES and not permits_node(p, type_name):
        raise InputError(denial_message(p, NODE_RULES[type_name]), code="FORBIDDEN")
    if type_name == "Order":
        o = _visible_order(info, await loaders.order_by_id.load(id_))
        return Order.from_model(o) if o else None
    if type_name == "Product":
        p = await loaders.product_by_id.load(id_)
        return Product.from_model(p) if p else None
    if type_name == "Customer":
        if p.is_customer and id_ != p.customer_id:
            return None
        c = await loaders.customer_by_id.load(id_)
        return Customer.from_model(c) if c else None
    if type_name == "Warehouse":
        w = await loaders.warehouse_by_id.load(id_)
        return Warehouse.from_model(w) if w else None
    return None


@strawberry.type
class Query:
    @strawberry.field(description="Who is calling: role, scopes, and the customer if any.")
    def viewer(self, info: Ctx) -> Viewer:
        return Viewer.of(_principal(info))

    @strawberry.field(description="Any object by its global ID.")
    async def node(self, info: Ctx, id: strawberry.ID) -> Node | None:
        try:
            type_name, id_ = parse_global_id(id)
        except ValueError as exc:
            raise InputError(f"Argument `id`: {exc}.") from exc
        return await _node(info, type_name, id_)

    @strawberry.field(description="One order, by global `id` or by `number` (ORD-000042).")
    async def order(
        self, info: Ctx, id: strawberry.ID | None = None, number: str | None = None
    ) -> Order | None:
        if (id is None) == (number is None):
            raise InputError("Pass exactly one of `id` and `number`.")
        order_id = query_id(id, "Order") if id is not None else None
        found = _visible_order(info, await orders.get_order(info.context.db, order_id, number))
        return Order.from_model(found) if found else None

    @strawberry.field
    async def orders(
        self,
        info: Ctx,
        filter: OrderFilter | None = None,
        sort: OrderSort | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> OrderConnection:
        f = filter.args() if filter else orders.OrderFilterArgs()
        f = replace(f, customer_id=_own_customer_id(info, f.customer_id, "filter.customerId"))
        page = await run_query(
            orders.list_orders(
                info.context.db,
                f,
                (sort or OrderSort.PLACED_AT_DESC).value,
                page_args(first, after, last, before),
            )
        )
        return OrderConnection.build(page, Order.from_model)

    @strawberry.field(description="One product, by global `id` or by `sku`.")
    async def product(
        self, info: Ctx, id: strawberry.ID | None = None, sku: str | None = None
    ) -> Product | None:
        if (id is None) == (sku is None):
            raise InputError("Pass exactly one of `id` and `sku`.")
        product_id = query_id(id, "Product") if id is not None else None
        found = await catalog.get_product(info.context.db, product_id, sku)
        return Product.from_model(found) if found else None

    @strawberry.field
    async def products(
        self,
        info: Ctx,
        filter: ProductFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> ProductConnection:
        f = filter or ProductFilter()
        page = await run_query(
            catalog.list_products(
                info.context.db, f.search, f.active, page_args(first, after, last, before)
            )
        )
        return ProductConnection.build(page, Product.from_model)

    @strawberry.field(description="Every warehouse, in shipping priority order.")
    async def warehouses(self, info: Ctx) -> list[Warehouse]:
        return [Warehouse.from_model(w) for w in await catalog.list_warehouses(info.context.db)]

    @strawberry.field
    async def inventory_levels(
        self,
        info: Ctx,
        filter: InventoryFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> InventoryLevelConnection:
        f = filter or InventoryFilter()
        args = inventory.InventoryFilterArgs(
            sku=f.sku, warehouse_code=f.warehouse_code, below_reorder_point=f.below_reorder_point
        )
        page = await run_query(
            inventory.list_inventory_levels(
                info.context.db, args, page_args(first, after, last, before)
            )
        )
        return InventoryLevelConnection.build(page, InventoryLevel.from_model)

    @strawberry.field
    async def customer(self, info: Ctx, id: strawberry.ID) -> Customer | None:
        customer_id = query_id(id, "Customer")
        p = _principal(info)
        if p.is_customer and customer_id != p.customer_id:
            return None
        found = await info.context.loaders.customer_by_id.load(customer_id)
        return Customer.from_model(found) if found else None

    @strawberry.field
    async def customers(
        self,
        info: Ctx,
        filter: CustomerFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> CustomerConnection:
        page = await run_query(
            customers.list_customers(
                info.context.db,
                filter.email if filter else None,
                page_args(first, after, last, before),
            )
        )
        return CustomerConnection.build(page, Customer.from_model)


def _order_id(value: strawberry.ID) -> int:
    return decode_id(value, "Order", ["input", "orderId"])


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Capture an order from any channel, reserving its stock.")
    async def place_order(self, info: Ctx, input: PlaceOrderInput) -> PlaceOrderPayload:
        ctx = info.context

        async def run() -> Any:
            customer_id = (
                decode_id(input.customer_id, "Customer", ["input", "customerId"])
                if input.customer_id is not None
                else None
            )
            cmd = PlaceOrderCommand(
                channel=input.channel,
                payment_method=input.payment_method,
                lines=[LineInput(sku=li.sku, quantity=li.quantity) for li in input.lines],
                shipping_address=input.shipping_address.to_dict(),
                customer_id=customer_id,
                new_customer=input.customer.command() if input.customer else None,
                external_id=input.external_id,
                idempotency_key=input.idempotency_key,
                note=input.note,
            )
            return await orders.place_order(ctx.db, cmd, ctx.actor, ctx.pricing)

        return await mutate(
            run(),
            lambda o: PlaceOrderPayload(order=Order.from_model(o)),
            lambda errs: PlaceOrderPayload(user_errors=errs),
        )

    @strawberry.mutation(description="PENDING → CONFIRMED.")
    async def confirm_order(self, info: Ctx, input: ConfirmOrderInput) -> ConfirmOrderPayload:
        ctx = info.context

        async def run() -> Any:
            return await orders.confirm_order(
                ctx.db, _order_id(input.order_id), ctx.actor, input.note
            )

        return await mutate(
            run(),
            lambda o: ConfirmOrderPayload(order=Order.from_model(o)),
            lambda errs: ConfirmOrderPayload(user_errors=errs),
        )

    @strawberry.mutation(description="CONFIRMED → PROCESSING: picking starts.")
    async def start_processing(
        self, info: Ctx, input: StartProcessingInput
    ) -> StartProcessingPayload:
        ctx = info.context

        async def run() -> Any:
            return await orders.start_processing(
                ctx.db, _order_id(input.order_id), ctx.actor, input.note
            )

        return await mutate(
            run(),
            lambda o: StartProcessingPayload(order=Order.from_model(o)),
            lambda errs: StartProcessingPayload(user_errors=errs),
        )

    @strawberry.mutation(description="Cancel an order that has not shipped; releases its stock.")
    async def cancel_order(self, info: Ctx, input: CancelOrderInput) -> CancelOrderPayload:
        ctx = info.context

        async def run() -> Any:
            return await orders.cancel_order(
                ctx.db, _order_id(input.order_id), input.reason, ctx.actor
            )

        return await mutate(
            run(),
            lambda o: CancelOrderPayload(order=Order.from_model(o)),
            lambda errs: CancelOrderPayload(user_errors=errs),
        )

    @strawberry.mutation
    async def create_product(self, info: Ctx, input: CreateProductInput) -> CreateProductPayload:
        ctx = info.context
        return await mutate(
            catalog.create_product(ctx.db, input.command(), ctx.actor, input.idempotency_key),
            lambda p: CreateProductPayload(product=Product.from_model(p)),
            lambda errs: CreateProductPayload(user_errors=errs),
        )

    @strawberry.mutation
    async def update_product(self, info: Ctx, input: UpdateProductInput) -> UpdateProductPayload:
        ctx = info.context

        async def run() -> Any:
            return await catalog.update_product(
                ctx.db, decode_id(input.id, "Product", ["input", "id"]), input.changes(), ctx.actor
            )

        return await mutate(
            run(),
            lambda p: UpdateProductPayload(product=Product.from_model(p)),
            lambda errs: UpdateProductPayload(user_errors=errs),
        )

    @strawberry.mutation
    async def create_warehouse(
        self, info: Ctx, input: CreateWarehouseInput
    ) -> CreateWarehousePayload:
        ctx = info.context
        return await mutate(
            catalog.create_warehouse(ctx.db, input.command(), ctx.actor, input.idempotency_key),
            lambda w: CreateWarehousePayload(warehouse=Warehouse.from_model(w)),
            lambda errs: CreateWarehousePayload(user_errors=errs),
        )

    @strawberry.mutation
    async def create_customer(self, info: Ctx, input: CreateCustomerInput) -> CreateCustomerPayload:
        ctx = info.context
        return await mutate(
            customers.create_customer(ctx.db, input.command(), ctx.actor, input.idempotency_key),
            lambda c: CreateCustomerPayload(customer=Customer.from_model(c)),
            lambda errs: CreateCustomerPayload(user_errors=errs),
        )

    @strawberry.mutation(
        description="A signed change of on-hand stock, recorded with its "
        "reason. New stock fills backorders first."
    )
    async def adjust_inventory(
        self, info: Ctx, input: AdjustInventoryInput
    ) -> AdjustInventoryPayload:
        ctx = info.context
        return await mutate(
            inventory.adjust_inventory(ctx.db, input.command(), ctx.actor),
            lambda lv: AdjustInventoryPayload(inventory_level=InventoryLevel.from_model(lv)),
            lambda errs: AdjustInventoryPayload(user_errors=errs),
        )


def _event_filter(
    f: OrderEventFilter | None, order_ids: Sequence[int] | None = None
) -> events.EventFilterArgs:
    ids = set(order_ids or [])
    customer_id = None
    if f is not None:
        ids |= {query_id(i, "Order", "filter.orderId") for i in f.order_id or []}
        if f.customer_id is not None:
            customer_id = query_id(f.customer_id, "Customer", "filter.customerId")
    return events.EventFilterArgs(
        order_ids=frozenset(ids) if ids or order_ids else None,
        customer_id=customer_id,
        types=frozenset(t.value for t in cast("list[OrderEventType]", f.type))
        if f and f.type
        else None,
        to_statuses=frozenset(s.value for s in cast("list[OrderStatus]", f.to_status))
        if f and f.to_status
        else None,
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="One order's events, in order. With `after` (an "
        "event cursor) the stored events after it come first."
    )
    async def order_status_changed(
        self, info: Ctx, order_id: strawberry.ID, after: str | None = None
    ) -> AsyncGenerator[OrderEvent, None]:
        oid = query_id(order_id, "Order", "orderId")
        start = parse_event_cursor(after) if after is not None else None
        if _visible_order(info, await info.context.loaders.order_by_id.load(oid)) is None:
            raise InputError("No order with this id.", code="NOT_FOUND")
        async with info.context.stream.subscribe(
            _event_filter(None, [oid]), start, payload=OrderEvent.shared
        ) as stream:
            async for event, loaders in stream:
                # The connection's context lives as long as the socket: resolve this event's
                # nested fields with loaders as fresh as the event, not with its old cache.
                info.context.loaders = loaders
                yield OrderEvent.shared(event, loaders)

    @strawberry.subscription(description="Every order event (filtered), for staff dashboards.")
    async def order_events(
        self, info: Ctx, filter: OrderEventFilter | None = None, after: str | None = None
    ) -> AsyncGenerator[OrderEvent, None]:
        start = parse_event_cursor(after) if after is not None else None
        f = _event_filter(filter)
        # A customer's feed carries their own orders' events only.
        f = replace(f, customer_id=_own_customer_id(info, f.customer_id, "filter.customerId"))
        async with info.context.stream.subscribe(f, start, payload=OrderEvent.shared) as stream:
            async for event, loaders in stream:
                # The connection's context lives as long as the socket: resolve this event's
                # nested fields with loaders as fresh as the event, not with its old cache.
                info.context.loaders = loaders
                yield OrderEvent.shared(event, loaders)


def build_schema(
    extensions: Sequence[type[SchemaExtension] | Any] = (),
    execution_context_class: Any = None,
    schema_class: type[strawberry.Schema] = strawberry.Schema,
) -> strawberry.Schema:
    return schema_class(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        types=[Order, Product, Customer, Warehouse, InventoryLevel, OrderEvent, Viewer],
        extensions=list(extensions),
        execution_context_class=execution_context_class,
    )


__all__ = ["Mutation", "Query", "Subscription", "build_schema"]
