"""A minimal graphql-transport-ws client on an asyncio Protocol, cheap enough to hold
thousands of subscriptions in one process.

Arrival times are taken when the bytes arrive (``data_received``), before any parsing, and
payloads are kept as bytes: the client does as little as possible while the server fans an
event out, so the measured latency is the server's, not the client's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from typing import Any, cast

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Called for every ``next`` message: (client, arrival time, raw JSON payload).
OnNext = Callable[["SubscriptionClient", float, bytes], None]


class WsError(Exception):
    pass


def encode_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """A single, final, masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        header = bytes([0x80 | opcode, 0x80 | n])
    elif n < 1 << 16:
        header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
    else:
        header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    if n:
        repeated = (mask * (n // 4 + 1))[:n]
        masked = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
            n, "big"
        )
    else:
        masked = b""
    return header + mask + masked


class SubscriptionClient(asyncio.Protocol):
    """One WebSocket connection carrying one subscription (id "1")."""

    def __init__(self, host: str, port: int, authorization: str, on_next: OnNext) -> None:
        self.host = host
        self.port = port
        self.authorization = authorization
        self.on_next = on_next
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._handshaken = False
        self._fragments: list[bytes] = []
        loop = asyncio.get_running_loop()
        self.handshake: asyncio.Future[None] = loop.create_future()
        self.acked: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[str] = loop.create_future()
        self.errors: list[bytes] = []
        self.next_count = 0
        self.index = 0  # set by the caller

    # asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they behave alike.
        self.transport = cast("asyncio.Transport", transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            (
                "GET /graphql HTTP/1.1\r\n"
                f"Host: {self.host}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f"connection lost: {exc}" if exc else "connection closed"
        for future in (self.handshake, self.acked):
            if not future.done():
                future.set_exception(WsError(reason))
        if not self.closed.done():
            self.closed.set_result(reason)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self._buffer += data
        if not self._handshaken:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:end]).split(b"\r\n", 1)[0]
            del self._buffer[: end + 4]
            if b" 101 " not in status + b" ":
                self.handshake.set_exception(WsError(f"handshake refused: {status!r}"))
                self._abort()
                return
            self._handshaken = True
            self.handshake.set_result(None)
        self._frames(now)

    # frames and messages -----------------------------------------------------------------

    def _frames(self, now: float) -> None:
        buf = self._buffer
        while len(buf) >= 2:
            b0, b1 = buf[0], buf[1]
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if b1 & 0x80:  # servers never mask; skip the key if one does
                pos += 4
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            self._frame(b0 & 0x80 != 0, b0 & 0x0F, payload, now)

    def _frame(self, fin: bool, opcode: int, payload: bytes, now: float) -> None:
        if opcode == OP_PING:
            self._send(payload, OP_PONG)
        elif opcode == OP_CLOSE:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.closed.done():
                self.closed.set_result(f"closed by server: {code} {payload[2:]!r}")
            self._abort()
        elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
            self._fragments.append(payload)
            if fin:
                message = b"".join(self._fragments)
                self._fragments = []
                self._message(message, now)

    def _message(self, message: bytes, now: float) -> None:
        # Cheap dispatch first: the common case (an event) must not pay for a JSON parse.
        if message.startswith(b'{"id":"1","type":"next"') or b'"type":"next"' in message:
            self.next_count += 1
            self.on_next(self, now, message)
            return
        try:
            kind = json.loads(message).get("type")
        except ValueError:
            self.errors.append(message)
            return
        if kind == "connection_ack":
            if not self.acked.done():
                self.acked.set_result(None)
        elif kind == "ping":
            self.send_json({"type": "pong"})
        elif kind in ("error", "complete"):
            self.errors.append(message)
        elif kind != "pong":
            self.errors.append(message)

    def _send(self, payload: bytes, opcode: int = OP_TEXT) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(payload, opcode))

    def send_json(self, value: Any) -> None:
        self._send(json.dumps(value, separators=(",", ":")).encode())

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # the graphql-transport-ws conversation -----------------------------------------------

    async def start(self, query: str, wait_s: float) -> None:
        """Handshake, connection_init with the credentials, wait for connection_ack, then
        subscribe (the protocol does not acknowledge a subscription)."""
        await asyncio.wait_for(asyncio.shield(self.handshake), wait_s)
        self.send_json(
            {"type": "connection_init", "payload": {"authorization": self.authorization}}
        )
        await asyncio.wait_for(asyncio.shield(self.acked), wait_s)
        self.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send((1000).to_bytes(2, "big"), OP_CLOSE)
            self.transport.close()


async def open_subscriptions(
    host: str,
    port: int,
    authorization: str,
    query: str,
    count: int,
    on_next: OnNext,
    *,
    parallel: int = 64,
    wait_s: float = 30.0,
) -> tuple[list[SubscriptionClient], list[str]]:
    """Open ``count`` connections, each with one subscription, ``parallel`` at a time.
    Returns the clients that subscribed and the errors of those that did not."""
    loop = asyncio.get_running_loop()
    clients: list[SubscriptionClient] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        async with gate:
            try:
                _, client = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: SubscriptionClient(host, port, authorization, on_next), host, port
                    ),
                    wait_s,
                )
                client.index = index
                await client.start(query, wait_s)
                clients.append(client)
            except (OSError, TimeoutError, WsError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one(i) for i in range(count)))
    clients.sort(key=lambda c: c.index)
    return clients, errors
