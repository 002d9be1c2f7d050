"""Every root field and every subscription, against every role.

``EXPECTED`` below is written out by hand: it is the access policy as the README states it,
not a copy of ``schema/access.py``. The test fails when a field is added to the schema
without a row here and a rule there, when the rules drift from this table, and when the
running API does not enforce them (each field is called as each role through the real
authentication path).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    get_named_type,
    is_composite_type,
)
from graphql.pyutils import Undefined
from starlette.applications import Starlette

from app.auth import mint_customer_token
from app.main import Services, make_schema
from domain.access import Principal, Role, Scope
from schema.access import RULES, permits
from tests import factories, principals

A, S, C, N = Role.ADMIN, Role.STAFF, Role.CUSTOMER, Role.ANONYMOUS
ANY_KEY = "*"

# field: (roles besides INTEGRATION, what an INTEGRATION key needs: a scope, ANY_KEY or None)
EXPECTED: dict[str, tuple[set[Role], str | None]] = {
    "Query.viewer": ({A, S, C, N}, ANY_KEY),
    "Query.node": ({A, S, C}, ANY_KEY),
    "Query.order": ({A, S, C}, "orders:read"),
    "Query.orders": ({A, S, C}, "orders:read"),
    "Query.product": ({A, S, C}, "catalog:read"),
    "Query.products": ({A, S, C}, "catalog:read"),
    "Query.warehouses": ({A, S}, "inventory:read"),
    "Query.inventoryLevels": ({A, S}, "inventory:read"),
    "Query.customer": ({A, S, C}, "customers:read"),
    "Query.customers": ({A, S}, "customers:read"),
    "Mutation.placeOrder": ({A, S, C}, "orders:write"),
    "Mutation.confirmOrder": ({A, S}, "orders:write"),
    "Mutation.startProcessing": ({A, S}, "orders:write"),
    "Mutation.cancelOrder": ({A, S, C}, "orders:write"),
    "Mutation.createCustomer": ({A, S}, "customers:write"),
    "Mutation.adjustInventory": ({A, S}, "inventory:write"),
    "Mutation.createProduct": ({A}, "catalog:write"),
    "Mutation.updateProduct": ({A}, "catalog:write"),
    "Mutation.createWarehouse": ({A}, None),
    "Subscription.orderStatusChanged": ({A, S, C}, "orders:read"),
    "Subscription.orderEvents": ({A, S, C}, "orders:read"),
}

# Sensitive fields below the root: hidden from the roles not listed.
EXPECTED_SENSITIVE: dict[str, tuple[set[Role], str | None]] = {
    "Order.customer": ({A, S, C}, "customers:read"),
    "Product.costPrice": ({A}, "costs:read"),
    "Product.inventory": ({A, S}, "inventory:read"),
    "OrderLine.allocations": ({A, S}, "orders:read"),
    "OrderEvent.actor": ({A, S}, "orders:read"),
    "OrderEvent.note": ({A, S}, "orders:read"),
}

GRAPHQL_SCHEMA = make_schema()._schema


def root_fields() -> dict[str, GraphQLField]:
    fields: dict[str, GraphQLField] = {}
    for root in (
        GRAPHQL_SCHEMA.query_type,
        GRAPHQL_SCHEMA.mutation_type,
        GRAPHQL_SCHEMA.subscription_type,
    ):
        assert root is not None
        for name, field in root.fields.items():
            fields[f"{root.name}.{name}"] = field
    return fields


def test_every_root_field_has_a_row_and_a_rule() -> None:
    fields = set(root_fields())
    assert fields == set(EXPECTED), (
        "root fields without a row in EXPECTED (add one, and a rule in schema/access.py): "
        f"{sorted(fields - set(EXPECTED))}; rows for fields that are gone: "
        f"{sorted(set(EXPECTED) - fields)}"
    )
    assert fields <= set(RULES), f"no rule in schema/access.py: {sorted(fields - set(RULES))}"


def test_a_root_field_without_a_rule_is_admin_only() -> None:
    # What makes deny-by-default true: a new field nobody wrote a rule for.
    for role in Role:
        p = Principal(id="x", role=role, scopes=frozenset(Scope))
        assert permits(p, "Query.somethingNew") is (role is Role.ADMIN)
        assert permits(p, "Mutation.somethingNew") is (role is Role.ADMIN)


# -- one principal per column -----------------------------------------------------------


@dataclass(frozen=True)
class Column:
    label: str
    principal: Principal

    def expects(self, row: tuple[set[Role], str | None]) -> bool:
        roles, integration = row
        p = self.principal
        if p.role is Role.INTEGRATION:
            return integration == ANY_KEY or (
                integration is not None and Scope(integration) in p.scopes
            )
        return p.role in roles


def columns_for(row: tuple[set[Role], str | None]) -> list[Column]:
    """Every role, and for INTEGRATION a key with exactly the needed scope and a key with
    every other scope."""
    cols = [
        Column("ADMIN", Principal(id="a", role=Role.ADMIN)),
        Column("STAFF", Principal(id="s", role=Role.STAFF)),
        Column("CUSTOMER", Principal.for_customer(1)),
        Column("ANONYMOUS", Principal(id="anonymous", role=Role.ANONYMOUS)),
    ]
    scope = row[1]
    if scope not in (None, ANY_KEY):
        assert scope is not None
        cols.append(
            Column(
                f"INTEGRATION[{scope}]",
                Principal(id="i", role=Role.INTEGRATION, scopes=frozenset({Scope(scope)})),
            )
        )
    others = frozenset(s for s in Scope if s.value != scope)
    cols.append(
        Column("INTEGRATION[other scopes]", Principal(id="j", role=Role.INTEGRATION, scopes=others))
    )
    return cols


@pytest.mark.parametrize("coordinate", sorted({**EXPECTED, **EXPECTED_SENSITIVE}))
def test_rules_match_the_policy(coordinate: str) -> None:
    row = {**EXPECTED, **EXPECTED_SENSITIVE}[coordinate]
    for col in columns_for(row):
        assert permits(col.principal, coordinate) is col.expects(row), (coordinate, col.label)


# -- and the running API enforces them ---------------------------------------------------

SCALARS = {
    "ID": '"T3JkZXI6OTk5OQ=="',  # Order:9999
    "String": '"x"',
    "Int": "1",
    "Float": "1.0",
    "Boolean": "true",
    "Decimal": '"1.00"',
    "DateTime": '"2026-01-01T00:00:00Z"',
}


def literal(type_: Any) -> str:
    if isinstance(type_, GraphQLNonNull):
        return literal(type_.of_type)
    if isinstance(type_, GraphQLList):
        return f"[{literal(type_.of_type)}]"
    if isinstance(type_, GraphQLEnumType):
        return str(next(iter(type_.values)))
    if isinstance(type_, GraphQLInputObjectType):
        required = [
            f"{name}: {literal(f.type)}"
            for name, f in type_.fields.items()
            if isinstance(f.type, GraphQLNonNull) and f.default_value is Undefined
        ]
        return "{" + ", ".join(required) + "}"
    assert isinstance(type_, GraphQLScalarType), type_
    return SCALARS[type_.name]


def operation(coordinate: str) -> str:
    """The smallest valid operation that calls this root field."""
    root, name = coordinate.split(".")
    field = root_fields()[coordinate]
    args = [
        f"{arg_name}: {literal(arg.type)}"
        for arg_name, arg in field.args.items()
        if isinstance(arg.type, GraphQLNonNull)
    ]
    if "first" in field.args:
        args.append("first: 1")
    if coordinate in {"Query.order", "Query.product"}:
        args.append('id: "T3JkZXI6OTk5OQ=="' if name == "order" else 'sku: "NOPE"')
    call = f"{name}({', '.join(args)})" if args else name
    selection = " { __typename }" if is_composite_type(get_named_type(field.type)) else ""
    keyword = {"Query": "query", "Mutation": "mutation", "Subscription": "subscription"}[root]
    return f"{keyword} {{ {call}{selection} }}"


def refusal(errors: list[dict[str, Any]] | None) -> str | None:
    for error in errors or []:
        code = error.get("extensions", {}).get("code")
        if code in {"FORBIDDEN", "UNAUTHENTICATED"}:
            return str(code)
    return None


@dataclass
class Credentials:
    by_label: dict[str, str | None]


@pytest.fixture
async def credentials(app: Starlette) -> Credentials:
    services: Services = app.state.services
    db = services.db
    customer = await principals.customer(db, "matrix@example.com")
    creds: dict[str, str | None] = {
        "ADMIN": await factories.api_key(db, Role.ADMIN),
        "STAFF": await factories.api_key(db, Role.STAFF),
        "CUSTOMER": mint_customer_token(services.settings, customer.id),
        "ANONYMOUS": None,
    }
    return Credentials(creds)


async def integration_key(app: Starlette, scopes: frozenset[Scope]) -> str:
    return await factories.api_key(app.state.services.db, Role.INTEGRATION, tuple(sorted(scopes)))


QUERIES_AND_MUTATIONS = sorted(c for c in EXPECTED if not c.startswith("Subscription."))
SUBSCRIPTIONS = sorted(c for c in EXPECTED if c.startswith("Subscription."))


@pytest.mark.parametrize("coordinate", QUERIES_AND_MUTATIONS)
async def test_api_enforces_the_policy(
    coordinate: str, app: Starlette, anonymous_client: httpx.AsyncClient, credentials: Credentials
) -> None:
    row = EXPECTED[coordinate]
    query = operation(coordinate)
    for col in columns_for(row):
        if col.label.startswith("INTEGRATION"):
            credential: str | None = await integration_key(app, col.principal.scopes)
        else:
            credential = credentials.by_label[col.label]
        headers = factories.bearer(credential) if credential else {}
        response = await anonymous_client.post("/graphql", json={"query": query}, headers=headers)
        assert response.status_code in {200, 400}, response.text
        body = response.json()
        refused = refusal(body.get("errors"))
        allowed = col.expects(row)
        assert (refused is None) is allowed, (coordinate, col.label, query, body)
        if refused:
            expected_code = "UNAUTHENTICATED" if col.label == "ANONYMOUS" else "FORBIDDEN"
            assert refused == expected_code
            assert body.get("data") is None  # refused as a whole, before any resolver ran


@pytest.mark.parametrize("coordinate", SUBSCRIPTIONS)
async def test_subscriptions_enforce_the_policy(coordinate: str, app: Starlette) -> None:
    row = EXPECTED[coordinate]
    for col in columns_for(row):
        first = await principals.first_result(app, col.principal, operation(coordinate), None, 1.0)
        # None: running, waiting for events, so it was allowed.
        errors = [e.formatted for e in (first.errors or [])] if first is not None else []
        assert (refusal(errors) is None) is col.expects(row), (coordinate, col.label, errors)


SENSITIVE_QUERIES: dict[str, tuple[str, str]] = {  # field: (a query reaching it, root scope)
    "Order.customer": ("{ orders(first: 1) { nodes { customer { name } } } }", "orders:read"),
    "Product.costPrice": (
        "{ products(first: 1) { nodes { costPrice { amount } } } }",
        "catalog:read",
    ),
    "Product.inventory": (
        "{ products(first: 1) { nodes { inventory { onHand } } } }",
        "catalog:read",
    ),
    "OrderLine.allocations": (
        "{ orders(first: 1) { nodes { lines { allocations { quantity } } } } }",
        "orders:read",
    ),
    "OrderEvent.actor": (
        "{ orders(first: 1) { nodes { events(first: 1) { nodes { actor } } } } }",
        "orders:read",
    ),
    "OrderEvent.note": (
        "{ orders(first: 1) { nodes { events(first: 1) { nodes { note } } } } }",
        "orders:read",
    ),
}


def test_every_sensitive_field_has_a_query() -> None:
    assert set(SENSITIVE_QUERIES) == set(EXPECTED_SENSITIVE)


@pytest.mark.parametrize("coordinate", sorted(SENSITIVE_QUERIES))
async def test_api_hides_sensitive_fields(
    coordinate: str, app: Starlette, anonymous_client: httpx.AsyncClient, credentials: Credentials
) -> None:
    query, root_scope = SENSITIVE_QUERIES[coordinate]
    row = EXPECTED_SENSITIVE[coordinate]
    for col in columns_for(row):
        if col.label.startswith("INTEGRATION"):
            scopes = col.principal.scopes | {Scope(root_scope)}
            col = Column(col.label, dataclasses.replace(col.principal, scopes=scopes))
            credential: str | None = await integration_key(app, scopes)
        else:
            credential = credentials.by_label[col.label]
        headers = factories.bearer(credential) if credential else {}
        body = (
            await anonymous_client.post("/graphql", json={"query": query}, headers=headers)
        ).json()
        refused = refusal(body.get("errors"))
        assert (refused is None) is col.expects(row), (coordinate, col.label, body)
        if refused and col.label != "ANONYMOUS":
            assert body["errors"][0]["extensions"]["field"] == coordinate
