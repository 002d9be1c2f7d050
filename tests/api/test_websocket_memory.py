"""What an idle subscriber's connection holds on the server, against a real uvicorn server:
the connection and its executor keep their attributes in slots (no instance dictionaries),
and the connection's task reaches the GraphQL view without Starlette's middleware and
router (app/main.py ``OrdergraphApp``). The memory itself is measured by the benchmark's
fan-out scenario (bench/README.md)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from graphql import OperationType
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.fanout import SharedEventExecution
from app.settings import Settings
from app.wsprotocol import LeanWebSocketProtocol
from tests.api.test_subscriptions import ORDER_EVENTS, admin_key, serve, wait_until
from tests.wsclient import connect_graphql


def coroutine_chain(task: asyncio.Task[Any]) -> list[str]:
    """The qualified names of the coroutines and async generators ``task`` is suspended in,
    outermost first."""
    names: list[str] = []
    current: Any = task.get_coro()
    while current is not None:
        name = getattr(current, "__qualname__", None)
        if name is not None:
            names.append(name)
        current = (
            getattr(current, "cr_await", None)
            or getattr(current, "ag_await", None)
            or getattr(current, "gi_yieldfrom", None)
        )
    return names


def _runs_for(task: asyncio.Task[Any], connection: Any) -> bool:
    """Whether ``task`` runs a method of ``connection`` (uvicorn's ``run_asgi``)."""
    frame = getattr(task.get_coro(), "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is connection


def subscription_executors() -> list[SharedEventExecution]:
    return [
        o
        for o in gc.get_objects()
        if isinstance(o, SharedEventExecution)
        and o.operation.operation is OperationType.SUBSCRIPTION
    ]


@contextlib.asynccontextmanager
async def idle_subscriber(settings: Settings) -> AsyncIterator[Any]:
    """A live server with one subscribed connection; yields the server's side of it."""
    async with serve(settings) as live:
        admin = await admin_key(live)
        async with connect_graphql(live.ws_url, authorization=admin.authorization) as client:
            await client.subscribe(ORDER_EVENTS)
            hub = live.services.hub
            await wait_until(lambda: hub.describe().subscribers == 1)
            (connection,) = live.server.server_state.connections
            yield connection


async def test_an_idle_subscriber_keeps_no_instance_dictionaries(settings: Settings) -> None:
    async with idle_subscriber(settings) as connection:
        assert isinstance(connection, LeanWebSocketProtocol)
        # Every attribute uvicorn set went to a slot (a new one would show up here).
        assert vars(connection) == {}
        assert connection.scope["path"] == "/graphql"

        executors = subscription_executors()
        assert len(executors) == 1
        assert vars(executors[0]) == {}


async def test_a_subscribers_task_reaches_the_view_without_starlettes_stack(
    settings: Settings,
) -> None:
    async with idle_subscriber(settings) as connection:
        chains = [
            coroutine_chain(task) for task in asyncio.all_tasks() if _runs_for(task, connection)
        ]
        assert len(chains) == 1
        chain = chains[0]
        assert chain[:2] == ["WebSocketsSansIOProtocol.run_asgi", "OrdergraphApp.__call__"]
        assert "GraphQLView.__call__" in chain
        starlette = [
            n
            for n in chain
            if "Middleware" in n
            or "wrap_app_handling_exceptions" in n
            or n.startswith(("Starlette.", "Router.", "WebSocketRoute."))
        ]
        assert starlette == []


async def test_other_websocket_paths_still_go_through_starlettes_router(
    settings: Settings,
) -> None:
    async with serve(settings) as live:
        url = live.ws_url.replace("/graphql", "/graphql/other")
        # No route: Starlette's router refuses the handshake (or closes right after it).
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            async with connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
                await ws.recv()
