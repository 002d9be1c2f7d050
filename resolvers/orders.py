"""Order use cases: place, confirm, start processing, cancel; and order queries."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    Integer,
    Select,
    String,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError

from db.database import Database
from db.models import (
    Allocation,
    Customer,
    IdempotencyRecord,
    InventoryLevel,
    Order,
    OrderEvent,
    OrderLine,
    Product,
    StockMovement,
    Warehouse,
    utcnow,
)
from db.prepared import Prepared
from db.queries import ModelRow, Page, PageArgs, SortKey, model_columns, paginate
from db.uow import EVENT_COLUMNS, CoreWork, UnitOfWork, event_row, run_core
from domain import validation as v
from domain.access import Principal, check_customer_may_cancel
from domain.allocation import AllocationPlan, LineDemand, WarehouseRank, plan_allocation
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
from resolvers.common import (
    RECORD_OF_KEY,
    FoundRecord,
    get_or_not_found,
    idempotency_scope,
    remember_id,
    replayed_id,
    request_hash,
)
from resolvers.customers import (
    NewCustomer,
    customer_exists,
    find_or_create_customer,
    validate_new_customer,
)
from resolvers.inventory import refill_backorders

PLACE_ORDER_SCOPE = "placeOrder"
_MAX_ATTEMPTS = 3


class PlacedOrder(NamedTuple):
    """What placeOrder answers with: the order it wrote (or, for a replay, found), every
    column by its ``Order`` attribute name, as rows read for rendering are
    (``db.queries.model_columns``). A detached ORM ``Order`` cost about 28 µs of instance
    bookkeeping per order, for an object that is only rendered. Its fields are the model's
    columns (tests/resolvers/test_orders.py holds them in step)."""

    id: int
    customer_id: int
    channel: str
    external_id: str | None
    status: str
    payment_status: str
    payment_method: str
    currency: str
    subtotal_minor: int
    shipping_minor: int
    tax_minor: int
    total_minor: int
    shipping_address: dict[str, Any]
    request_hash: str
    placed_at: datetime
    updated_at: datetime
    tracking_token: str | None


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


#: The ``request_hash`` of an order placed with neither an idempotency key nor an external
#: id: no later request can replay it (only those two find an earlier order), so its
#: fingerprint would never be compared, and it cost 12-25 us (its canonical JSON) of every
#: such order.
NOT_REPLAYABLE = ""


def _fingerprint(cmd: PlaceOrderCommand) -> str:
    # What asdict() would give, less the idempotency key, built by hand: asdict's deep copy
    # cost more than the rest of the validation together.
    nc = cmd.new_customer
    return request_hash(
        {
            "channel": cmd.channel,
            "lines": [{"sku": li.sku, "quantity": li.quantity} for li in cmd.lines],
            "shipping_address": cmd.shipping_address,
            "payment_method": cmd.payment_method,
            "customer_id": cmd.customer_id,
            "new_customer": None
            if nc is None
            else {
                "name": nc.name,
                "email": nc.email,
                "phone": nc.phone,
                "addresses": nc.addresses,
            },
            "external_id": cmd.external_id,
            "note": cmd.note,
            "extra": cmd.extra,
        }
    )


async def place_order(
    db: Database, cmd: PlaceOrderCommand, actor: Principal, pricing: PricingPolicy
) -> PlacedOrder:
    """Validate, price from the catalogue, reserve stock and record the order, atomically.

    Either the whole order is written (with every unit reserved, or backordered where the
    product allows it) or nothing is. A retry with the same ``idempotency_key``, or the same
    channel and ``external_id``, returns the first order and writes nothing.
    """
    cmd = _for_caller(cmd, actor)
    raise_if_any(validate_place_order(cmd))
    fingerprint = (
        _fingerprint(cmd)
        if cmd.idempotency_key is not None or cmd.external_id is not None
        else NOT_REPLAYABLE
    )
    if db.product_locks is None:
        return await _place_order(db, cmd, actor, pricing, fingerprint, None)
    # PostgreSQL: read and plan first, without a transaction, before queueing for the
    # products (db/keylocks.py): a replay or a refused order does not wait behind orders for
    # the same products, and the products are held for the writes only.
    found = await db.read_core(
        partial(_draft, actor=actor, cmd=cmd, fingerprint=fingerprint, in_transaction=False)
    )
    if isinstance(found, PlacedOrder):
        return found
    async with db.product_locks.hold(line.sku for line in cmd.lines) as held:
        # Let the next order for these products go once the stock is reserved: its first
        # statements overlap this order's commit, and its reservation waits for that commit
        # in PostgreSQL (the row locks) for a moment at most.
        return await _place_order(db, cmd, actor, pricing, fingerprint, found, held.release)


async def _place_order(
    db: Database,
    cmd: PlaceOrderCommand,
    actor: Principal,
    pricing: PricingPolicy,
    fingerprint: str,
    draft: _Draft | None,
    on_reserved: Callable[[], None] | None = None,
) -> PlacedOrder:
    """``_place_order_tx`` until it commits, at most ``_MAX_ATTEMPTS`` times: the first
    attempt writes ``draft`` if there is one, later attempts read again in their
    transaction. ``on_reserved`` is called once the stock of an attempt is reserved.

    A draft (PostgreSQL) for an existing customer is written by one statement alone
    (``_PLACE_ORDER_PG``), so that attempt needs no transaction around it."""
    lock_stock = False
    for attempt in range(_MAX_ATTEMPTS):
        first = draft if attempt == 0 else None
        try:
            return await run_core(
                db,
                actor,
                partial(
                    _place_order_tx,
                    cmd=cmd,
                    fingerprint=fingerprint,
                    pricing=pricing,
                    lock_stock=lock_stock,
                    draft=first,
                    on_reserved=on_reserved,
                ),
                transaction=first is None or first.customer_id is None,
            )
        except IntegrityError:
            # A concurrent request won a unique key (idempotency key, external id, email):
            # look again (a replay now, or a clear error).
            if attempt == _MAX_ATTEMPTS - 1:
                raise
        except _StockMoved:
            # Others reserved the stock we planned on: plan again, this time on locked rows,
            # where the plan cannot go stale.
            if attempt == _MAX_ATTEMPTS - 1:
                raise
            lock_stock = True
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


# Statements of the placeOrder hot path, built once: Core executes them from SQLAlchemy's
# compiled cache, without ORM bookkeeping (see db.uow.run_core).
_ORDER_BY_EXTERNAL_ID = select(Order).where(
    Order.channel == bindparam("channel"), Order.external_id == bindparam("external_id")
)
_ORDER_BY_ID = select(Order).where(Order.id == bindparam("id"))
# What placeOrder needs of a product.
_PRODUCT_COLUMNS = (
    Product.id,
    Product.sku,
    Product.name,
    Product.price_minor,
    Product.currency,
    Product.active,
    Product.allow_backorder,
)
_BY_SKUS = Product.sku.in_(bindparam("skus", expanding=True))
_PRODUCTS_BY_SKU = Prepared(select(*_PRODUCT_COLUMNS).where(_BY_SKUS))
# The products with every stock row of theirs and its warehouse's rank, in one read (no
# lock): what an optimistic placeOrder plans on; and on every row, whether the customer
# exists (a round trip less on PostgreSQL than asking apart).
_PRODUCTS_AND_STOCK_ROWS = (
    select(
        *_PRODUCT_COLUMNS,
        InventoryLevel.id.label("level_id"),
        InventoryLevel.warehouse_id,
        (InventoryLevel.on_hand - InventoryLevel.reserved).label("available"),
        Warehouse.priority,
        select(Customer.id)
        .where(Customer.id == bindparam("customer_id"))
        .scalar_subquery()
        .label("customer_found"),
    )
    .select_from(Product)
    .outerjoin(InventoryLevel, InventoryLevel.product_id == Product.id)
    .outerjoin(Warehouse, Warehouse.id == InventoryLevel.warehouse_id)
    .where(_BY_SKUS)
)
_PRODUCTS_WITH_STOCK = Prepared(_PRODUCTS_AND_STOCK_ROWS)
# The same with the idempotency key's record (``scope``, ``key``), for an order that has
# a key.
_PRODUCTS_WITH_STOCK_AND_RECORD = Prepared(
    _PRODUCTS_AND_STOCK_ROWS.add_columns(
        select(IdempotencyRecord.request_hash)
        .where(RECORD_OF_KEY)
        .scalar_subquery()
        .label("i_hash"),
        select(IdempotencyRecord.resource_id).where(RECORD_OF_KEY).scalar_subquery().label("i_id"),
    )
)
# NO KEY UPDATE: rows that merely reference the product are not blocked.
_LOCK_PRODUCTS = Prepared(
    select(Product.id)
    .where(Product.id.in_(bindparam("ids", expanding=True)))
    .order_by(Product.id)
    .with_for_update(key_share=True)
)
# Every stock row of the products, with its warehouse's rank: no lock (see _reserve_all).
_STOCK_ROWS = (
    select(
        InventoryLevel.id,
        InventoryLevel.product_id,
        InventoryLevel.warehouse_id,
        InventoryLevel.on_hand - InventoryLevel.reserved,
        Warehouse.priority,
    )
    .join(Warehouse, Warehouse.id == InventoryLevel.warehouse_id)
    .where(InventoryLevel.product_id.in_(bindparam("product_ids", expanding=True)))
)
_STOCK = Prepared(_STOCK_ROWS)
# The same, locked in id order: the plan on these rows cannot go stale.
_STOCK_LOCKED = Prepared(_STOCK_ROWS.order_by(InventoryLevel.id).with_for_update(of=InventoryLevel))
_ANY_WAREHOUSE = Prepared(select(Warehouse.id).limit(1))
_INSERT_ORDER = Prepared(insert(Order))
_INSERT_MOVEMENTS = Prepared(insert(StockMovement))
_INSERT_ALLOCATIONS = Prepared(insert(Allocation))
# What placeOrder writes of an order and of each of its lines.
_ORDER_FIELDS = (
    "tracking_token",
    "customer_id",
    "channel",
    "external_id",
    "status",
    "payment_status",
    "payment_method",
    "currency",
    "subtotal_minor",
    "shipping_minor",
    "tax_minor",
    "total_minor",
    "shipping_address",
    "request_hash",
    "placed_at",
    "updated_at",
)
_LINE_FIELDS = (
    "product_id",
    "sku",
    "name",
    "quantity",
    "unit_price_minor",
    "total_minor",
    "backordered_quantity",
)


def _insert_lines(conn: Connection, order_id: int, lines: list[dict[str, Any]]) -> list[int]:
    """SQLite: the lines of an order (``_LINE_FIELDS`` each) in one INSERT; their ids, in
    the lines' order. The statement returns them in no particular order, but a new line
    takes a rowid above every one in the table (no ``AUTOINCREMENT``: the largest plus
    one) and the rows of a VALUES list are inserted in their order, so sorted, the ids are
    the lines'. One statement where there was one per line, which had cost 2.4 % of a
    three-line placeOrder's time."""
    count = len(lines)
    statement = _INSERT_N_LINES.get(count)
    if statement is None:
        rows: list[dict[str, Any]] = [
            {"order_id": bindparam("order_id")}
            | {name: bindparam(f"{name}_{i}") for name in _LINE_FIELDS}
            for i in range(count)
        ]
        statement = _INSERT_N_LINES[count] = Prepared(
            insert(OrderLine).values(rows).returning(OrderLine.id)
        )
    params: dict[str, Any] = {"order_id": order_id}
    for names, line in zip(_LINE_PARAMS, lines, strict=False):
        for param, name in names:
            params[param] = line[name]
    return sorted(statement.scalars(conn, params))


