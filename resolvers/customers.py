"""Customer use cases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select

from db.database import Database
from db.models import Customer
from db.prepared import Prepared
from db.queries import ModelRow, Page, PageArgs, SortKey, model_columns, paginate
from db.uow import UnitOfWork
from domain import validation as v
from domain.access import Principal
from domain.errors import DomainError, ErrorCode, raise_if_any
from resolvers.common import idempotency_scope, remember, replay, request_hash, retry_on_conflict


@dataclass(slots=True)
class NewCustomer:
    name: str
    email: str
    phone: str | None = None
    addresses: list[dict[str, str | None]] = field(default_factory=list)


MAX_ADDRESSES = 20


def validate_new_customer(c: NewCustomer, path: Sequence[str]) -> list[DomainError]:
    errors = v.text(c.name, [*path, "name"], max_length=v.MAX_NAME_LENGTH)
    errors += v.email(c.email, [*path, "email"])
    errors += v.phone(c.phone, [*path, "phone"])
    if len(c.addresses) > MAX_ADDRESSES:
        errors.append(
            DomainError(
                ErrorCode.INVALID_INPUT, f"At most {MAX_ADDRESSES} addresses.", [*path, "addresses"]
            )
        )
    for i, address in enumerate(c.addresses[:MAX_ADDRESSES]):
        errors += v.address(address, [*path, "addresses", str(i)])
    return errors


def _values(c: NewCustomer) -> dict[str, Any]:
    return {
        "name": c.name.strip(),
        "email": c.email.strip().lower(),
        "phone": c.phone,
        "addresses": [{k: val for k, val in a.items() if val} for a in c.addresses],
    }


def _clean(c: NewCustomer) -> Customer:
    return Customer(**_values(c))


_CUSTOMER_BY_EMAIL = Prepared(select(Customer.id).where(Customer.email == bindparam("email")))
_CUSTOMER_EXISTS = Prepared(select(Customer.id).where(Customer.id == bindparam("id")))
_INSERT_CUSTOMER = Prepared(insert(Customer))


def customer_exists(conn: Connection, customer_id: int) -> bool:
    return _CUSTOMER_EXISTS.first(conn, {"id": customer_id}) is not None


def find_or_create_customer(conn: Connection, c: NewCustomer) -> int:
    """Guest checkout: an inline customer whose email we know is that customer. Returns the
    customer's id (a Core use case's step, inside its transaction)."""
    values = _values(c)
    existing = _CUSTOMER_BY_EMAIL.scalar(conn, {"email": values["email"]})
    if existing is not None:
        return int(existing)
    return _INSERT_CUSTOMER.insert(conn, values)


async def create_customer(
    db: Database, c: NewCustomer, actor: Principal, idempotency_key: str | None = None
) -> Customer:
    errors = validate_new_customer(c, ["input"])
    errors += v.text(
        idempotency_key,
        ["input", "idempotencyKey"],
        max_length=v.MAX_IDEMPOTENCY_KEY_LENGTH,
        required=False,
    )
    raise_if_any(errors)
    fingerprint = request_hash(asdict(c))

    async def run() -> Customer:
        async with UnitOfWork(db, actor) as uow:
            s = uow.session
            if found := await replay(
                s,
                idempotency_scope("createCustomer", actor),
                idempotency_key,
                fingerprint,
                Customer,
            ):
                return found  # type: ignore[no-any-return]
            email = c.email.strip().lower()
            if (await s.execute(select(Customer.id).where(Customer.email == email))).first():
                raise DomainError(
                    ErrorCode.ALREADY_EXISTS,
                    "A customer with this email already exists.",
                    ["input", "email"],
                )
            customer = _clean(c)
            s.add(customer)
            await s.flush()
            remember(
                s,
                idempotency_scope("createCustomer", actor),
                idempotency_key,
                fingerprint,
                customer.id,
            )
            await uow.commit()
            return customer

    return await retry_on_conflict(run)


CUSTOMER_SORT = SortKey("id", Customer.id, Customer.id, False, "int")


async def list_customers(db: Database, email: str | None, args: PageArgs) -> Page[ModelRow]:
    stmt = select(*model_columns(Customer))
    if email:
        stmt = stmt.where(Customer.email == email.strip().lower())

    return await paginate(db, stmt, CUSTOMER_SORT, args, lambda c: c.id)
