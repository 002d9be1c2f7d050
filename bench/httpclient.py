"""A minimal HTTP/1.1 keep-alive client on asyncio streams: POST with a Content-Length
body, read one response. Much cheaper per request than a general client, which matters
because the load process shares the machine's cores with the servers."""

from __future__ import annotations

import asyncio


class HttpError(Exception):
    """The connection broke or the response was not HTTP we understand."""


class HttpConnection:
    def __init__(self, host: str, port: int, headers: dict[str, str]) -> None:
        self.host = host
        self.port = port
        fixed = {"Host": f"{host}:{port}", "Connection": "keep-alive", **headers}
        self._prefix = "".join(f"{k}: {v}\r\n" for k, v in fixed.items()).encode("latin-1")
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self.reconnects = 0

    async def connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    @property
    def local_port(self) -> int:
        assert self._writer is not None, "not connected"
        return int(self._writer.get_extra_info("sockname")[1])

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except OSError:
                pass
        self._reader = self._writer = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Send one request and read its response: (status, body). Reconnects once when
        the server closed the idle connection; raises HttpError otherwise."""
        if self._writer is None:
            await self.connect()
            self.reconnects += 1
        assert self._reader is not None and self._writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\n".encode("latin-1")
            + self._prefix
            + b"Content-Type: application/json\r\nAccept: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode("latin-1")
        )
        try:
            self._writer.write(head + body)
            return await self._read_response()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            await self.close()
            raise HttpError(f"{type(e).__name__}: {e}") from e

    async def _read_response(self) -> tuple[int, bytes]:
        assert self._reader is not None
        head = await self._reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError(f"bad status line {lines[0]!r}")
        status = int(parts[1])
        length: int | None = None
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(":")
            name = name.strip().lower()
            if name == "content-length":
                length = int(value.strip())
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
            elif name == "connection" and value.strip().lower() == "close":
                close = True
        if chunked:
            body = await self._read_chunked()
        elif length is not None:
            body = await self._reader.readexactly(length)
        else:
            body = await self._reader.read()
            close = True
        if close:
            await self.close()
        return status, body

    async def _read_chunked(self) -> bytes:
        assert self._reader is not None
        chunks: list[bytes] = []
        while True:
            size_line = await self._reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                await self._reader.readuntil(b"\r\n")
                return b"".join(chunks)
            chunks.append(await self._reader.readexactly(size))
            await self._reader.readexactly(2)
