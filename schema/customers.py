"""Customers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry

from resolvers.customers import NewCustomer
from schema.addresses import Address, AddressInput
from schema.common import Connection, Node, UserError, to_global_id
from schema.inputs import fast_input


@strawberry.type
class Customer(Node):
    name: str
    email: str
    phone: str | None
    addresses: list[Address]
    created_at: datetime

    @classmethod
    def from_model(cls, c: Any) -> Customer:
        return cls(
            id=to_global_id("Customer", c.id),
            name=c.name,
            email=c.email,
            phone=c.phone,
            addresses=[a for a in map(Address.from_dict, c.addresses or []) if a],
            created_at=c.created_at,
        )


CustomerConnection = Connection[Customer]


@strawberry.input
class CustomerFilter:
    email: str | None = None


@fast_input
@strawberry.input(
    description="A customer: name (1-200 characters), a valid email, optional phone and addresses."
)
class CreateCustomerInput:
    name: str
    email: str
    phone: str | None = None
    addresses: list[AddressInput] = strawberry.field(default_factory=list)
    idempotency_key: str | None = None

    def command(self) -> NewCustomer:
        return NewCustomer(
            name=self.name,
            email=self.email,
            phone=self.phone,
            addresses=[a.to_dict() for a in self.addresses],
        )


@strawberry.type
class CreateCustomerPayload:
    customer: Customer | None = None
    user_errors: list[UserError] = strawberry.field(default_factory=list)
