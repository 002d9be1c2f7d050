"""The outbox relay: announces committed order events on the broadcast, after commit.

Events are written in the same transaction as the change they record, with
``published_at`` empty. After commit the unit of work hands their sequences here; the relay
announces them and marks them published (one statement per batch). If the process dies in
between, the events stay unpublished: the next process to start announces them, and every
running process sweeps for stragglers periodically. Subscribers read events from the log by
sequence, so an announcement that arrives twice or late changes nothing.

Announcing is immediate; marking is batched (at most every ``MARK_INTERVAL_SECONDS``): it is
a write transaction, and only a crash in that window leaves announced events unmarked, which
costs a harmless second announcement when they are swept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from app.broadcast import EventHub
from db.database import Database
from resolvers.events import mark_published, unpublished_events

log = logging.getLogger("ordergraph.outbox")

MARK_INTERVAL_SECONDS = 0.1


class OutboxRelay:
    def __init__(self, db: Database, hub: EventHub, sweep_seconds: float = 5.0) -> None:
        self.db = db
        self.hub = hub
        self.sweep_seconds = sweep_seconds
        self._pending: list[int] = []
        self._announced: list[int] = []  # announced, not yet marked published
        self._marker: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def on_commit(self, sequences: Sequence[int]) -> None:
        """Called by the unit of work right after a commit (never inside the transaction)."""
        self._pending.extend(sequences)
        self._wake.set()

    async def start(self) -> None:
        try:
            await self.publish_unpublished()
        except Exception:
            log.exception("could not publish stored events at start; the sweep will retry")
        self._tasks = [
            asyncio.create_task(self._run(), name="outbox-relay"),
            asyncio.create_task(self._sweep(), name="outbox-sweep"),
        ]

    async def stop(self) -> None:
        # Give what is pending one last chance; whatever stays unpublished is swept later.
        if self._pending:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._flush(), 2)
        if self._marker is not None:
            self._marker.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._marker
            self._marker = None
        if self._announced:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._mark(), 2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.hub.announce(max(batch))
        except Exception:
            self._pending = batch + self._pending
            raise
        self._announced.extend(batch)
        if self._marker is None or self._marker.done():
            self._marker = asyncio.create_task(self._mark_soon(), name="outbox-mark")

    async def _mark_soon(self) -> None:
        # Until nothing is left: what is announced while a batch is being marked waits for
        # the next batch (``_flush`` starts no second marker while this one runs).
        while True:
            await asyncio.sleep(MARK_INTERVAL_SECONDS)
            try:
                await self._mark()
            except Exception as exc:  # the sweep announces and marks them later
                log.warning("marking events published failed: %s", exc)
                return
            if not self._announced:
                return

    async def _mark(self) -> None:
        batch, self._announced = self._announced, []
        if batch:
            await mark_published(self.db, batch)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("announcing events failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                self._wake.set()

    async def publish_unpublished(self, older_than_seconds: float = 0) -> int:
        """Announce events that were committed but never announced (a crash, a broadcast
        outage). Returns how many were found."""
        total = 0
        while True:
            events = await unpublished_events(self.db, older_than_seconds=older_than_seconds)
            if not events:
                return total
            sequences = [e.sequence for e in events]
            await self.hub.announce(max(sequences))
            await mark_published(self.db, sequences)
            total += len(sequences)
            log.info(
                "published %d stored event(s) up to sequence %d", len(sequences), max(sequences)
            )

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                await self.publish_unpublished(older_than_seconds=self.sweep_seconds)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox sweep failed: %s", exc)
