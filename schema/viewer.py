"""The caller: ``viewer`` tells a client who it is and what it may do."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from domain.access import Principal, Role
from schema.customers import Customer

RoleEnum = strawberry.enum(Role, name="Role", description="What a caller may do; see the README.")


@strawberry.type(description="Who is calling, as the server authenticated them.")
class Viewer:
    id: str = strawberry.field(description="`api-key:3`, `customer:42` or `anonymous`.")
    role: RoleEnum  # type: ignore[valid-type]
    name: str | None = strawberry.field(description="The API key's name.")
    scopes: list[str] = strawberry.field(description="An INTEGRATION key's scopes.")
    expires_at: datetime | None = strawberry.field(description="When a customer token expires.")
    customer_id: strawberry.Private[int | None]

    @classmethod
    def of(cls, p: Principal) -> Viewer:
        return cls(
            id=p.id,
            role=p.role,
            name=p.name or None,
            scopes=sorted(s.value for s in p.scopes),
            expires_at=p.expires_at,
            customer_id=p.customer_id,
        )

    @strawberry.field(description="The signed-in customer (customer tokens only).")
    async def customer(self, info: Info[Any, Any]) -> Customer | None:
        if self.customer_id is None:
            return None
        found = await info.context.loaders.customer_by_id.load(self.customer_id)
        return Customer.from_model(found) if found else None
