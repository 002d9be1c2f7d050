"""A small GraphQL-over-WebSocket client for tests, speaking both subprotocols.

* ``graphql-transport-ws``: connection_init/connection_ack, subscribe/next/error/complete,
  ping/pong (answered automatically).
* ``graphql-ws`` (legacy): connection_init/connection_ack, start/data/error/stop/complete,
  ka (ignored).

One reader task dispatches incoming messages to per-operation queues, so one connection can
carry several subscriptions. ``pause()`` stops reading the socket (a slow client: the
server's writes back up through the TCP buffers); ``resume()`` reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

TRANSPORT_WS: Final = "graphql-transport-ws"
LEGACY_WS: Final = "graphql-ws"
PROTOCOLS: Final = (TRANSPORT_WS, LEGACY_WS)
TIMEOUT = 20.0  # hang protection only

Protocol = Literal["graphql-transport-ws", "graphql-ws"]
Kind = Literal["next", "error", "complete"]


@dataclass(frozen=True)
class Message:
    """One message for one operation: ``next`` (payload is an execution result with
    ``data``/``errors``), ``error`` (payload is a list of errors) or ``complete``."""

    kind: Kind
    payload: Any = None


class ProtocolError(AssertionError):
    pass


@dataclass
class Operation:
    client: GraphQLWebSocket
    id: str
    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)

    async def receive(self, within: float = TIMEOUT) -> Message:
        getter = asyncio.ensure_future(self.queue.get())
        reader = self.client.reader
        done, _ = await asyncio.wait(
            {getter, reader}, timeout=within, return_when=asyncio.FIRST_COMPLETED
        )
        if getter in done:
            return getter.result()
        getter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await getter
        if reader in done:
            # The socket closed (or the reader failed): say so instead of hanging.
            reader.result()
            raise ProtocolError(
                f"connection closed while waiting on operation {self.id}: "
                f"{self.client.close_reason()}"
            )
        raise TimeoutError(f"no message for operation {self.id} within {within}s")

    async def next_result(self, within: float = TIMEOUT) -> dict[str, Any]:
        """The next execution result; fails on ``error`` or ``complete``."""
        message = await self.receive(within)
        if message.kind != "next":
            raise ProtocolError(f"expected a result, got {message}")
        result: dict[str, Any] = message.payload
        return result

    async def next_data(self, within: float = TIMEOUT) -> dict[str, Any]:
        """The ``data`` of the next result; fails if it carries errors."""
        result = await self.next_result(within)
        if result.get("errors"):
            raise ProtocolError(f"unexpected errors: {result['errors']}")
        data: dict[str, Any] = result["data"]
        return data

    async def stop(self) -> None:
        await self.client.stop(self.id)


class GraphQLWebSocket:
    def __init__(self, ws: ClientConnection, protocol: Protocol) -> None:
        self.ws = ws
        self.protocol = protocol
        self._ids = itertools.count(1)
        self._operations: dict[str, Operation] = {}
        self._resumed = asyncio.Event()
        self._resumed.set()
        self.pings = 0
        self.keep_alives = 0
        self._reader: asyncio.Task[None] | None = None
        self._pongs: set[asyncio.Task[None]] = set()

    @property
    def reader(self) -> asyncio.Task[None]:
        assert self._reader is not None, "call init() first"
        return self._reader

    async def init(self, payload: dict[str, Any] | None = None) -> None:
        """The handshake; then one task reads and dispatches every later message."""
        await self.send({"type": "connection_init", "payload": payload or {}})
        while True:
            message = json.loads(await asyncio.wait_for(self.ws.recv(), TIMEOUT))
            if message["type"] == "connection_ack":
                break
            if message["type"] != "ka":
                raise ProtocolError(f"expected connection_ack, got {message}")
        self._reader = asyncio.create_task(self._read())

    async def aclose(self) -> None:
        for task in [self._reader, *self._pongs]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def subscribe(self, query: str, variables: dict[str, Any] | None = None) -> Operation:
        op = Operation(self, str(next(self._ids)))
        self._operations[op.id] = op
        payload = {"query": query, "variables": variables or {}}
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"id": op.id, "type": kind, "payload": payload})
        return op

    async def stop(self, op_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.send({"id": op_id, "type": kind})

    def pause(self) -> None:
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    def close_reason(self) -> str:
        return f"code={self.ws.close_code} reason={self.ws.close_reason!r}"

    async def _read(self) -> None:
        while True:
            await self._resumed.wait()
            try:
                raw = await self.ws.recv()
            except Exception:
                return  # closed: waiters see the reader finish
            self._dispatch(json.loads(raw))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "ping":
            self.pings += 1
            task = asyncio.create_task(self.send({"type": "pong"}))
            self._pongs.add(task)
            task.add_done_callback(self._pongs.discard)
            return
        if kind in {"pong", "ka"}:
            self.keep_alives += 1
            return
        op = self._operations.get(str(message.get("id")))
        if op is None:
            raise ProtocolError(f"message for an unknown operation: {message}")
        if kind in {"next", "data"}:
            op.queue.put_nowait(Message("next", message.get("payload")))
        elif kind == "error":
            op.queue.put_nowait(Message("error", message.get("payload")))
        elif kind == "complete":
            op.queue.put_nowait(Message("complete"))
        else:
            raise ProtocolError(f"unexpected message: {message}")


@contextlib.asynccontextmanager
async def connect_graphql(
    url: str,
    protocol: Protocol = TRANSPORT_WS,
    *,
    init_payload: dict[str, Any] | None = None,
    authorization: str | None = None,
    max_queue: int = 16,
    receive_buffer: int | None = None,
) -> AsyncIterator[GraphQLWebSocket]:
    """Connect, complete the protocol's handshake, yield the client; close on exit.

    ``authorization`` (``"Bearer <key or token>"``) goes into the connection_init payload,
    where the server reads the connection's credentials; without it (and without one in
    ``init_payload``) the connection is anonymous. ``receive_buffer`` sets the socket's
    SO_RCVBUF before it connects (a small one makes a paused client back up sooner)."""
    if authorization is not None:
        init_payload = {**(init_payload or {}), "authorization": authorization}
    extra: dict[str, Any] = {}
    if receive_buffer is not None:
        parts = urlsplit(url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        extra["sock"] = sock
    async with connect(
        url,
        **extra,
        subprotocols=[Subprotocol(protocol)],
        compression=None,
        proxy=None,
        max_queue=max_queue,
        open_timeout=TIMEOUT,
    ) as ws:
        assert ws.subprotocol == protocol, ws.subprotocol
        client = GraphQLWebSocket(ws, protocol)
        try:
            await client.init(init_payload)
            yield client
        finally:
            await client.aclose()
