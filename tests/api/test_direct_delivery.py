"""Direct delivery (app/fanout.py): the hub writes live events to idle subscribers' sockets
itself. Against a real uvicorn server: the payloads are the ones the ordinary path sends, a
socket that backs up neither blocks other subscribers nor loses or reorders its own events,
and a result with errors goes the ordinary way (masked, reported)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

from app import fanout
from app.broadcast import HubStatus
from app.loaders import Loaders
from app.settings import Settings
from db.database import Database
from resolvers.events import last_sequence
from resolvers.orders import confirm_order
from tests.api.test_subscriptions import (
    ACTOR,
    ORDER_EVENTS,
    admin_key,
    gid,
    new_order,
    seed_catalog,
    sequences,
    serve,
    stored_sequences,
    throttle_server_sockets,
    wait_until,
)
from tests.wsclient import LEGACY_WS, TRANSPORT_WS, connect_graphql

OTHER = "subscription { orderEvents { sequence order { number total { amount } } } }"


def counts(status: HubStatus) -> tuple[int, int]:
    """(direct, queued) deliveries so far."""
    return status.delivered_direct, status.delivered_queued


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, debug=False, outbox_sweep_seconds=3600.0)


async def test_direct_and_ordinary_paths_send_the_same_payloads(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    framed: list[str] = []
    real_write = fanout.write_text_frame

    def write(connection: Any, text: str) -> bool:
        framed.append(text)
        return real_write(connection, text)

    monkeypatch.setattr(fanout, "write_text_frame", write)
    async with serve(settings) as live:
        await seed_catalog(live.db)
        orders = [await new_order(live.db) for _ in range(3)]
        admin = await admin_key(live)
        auth = admin.authorization
        async with (
            connect_graphql(live.ws_url, TRANSPORT_WS, authorization=auth) as direct,
            connect_graphql(live.ws_url, TRANSPORT_WS, authorization=auth) as other,
            connect_graphql(live.ws_url, LEGACY_WS, authorization=auth) as legacy,
        ):
            ops = [
                await direct.subscribe(ORDER_EVENTS),
                await other.subscribe(OTHER),
                await legacy.subscribe(ORDER_EVENTS),  # the legacy protocol: ordinary path
            ]
            hub = live.services.hub
            await wait_until(lambda: hub.describe().subscribers == 3)
            received: list[list[dict[str, Any]]] = [[], [], []]
            for order in orders:
                await confirm_order(live.db, order.id, ACTOR)
                for op, into in zip(ops, received, strict=True):
                    into.append((await op.next_data())["orderEvents"])
            status = counts(hub.describe())

    assert received[0] == received[2]  # the same document: the same payloads
    assert [e["order"]["id"] for e in received[0]] == [gid(o) for o in orders]
    assert {e["type"] for e in received[0]} == {"CONFIRMED"}
    assert [e["sequence"] for e in received[1]] == sequences(received[0])
    assert {e["order"]["total"]["amount"] for e in received[1]} == {"15.00"}
    # Every live event: written directly to both graphql-transport-ws subscribers, queued
    # for the legacy one.
    assert status == (2 * len(orders), len(orders))
    # uvicorn's connections take frames written by the hub itself.
    assert len(framed) == 2 * len(orders)


async def test_a_socket_that_backs_up_delays_only_its_own_events_and_keeps_their_order(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ordergraph.broadcast")
    count = 60
    async with serve(settings) as live:
        await seed_catalog(live.db)
        before = await last_sequence(live.db)
        admin = await admin_key(live)
        auth = admin.authorization
        silent = Database(settings.database_url)  # commits now, announced later at once
        try:
            async with (
                connect_graphql(
                    live.ws_url, authorization=auth, max_queue=1, receive_buffer=1024
                ) as slow,
                connect_graphql(live.ws_url, authorization=auth) as fast,
            ):
                slow_op = await slow.subscribe(ORDER_EVENTS)
                fast_op = await fast.subscribe(ORDER_EVENTS)
                hub = live.services.hub
                await wait_until(lambda: hub.describe().subscribers == 2)
                throttle_server_sockets(live, 1024)
                slow.pause()
                for _ in range(count):
                    await new_order(silent)
                assert await live.services.relay.publish_unpublished() == count
                # The reading subscriber gets everything while the other is still stalled.
                fast_events = [(await fast_op.next_data())["orderEvents"] for _ in range(count)]
                stalled = counts(hub.describe())
                slow.resume()
                slow_events = [(await slow_op.next_data())["orderEvents"] for _ in range(count)]
                sentinel = await new_order(live.db)
                last_slow = (await slow_op.next_data())["orderEvents"]
        finally:
            await silent.dispose()
        stored = await stored_sequences(live.db, before)

    expected = list(range(before + 1, before + count + 1))
    assert sequences(fast_events) == sequences(slow_events) == expected == stored[:count]
    assert fast_events == slow_events
    assert last_slow["order"]["id"] == gid(sentinel)
    # The slow socket took both paths: direct writes until it backed up, then its queue
    # (behind the write still waiting for the socket); its queue never overflowed.
    direct, queued = stalled
    assert queued > 0
    assert direct > count
    assert "overflowed" not in caplog.text


async def test_an_event_whose_result_has_errors_takes_the_ordinary_path(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    class Failing(Loaders):
        @property
        def order_by_id(self) -> Any:
            raise RuntimeError("database on fire")

    async with serve(settings) as live:
        await seed_catalog(live.db)
        first, second = await new_order(live.db), await new_order(live.db)
        admin = await admin_key(live)
        hub = live.services.hub
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            op = await ws.subscribe(ORDER_EVENTS)
            await wait_until(lambda: hub.describe().subscribers == 1)
            hub._loaders_factory = Failing
            with caplog.at_level(logging.ERROR, logger="ordergraph.http"):
                await confirm_order(live.db, first.id, ACTOR)
                failed = await op.next_result()
            after_failure = counts(hub.describe())
            hub._loaders_factory = Loaders
            await confirm_order(live.db, second.id, ACTOR)
            recovered = (await op.next_data())["orderEvents"]
            status = counts(hub.describe())

    # Masked and reported (logged with the request id) as any unexpected error is.
    assert failed["data"] is None
    [error] = failed["errors"]
    assert error["message"] == "Internal error."
    assert error["extensions"]["code"] == "INTERNAL_SERVER_ERROR"
    assert error["extensions"]["requestId"] in caplog.text
    assert "database on fire" in caplog.text
    assert after_failure == (0, 1)
    # The subscriber is idle again afterwards: the next event goes directly.
    assert recovered["order"]["id"] == gid(second)
    assert status == (1, 1)


async def test_a_result_that_cannot_be_encoded_directly_goes_the_ordinary_way(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(_sink: Any, _data: Any) -> str:
        raise TypeError("not JSON")

    monkeypatch.setattr(fanout.DirectSink, "encode", refuse)
    async with serve(settings) as live:
        await seed_catalog(live.db)
        order = await new_order(live.db)
        admin = await admin_key(live)
        hub = live.services.hub
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            op = await ws.subscribe(ORDER_EVENTS)
            await wait_until(lambda: hub.describe().subscribers == 1)
            await confirm_order(live.db, order.id, ACTOR)
            event = (await op.next_data())["orderEvents"]
            status = counts(hub.describe())

    assert (event["type"], event["order"]["id"]) == ("CONFIRMED", gid(order))
    assert status == (0, 1)
