"""PostgreSQL connections: a fixed set kept open, pinged only after sitting idle, reads
without a transaction.

``pool_pre_ping`` cost every checkout three round trips on asyncpg (BEGIN, ``;``,
ROLLBACK); a read's own transaction cost two more (BEGIN, ROLLBACK). These tests pin what
replaced them: a connection in steady use is not pinged, one that sat idle is, and one that
died while idle is replaced before anyone sees the failure.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError

from db import database as database_module
from db.database import Database
from tests.conftest import fresh_postgres_url


@pytest.fixture
def pg_url() -> Iterator[str]:
    yield fresh_postgres_url()


@contextlib.asynccontextmanager
async def _database(url: str, pool_size: int) -> AsyncIterator[Database]:
    database = Database(url, pool_size=pool_size)
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def pg(pg_url: str) -> AsyncIterator[Database]:
    async with _database(pg_url, 1) as database:
        yield database


@pytest.fixture
def pings(pg: Database, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    return _count_pings(pg, monkeypatch)


def _count_pings(database: Database, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every ping sent on ``database``'s connections (each still goes to the server)."""
    seen: list[Any] = []
    dialect = database.write_engine.sync_engine.dialect
    real = dialect.do_ping

    def counting(dbapi_conn: Any) -> bool:
        seen.append(dbapi_conn)
        return bool(real(dbapi_conn))

    monkeypatch.setattr(dialect, "do_ping", counting)
    return seen


async def _backend_pid(db: Database) -> int:
    async with db.reader() as s:
        return int((await s.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def _terminate(url: str, pid: int) -> None:
    """End backend ``pid`` from another connection, as a database restart would."""
    async with _database(url, 1) as killer, killer.reader() as s:
        await s.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await asyncio.sleep(0.05)


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
    await _terminate(pg_url, victim)
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


# Kept autocommit connections (read_core, one-statement writes) --------------------------


@pytest.fixture
async def kept(pg_url: str) -> AsyncIterator[Database]:
    """A Database whose pool of 4 keeps 2 autocommit connections checked out."""
    async with _database(pg_url, 4) as database:
        yield database


def _pid(conn: Any) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _slow_pid(conn: Any) -> int:
    return int(conn.execute(text("SELECT pg_backend_pid() FROM pg_sleep(0.05)")).scalar_one())


def _checkouts(database: Database) -> list[Any]:
    seen: list[Any] = []
    event.listen(database.write_engine.sync_engine, "checkout", lambda *a: seen.append(a[0]))
    return seen


async def test_read_core_keeps_its_connection_instead_of_checking_one_out(kept: Database) -> None:
    checkouts = _checkouts(kept)
    first = await kept.read_core(_pid)
    for _ in range(5):
        assert await kept.read_core(_pid) == first
    assert len(checkouts) == 1  # the first call's; the rest reused it
    assert kept.write_engine.pool.checkedout() == 1  # type: ignore[attr-defined]


async def test_at_most_half_the_pool_is_kept_and_callers_beyond_it_use_the_pool(
    kept: Database,
) -> None:
    """Six concurrent calls on a pool of four: two on kept connections, the others on the
    pool's (waiting for them, as before); afterwards two stay kept, the rest are back."""
    pids = await asyncio.gather(*(kept.read_core(_slow_pid) for _ in range(6)))
    assert len(set(pids)) >= 3  # more than the kept ones served them
    assert kept.write_engine.pool.checkedout() == 2  # type: ignore[attr-defined]
    async with kept.reader() as s:  # sessions still get the rest of the pool
        await s.execute(text("SELECT 1"))


async def test_a_kept_connection_in_steady_use_is_not_pinged(
    kept: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(kept, monkeypatch)
    for _ in range(5):
        await kept.read_core(_pid)
    assert pings == []
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", -1.0)  # idle long enough
    await kept.read_core(_pid)
    assert len(pings) == 1


async def test_a_kept_connection_that_died_while_idle_is_replaced_unseen(
    kept: Database, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = await kept.read_core(_pid)
    await _terminate(pg_url, victim)
    monkeypatch.setattr(database_module, "PING_AFTER_IDLE_S", -1.0)  # idle long enough
    replacement = await kept.read_core(_pid)  # no error: the ping failed, another served
    assert replacement != victim
    assert kept.write_engine.pool.checkedout() == 1  # type: ignore[attr-defined]


async def test_a_failed_or_cancelled_call_gives_its_connection_back_to_the_pool(
    kept: Database,
) -> None:
    first = await kept.read_core(_pid)

    def fails(conn: Any) -> None:
        conn.execute(text("SELECT 1/0"))

    with pytest.raises(DBAPIError):
        await kept.read_core(fails)
    assert kept.write_engine.pool.checkedout() == 0  # type: ignore[attr-defined]

    def sleeps(conn: Any) -> None:
        conn.execute(text("SELECT pg_sleep(5)"))

    task = asyncio.create_task(kept.read_core(sleeps))
    await asyncio.sleep(0.2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert kept.write_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    # Both connections were dealt with by the pool; calls go on working.
    assert isinstance(await kept.read_core(_pid), int)
    assert first > 0


async def test_one_statement_writes_use_the_kept_connections(kept: Database) -> None:
    from db.uow import run_core
    from domain.access import Principal

    checkouts = _checkouts(kept)
    pids = [
        await run_core(kept, Principal.system("test"), lambda w: _pid(w.conn), transaction=False)
        for _ in range(3)
    ]
    assert len(set(pids)) == 1 and len(checkouts) == 1
    assert pids[0] == await kept.read_core(_pid)  # the same kept connection as reads


async def test_dispose_closes_the_kept_connections(pg_url: str) -> None:
    async with _database(pg_url, 4) as database:
        pids = set(await asyncio.gather(*(database.read_core(_slow_pid) for _ in range(2))))
    async with _database(pg_url, 1) as checker, checker.reader() as s:
        alive = (
            await s.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(:pids)"),
                {"pids": list(pids)},
            )
        ).scalar_one()
    assert alive == 0
