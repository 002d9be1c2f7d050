"""Live order events over real WebSockets, against the app served in-process by uvicorn.

Both subprotocols (graphql-transport-ws and the legacy graphql-ws), replay by cursor with
live events arriving at the seam, filters, errors on the socket, a slow subscriber that
overflows its bounded queue, and the outbox publishing events whose announcement was lost.
Every stream is checked against the event log itself: the sequences a subscriber receives
must be exactly the stored ones, contiguous, with nothing missing and nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from starlette.applications import Starlette

from app.main import Services, create_app
from app.settings import Settings
from app.wsprotocol import WS_PROTOCOL
from db.database import Database
from db.models import OrderEvent as OrderEventRow
from domain.access import Role
from resolvers.access import create_api_key
from resolvers.events import EventFilterArgs, events_after, last_sequence
from resolvers.orders import cancel_order, confirm_order, start_processing
from schema.common import to_global_id
from schema.orders import event_cursor
from tests import factories
from tests.wsclient import PROTOCOLS, Operation, connect_graphql

TIMEOUT = 20.0  # hang protection only, never a performance assertion
ACTOR = factories.ACTOR

EVENT_FIELDS = "sequence cursor type fromStatus toStatus actor actorRole order { id }"
STATUS_CHANGED = f"""
subscription Status($orderId: ID!, $after: String) {{
  orderStatusChanged(orderId: $orderId, after: $after) {{ {EVENT_FIELDS} }}
}}"""
ORDER_EVENTS = f"""
subscription Events($filter: OrderEventFilter, $after: String) {{
  orderEvents(filter: $filter, after: $after) {{ {EVENT_FIELDS} }}
}}"""
CONFIRM = """
mutation ($id: ID!) {
  confirmOrder(input: {orderId: $id}) { order { status } userErrors { code message } }
}"""
START_PROCESSING = """
mutation ($id: ID!) {
  startProcessing(input: {orderId: $id}) { order { status } userErrors { code message } }
}"""
CANCEL = """
mutation ($id: ID!) {
  cancelOrder(input: {orderId: $id, reason: "changed my mind"}) {
    order { status } userErrors { code message }
  }
}"""


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Unclosed connections warn when collected: collect now, so the warning fails the test
    that leaked them rather than whichever test runs next."""
    yield
    gc.collect()


# -- the server -------------------------------------------------------------------------