#: ``_insert_lines``' statements by number of lines, and its parameters' names for each
#: line: (parameter, line field).
_INSERT_N_LINES: dict[int, Prepared] = {}
_LINE_PARAMS = [
    tuple((f"{name}_{i}", name) for name in _LINE_FIELDS) for i in range(v.MAX_ORDER_LINES)
]
# The guarded update: reserve only what is still available, or change nothing.
_RESERVE = Prepared(
    update(InventoryLevel)
    .where(
        InventoryLevel.id == bindparam("level_id"),
        InventoryLevel.on_hand - InventoryLevel.reserved >= bindparam("qty"),
    )
    .values(reserved=InventoryLevel.reserved + bindparam("qty"), updated_at=bindparam("now"))
)
#: ``format_order_number`` in SQL (tests/resolvers/test_orders.py compares the two).
ORDER_NUMBER_SQL = "'ORD-' || lpad({id}::text, greatest(6, length({id}::text)), '0')"
_EVENT_FIELDS = tuple(name for name in EVENT_COLUMNS if name != "order_id")
# PostgreSQL: a whole placeOrder write in one statement, which needs no transaction around
# it (a statement is atomic): the order, its lines and their allocations, the
# reservations with their ledger rows, the idempotency record and the order's event.
# Round trips while the order holds its products in the process (db/keylocks.py): one,
# where BEGIN, three inserts, the reservation and COMMIT took six.
#
# The stock rows are locked first, in id order (no deadlocks); under READ COMMITTED a row
# updated meanwhile is locked and read as it is now. ``checked`` decides on those locked
# rows whether every reservation fits; every write depends on it, so when one does not,
# the statement writes nothing and says so (``ok`` false: the caller plans again on
# locked rows). The reserve itself has no guard of its own: the locks keep what
# ``checked`` saw, and the CHECK constraint on ``reserved`` would fail the statement.
# Lines go in in their order and take their ids from the sequence in that order, so
# numbering the new ids in id order gives each line's position, which is what an
# allocation names (the same SKU may be on two lines): the assumption SQLAlchemy's
# "insertmanyvalues" makes for a list of rows with RETURNING on PostgreSQL. The event
# counter is bumped last (it depends on the ledger rows written), as every writer does
# (see db.uow._APPEND_ONE_EVENT).
_PLACE_ORDER_PG = Prepared(
    text(
        f"""
WITH requested AS (
    SELECT * FROM unnest(:level_ids, :qtys) AS r(id, qty)
), locked AS MATERIALIZED (
    SELECT id, on_hand - reserved AS available
    FROM inventory_level WHERE id = ANY(:level_ids) ORDER BY id FOR NO KEY UPDATE
), checked AS MATERIALIZED (
    SELECT count(*) = cardinality(:level_ids) AS ok
    FROM locked JOIN requested USING (id) WHERE locked.available >= requested.qty
), new_order AS (
    INSERT INTO sales_order ({", ".join(_ORDER_FIELDS)})
    SELECT {", ".join(f":{name}" for name in _ORDER_FIELDS)} FROM checked WHERE checked.ok
    RETURNING id
), new_lines AS (
    INSERT INTO order_line (order_id, {", ".join(_LINE_FIELDS)})
    SELECT new_order.id, {", ".join(f"l.{name}" for name in _LINE_FIELDS)}
    FROM new_order CROSS JOIN unnest({", ".join(f":l_{name}" for name in _LINE_FIELDS)})
        WITH ORDINALITY AS l({", ".join(_LINE_FIELDS)}, position)
    ORDER BY l.position
    RETURNING id
), numbered AS (
    SELECT id, row_number() OVER (ORDER BY id) AS position FROM new_lines
), allocated AS (
    INSERT INTO allocation (order_line_id, warehouse_id, quantity)
    SELECT numbered.id, a.warehouse_id, a.quantity
    FROM unnest(:a_positions, :a_warehouse_ids, :a_quantities)
        AS a(position, warehouse_id, quantity)
    JOIN numbered USING (position)
), reserved AS (
    UPDATE inventory_level AS il
    SET reserved = il.reserved + r.qty, updated_at = :placed_at
    FROM requested AS r
    WHERE il.id = r.id AND EXISTS (SELECT FROM new_order)
    RETURNING il.id, il.product_id, il.warehouse_id, r.qty
), recorded AS (
    INSERT INTO stock_movement
        (product_id, warehouse_id, on_hand_delta, reserved_delta, reason, reference, note,
         actor, created_at)
    SELECT product_id, warehouse_id, 0, qty, :reason,
        {ORDER_NUMBER_SQL.format(id="new_order.id")}, NULL, :e_actor, :placed_at
    FROM reserved CROSS JOIN new_order ORDER BY reserved.id
    RETURNING id
), remembered AS (
    INSERT INTO idempotency_record (scope, key, request_hash, resource_id, created_at)
    SELECT :i_scope, :i_key, :request_hash, new_order.id, :placed_at
    FROM new_order WHERE :i_key IS NOT NULL
), bumped AS (
    UPDATE event_counter SET last_sequence = last_sequence + 1
    WHERE id = 1 AND EXISTS (SELECT FROM new_order)
      AND (SELECT count(*) FROM recorded) = cardinality(:level_ids)
    RETURNING last_sequence
), appended AS (
    INSERT INTO order_event (sequence, order_id, {", ".join(_EVENT_FIELDS)})
    SELECT last_sequence, new_order.id, {", ".join(f":e_{name}" for name in _EVENT_FIELDS)}
    FROM bumped CROSS JOIN new_order
    RETURNING sequence
)
SELECT (SELECT ok FROM checked) AS ok, (SELECT id FROM new_order) AS order_id,
    (SELECT sequence FROM appended) AS sequence
"""
    )
    .bindparams(
        bindparam("level_ids", type_=ARRAY(BigInteger)),
        bindparam("qtys", type_=ARRAY(Integer)),
        *(bindparam(name, type_=Order.__table__.c[name].type) for name in _ORDER_FIELDS),
        *(
            bindparam(f"l_{name}", type_=ARRAY(OrderLine.__table__.c[name].type))
            for name in _LINE_FIELDS
        ),
        bindparam("a_positions", type_=ARRAY(BigInteger)),
        bindparam("a_warehouse_ids", type_=ARRAY(BigInteger)),
        bindparam("a_quantities", type_=ARRAY(Integer)),
        bindparam("reason", type_=String),
        bindparam("i_scope", type_=String),
        bindparam("i_key", type_=String),
        *(
            bindparam(f"e_{name}", type_=OrderEvent.__table__.c[name].type)
            for name in _EVENT_FIELDS
        ),
    )
    .columns(ok=Boolean, order_id=BigInteger, sequence=BigInteger)
)


