"""Shared fixtures.

Backends: every test that takes the ``db_url`` fixture runs on SQLite (a fresh file per
test, copied from a migrated template) and, when ``ORDERGRAPH_TEST_POSTGRES_URL`` is set, on
PostgreSQL too (migrated once, tables truncated per test). With ``CI=true`` a missing
PostgreSQL or Redis is a failure, not a skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette

from app.main import create_app
from app.settings import Settings, normalize_database_url
from db.database import Database
from db.migrate import upgrade
from db.models import Base

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get("ORDERGRAPH_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("ORDERGRAPH_TEST_REDIS_URL")


def require_service(name: str, value: str | None, variable: str) -> str:
    """The service URL, or a skip with the reason (a failure under CI=true)."""
    if value:
        return value
    message = f"{name} not configured: set {variable} to run this test"
    if CI:
        pytest.fail(f"{message} (CI=true requires it)")
    pytest.skip(message)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", ["sqlite", "postgres"], scope="session")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    return path


_pg_migrated = False


async def _reset_postgres(url: str) -> None:
    global _pg_migrated
    if not _pg_migrated:
        await upgrade(url)
        _pg_migrated = True
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            await conn.execute(text("INSERT INTO event_counter (id, last_sequence) VALUES (1, 0)"))
    finally:
        await engine.dispose()


def fresh_postgres_url() -> str:
    """The test PostgreSQL database, migrated and emptied (skip or fail when not configured)."""
    url = normalize_database_url(
        require_service("PostgreSQL", POSTGRES_URL, "ORDERGRAPH_TEST_POSTGRES_URL")
    )
    asyncio.run(_reset_postgres(url))
    return url


@pytest.fixture
def backend() -> str:  # parametrized by pytest_generate_tests
    return "sqlite"


@pytest.fixture
def db_url(backend: str, tmp_path: Path, sqlite_template: Path) -> Iterator[str]:
    """A fresh, migrated, empty database on each backend."""
    if backend == "sqlite":
        path = tmp_path / "test.db"
        shutil.copy(sqlite_template, path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    yield fresh_postgres_url()


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    """A Database on the test's database, for calling use cases directly."""
    database = Database(db_url)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, debug=True, outbox_sweep_seconds=1.0)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
async def admin_key(app: Starlette) -> str:
    """An ADMIN API key in the app's database."""
    from tests.factories import api_key

    return await api_key(app.state.services.db)


@pytest.fixture
async def client(app: Starlette, admin_key: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the app, sending the ADMIN key unless a request says otherwise."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://testserver",
        headers={"Authorization": f"Bearer {admin_key}"},
    ) as c:
        yield c


@pytest.fixture
async def anonymous_client(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        yield c


class GraphQLClient:
    """Posts operations and returns the parsed body; asserts HTTP 200 unless told."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def __call__(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
        )
        assert response.status_code == status, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture
def gql(client: httpx.AsyncClient) -> GraphQLClient:
    return GraphQLClient(client)