@pytest.fixture(params=["direct", "queued"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test here runs on both delivery paths: live events written to idle subscribers
    by the hub itself (the default, see app/fanout.py), and handed to each subscriber's own
    task (what debug mode does, since its results carry per-result extensions)."""
    return dataclasses.replace(settings, debug=request.param == "queued")


@dataclass
class LiveApp:
    app: Starlette
    port: int
    server: uvicorn.Server

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    @property
    def db(self) -> Database:
        return self.services.db

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/graphql"


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[LiveApp]:
    """``create_app(settings)`` under a real uvicorn server on a free port, in this loop."""
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        ws=WS_PROTOCOL,  # what `ordergraph serve` runs
        ws_per_message_deflate=False,
        proxy_headers=False,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(TIMEOUT):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("the server stopped during startup")
                await asyncio.sleep(0.02)
        yield LiveApp(app, port, server)
    finally:
        server.should_exit = True
        with contextlib.suppress(SystemExit):
            await asyncio.wait_for(task, TIMEOUT)
        sock.close()


@dataclass(frozen=True)
class Credential:
    """An API key in the live app's database."""

    key: str
    principal_id: str  # what events record as their actor: ``api-key:<id>``

    @property
    def authorization(self) -> str:
        return f"Bearer {self.key}"


async def admin_key(live: LiveApp) -> Credential:
    """A new ADMIN key: anonymous connections may subscribe to nothing."""
    created = await create_api_key(live.db, "subscriptions test", Role.ADMIN)
    return Credential(created.key, f"api-key:{created.record.id}")


@contextlib.asynccontextmanager
async def http_client(
    live: LiveApp, credential: Credential
) -> AsyncIterator[Callable[..., Awaitable[dict[str, Any]]]]:
    async with httpx.AsyncClient(
        base_url=live.url,
        trust_env=False,
        timeout=TIMEOUT,
        headers={"Authorization": credential.authorization},
    ) as http:

        async def gql(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
            response = await http.post("/graphql", json={"query": query, "variables": variables})
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            assert "errors" not in body, body
            return body

        yield gql


# -- data -------------------------------------------------------------------------------


async def seed_catalog(db: Database) -> None:
    await factories.warehouse(db)
    await factories.product(db, "SKU-1")
    await factories.stock(db, "SKU-1", "MAIN", 1_000)


async def new_order(db: Database) -> Any:
    return await factories.order(db, [("SKU-1", 1)])


def gid(order: Any) -> str:
    return str(to_global_id("Order", order.id))


async def stored_sequences(
    db: Database, after: int = 0, f: EventFilterArgs | None = None
) -> list[int]:
    rows = await events_after(db, after, f or EventFilterArgs(), limit=100_000)
    return [event.sequence for event, _ in rows]


async def receive_until(op: Operation, field: str, last: int) -> list[dict[str, Any]]:
    """Events from ``op`` until (and including) the one with sequence ``last``. Anything
    delivered out of order or twice shows up before it, since delivery is in order."""
    events: list[dict[str, Any]] = []
    while not events or events[-1]["sequence"] < last:
        events.append((await op.next_data())[field])
    return events


async def wait_until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - polls state that has no event to await
            await asyncio.sleep(0.01)


def sequences(events: list[dict[str, Any]]) -> list[int]:
    return [e["sequence"] for e in events]


# -- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_order_status_changed_delivers_each_transition_in_order(
    settings: Settings, protocol: Any
) -> None:
    async with serve(settings) as live:
        admin = await admin_key(live)
        await seed_catalog(live.db)
        before = await last_sequence(live.db)
        order = await new_order(live.db)
        async with (
            http_client(live, admin) as gql,
            connect_graphql(live.ws_url, protocol, authorization=admin.authorization) as ws,
        ):
            op = await ws.subscribe(
                STATUS_CHANGED, {"orderId": gid(order), "after": event_cursor(before)}
            )
            received = [(await op.next_data())["orderStatusChanged"]]  # PLACED, replayed
            for mutation, status in [
                (CONFIRM, "CONFIRMED"),
                (START_PROCESSING, "PROCESSING"),
                (CANCEL, "CANCELLED"),
            ]:
                body = await gql(mutation, {"id": gid(order)})
                payload = next(iter(body["data"].values()))
                assert payload == {"order": {"status": status}, "userErrors": []}
                # Each one arrives live, before the next mutation is sent.
                received.append((await op.next_data())["orderStatusChanged"])
            await op.stop()
        stored = await stored_sequences(live.db, before)

    assert [(e["type"], e["fromStatus"], e["toStatus"]) for e in received] == [
        ("PLACED", None, "PENDING"),
        ("CONFIRMED", "PENDING", "CONFIRMED"),
        ("PROCESSING_STARTED", "CONFIRMED", "PROCESSING"),
        ("CANCELLED", "PROCESSING", "CANCELLED"),
    ]
    assert sequences(received) == stored
    assert [e["cursor"] for e in received] == [event_cursor(e["sequence"]) for e in received]
    assert {e["order"]["id"] for e in received} == {gid(order)}
    # Placed by the factories (the system), moved on through the API with the admin key.
    assert [e["actor"] for e in received] == [ACTOR.id] + [admin.principal_id] * 3
    assert [e["actorRole"] for e in received] == ["ADMIN"] * 4
    # Each live event found the subscriber idle: on graphql-transport-ws (unless debug
    # results carry extensions), the hub wrote them itself.
    direct = protocol == PROTOCOLS[0] and not settings.debug
    assert live.services.hub.describe().delivered_direct == (3 if direct else 0)


async def test_order_events_after_cursor_replays_then_goes_live_without_gap_or_duplicate(
    settings: Settings,
) -> None:
    async with serve(settings) as live:
        db = live.db
        await seed_catalog(db)
        early = [await new_order(db) for _ in range(3)]
        for order in early:
            await confirm_order(db, order.id, ACTOR)
        cursor = (await stored_sequences(db))[1]  # an early event: several come after it
        pending = [await new_order(db) for _ in range(6)]
        some_written = asyncio.Event()

        async def writer() -> None:
            # Keeps committing while the subscriber replays and switches to live events.
            count = 0
            for order in pending:
                for step in (confirm_order, start_processing):
                    await step(db, order.id, ACTOR)
                    count += 1
                    if count == 3:
                        some_written.set()
                    await asyncio.sleep(0)
                await cancel_order(db, order.id, "no longer needed", ACTOR)

        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            writing = asyncio.create_task(writer())
            try:
                await asyncio.wait_for(some_written.wait(), TIMEOUT)
                op = await ws.subscribe(ORDER_EVENTS, {"after": event_cursor(cursor)})
                await asyncio.wait_for(writing, TIMEOUT)
            finally:
                writing.cancel()
            expected = await stored_sequences(db, cursor)
            received = await receive_until(op, "orderEvents", expected[-1])
            # One more event, written after everything: it must be the very next message.
            sentinel = await new_order(db)
            after_all = (await op.next_data())["orderEvents"]

    assert expected == list(range(cursor + 1, cursor + 1 + len(expected)))  # dense log
    # After the cursor: 4 early events, 6 orders placed, then 3 transitions each by the writer.
    assert len(expected) == 4 + 6 + 6 * 3
    assert sequences(received) == expected
    assert after_all["sequence"] == expected[-1] + 1
    assert after_all["order"]["id"] == gid(sentinel)


async def test_order_events_filter_delivers_only_matching_events(settings: Settings) -> None:
    async with serve(settings) as live:
        db = live.db
        await seed_catalog(db)
        o1, o2, o3 = [await new_order(db) for _ in range(3)]
        filters = {
            "to_cancelled": {"toStatus": ["CANCELLED"]},
            "confirm_or_cancel": {"type": ["CONFIRMED", "CANCELLED"]},
            "order_2": {"orderId": [gid(o2)]},
        }
        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            ops = {
                name: await ws.subscribe(ORDER_EVENTS, {"filter": f}) for name, f in filters.items()
            }
            await confirm_order(db, o1.id, ACTOR)
            await confirm_order(db, o2.id, ACTOR)
            await start_processing(db, o1.id, ACTOR)
            await cancel_order(db, o3.id, "out of stock", ACTOR)
            await cancel_order(db, o1.id, "customer asked", ACTOR)
            await start_processing(db, o2.id, ACTOR)
            # The last event matches every filter, so each stream ends with it.
            last = (await cancel_order(db, o2.id, "customer asked", ACTOR)).id
            final = (await stored_sequences(db))[-1]
            received = {
                name: await receive_until(op, "orderEvents", final) for name, op in ops.items()
            }
            assert last == o2.id

    def summary(events: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
        names = {gid(o1): "o1", gid(o2): "o2", gid(o3): "o3"}
        return [(names[e["order"]["id"]], e["type"], e["toStatus"]) for e in events]

    assert summary(received["to_cancelled"]) == [
        ("o3", "CANCELLED", "CANCELLED"),
        ("o1", "CANCELLED", "CANCELLED"),
        ("o2", "CANCELLED", "CANCELLED"),
    ]
    assert summary(received["confirm_or_cancel"]) == [
        ("o1", "CONFIRMED", "CONFIRMED"),
        ("o2", "CONFIRMED", "CONFIRMED"),
        ("o3", "CANCELLED", "CANCELLED"),
        ("o1", "CANCELLED", "CANCELLED"),
        ("o2", "CANCELLED", "CANCELLED"),
    ]
    assert summary(received["order_2"]) == [
        ("o2", "CONFIRMED", "CONFIRMED"),
        ("o2", "PROCESSING_STARTED", "PROCESSING"),
        ("o2", "CANCELLED", "CANCELLED"),
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscription_bad_arguments_answer_errors_on_the_socket(
    settings: Settings, protocol: Any
) -> None:
    async with serve(settings) as live:
        await seed_catalog(live.db)
        order = await new_order(live.db)
        cases = [
            (
                STATUS_CHANGED,
                {"orderId": gid(order), "after": "not-a-cursor"},
                "`after` is not a valid event cursor.",
            ),
            (
                STATUS_CHANGED,
                {"orderId": str(to_global_id("Order", 987_654))},
                "No order with this id.",
            ),
            (STATUS_CHANGED, {"orderId": "garbage"}, "Argument `orderId`"),
            (
                ORDER_EVENTS,
                {"after": event_cursor(1)[:-2] + "!!"},
                "`after` is not a valid event cursor.",
            ),
        ]
        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, protocol, authorization=admin.authorization) as ws:
            for query, variables, message in cases:
                op = await ws.subscribe(query, variables)
                first = await op.receive()
                errors = first.payload if first.kind == "error" else first.payload["errors"]
                assert any(message in e["message"] for e in errors), (first, message)
                if first.kind == "next":
                    assert first.payload.get("data") is None
                    assert (await op.receive()).kind == "complete"
            # The connection survived: a good subscription on it still works. (From the
            # PLACED event's cursor: the confirmation may commit before the subscription is
            # registered, and must not be missed then either.)
            op = await ws.subscribe(
                STATUS_CHANGED, {"orderId": gid(order), "after": event_cursor(1)}
            )
            await confirm_order(live.db, order.id, ACTOR)
            event = (await op.next_data())["orderStatusChanged"]
            assert (event["type"], event["toStatus"]) == ("CONFIRMED", "CONFIRMED")


def throttle_server_sockets(live: LiveApp, size: int) -> None:
    """Make the server's side of every open connection back up after about ``size`` bytes:
    a small kernel send buffer, and the transport pausing its writers above ``size``."""
    for connection in live.server.server_state.connections:
        transport = connection.transport
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        transport.set_write_buffer_limits(high=size)


async def test_slow_subscriber_overflows_its_queue_and_resynchronises_from_the_log(
    settings: Settings, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ordergraph.broadcast")
    settings = dataclasses.replace(settings, subscriber_queue_size=10, outbox_sweep_seconds=3600.0)
    async with serve(settings) as live:
        await seed_catalog(live.db)
        before = await last_sequence(live.db)
        # A writer whose commits are announced later, all at once: the hub then reads 50
        # events in one batch and fans them out faster than any consumer can take them.
        admin = await admin_key(live)
        silent = Database(settings.database_url)
        try:
            async with connect_graphql(
                live.ws_url, authorization=admin.authorization, max_queue=1, receive_buffer=1024
            ) as ws:
                op = await ws.subscribe(ORDER_EVENTS)
                await wait_until(lambda: live.services.hub.describe().subscribers == 1)
                # Direct writes go to the socket until it backs up (then the subscriber
                # waits for it to drain, and later events queue behind): let it back up soon.
                throttle_server_sockets(live, 1024)
                ws.pause()  # stop reading the socket
                for _ in range(50):
                    await new_order(silent)
                assert await live.services.relay.publish_unpublished() == 50
                await wait_until(lambda: "slow subscriber overflowed" in caplog.text)
                ws.resume()
                received = [(await op.next_data())["orderEvents"] for _ in range(50)]
                sentinel = await new_order(live.db)
                after_all = (await op.next_data())["orderEvents"]
        finally:
            await silent.dispose()
        stored = await stored_sequences(live.db, before)

    assert sequences(received) == list(range(before + 1, before + 51))
    assert sequences(received) == stored[:50]
    assert after_all["order"]["id"] == gid(sentinel)
    assert after_all["sequence"] == before + 51
    assert "slow subscriber overflowed" in caplog.text  # the resync path really ran
    if not settings.debug:
        # Some went out directly before the socket backed up.
        assert live.services.hub.describe().delivered_direct > 0


async def _published_at(db_url: str) -> list[Any]:
    db = Database(db_url)
    try:
        async with db.reader() as s:
            rows = await s.execute(
                select(OrderEventRow.published_at).order_by(OrderEventRow.sequence)
            )
            return list(rows.scalars())
    finally:
        await db.dispose()


async def test_outbox_publishes_events_committed_before_a_crash_at_start(
    settings: Settings,
) -> None:
    # The crash: events committed, the process gone before announcing them.
    crashed = Database(settings.database_url)
    try:
        await seed_catalog(crashed)
        order = await new_order(crashed)
        await confirm_order(crashed, order.id, ACTOR)
        unannounced = await stored_sequences(crashed)
    finally:
        await crashed.dispose()
    assert await _published_at(settings.database_url) == [None, None]

    settings = dataclasses.replace(settings, outbox_sweep_seconds=3600.0)
    async with serve(settings) as live:
        # Starting published them (no sweep can have run yet) ...
        assert None not in await _published_at(settings.database_url)
        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            # ... and a client resuming from before them gets them, then live ones.
            op = await ws.subscribe(
                STATUS_CHANGED, {"orderId": gid(order), "after": event_cursor(0)}
            )
            replayed = [(await op.next_data())["orderStatusChanged"] for _ in unannounced]
            await start_processing(live.db, order.id, ACTOR)
            live_event = (await op.next_data())["orderStatusChanged"]

    assert sequences(replayed) == unannounced == [1, 2]
    assert [e["type"] for e in replayed] == ["PLACED", "CONFIRMED"]
    assert (live_event["sequence"], live_event["type"]) == (3, "PROCESSING_STARTED")


async def test_outbox_sweep_delivers_an_unannounced_event_to_a_live_subscriber(
    settings: Settings,
) -> None:
    assert settings.outbox_sweep_seconds == 1.0
    async with serve(settings) as live:
        await seed_catalog(live.db)
        order = await new_order(live.db)
        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            op = await ws.subscribe(STATUS_CHANGED, {"orderId": gid(order)})
            crashed = Database(settings.database_url)  # commits, never announces
            try:
                await confirm_order(crashed, order.id, ACTOR)
            finally:
                await crashed.dispose()
            assert (await _published_at(settings.database_url))[-1] is None
            event = (await op.next_data())["orderStatusChanged"]  # found by the sweep
        assert (event["sequence"], event["type"]) == (2, "CONFIRMED")
        # The sweep marks what it announced right after announcing it: the subscriber can
        # have the event first.
        async with asyncio.timeout(TIMEOUT):
            while None in await _published_at(settings.database_url):  # noqa: ASYNC110 - polls the database
                await asyncio.sleep(0.01)