def _order_row(conn: Connection, stmt: Any, params: dict[str, Any]) -> PlacedOrder | None:
    row = conn.execute(stmt, params).first()
    return PlacedOrder(**row._mapping) if row is not None else None


def _existing_order(
    conn: Connection,
    actor: Principal,
    cmd: PlaceOrderCommand,
    fingerprint: str,
    found: FoundRecord | None = None,
) -> PlacedOrder | None:
    """The order this request already placed (a replay of its idempotency key, whose
    record ``found`` is when a read already found it, or of its channel and external id);
    None when there is none."""
    order_id = replayed_id(
        conn, idempotency_scope(PLACE_ORDER_SCOPE, actor), cmd.idempotency_key, fingerprint, found
    )
    if order_id is not None:
        return _order_row(conn, _ORDER_BY_ID, {"id": order_id})
    if cmd.external_id is None:
        return None
    order = _order_row(
        conn, _ORDER_BY_EXTERNAL_ID, {"channel": cmd.channel.value, "external_id": cmd.external_id}
    )
    if order is not None and order.request_hash != fingerprint:
        # Name the order only to a caller who may see it.
        which = (
            "Another order"
            if actor.is_customer and not actor.owns(order.customer_id)
            else format_order_number(order.id)
        )
        raise DomainError(
            ErrorCode.DUPLICATE_EXTERNAL_ID,
            f"{which} already has this externalId "
            f"on channel {cmd.channel.value}, with different contents.",
            ["input", "externalId"],
        )
    return order


