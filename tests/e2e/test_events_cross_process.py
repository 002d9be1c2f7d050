"""Live order events across server processes: PostgreSQL for the log, Redis for the
announcements, real uvicorn processes, WebSocket subscribers.

Each stream is checked against the event log: a subscriber must receive exactly the stored
sequences, in order and once, whichever process wrote them, whether their announcement was
made, lost with a crashed process, or lost with a dropped Redis connection.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as redis
from sqlalchemy import select

from db.database import Database
from db.models import OrderEvent as OrderEventRow
from domain.access import Principal
from resolvers.events import EventFilterArgs, events_after
from resolvers.orders import confirm_order
from schema.common import decode_id
from schema.orders import event_cursor
from tests import factories
from tests.conftest import REDIS_URL, fresh_postgres_url, require_service
from tests.e2e.servers import Server, create_api_key, start_server
from tests.wsclient import Operation, connect_graphql

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis]

TIMEOUT = 20.0  # hang protection only, never a performance assertion
ORDER_EVENTS = """
subscription Events($after: String) {
  orderEvents(after: $after) { sequence cursor type toStatus order { id } }
}"""
TRANSITIONS = {
    "confirmOrder": "mutation ($id: ID!) { confirmOrder(input: {orderId: $id}) "
    "{ order { status } userErrors { code message } } }",
    "startProcessing": "mutation ($id: ID!) { startProcessing(input: {orderId: $id}) "
    "{ order { status } userErrors { code message } } }",
    "cancelOrder": 'mutation ($id: ID!) { cancelOrder(input: {orderId: $id, reason: "test"}) '
    "{ order { status } userErrors { code message } } }",
}

Gql = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@pytest.fixture
def redis_url() -> str:
    return require_service("Redis", REDIS_URL, "ORDERGRAPH_TEST_REDIS_URL")


@pytest.fixture
def pg_url() -> str:
    """A fresh, migrated PostgreSQL database (these tests need one shared by processes)."""
    return fresh_postgres_url()


@pytest.fixture
async def db(pg_url: str) -> AsyncIterator[Database]:
    """This test process's own access to the database. Its commits are never announced:
    writing events with it is exactly a process that crashed between commit and publish."""
    database = Database(pg_url)
    try:
        await factories.warehouse(database)
        await factories.product(database, "SKU-1")
        await factories.stock(database, "SKU-1", "MAIN", 1_000)
        yield database
    finally:
        await database.dispose()


@pytest.fixture
def admin_key(pg_url: str) -> str:
    """An ADMIN key every server accepts (they share the database): for HTTP requests and
    WebSocket connections alike."""
    return create_api_key(pg_url, "ADMIN", "e2e events")


@pytest.fixture
def servers(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()
    for server in started:  # shown when the test fails
        print(f"--- server on port {server.port} ---\n{server.log()}")


async def start(
    servers: list[Server], pg_url: str, redis_url: str, log_dir: Path, sweep_seconds: int = 3600
) -> Server:
    server = await asyncio.to_thread(
        start_server,
        pg_url,
        log_dir,
        broadcast_url=redis_url,
        extra_env={"ORDERGRAPH_OUTBOX_SWEEP_SECONDS": str(sweep_seconds)},
    )
    servers.append(server)
    return server


@contextlib.asynccontextmanager
async def graphql_http(server: Server, key: str) -> AsyncIterator[Gql]:
    async with httpx.AsyncClient(
        base_url=server.url, trust_env=False, timeout=TIMEOUT, headers=factories.bearer(key)
    ) as http:

        async def gql(query: str, variables: dict[str, Any]) -> dict[str, Any]:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert "errors" not in body, body
            payload: dict[str, Any] = next(iter(body["data"].values()))
            assert payload["userErrors"] == [], payload
            return payload

        yield gql


async def place_order(gql: Gql) -> str:
    payload = await gql(
        factories.PLACE_ORDER, {"input": factories.place_order_input([("SKU-1", 1)])}
    )
    order_id: str = payload["order"]["id"]
    return order_id


async def run_lifecycle(gql: Gql, order_id: str) -> None:
    for name in ("confirmOrder", "startProcessing", "cancelOrder"):
        await gql(TRANSITIONS[name], {"id": order_id})


async def stored_sequences(db: Database) -> list[int]:
    return [e.sequence for e, _ in await events_after(db, 0, EventFilterArgs(), limit=100_000)]


async def receive_until(op: Operation, last: int) -> list[int]:
    """Sequences from ``op`` up to and including ``last``: a gap, a duplicate or a wrong
    order shows up before it."""
    received: list[int] = []
    while not received or received[-1] < last:
        received.append((await op.next_data())["orderEvents"]["sequence"])
    return received


async def subscribe_from_start(ws: Any, gql: Gql) -> tuple[Operation, str]:
    """Subscribe from the very beginning of the (empty) log and wait for a first event, so
    the subscription is known to be in place before the test goes on."""
    op = await ws.subscribe(ORDER_EVENTS, {"after": event_cursor(0)})
    first_order = await place_order(gql)
    first = (await op.next_data())["orderEvents"]
    assert (first["sequence"], first["order"]["id"]) == (1, first_order)
    return op, first_order


async def test_events_of_mutations_on_one_server_reach_a_subscriber_on_another(
    servers: list[Server],
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    db: Database,
    admin_key: str,
) -> None:
    a = await start(servers, pg_url, redis_url, tmp_path)
    b = await start(servers, pg_url, redis_url, tmp_path)
    async with (
        graphql_http(a, admin_key) as gql_a,
        connect_graphql(b.ws_url, authorization=f"Bearer {admin_key}") as ws,
    ):
        op, _ = await subscribe_from_start(ws, gql_a)
        orders = [await place_order(gql_a) for _ in range(3)]
        # Concurrent transactions on A: commit order decides the sequence, B must follow it.
        await asyncio.wait_for(asyncio.gather(*(run_lifecycle(gql_a, o) for o in orders)), TIMEOUT)
        stored = await stored_sequences(db)
        received = [1, *await receive_until(op, stored[-1])]
        sentinel = await place_order(gql_a)
        after_all = (await op.next_data())["orderEvents"]
    # Delivered over a steady connection, not by catching up after reconnects.
    for server in (a, b):
        status, body = await readiness(server)
        assert (status, body["checks"]["broadcastReconnects"]) == (200, 0), body

    assert stored == list(range(1, 1 + 1 + 3 + 3 * 3))
    assert received == stored
    assert (after_all["sequence"], after_all["order"]["id"]) == (stored[-1] + 1, sentinel)


@pytest.mark.parametrize("recovery", ["another-process-starts", "periodic-sweep"])
async def test_event_committed_but_never_announced_still_reaches_subscribers(
    servers: list[Server],
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    db: Database,
    admin_key: str,
    recovery: str,
) -> None:
    sweep = 1 if recovery == "periodic-sweep" else 3600
    a = await start(servers, pg_url, redis_url, tmp_path, sweep)
    b = await start(servers, pg_url, redis_url, tmp_path, sweep)
    async with (
        graphql_http(a, admin_key) as gql_a,
        connect_graphql(b.ws_url, authorization=f"Bearer {admin_key}") as ws,
    ):
        op, order_id = await subscribe_from_start(ws, gql_a)
        # Announced at once, marked published within MARK_INTERVAL_SECONDS.
        await wait_until_published(db, [True])
        # The crash: committed, then the writer dies before announcing it.
        writer = Principal.system("crashed-writer")
        await confirm_order(db, decode_id(order_id, "Order", ["id"]), writer)
        assert await published_at(db) == [True, False]
        if recovery == "another-process-starts":
            await start(servers, pg_url, redis_url, tmp_path, sweep)
        event = (await op.next_data())["orderEvents"]
        assert (event["sequence"], event["type"]) == (2, "CONFIRMED")
        # The relay announces first and marks the row published right after, so the
        # subscriber can see the event a moment before published_at is written.
        await wait_until_published(db, [True, True])
        # Still live afterwards, and nothing was delivered twice.
        await gql_a(TRANSITIONS["startProcessing"], {"id": order_id})
        after = (await op.next_data())["orderEvents"]
        assert (after["sequence"], after["type"]) == (3, "PROCESSING_STARTED")


async def wait_until_published(db: Database, expected: list[bool]) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT  # hang protection only
    while (seen := await published_at(db)) != expected:
        assert asyncio.get_running_loop().time() < deadline, seen
        await asyncio.sleep(0.05)


async def published_at(db: Database) -> list[bool]:
    async with db.reader() as s:
        rows = await s.execute(select(OrderEventRow.published_at).order_by(OrderEventRow.sequence))
        return [value is not None for value in rows.scalars()]


async def readiness(server: Server) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(trust_env=False, timeout=TIMEOUT) as http:
        response = await http.get(f"{server.url}/readyz")
        body: dict[str, Any] = response.json()
        return response.status_code, body


async def test_redis_drop_reconnects_and_loses_no_event(
    servers: list[Server],
    pg_url: str,
    redis_url: str,
    tmp_path: Path,
    db: Database,
    admin_key: str,
) -> None:
    a = await start(servers, pg_url, redis_url, tmp_path)
    b = await start(servers, pg_url, redis_url, tmp_path)
    status, body = await readiness(b)
    assert status == 200, body
    reconnects = body["checks"]["broadcastReconnects"]

    async with (
        graphql_http(a, admin_key) as gql_a,
        connect_graphql(b.ws_url, authorization=f"Bearer {admin_key}") as ws,
    ):
        op, _ = await subscribe_from_start(ws, gql_a)
        orders = [await place_order(gql_a) for _ in range(4)]
        async with redis.from_url(redis_url) as r:
            killed = await r.client_kill_filter(_type="pubsub")
        assert killed >= 2  # at least A's and B's subscriptions
        # Writes during the outage...
        await run_lifecycle(gql_a, orders[0])
        await run_lifecycle(gql_a, orders[1])

        # ... B notices the drop, reconnects and is ready again.
        seen_unready = False
        async with asyncio.timeout(TIMEOUT):
            while True:
                status, body = await readiness(b)
                seen_unready = seen_unready or status != 200
                recovered = seen_unready or body["checks"]["broadcastReconnects"] > reconnects
                if status == 200 and recovered:
                    break
                await asyncio.sleep(0.1)
        # ... and writes after it.
        await run_lifecycle(gql_a, orders[2])
        await run_lifecycle(gql_a, orders[3])

        stored = await stored_sequences(db)
        received = [1, *await receive_until(op, stored[-1])]
        sentinel = await place_order(gql_a)
        after_all = (await op.next_data())["orderEvents"]

    assert stored == list(range(1, 1 + 1 + 4 + 4 * 3))
    assert received == stored
    assert (after_all["sequence"], after_all["order"]["id"]) == (stored[-1] + 1, sentinel)
