from __future__ import annotations

from typing import Any

import strawberry

from schema.inputs import fast_input


@strawberry.type(description="A postal address.")
class Address:
    name: str | None
    line1: str | None
    line2: str | None
    city: str | None
    region: str | None
    postal_code: str | None
    country: str | None = strawberry.field(description="ISO 3166-1 alpha-2 code.")
    phone: str | None

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Address | None:
        if d is None:
            return None
        return cls(
            name=d.get("name"),
            line1=d.get("line1"),
            line2=d.get("line2"),
            city=d.get("city"),
            region=d.get("region"),
            postal_code=d.get("postalCode"),
            country=d.get("country"),
            phone=d.get("phone"),
        )


@fast_input
@strawberry.input(
    description="A postal address: name, line1, city, postalCode and country "
    "are required; each field at most 200 characters."
)
class AddressInput:
    name: str
    line1: str
    city: str
    postal_code: str
    country: str = strawberry.field(description='ISO 3166-1 alpha-2 code, e.g. "US".')
    line2: str | None = None
    region: str | None = None
    phone: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "name": self.name,
            "line1": self.line1,
            "line2": self.line2,
            "city": self.city,
            "region": self.region,
            "postalCode": self.postal_code,
            "country": self.country,
            "phone": self.phone,
        }