class _Stock(NamedTuple):
    level_id: int
    product_id: int
    warehouse_id: int
    available: int
    priority: int


def _stock(conn: Connection, product_ids: list[int], *, lock: bool = False) -> list[_Stock]:
    rows = (_STOCK_LOCKED if lock else _STOCK).all(conn, {"product_ids": product_ids})
    return _some_stock(conn, [_Stock(*row) for row in rows])


def _some_stock(conn: Connection, stock: list[_Stock]) -> list[_Stock]:
    """``stock``, unless there is none because no warehouse exists at all."""
    if not stock and _ANY_WAREHOUSE.first(conn) is None:
        raise DomainError(ErrorCode.NO_WAREHOUSE, "No warehouse is set up yet.", ["input"])
    return stock


def _plan(demands: list[LineDemand], stock: list[_Stock]) -> AllocationPlan:
    ranks = {WarehouseRank(s.warehouse_id, s.priority) for s in stock}
    return plan_allocation(
        demands, {(s.product_id, s.warehouse_id): s.available for s in stock}, list(ranks)
    )


def _check_customer(conn: Connection, customer_id: int | None, found: int | None) -> None:
    """Refuse an order for a customer that does not exist: ``found`` is the customer's id
    as a read already found it (None: not found, or not asked)."""
    if customer_id is None or found == customer_id:
        return
    if not customer_exists(conn, customer_id):
        raise DomainError(ErrorCode.NOT_FOUND, "No customer with this id.", ["input", "customerId"])


