"""Orders, their lines, allocations and events."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from domain.access import Role
from domain.orders import (
    OrderEventType,
    OrderStatus,
    PaymentMethod,
    PaymentStatus,
    SalesChannel,
    format_order_number,
)
from resolvers.orders import OrderFilterArgs
from schema.addresses import Address, AddressInput
from schema.catalog import Product, Warehouse
from schema.common import (
    Connection,
    Edge,
    InputError,
    Money,
    Node,
    PageInfo,
    UserError,
    to_global_id,
)
from schema.customers import CreateCustomerInput, Customer
from schema.inputs import fast_input
from schema.viewer import RoleEnum

OrderStatusEnum = strawberry.enum(OrderStatus, name="OrderStatus")
PaymentStatusEnum = strawberry.enum(PaymentStatus, name="PaymentStatus")
SalesChannelEnum = strawberry.enum(SalesChannel, name="SalesChannel")
PaymentMethodEnum = strawberry.enum(PaymentMethod, name="PaymentMethod")
OrderEventTypeEnum = strawberry.enum(OrderEventType, name="OrderEventType")


def event_cursor(sequence: int) -> str:
    return base64.urlsafe_b64encode(f"OrderEvent:{sequence}".encode()).decode()


def parse_event_cursor(cursor: str | None, argument: str = "after") -> int:
    """The event sequence inside an ``OrderEvent.cursor``; 0 when none is given."""
    if cursor is None:
        return 0
    try:
        name, _, raw = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if name != "OrderEvent" or not raw.isdigit() or len(raw) > 18:
            raise ValueError
        return int(raw)
    except ValueError as exc:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InputError(f"`{argument}` is not a valid event cursor.") from exc


@strawberry.type(description="Units of an order line reserved in one warehouse.")
class Allocation:
    quantity: int
    warehouse_id: strawberry.Private[int]

    @strawberry.field
    async def warehouse(self, info: Info[Any, Any]) -> Warehouse:
        return Warehouse.from_model(
            await info.context.loaders.warehouse_by_id.load(self.warehouse_id)
        )


@strawberry.type
class OrderLine(Node):
    sku: str
    name: str
    quantity: int
    unit_price: Money = strawberry.field(
        description="The catalogue price when the order was placed."
    )
    total: Money
    backordered_quantity: int
    line_id: strawberry.Private[int]
    product_id: strawberry.Private[int]

    @classmethod
    def from_model(cls, line: Any, currency: str) -> OrderLine:
        return cls(
            id=to_global_id("OrderLine", line.id),
            sku=line.sku,
            name=line.name,
            quantity=line.quantity,
            unit_price=Money.of(line.unit_price_minor, currency),
            total=Money.of(line.total_minor, currency),
            backordered_quantity=line.backordered_quantity,
            line_id=line.id,
            product_id=line.product_id,
        )

    @strawberry.field
    async def product(self, info: Info[Any, Any]) -> Product:
        return Product.from_model(await info.context.loaders.product_by_id.load(self.product_id))

    @strawberry.field
    async def allocations(self, info: Info[Any, Any]) -> list[Allocation]:
        rows = await info.context.loaders.allocations_by_order_line_id.load(self.line_id)
        return [
            Allocation(quantity=a.quantity, warehouse_id=a.warehouse_id)
            for a in rows
            if a.quantity > 0
        ]


@strawberry.type(description="Something that happened to an order. Append-only.")
class OrderEvent(Node):
    cursor: str = strawberry.field(description="Pass as `after` to resume a stream after it.")
    sequence: int = strawberry.field(description="Global and strictly increasing.")
    type: OrderEventTypeEnum  # type: ignore[valid-type]
    from_status: OrderStatusEnum | None  # type: ignore[valid-type]
    to_status: OrderStatusEnum | None  # type: ignore[valid-type]
    actor: str = strawberry.field(
        description="Who acted: `api-key:3`, `customer:42`, `system:seed`. Staff only."
    )
    actor_role: RoleEnum | None = strawberry.field(  # type: ignore[valid-type]
        description="The role the actor had; null for events recorded before roles existed."
    )
    note: str | None = strawberry.field(description="Internal note or reason. Staff only.")
    occurred_at: datetime
    order_id: strawberry.Private[int]
    loaders: strawberry.Private[Any] = None

    @classmethod
    def from_model(cls, e: Any, loaders: Any = None) -> OrderEvent:
        return cls(
            id=to_global_id("OrderEvent", e.id),
            cursor=event_cursor(e.sequence),
            sequence=e.sequence,
            type=OrderEventType(e.type),
            from_status=OrderStatus(e.from_status) if e.from_status else None,
            to_status=OrderStatus(e.to_status) if e.to_status else None,
            actor=e.actor,
            actor_role=Role(e.actor_role) if e.actor_role else None,
            note=e.note,
            occurred_at=e.occurred_at,
            order_id=e.order_id,
            loaders=loaders,
        )

    @classmethod
    def shared(cls, e: Any, loaders: Any) -> OrderEvent:
        """One OrderEvent per event row and loaders: every subscriber that receives the row
        gets the same object, so its selection can be executed once (app/fanout.py)."""
        cached: OrderEvent | None = getattr(e, "_shared_event", None)
        if cached is None or cached.loaders is not loaders:
            cached = cls.from_model(e, loaders)
            e._shared_event = cached
        return cached

    @strawberry.field
    async def order(self, info: Info[Any, Any]) -> Order:
        # Subscription events carry loaders shared by every subscriber of that event: the
        # connection's own would be stale, and one query per event beats one per subscriber.
        loaders = self.loaders or info.context.loaders
        return Order.from_model(await loaders.order_by_id.load(self.order_id))


OrderEventConnection = Connection[OrderEvent]


@strawberry.type
class Order(Node):
    number: str = strawberry.field(description="Human order number, e.g. ORD-000042.")
    status: OrderStatusEnum  # type: ignore[valid-type]
    payment_status: PaymentStatusEnum  # type: ignore[valid-type]
    payment_method: PaymentMethodEnum  # type: ignore[valid-type]
    channel: SalesChannelEnum  # type: ignore[valid-type]
    external_id: str | None = strawberry.field(description="The sales channel's own order id.")
    placed_at: datetime
    updated_at: datetime
    subtotal: Money
    shipping_total: Money
    tax_total: Money
    total: Money
    shipping_address: Address
    tracking_token: str | None = strawberry.field(
        description="Unguessable; the key of the order's public tracking link."
    )
    order_id: strawberry.Private[int]
    customer_id: strawberry.Private[int]
    currency: strawberry.Private[str]

    @classmethod
    def from_model(cls, o: Any) -> Order:
        c = o.currency
        return cls(
            id=to_global_id("Order", o.id),
            number=format_order_number(o.id),
            status=OrderStatus(o.status),
            payment_status=PaymentStatus(o.payment_status),
            payment_method=PaymentMethod(o.payment_method),
            channel=SalesChannel(o.channel),
            external_id=o.external_id,
            placed_at=o.placed_at,
            updated_at=o.updated_at,
            subtotal=Money.of(o.subtotal_minor, c),
            shipping_total=Money.of(o.shipping_minor, c),
            tax_total=Money.of(o.tax_minor, c),
            total=Money.of(o.total_minor, c),
            shipping_address=Address.from_dict(o.shipping_address),  # type: ignore[arg-type]
            tracking_token=o.tracking_token,
            order_id=o.id,
            customer_id=o.customer_id,
            currency=c,
        )

    @strawberry.field
    async def customer(self, info: Info[Any, Any]) -> Customer:
        return Customer.from_model(await info.context.loaders.customer_by_id.load(self.customer_id))

    @strawberry.field
    async def lines(self, info: Info[Any, Any]) -> list[OrderLine]:
        rows = await info.context.loaders.order_lines_by_order_id.load(self.order_id)
        return [OrderLine.from_model(line, self.currency) for line in rows]

    @strawberry.field(description="This order's events, oldest first.")
    async def events(
        self, info: Info[Any, Any], first: int | None = 50, after: str | None = None
    ) -> OrderEventConnection:
        if first is not None and not 0 <= first <= 100:
            raise InputError("`first` must be between 0 and 100.")
        start = parse_event_cursor(after)
        every = await info.context.loaders.order_events_by_order_id.load(self.order_id)
        rows = [e for e in every if e.sequence > start]
        page = rows[:first] if first is not None else rows
        edges = [Edge(cursor=event_cursor(e.sequence), node=OrderEvent.from_model(e)) for e in page]
        total = len(every)

        async def count() -> int:
            return total

        return OrderEventConnection(
            edges=edges,
            _count=count,
            page_info=PageInfo(
                has_next_page=len(rows) > len(page),
                has_previous_page=start > 0,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


OrderConnection = Connection[Order]


@strawberry.enum(description="Order of an orders list; ties are broken by order number.")
class OrderSort(Enum):
    PLACED_AT_DESC = "PLACED_AT_DESC"
    PLACED_AT_ASC = "PLACED_AT_ASC"
    UPDATED_AT_DESC = "UPDATED_AT_DESC"
    NUMBER_ASC = "NUMBER_ASC"
    NUMBER_DESC = "NUMBER_DESC"
    TOTAL_DESC = "TOTAL_DESC"
    TOTAL_ASC = "TOTAL_ASC"


@strawberry.input(description="All given conditions must hold.")
class OrderFilter:
    status: list[OrderStatusEnum] | None = None  # type: ignore[valid-type]
    channel: list[SalesChannelEnum] | None = None  # type: ignore[valid-type]
    customer_id: strawberry.ID | None = None
    placed_after: datetime | None = strawberry.field(default=None, description="Inclusive.")
    placed_before: datetime | None = strawberry.field(default=None, description="Exclusive.")
    number: str | None = strawberry.field(default=None, description="e.g. ORD-000042.")
    external_id: str | None = None

    def args(self) -> OrderFilterArgs:
        from schema.common import query_id

        for name in ("placed_after", "placed_before"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise InputError(f"`filter.{name}` needs a time zone, e.g. 2026-01-31T00:00:00Z.")
            try:
                if value is not None:
                    value.astimezone(UTC)
            except OverflowError:
                raise InputError(f"`filter.{name}` is out of range.") from None
        return OrderFilterArgs(
            statuses=self.status,
            channels=self.channel,
            customer_id=query_id(self.customer_id, "Customer", "filter.customerId")
            if self.customer_id is not None
            else None,
            placed_after=self.placed_after,
            placed_before=self.placed_before,
            number=self.number,
            external_id=self.external_id,
        )


@fast_input
@strawberry.input
class OrderLineInput:
    sku: str
    quantity: int = strawberry.field(description="1 to 10000.")


@fast_input
@strawberry.input(
    description="Give `customerId` for a known customer, or `customer` to "
    "create one inline (an existing email is matched)."
)
class PlaceOrderInput:
    channel: SalesChannelEnum  # type: ignore[valid-type]
    lines: list[OrderLineInput] = strawberry.field(description="1 to 100 lines.")
    shipping_address: AddressInput
    payment_method: PaymentMethodEnum  # type: ignore[valid-type]
    customer_id: strawberry.ID | None = None
    customer: CreateCustomerInput | None = None
    external_id: str | None = strawberry.field(
        default=None, description="The channel's own order id; unique per channel."
    )
    note: str | None = None
    idempotency_key: str | None = strawberry.field(
        default=None, description="A retry with the same key returns the first result."
    )


@strawberry.type
class PlaceOrderPayload:
    order: Order | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@fast_input
@strawberry.input
class ConfirmOrderInput:
    order_id: strawberry.ID
    note: str | None = None


@strawberry.type
class ConfirmOrderPayload:
    order: Order | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@fast_input
@strawberry.input
class StartProcessingInput:
    order_id: strawberry.ID
    note: str | None = None


@strawberry.type
class StartProcessingPayload:
    order: Order | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@fast_input
@strawberry.input
class CancelOrderInput:
    order_id: strawberry.ID
    reason: str = strawberry.field(description="Why; 1 to 1000 characters.")


@strawberry.type
class CancelOrderPayload:
    order: Order | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)


@strawberry.input(description="All given conditions must hold.")
class OrderEventFilter:
    order_id: list[strawberry.ID] | None = None
    customer_id: strawberry.ID | None = None
    type: list[OrderEventTypeEnum] | None = None  # type: ignore[valid-type]
    to_status: list[OrderStatusEnum] | None = None  # type: ignore[valid-type]
