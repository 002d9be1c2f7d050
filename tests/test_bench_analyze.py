"""The benchmark refreshes PostgreSQL's planner statistics before each scenario
(``bench.data.analyze_postgres``): without them, the planner took the order tables the
scenarios had just filled for nearly empty and read a page's lines by sequential scans."""

from __future__ import annotations

import asyncio

import asyncpg  # type: ignore[import-untyped]

from bench.data import analyze_postgres
from tests.conftest import fresh_postgres_url


async def _stats(dsn: str) -> tuple[float, object]:
    conn = await asyncpg.connect(dsn)
    try:
        return (
            await conn.fetchval("SELECT reltuples FROM pg_class WHERE relname = 'warehouse'"),
            await conn.fetchval(
                "SELECT last_analyze FROM pg_stat_user_tables WHERE relname = 'warehouse'"
            ),
        )
    finally:
        await conn.close()


def test_analyze_postgres_refreshes_the_statistics() -> None:
    url = fresh_postgres_url()
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)

    async def fill() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "INSERT INTO warehouse (code, name, priority, created_at) "
                "SELECT 'W' || n, 'Warehouse ' || n, n, now() FROM generate_series(1, 500) AS n"
            )
        finally:
            await conn.close()

    asyncio.run(fill())
    before = asyncio.run(_stats(dsn))
    setting = analyze_postgres(url)
    after = asyncio.run(_stats(dsn))

    assert setting in ("on", "off")
    assert after[1] is not None and after[1] != before[1]
    assert after[0] == 500