@dataclass(frozen=True, slots=True)
class _Draft:
    """What placeOrder's reads decide: the customer, the products and the plan."""

    customer_id: int | None  # None: a new customer, found or created when writing
    products: dict[str, Any]  # product rows by SKU
    currency: str
    demands: list[LineDemand]
    stock: list[_Stock]
    plan: AllocationPlan


def _draft(
    conn: Connection,
    actor: Principal,
    cmd: PlaceOrderCommand,
    fingerprint: str,
    lock_stock: bool = False,
    in_transaction: bool = True,
) -> PlacedOrder | _Draft | None:
    """placeOrder's reads: the earlier order when this is a replay, else the customer, the
    products and a plan on their stock, optimistic unless ``lock_stock`` (see
    ``_place_order_tx``). Raises the business errors the reads find. Outside a transaction
    (``in_transaction`` False: a lock would not outlive its statement) a plan that
    backorders gives None: it must be made again on locked products."""
    skus = sorted({li.sku for li in cmd.lines})
    unlocked_stock: list[_Stock] = []
    if lock_stock:
        existing = _existing_order(conn, actor, cmd, fingerprint)
        if existing is not None:
            return existing
        _check_customer(conn, cmd.customer_id, None)
        products = {row.sku: row for row in _PRODUCTS_BY_SKU.all(conn, {"skus": skus})}
    else:
        # One read for the idempotency key's record, the customer, the products and the
        # stock the plan starts from (the first two on every row; asked apart when there is
        # no row).
        params: dict[str, Any] = {"skus": skus, "customer_id": cmd.customer_id}
        if cmd.idempotency_key is None:
            rows = _PRODUCTS_WITH_STOCK.all(conn, params)
        else:
            params["scope"] = idempotency_scope(PLACE_ORDER_SCOPE, actor)
            params["key"] = cmd.idempotency_key
            rows = _PRODUCTS_WITH_STOCK_AND_RECORD.all(conn, params)
        first = rows[0] if rows else None
        found = (first.i_hash, first.i_id) if first and cmd.idempotency_key else None
        existing = _existing_order(conn, actor, cmd, fingerprint, found)
        if existing is not None:
            return existing
        _check_customer(conn, cmd.customer_id, first.customer_found if first else None)
        products = {row.sku: row for row in rows}
        unlocked_stock = [
            _Stock(row.level_id, row.id, row.warehouse_id, row.available, row.priority)
            for row in rows
            if row.level_id is not None
        ]
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

    product_ids = sorted(p.id for p in products.values())
    demands = [
        LineDemand(i, products[line.sku].id, line.quantity, products[line.sku].allow_backorder)
        for i, line in enumerate(cmd.lines)
    ]
    if lock_stock:
        _LOCK_PRODUCTS.all(conn, {"ids": product_ids})
        stock = _stock(conn, product_ids, lock=True)
    else:
        stock = _some_stock(conn, unlocked_stock)
    plan = _plan(demands, stock)
    if plan.ok and plan.backordered and not lock_stock:
        if not in_transaction:
            return None
        _LOCK_PRODUCTS.all(conn, {"ids": product_ids})
        stock = _stock(conn, product_ids)
        plan = _plan(demands, stock)
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
    return _Draft(cmd.customer_id, products, currency, demands, stock, plan)


