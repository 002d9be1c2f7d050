"""Who is calling: principals, roles and scopes, and the business rules of access that do not
depend on the API's shape (a customer may cancel only while the order is PENDING or
CONFIRMED). The table of which role may use which GraphQL field is ``schema/access.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from domain.errors import DomainError, ErrorCode
from domain.orders import OrderStatus


class Role(StrEnum):
    ADMIN = "ADMIN"
    STAFF = "STAFF"
    INTEGRATION = "INTEGRATION"
    CUSTOMER = "CUSTOMER"
    ANONYMOUS = "ANONYMOUS"


class Scope(StrEnum):
    """What an INTEGRATION key may do; other roles' rights come from the role alone."""

    ORDERS_READ = "orders:read"
    ORDERS_WRITE = "orders:write"
    CATALOG_READ = "catalog:read"
    CATALOG_WRITE = "catalog:write"
    COSTS_READ = "costs:read"
    INVENTORY_READ = "inventory:read"
    INVENTORY_WRITE = "inventory:write"
    CUSTOMERS_READ = "customers:read"
    CUSTOMERS_WRITE = "customers:write"


#: Roles an API key may carry; customers use signed tokens and anonymous callers nothing.
API_KEY_ROLES = (Role.ADMIN, Role.STAFF, Role.INTEGRATION)


@dataclass(frozen=True)
class Principal:
    """The caller of one request or one WebSocket connection.

    ``id`` is what events record as their actor: ``api-key:3``, ``customer:42``,
    ``anonymous`` or ``system:seed``.
    """

    id: str
    role: Role
    name: str = ""
    scopes: frozenset[Scope] = field(default_factory=frozenset)
    customer_id: int | None = None
    api_key_id: int | None = None
    expires_at: datetime | None = None

    @classmethod
    def system(cls, name: str) -> Principal:
        """The process itself (seed data, maintenance commands): full rights."""
        return cls(id=f"system:{name}", role=Role.ADMIN, name=name)

    @classmethod
    def for_api_key(
        cls, key_id: int, name: str, role: Role, scopes: frozenset[Scope] = frozenset()
    ) -> Principal:
        if role not in API_KEY_ROLES:
            raise ValueError(f"an API key cannot carry the {role} role")
        return cls(
            id=f"api-key:{key_id}",
            role=role,
            name=name,
            scopes=scopes if role is Role.INTEGRATION else frozenset(),
            api_key_id=key_id,
        )

    @classmethod
    def for_customer(cls, customer_id: int, expires_at: datetime | None = None) -> Principal:
        return cls(
            id=f"customer:{customer_id}",
            role=Role.CUSTOMER,
            customer_id=customer_id,
            expires_at=expires_at,
        )

    @property
    def is_customer(self) -> bool:
        return self.role is Role.CUSTOMER

    def owns(self, customer_id: int | None) -> bool:
        """Whether data of ``customer_id`` is this caller's own (customers only)."""
        return self.is_customer and customer_id is not None and customer_id == self.customer_id


ANONYMOUS = Principal(id="anonymous", role=Role.ANONYMOUS)

#: Statuses in which a customer may still cancel their own order; after that the warehouse
#: has started and only staff may cancel.
CUSTOMER_CANCELLABLE = frozenset({OrderStatus.PENDING, OrderStatus.CONFIRMED})


def check_customer_may_cancel(status: OrderStatus) -> None:
    if status not in CUSTOMER_CANCELLABLE:
        raise DomainError(
            ErrorCode.FORBIDDEN,
            f"The order is {status.value}: customers may cancel only while it is PENDING or "
            "CONFIRMED. Contact support to cancel it.",
            ["input", "orderId"],
        )


def parse_scopes(raw: str | list[str] | tuple[str, ...]) -> frozenset[Scope]:
    """``"orders:read,inventory:write"`` (or a list) → scopes; ValueError names a bad one."""
    items = raw.split(",") if isinstance(raw, str) else list(raw)
    scopes: set[Scope] = set()
    for item in (i.strip() for i in items):
        if not item:
            continue
        try:
            scopes.add(Scope(item))
        except ValueError:
            known = ", ".join(s.value for s in Scope)
            raise ValueError(f"unknown scope {item!r} (known: {known})") from None
    return frozenset(scopes)
