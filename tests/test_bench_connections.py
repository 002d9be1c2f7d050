"""bench: closed-loop connections are spread evenly over server processes that share one
listening socket, whichever of them the kernel hands each connection to."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections import Counter

from bench.httpclient import HttpConnection
from bench.load import open_balanced
from bench.system import connection_owner


def _accept_forever(listener: socket.socket, start_after: float) -> None:
    time.sleep(start_after)
    held = []
    while True:
        conn, _ = listener.accept()
        held.append(conn)


async def test_connection_owner_names_the_process_holding_the_server_side() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        conn = HttpConnection("127.0.0.1", port, {})
        await conn.connect()
        try:
            assert connection_owner([os.getpid()], port, conn.local_port) is None  # not accepted
            server_side, _ = listener.accept()
            assert connection_owner([os.getpid()], port, conn.local_port) == os.getpid()
            assert connection_owner([os.getpid()], port + 1, conn.local_port) is None
            server_side.close()
        finally:
            await conn.close()


async def test_connections_are_spread_evenly_when_one_process_takes_them_all() -> None:
    """The second process starts accepting only after the first has taken several: opened
    one after another, every connection would land on the first."""
    context = multiprocessing.get_context("fork")
    with socket.create_server(("127.0.0.1", 0), backlog=64) as listener:
        port = listener.getsockname()[1]
        workers = [
            context.Process(target=_accept_forever, args=(listener, delay), daemon=True)
            for delay in (0.0, 0.3)
        ]
        for worker in workers:
            worker.start()
        pids = [w.pid for w in workers if w.pid is not None]
        connections: list[HttpConnection] = []
        try:
            connections = await open_balanced("127.0.0.1", port, "", 8, pids)
            owners = Counter(connection_owner(pids, port, c.local_port) for c in connections)
            assert len(connections) == 8
            assert owners == {pids[0]: 4, pids[1]: 4}
        finally:
            for conn in connections:
                await conn.close()
            for worker in workers:
                worker.kill()
                worker.join()