def _place_order_tx(
    work: CoreWork,
    cmd: PlaceOrderCommand,
    fingerprint: str,
    pricing: PricingPolicy,
    lock_stock: bool,
    draft: _Draft | None = None,
    on_reserved: Callable[[], None] | None = None,
) -> PlacedOrder:
    """One transaction, optimistic first: stock rows are not locked while planning. The
    reservations then find less than planned or they all succeed, and in the first case
    nothing is written and ``_StockMoved`` is raised; the caller then runs this again with
    ``lock_stock``, which locks the products and their stock rows before planning, as every
    writer of stock does. An order that backorders locks its products and plans again,
    which serializes it with adjust_inventory and cancel_order (they lock the product too):
    new stock never misses a backorder being placed. Lock order everywhere: products,
    orders, stock rows. Row locks are taken as late as possible. SQLite: the order, its
    lines and allocations are written first, then each reservation is a guarded update,
    then the events at commit. PostgreSQL: everything is one statement
    (``_PLACE_ORDER_PG``), the last of the transaction, or the only one: with a ``draft``
    (an optimistic plan read before) for an existing customer the caller runs this without
    a transaction (``run_core(transaction=False)``). The products and their stock are one
    read."""
    conn = work.conn
    if draft is None:
        found = _draft(conn, work.actor, cmd, fingerprint, lock_stock)
        if isinstance(found, PlacedOrder):
            return found
        assert found is not None, "a transaction's draft is never deferred"
        draft = found
    customer_id = draft.customer_id
    if customer_id is None:
        assert cmd.new_customer is not None
        customer_id = find_or_create_customer(conn, cmd.new_customer)
    products, currency, plan, stock = draft.products, draft.currency, draft.plan, draft.stock
    demands = draft.demands

    now = utcnow()
    status = OrderStatus.BACKORDERED if plan.backordered else OrderStatus.PENDING
    line_totals = [
        Money(products[line.sku].price_minor, currency).times(line.quantity) for line in cmd.lines
    ]
    totals = price_order(line_totals, currency, pricing)
    values: dict[str, Any] = {  # _ORDER_FIELDS
        "tracking_token": secrets.token_urlsafe(24),
        "customer_id": customer_id,
        "channel": cmd.channel.value,
        "external_id": cmd.external_id,
        "status": status.value,
        "payment_status": PaymentStatus.PENDING.value,
        "payment_method": cmd.payment_method.value,
        "currency": currency,
        "subtotal_minor": totals.subtotal.minor,
        "shipping_minor": totals.shipping.minor,
        "tax_minor": totals.tax.minor,
        "total_minor": totals.total.minor,
        "shipping_address": {k: val for k, val in cmd.shipping_address.items() if val},
        "request_hash": fingerprint,
        "placed_at": now,
        "updated_at": now,
    }
    lines = [
        {
            "product_id": products[line.sku].id,
            "sku": line.sku,
            "name": products[line.sku].name,
            "quantity": line.quantity,
            "unit_price_minor": products[line.sku].price_minor,
            "total_minor": line_totals[i].minor,
            "backordered_quantity": plan.backordered.get(i, 0),
        }
        for i, line in enumerate(cmd.lines)
    ]
    allocations = [(index, w, qty) for (index, w), qty in plan.allocations.items()]
    level_of = {(s.product_id, s.warehouse_id): s.level_id for s in stock}
    reservations = sorted(
        (level_of[key], key, qty) for key, qty in plan.reservations(demands).items()
    )
    scope = idempotency_scope(PLACE_ORDER_SCOPE, work.actor)
    if conn.dialect.name == "postgresql":
        order_id = _place_order_pg(
            work, values, lines, allocations, reservations, scope, cmd.idempotency_key, cmd.note
        )
        if reservations and on_reserved is not None:
            on_reserved()
        return PlacedOrder(id=order_id, **values)
    order_id = _INSERT_ORDER.insert(conn, values)
    line_ids = _insert_lines(conn, order_id, lines)
    if allocations:
        _INSERT_ALLOCATIONS.execute(
            conn,
            [
                {"order_line_id": line_ids[index], "warehouse_id": w, "quantity": qty}
                for index, w, qty in allocations
            ],
        )
    remember_id(conn, scope, cmd.idempotency_key, fingerprint, order_id)
    work.record_event(order_id, OrderEventType.PLACED, None, status.value, cmd.note)
    if reservations:
        _reserve_and_record(work, reservations, format_order_number(order_id), now)
        if on_reserved is not None:
            on_reserved()
    return PlacedOrder(id=order_id, **values)


