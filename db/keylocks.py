"""In-process locks on sets of keys, granted all at once.

PostgreSQL locks an order's stock rows one at a time, in id order, and an order waiting for
its second row keeps its first: with a few hot products, waits chain, and every link lasts
a round trip and a turn of a busy event loop. Orders of one process that share a product
queue here instead, before their transaction starts, holding nothing in the database while
they wait; PostgreSQL then only sees orders of different processes meet.

A request is granted when none of its keys is held, and none is wanted by an earlier
waiter (first come, first served among requests that share a key; one that shares nothing
with the queue goes ahead). Waiting happens before any database lock is taken, so a wait
here is never part of a cycle with a wait in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Hashable, Iterable


class Held:
    """Keys held by one request; ``release()`` lets them go early (once)."""

    __slots__ = ("_keys", "_locks", "released")

    def __init__(self, locks: KeyLocks, keys: frozenset[Hashable]) -> None:
        self._locks = locks
        self._keys = keys
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._locks._release(self._keys)


class KeyLocks:
    def __init__(self) -> None:
        self._held: set[Hashable] = set()
        self._waiting: list[tuple[frozenset[Hashable], asyncio.Future[None]]] = []

    @property
    def held(self) -> frozenset[Hashable]:
        return frozenset(self._held)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @contextlib.asynccontextmanager
    async def hold(self, keys: Iterable[Hashable]) -> AsyncIterator[Held]:
        """Hold every key of ``keys`` until the block ends, or until the ``Held`` it gives
        is released."""
        wanted = frozenset(keys)
        if self._free(wanted) and all(wanted.isdisjoint(w) for w, _ in self._waiting):
            self._held |= wanted
        else:
            granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            entry = (wanted, granted)
            self._waiting.append(entry)
            try:
                await granted
            except BaseException:
                if granted.done() and not granted.cancelled():
                    self._release(wanted)  # granted, then cancelled before it could run
                else:
                    self._waiting.remove(entry)
                    self._grant()  # those it held back may go now
                raise
        held = Held(self, wanted)
        try:
            yield held
        finally:
            held.release()

    def _free(self, keys: frozenset[Hashable]) -> bool:
        return keys.isdisjoint(self._held)

    def _release(self, keys: frozenset[Hashable]) -> None:
        self._held -= keys
        self._grant()

    def _grant(self) -> None:
        wanted_earlier: set[Hashable] = set()
        still: list[tuple[frozenset[Hashable], asyncio.Future[None]]] = []
        for keys, granted in self._waiting:
            if self._free(keys) and keys.isdisjoint(wanted_earlier):
                self._held |= keys
                granted.set_result(None)
            else:
                wanted_earlier |= keys
                still.append((keys, granted))
        self._waiting = still
