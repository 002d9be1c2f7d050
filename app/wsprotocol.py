"""uvicorn's websockets-sansio WebSocket protocol with less state per connection.

A server holding thousands of idle subscriptions pays for every object each connection
keeps. uvicorn's protocol keeps, for the life of the connection, an ``asyncio.Queue`` for
the messages the application has not received yet (four deques and an ``Event`` with a
fifth: about 3.8 KB measured with tracemalloc), an ``asyncio.Event`` for the transport's
flow control (another deque, 0.8 KB), and the opening handshake's request and response
(their headers parsed into dictionaries; websockets' parser keeps the request in a
generator's frame for as long as the connection lives).

``LeanWebSocketProtocol`` is the same protocol with a one-consumer queue and a flag that
allocate their waiters only while someone waits, and it empties and lets go of the
handshake once the response is sent. Its attributes live in slots: the protocol has more
than CPython shares in an instance dictionary's keys (30), so each connection had a
dictionary of its own (1.6 KB; the slots take 0.3 KB). Everything else (framing,
keepalive, closing, flow control) is uvicorn's.
``ordergraph serve`` runs uvicorn with it (``ws=WS_PROTOCOL``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

#: What ``ordergraph serve`` passes to uvicorn as ``ws``.
WS_PROTOCOL = "app.wsprotocol:LeanWebSocketProtocol"


class ReceiveQueue:
    """The part of ``asyncio.Queue`` uvicorn's protocol uses, for its one consumer (the
    application's ``receive``): unbounded ``put_nowait``, ``get`` and ``empty``."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class Flag:
    """``asyncio.Event`` (``set``, ``clear``, ``is_set``, ``wait``) with its waiters made
    only while there are any."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


#: Every attribute uvicorn's protocol sets (uvicorn 0.55); one it adds later goes to the
#: instance dictionary, as before (tests/api/test_websocket_memory.py notices).
PROTOCOL_ATTRIBUTES = (
    *("config", "app", "loop", "logger", "root_path", "asgi_version", "app_state"),
    *("connections", "tasks", "default_headers", "transport", "server", "client", "scheme"),
    *("queue", "handshake_initiated", "handshake_complete", "close_sent", "disconnected"),
    *("close_timer", "close_timeout", "initial_response", "conn", "read_paused", "writable"),
    *("ping_interval", "ping_timeout", "ping_timer", "pong_timer", "pending_ping_payload"),
    *("ping_sent_at", "last_ping_rtt", "frames", "curr_msg_data_type"),
    *("request", "response", "scope"),
)


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    __slots__ = PROTOCOL_ATTRIBUTES

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()

    def start_keepalive(self) -> None:
        # Called once, right after the handshake's response went out: neither the request
        # nor the response is read again.
        # websockets' parser keeps the request alive in its generator's frame, so empty its
        # headers too (the application reads the scope's copy).
        super().start_keepalive()
        for message in (self.request, self.response):
            if message is not None:
                message.headers.clear()
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