def _place_order_pg(
    work: CoreWork,
    values: dict[str, Any],
    lines: list[dict[str, Any]],
    allocations: list[tuple[int, int, int]],
    reservations: list[tuple[int, tuple[int, int], int]],
    scope: str,
    idempotency_key: str | None,
    note: str | None,
) -> int:
    """``_PLACE_ORDER_PG``: the order (``values``: ``_ORDER_FIELDS``), its lines
    (``_LINE_FIELDS`` each), their allocations (line index, warehouse id, quantity), the
    reservations (stock row id, (product id, warehouse id), quantity), the idempotency
    record and the PLACED event (with ``note``); the order's id. Raises ``_StockMoved``,
    having written nothing, when a reservation no longer fits."""
    event = event_row(work.actor, 0, OrderEventType.PLACED, None, values["status"], note)
    row = _PLACE_ORDER_PG.first(
        work.conn,
        {
            **values,
            **{f"l_{name}": [line[name] for line in lines] for name in _LINE_FIELDS},
            "a_positions": [index + 1 for index, _, _ in allocations],
            "a_warehouse_ids": [w for _, w, _ in allocations],
            "a_quantities": [qty for _, _, qty in allocations],
            "level_ids": [level_id for level_id, _, _ in reservations],
            "qtys": [qty for _, _, qty in reservations],
            "reason": StockMovementReason.ORDER_RESERVED.value,
            "i_scope": scope,
            "i_key": idempotency_key,
            **{f"e_{name}": event[name] for name in _EVENT_FIELDS},
        },
    )
    assert row is not None, "the statement returns one row"
    if not row.ok:
        raise _StockMoved()
    assert row.order_id is not None and row.sequence is not None, "the order is written"
    work.appended(row.sequence)
    return int(row.order_id)


