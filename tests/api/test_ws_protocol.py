"""What a live WebSocket connection keeps, against a real uvicorn server running the
protocol ``ordergraph serve`` runs (app/wsprotocol.py)."""

from __future__ import annotations

import dataclasses
import gc

import pytest

from app.context import Context
from app.settings import Settings
from app.wsprotocol import WS_PROTOCOL, Flag, LeanWebSocketProtocol, ReceiveQueue
from resolvers.orders import confirm_order
from tests.api.test_subscriptions import (
    ACTOR,
    ORDER_EVENTS,
    admin_key,
    new_order,
    seed_catalog,
    serve,
    wait_until,
)
from tests.wsclient import connect_graphql


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return dataclasses.replace(settings, debug=False)


def test_ordergraph_serve_runs_the_lean_protocol(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from app import cli

    seen: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
    assert cli.main(["serve", "--port", "8999"]) == 0
    assert seen["ws"] == WS_PROTOCOL


async def test_a_connection_keeps_neither_the_handshake_nor_the_credential(
    settings: Settings,
) -> None:
    async with serve(settings) as live:
        await seed_catalog(live.db)
        order = await new_order(live.db)
        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as ws:
            op = await ws.subscribe(ORDER_EVENTS)
            hub = live.services.hub
            await wait_until(lambda: hub.describe().subscribers == 1)
            (connection,) = live.server.server_state.connections
            assert isinstance(connection, LeanWebSocketProtocol)
            assert isinstance(connection.queue, ReceiveQueue)
            assert isinstance(connection.writable, Flag)
            # The upgrade request and response are let go, their headers emptied (the
            # parser's frame still refers to the request).
            assert connection.request is None and connection.response is None
            # The connection's context no longer holds the bearer token it was opened with.
            contexts = [o for o in gc.get_objects() if type(o) is Context]  # not proxies
            assert contexts and all(c.connection_params is None for c in contexts)
            # And it still works both ways.
            await confirm_order(live.db, order.id, ACTOR)
            event = (await op.next_data())["orderEvents"]
            assert event["type"] == "CONFIRMED"
