"""Deployments that share one Redis never hear each other: the broadcast channel is named
after the database. (Before, a server with no subscribers took another deployment's
announcement as its own position and its later subscribers missed its events.)"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from pathlib import Path

from asgi_lifespan import LifespanManager

from app.broadcast import channel_for
from app.main import create_app
from app.settings import Settings
from domain.access import Principal
from tests import factories, principals
from tests.conftest import REDIS_URL, require_service


def test_channel_is_per_database_not_per_credentials() -> None:
    a = channel_for("postgresql+asyncpg://app:secret@db:5432/shop")
    assert a == channel_for("postgresql+asyncpg://other:pw@db:5432/shop")
    assert a != channel_for("postgresql+asyncpg://app:secret@db:5432/shop_staging")
    assert a != channel_for("sqlite+aiosqlite:///./ordergraph.db")
    assert "secret" not in a and a.startswith("ordergraph.order-events.")


async def test_two_deployments_on_one_redis_do_not_disturb_each_other(
    tmp_path: Path, sqlite_template: Path
) -> None:
    redis = require_service("Redis", REDIS_URL, "ORDERGRAPH_TEST_REDIS_URL")
    apps = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.db"
        shutil.copy(sqlite_template, path)
        settings = Settings(database_url=f"sqlite+aiosqlite:///{path}", broadcast_url=redis)
        apps.append(create_app(dataclasses.replace(settings, outbox_sweep_seconds=1.0)))
    a, b = apps
    async with LifespanManager(a), LifespanManager(b):
        for app in apps:
            db = app.state.services.db
            await factories.warehouse(db)
            await factories.product(db, "TEE")
            await factories.stock(db, "TEE", "MAIN", 100)
        # A's events run far ahead while B has nobody listening.
        for n in range(5):
            await factories.order(a.state.services.db, [("TEE", 1)], email=f"a{n}@example.com")
        await principals.hub_caught_up(a, 5)
        await asyncio.sleep(0.3)
        assert b.state.services.hub.position == 0
        subscriber = asyncio.create_task(
            principals.first_result(
                b, Principal.system("b"), "subscription { orderEvents { sequence type } }"
            )
        )
        await asyncio.sleep(0.3)
        await factories.order(b.state.services.db, [("TEE", 1)])
        result = await asyncio.wait_for(subscriber, 10)
    assert result is not None and result.data == {"orderEvents": {"sequence": 1, "type": "PLACED"}}


async def test_the_redis_backend_stops_its_listener_before_closing_its_connections() -> None:
    # Upstream closed the connections first: a listener still reading could reconnect
    # through redis-py's retry, and that connection stayed open until collected.
    from redis import asyncio as aioredis

    from app.broadcast import _RedisBackend

    url = require_service("Redis", REDIS_URL, "ORDERGRAPH_TEST_REDIS_URL")
    admin = aioredis.Redis.from_url(url)
    try:
        before = len(await admin.client_list())
        for _ in range(5):
            backend = _RedisBackend(url)
            await backend.connect()
            await backend.subscribe("ordergraph.test.disconnect")
            listener = backend._listener
            await asyncio.sleep(0.05)  # the listener is reading
            await backend.disconnect()
            assert listener is not None and listener.done()
        await asyncio.sleep(0.1)
        assert len(await admin.client_list()) == before
    finally:
        await admin.aclose()