def _reserve_and_record(
    work: CoreWork,
    reservations: list[tuple[int, tuple[int, int], int]],
    reference: str,
    now: datetime,
) -> None:
    """SQLite: reserve ``(stock row id, (product id, warehouse id), quantity)`` for every
    entry, each with its ledger row: the ledger rows, then the guarded updates (one
    executemany where the driver reports its row count, else one statement per row).
    Raises ``_StockMoved`` unless every one reserved. (PostgreSQL: ``_PLACE_ORDER_PG``.)"""
    conn = work.conn
    actor = work.actor.id
    reason = StockMovementReason.ORDER_RESERVED.value
    _INSERT_MOVEMENTS.execute(
        conn,
        [
            {
                "product_id": product_id,
                "warehouse_id": warehouse_id,
                "on_hand_delta": 0,
                "reserved_delta": qty,
                "reason": reason,
                "reference": reference,
                "note": None,
                "actor": actor,
                "created_at": now,
            }
            for _, (product_id, warehouse_id), qty in reservations
        ],
    )
    params = [{"level_id": level_id, "qty": qty, "now": now} for level_id, _, qty in reservations]
    if conn.dialect.supports_sane_multi_rowcount and len(params) > 1:
        if _RESERVE.execute(conn, params) != len(params):
            raise _StockMoved()
        return
    for p in params:
        if _RESERVE.execute(conn, p) != 1:
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
    stmt = select(*model_columns(Order))
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


async def list_orders(
    db: Database, f: OrderFilterArgs, sort: str, args: PageArgs
) -> Page[ModelRow]:
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
