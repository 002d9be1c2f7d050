"""PostgreSQL connections: a fixed set kept open, pinged only after sitting idle, reads
without a transaction.

``pool_pre_ping`` cost every checkout three round trips on asyncpg (BEGIN, ``;``,
ROLLBACK); a read's own transaction cost two more (BEGIN, ROLLBACK). These tests pin what
replaced them: a connection in steady use is not pinged, one that sat idle is, and one that
died while idle is replaced before anyone sees the failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from db import database as database_module
from db.database import Database
from tests.conftest import fresh_postgres_url


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield fresh_postgres_url()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    database = Database(pg_url, pool_size=1)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def pings(pg: Database, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ping the pool sends (each still goes to the server)."""
    seen: list[Any] = []
    dialect = pg.write_engine.sync_engine.dialect
    real = dialect.do_ping

    def counting(dbapi_conn: Any) -> bool:
        seen.append(dbapi_conn)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(dialect, "do_ping", counting)
    return seen


async def _backend_pid(db: Database) -> int:
    async with db.reader() as s:
        return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_in_steady_use_is_not_pinged(pg: Database, pings: list[Any]) -> None:
    first = await _backend_pid(pg)
    for _ in range(5):
        assert await _backend_pid(pg) == first  # the same pooled connection
        async with pg.write_engine.begin() as conn:
            await conn.execute(text("SELECT 1"))
    assert pings == []


async def test_an_idle_connection_is_pinged_before_use(
    pg: Database, pings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    await _backend_pid(pg)
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", -1.0)  # idle long enough
    await _backend_pid(pg)
    assert len(pings) == 1


async def test_a_connection_that_died_while_idle_is_replaced_unseen(
    pg: Database, pg_url: str, pings: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = await _backend_pid(pg)
    killer = Database(pg_url)
    try:
        async with killer.reader() as s:
            await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
    finally:
        await killer.dispose()
    await asyncio.sleep(0.05)
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", -1.0)  # idle long enough
    replacement = await _backend_pid(pg)  # no error: the ping failed, the pool reconnected
    assert replacement != victim
    assert len(pings) >= 1


async def test_callers_beyond_the_pool_wait_for_its_connections(pg_url: str) -> None:
    """More concurrent callers than ``pool_size``, twice: every one is served by the pool's
    own connections, which stay open between bursts. With overflow connections the first
    burst opened more and the pool closed them on return, so the second burst forked new
    PostgreSQL backends (under steady load: a backend per request, about 10 ms of CPU each)."""
    database = Database(pg_url, pool_size=3)

    async def backend_pid() -> int:
        async with database.reader() as s:
            pid = (await s.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.05)"))).scalar()
            return int(pid)  # type: ignore[arg-type]

    try:
        first = set(await asyncio.gather(*(backend_pid() for _ in range(12))))
        second = set(await asyncio.gather(*(backend_pid() for _ in range(12))))
    finally:
        await database.dispose()
    assert len(first) == 3
    assert second == first


async def test_reads_run_without_a_transaction(pg: Database) -> None:
    """Two statements of one read session are two transactions: ``now()`` (the
    transaction's start) moves between them; inside one transaction it would not."""
    async with pg.reader() as s:
        first = (await s.execute(text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.01)
        second = (await s.execute(text("SELECT now()"))).scalar_one()
        assert second > first


async def test_writes_still_run_in_one_transaction(pg: Database) -> None:
    async with pg.write_engine.begin() as conn:
        first = (await conn.execute(text("SELECT now()"))).scalar_one()
        await asyncio.sleep(0.01)
        second = (await conn.execute(text("SELECT now()"))).scalar_one()
    assert second == first
