"""Catalogue use cases: products and warehouses."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal

from sqlalchemy import or_, select

from db.database import Database
from db.models import Product, Warehouse
from db.queries import ModelRow, Page, PageArgs, SortKey, model_columns, paginate
from db.uow import UnitOfWork
from domain import validation as v
from domain.access import Principal
from domain.errors import DomainError, ErrorCode, raise_if_any
from domain.money import Money, MoneyError
from resolvers.common import (
    get_or_not_found,
    idempotency_scope,
    remember,
    replay,
    request_hash,
    retry_on_conflict,
)


def _price(
    amount: Decimal, currency: str, field: list[str]
) -> tuple[Money | None, list[DomainError]]:
    try:
        money = Money.from_decimal(amount, currency)
    except MoneyError as exc:
        return None, [DomainError(ErrorCode.INVALID_INPUT, f"Price: {exc}.", field)]
    if money.minor < 0:
        return None, [DomainError(ErrorCode.INVALID_INPUT, "Price must not be negative.", field)]
    return money, []


@dataclass(slots=True)
class ProductInput:
    sku: str
    name: str
    price: Decimal
    currency: str
    active: bool = True
    allow_backorder: bool = False
    cost_price: Decimal | None = None


async def create_product(
    db: Database, p: ProductInput, actor: Principal, idempotency_key: str | None = None
) -> Product:
    errors = v.sku(p.sku, ["input", "sku"])
    errors += v.text(p.name, ["input", "name"], max_length=v.MAX_NAME_LENGTH)
    money, price_errors = _price(p.price, p.currency, ["input", "price"])
    cost: Money | None = None
    if p.cost_price is not None:
        cost, cost_errors = _price(p.cost_price, p.currency, ["input", "costPrice"])
        price_errors += cost_errors
    errors += _key_errors(idempotency_key)
    raise_if_any(errors + price_errors)
    assert money is not None
    fingerprint = request_hash(asdict(p))

    async def run() -> Product:
        async with UnitOfWork(db, actor) as uow:
            s = uow.session
            if found := await replay(
                s, idempotency_scope("createProduct", actor), idempotency_key, fingerprint, Product
            ):
                return found  # type: ignore[no-any-return]
            if (await s.execute(select(Product.id).where(Product.sku == p.sku))).first():
                raise DomainError(
                    ErrorCode.ALREADY_EXISTS, f"SKU {p.sku} already exists.", ["input", "sku"]
                )
            product = Product(
                sku=p.sku,
                name=p.name.strip(),
                price_minor=money.minor,
                currency=money.currency,
                active=p.active,
                allow_backorder=p.allow_backorder,
                cost_minor=cost.minor if cost is not None else None,
            )
            s.add(product)
            await s.flush()
            remember(
                s,
                idempotency_scope("createProduct", actor),
                idempotency_key,
                fingerprint,
                product.id,
            )
            await uow.commit()
            return product

    return await retry_on_conflict(run)


def _key_errors(key: str | None) -> list[DomainError]:
    return v.text(
        key, ["input", "idempotencyKey"], max_length=v.MAX_IDEMPOTENCY_KEY_LENGTH, required=False
    )


@dataclass(slots=True)
class ProductChanges:
    name: str | None = None
    price: Decimal | None = None
    currency: str | None = None
    active: bool | None = None
    allow_backorder: bool | None = None
    cost_price: Decimal | None = None


async def update_product(
    db: Database, product_id: int, c: ProductChanges, actor: Principal
) -> Product:
    """Change catalogue data. Orders already placed keep the price they were placed at."""
    errors: list[DomainError] = []
    if c.name is not None:
        errors += v.text(c.name, ["input", "name"], max_length=v.MAX_NAME_LENGTH)
    raise_if_any(errors)
    async with UnitOfWork(db, actor) as uow:
        product: Product = await get_or_not_found(
            uow.session, Product, product_id, ["input", "id"], "product", for_update=True
        )
        if c.price is not None or c.currency is not None:
            currency = c.currency or product.currency
            amount = (
                c.price
                if c.price is not None
                else Money(product.price_minor, product.currency).amount
            )
            money, price_errors = _price(amount, currency, ["input", "price"])
            raise_if_any(price_errors)
            assert money is not None
            product.price_minor, product.currency = money.minor, money.currency
        if c.cost_price is not None:
            cost, cost_errors = _price(c.cost_price, product.currency, ["input", "costPrice"])
            raise_if_any(cost_errors)
            assert cost is not None
            product.cost_minor = cost.minor
        if c.name is not None:
            product.name = c.name.strip()
        if c.active is not None:
            product.active = c.active
        if c.allow_backorder is not None:
            product.allow_backorder = c.allow_backorder
        await uow.commit()
        return product


PRODUCT_SORT = SortKey("sku", Product.sku, Product.id, False, "str")


async def list_products(
    db: Database, search: str | None, active: bool | None, args: PageArgs
) -> Page[ModelRow]:
    stmt = select(*model_columns(Product))
    if search:
        pattern = "%" + search.replace("\\", "").replace("%", "").replace("_", "") + "%"
        stmt = stmt.where(or_(Product.sku.ilike(pattern), Product.name.ilike(pattern)))
    if active is not None:
        stmt = stmt.where(Product.active == active)

    return await paginate(db, stmt, PRODUCT_SORT, args, lambda p: p.sku)


async def get_product(
    db: Database, product_id: int | None = None, sku: str | None = None
) -> Product | None:
    async with db.reader() as s:
        if product_id is not None:
            return await s.get(Product, product_id)
        if sku is not None:
            return (await s.execute(select(Product).where(Product.sku == sku))).scalar_one_or_none()
    return None


@dataclass(slots=True)
class WarehouseInput:
    code: str
    name: str
    priority: int = 100
    address: dict[str, str | None] | None = None


async def create_warehouse(
    db: Database, w: WarehouseInput, actor: Principal, idempotency_key: str | None = None
) -> Warehouse:
    errors = v.warehouse_code(w.code, ["input", "code"])
    errors += v.text(w.name, ["input", "name"], max_length=v.MAX_NAME_LENGTH)
    errors += v.non_negative(w.priority, ["input", "priority"], maximum=v.MAX_PRIORITY)
    if w.address is not None:
        errors += v.address(w.address, ["input", "address"])
    errors += _key_errors(idempotency_key)
    raise_if_any(errors)
    fingerprint = request_hash(asdict(w))

    async def run() -> Warehouse:
        async with UnitOfWork(db, actor) as uow:
            s = uow.session
            if found := await replay(
                s,
                idempotency_scope("createWarehouse", actor),
                idempotency_key,
                fingerprint,
                Warehouse,
            ):
                return found  # type: ignore[no-any-return]
            if (await s.execute(select(Warehouse.id).where(Warehouse.code == w.code))).first():
                raise DomainError(
                    ErrorCode.ALREADY_EXISTS,
                    f"Warehouse {w.code} already exists.",
                    ["input", "code"],
                )
            warehouse = Warehouse(
                code=w.code,
                name=w.name.strip(),
                priority=w.priority,
                address={k: val for k, val in w.address.items() if val} if w.address else None,
            )
            s.add(warehouse)
            await s.flush()
            remember(
                s,
                idempotency_scope("createWarehouse", actor),
                idempotency_key,
                fingerprint,
                warehouse.id,
            )
            await uow.commit()
            return warehouse

    return await retry_on_conflict(run)


async def list_warehouses(db: Database) -> list[Warehouse]:
    async with db.reader() as s:
        return list(
            (
                await s.execute(select(Warehouse).order_by(Warehouse.priority, Warehouse.id))
            ).scalars()
        )
