"""Limits no client can break: depth, aliases, tokens, query cost and the per-principal
budget, body size; production mode (no introspection, no GraphiQL, masked errors); CORS.

Refusals are checked to happen before any resolver runs: the operations refused here are
mutations that would create a warehouse, and afterwards no warehouse exists."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import func, select
from starlette.applications import Starlette

from app.main import MAX_ALIASES, MAX_DEPTH, MAX_TOKENS, Services, create_app
from app.settings import Settings
from db.models import Order, Warehouse
from domain.access import Role
from tests import factories


@dataclasses.dataclass
class Served:
    app: Starlette
    http: httpx.AsyncClient
    key: str

    @property
    def services(self) -> Services:
        s: Services = self.app.state.services
        return s

    async def gql(
        self, query: str, variables: dict[str, Any] | None = None, key: str | None = None
    ) -> httpx.Response:
        return await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables or {}},
            headers=factories.bearer(key or self.key),
        )

    async def warehouses(self) -> int:
        async with self.services.db.reader() as s:
            return int(await s.scalar(select(func.count()).select_from(Warehouse)) or 0)


@contextlib.asynccontextmanager
async def served(settings: Settings, **changes: Any) -> AsyncIterator[Served]:
    app = create_app(dataclasses.replace(settings, **changes))
    async with LifespanManager(app):
        key = await factories.api_key(app.state.services.db, Role.ADMIN)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            yield Served(app, http, key)


CREATE = 'createWarehouse(input: {code: "W%d", name: "W"}) { warehouse { id } }'


def nested(depth: int) -> str:
    """A valid selection under an order, 3 x ``depth`` levels deep: events → nodes → order…"""
    inner = "id"
    for _ in range(depth):
        inner = f"events(first: 1) {{ nodes {{ order {{ {inner} }} }} }}"
    return inner


async def test_too_deep_is_refused_before_anything_runs(settings: Settings) -> None:
    async with served(settings) as s:
        db = s.services.db
        await factories.warehouse(db)
        await factories.product(db, "TEE")
        await factories.stock(db, "TEE", "MAIN", 10)
        variables = {"i": factories.place_order_input([("TEE", 1)])}

        async def place(depth: int) -> dict[str, Any]:
            query = (
                "mutation ($i: PlaceOrderInput!) { placeOrder(input: $i) { order { "
                f"{nested(depth)} }} }} }}"
            )
            body: dict[str, Any] = (await s.gql(query, variables)).json()
            return body

        body = await place(MAX_DEPTH // 3)
        assert body.get("data") is None
        assert [e["message"] for e in body["errors"]] == [
            f"'anonymous' exceeds maximum operation depth of {MAX_DEPTH}"
        ]
        async with db.reader() as session:
            assert await session.scalar(select(func.count()).select_from(Order)) == 0
        body = await place(2)  # within the limit: runs
        assert body["data"]["placeOrder"]["order"] is not None, body


async def test_too_many_aliases_is_refused_before_anything_runs(settings: Settings) -> None:
    async with served(settings) as s:
        fields = " ".join(f"a{i}: " + CREATE % i for i in range(MAX_ALIASES + 1))
        body = (await s.gql(f"mutation {{ {fields} }}")).json()
        assert body["errors"][0]["message"] == f"{MAX_ALIASES + 1} aliases found. Allowed: 30"
        assert await s.warehouses() == 0
        fields = " ".join(f"a{i}: " + CREATE % i for i in range(3))
        body = (await s.gql(f"mutation {{ {fields} }}")).json()
        assert "errors" not in body and await s.warehouses() == 3


async def test_too_many_tokens_is_refused_before_anything_runs(settings: Settings) -> None:
    async with served(settings) as s:
        padding = " ".join("__typename" for _ in range(MAX_TOKENS))
        body = (await s.gql(f"mutation {{ {CREATE % 1} {padding} }}")).json()
        assert "token" in body["errors"][0]["message"].lower()
        assert await s.warehouses() == 0


async def test_connections_need_first_or_last_within_the_cap(settings: Settings) -> None:
    async with served(settings) as s:
        body = (await s.gql("{ orders { totalCount } }")).json()
        assert body["errors"][0]["message"] == (
            "`orders` is a connection: pass `first` or `last` (at most 100)."
        )
        assert body["errors"][0]["extensions"]["code"] == "QUERY_COST"
        body = (await s.gql("{ products(first: 101) { totalCount } }")).json()
        assert "`products`" in body["errors"][0]["message"]
        body = (await s.gql("{ products(last: 100) { totalCount } }")).json()
        assert "errors" not in body


async def test_cost_is_reported_in_extensions(settings: Settings) -> None:
    async with served(settings, cost_bucket=1000, cost_restore_rate=10) as s:
        db = s.services.db
        for sku in ("A", "B", "C"):
            await factories.product(db, sku)
        r = await s.gql("{ products(first: 10) { nodes { sku price { amount } } } }")
        cost = r.json()["extensions"]["cost"]
        # Requested: 2 + 10 x (1 + price 1) = 22; actual: 2 + 3 x 2 = 8, refunded at once.
        assert cost["requestedQueryCost"] == 22
        assert cost["actualQueryCost"] == 8
        status = cost["throttleStatus"]
        assert status["maximumAvailable"] == 1000 and status["restoreRate"] == 10
        assert 990 <= status["currentlyAvailable"] <= 1000


async def test_client_over_budget_is_throttled_then_recovers(settings: Settings) -> None:
    async with served(settings, cost_bucket=100, cost_restore_rate=100) as s:
        db = s.services.db
        for i in range(40):
            await factories.product(db, f"P{i:02}")
        query = "{ products(first: 40) { nodes { sku price { amount } } } }"  # 2 + 40 x 2 = 82
        first = await s.gql(query)
        assert first.status_code == 200 and "errors" not in first.json()
        throttled = await s.gql(query)
        assert throttled.status_code == 429
        error = throttled.json()["errors"][0]
        assert error["extensions"]["code"] == "THROTTLED"
        retry = error["extensions"]["retryAfterSeconds"]
        assert 0 < retry <= 1.0
        assert int(throttled.headers["retry-after"]) >= 1
        assert "Retry in" in error["message"]
        # Another principal has its own budget.
        other = await factories.api_key(db, Role.STAFF)
        assert "errors" not in (await s.gql(query, key=other)).json()
        await asyncio.sleep(retry + 0.05)
        recovered = await s.gql(query)
        assert recovered.status_code == 200 and "errors" not in recovered.json()


async def test_a_query_above_the_maximum_cost_is_refused(settings: Settings) -> None:
    async with served(settings, cost_max_query=50) as s:
        body = (await s.gql("{ products(first: 60) { nodes { sku } } }")).json()
        assert body["errors"][0]["extensions"]["code"] == "MAX_COST_EXCEEDED"
        assert "above the maximum of 50" in body["errors"][0]["message"]
        assert "errors" not in (await s.gql("{ products(first: 40) { nodes { sku } } }")).json()


async def test_request_body_is_capped(settings: Settings) -> None:
    async with served(settings, max_body_bytes=2_000) as s:
        big = {"query": "{ viewer { id } }", "variables": {"pad": "x" * 3_000}}
        r = await s.http.post("/graphql", json=big, headers=factories.bearer(s.key))
        assert r.status_code == 413
        assert "2000 bytes" in r.text

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as read
            yield b'{"query": "{ viewer { id } }", "variables": {"pad": "'
            for _ in range(10):
                yield b"x" * 500
            yield b'"}}'

        r = await s.http.post(
            "/graphql",
            content=chunks(),
            headers={**factories.bearer(s.key), "content-type": "application/json"},
        )
        assert r.status_code == 413
        small = await s.gql("{ viewer { role } }")
        assert small.json()["data"] == {"viewer": {"role": "ADMIN"}}


PRODUCTION = {"env": "production", "jwt_secret": "p" * 40, "debug": False}
INTROSPECTION = "{ __schema { queryType { name } } }"


async def test_production_hides_introspection_and_graphiql(settings: Settings) -> None:
    async with served(settings, **PRODUCTION) as s:
        body = (await s.gql(INTROSPECTION)).json()
        assert "introspection" in body["errors"][0]["message"].lower()
        page = await s.http.get("/graphql", headers={"accept": "text/html"})
        assert "graphiql" not in page.text.lower()
    async with served(settings) as s:
        body = (await s.gql(INTROSPECTION)).json()
        assert body["data"] == {"__schema": {"queryType": {"name": "Query"}}}
        page = await s.http.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()


@pytest.mark.parametrize("production", [True, False])
async def test_internal_errors_are_masked(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, production: bool
) -> None:
    from resolvers import catalog

    async def broken(*_: Any) -> Any:
        raise RuntimeError("connection string postgres://secret@db")

    monkeypatch.setattr(catalog, "list_warehouses", broken)
    async with served(settings, **(PRODUCTION if production else {})) as s:
        r = await s.gql("{ warehouses { code } }")
        [error] = r.json()["errors"]
        assert error["message"] == "Internal error."
        assert error["extensions"]["requestId"] == r.headers["x-request-id"]
        if production:
            assert "secret" not in r.text and "RuntimeError" not in r.text
        else:  # development shows the cause to the developer
            assert error["extensions"]["detail"].startswith("RuntimeError: connection")


async def test_cors_allows_only_listed_origins(settings: Settings) -> None:
    async with served(settings, allowed_origins=("https://shop.example.com",)) as s:
        preflight = {
            "access-control-request-method": "POST",
            "access-control-request-headers": "authorization,content-type",
        }
        ok = await s.http.options(
            "/graphql", headers={"origin": "https://shop.example.com", **preflight}
        )
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == "https://shop.example.com"
        assert "authorization" in ok.headers["access-control-allow-headers"].lower()
        bad = await s.http.options(
            "/graphql", headers={"origin": "https://evil.example", **preflight}
        )
        assert bad.status_code == 400
        assert "access-control-allow-origin" not in bad.headers
        r = await s.http.post(
            "/graphql",
            json={"query": "{ viewer { role } }"},
            headers={"origin": "https://evil.example", **factories.bearer(s.key)},
        )
        assert "access-control-allow-origin" not in r.headers
