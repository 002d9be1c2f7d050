"""A server on PostgreSQL without autovacuum says so at start: the order tables grow fast,
and with stale statistics the planner read a page's lines and allocations by sequential
scans (10-30 ms of PostgreSQL's CPU per page with 12,000-20,000 orders, 1.4 ms after
ANALYZE)."""

from __future__ import annotations

import logging

import asyncpg  # type: ignore[import-untyped]
import pytest
from asgi_lifespan import LifespanManager

from app.main import create_app
from app.settings import Settings
from db.database import Database


async def test_autovacuum_is_off_reads_the_server_setting(db: Database) -> None:
    if db.is_sqlite:
        assert await db.autovacuum_is_off() is False
        return
    conn = await asyncpg.connect(db.url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        setting = await conn.fetchval("SHOW autovacuum")
    finally:
        await conn.close()
    assert await db.autovacuum_is_off() is (setting == "off")


@pytest.mark.parametrize("off", [True, False])
async def test_the_server_warns_at_start_without_autovacuum(
    settings: Settings,
    off: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def autovacuum_is_off(_self: Database) -> bool:
        return off

    monkeypatch.setattr(Database, "autovacuum_is_off", autovacuum_is_off)
    with caplog.at_level(logging.WARNING, logger="ordergraph"):
        async with LifespanManager(create_app(settings)):
            pass
    warned = [r for r in caplog.records if "autovacuum off" in r.getMessage()]
    assert len(warned) == (1 if off else 0)
