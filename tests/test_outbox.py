"""app.outbox: every commit is announced at once; marking events published is batched."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
from sqlalchemy import select

import app.outbox as outbox
from app.outbox import OutboxRelay
from db.database import Database
from db.models import OrderEvent
from tests import factories as f

HANG_PROTECTION_SECONDS = 10


class RecordingHub:
    """Stands in for the event hub: records what is announced."""

    def __init__(self) -> None:
        self.announced: list[int] = []

    async def announce(self, upto: int) -> None:
        self.announced.append(upto)


async def published(db: Database) -> list[bool]:
    async with db.reader() as s:
        rows = await s.execute(select(OrderEvent.published_at).order_by(OrderEvent.sequence))
        return [value is not None for value in rows.scalars()]


async def started_relay(db: Database) -> tuple[OutboxRelay, RecordingHub]:
    """A running relay on ``db`` announcing to a ``RecordingHub`` (no sweep meanwhile)."""
    hub = RecordingHub()
    relay = OutboxRelay(db, hub, sweep_seconds=3600)  # type: ignore[arg-type]
    db.after_commit = relay.on_commit
    await relay.start()
    return relay, hub


async def _stock_tee(db: Database, units: int) -> None:
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.stock(db, "TEE", "MAIN", units)


async def eventually(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + HANG_PROTECTION_SECONDS
    while not await check():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def test_relay_announces_every_commit_at_once_and_marks_them_in_batches(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _stock_tee(db, 100)
    marks: list[list[int]] = []
    real_mark = outbox.mark_published  # type: ignore[attr-defined]

    async def counting_mark(database: Database, sequences: list[int]) -> None:
        marks.append(sorted(sequences))
        await real_mark(database, sequences)

    monkeypatch.setattr(outbox, "mark_published", counting_mark)
    relay, hub = await started_relay(db)
    try:
        for n in range(1, 11):
            await f.order(db, [("TEE", 1)], email=f"c{n}@example.com")
            # Before the next order: no waiting for a batch.
            await eventually(partial(_announced_upto, hub, n))
        # Ten orders in well under MARK_INTERVAL_SECONDS each: far fewer marking transactions.
        await eventually(lambda: _all_published(db, 10))
    finally:
        await relay.stop()
    assert sorted(s for batch in marks for s in batch) == list(range(1, 11))
    assert len(marks) < 10


async def test_relay_marks_what_is_announced_while_a_batch_is_being_marked(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _stock_tee(db, 5)
    marking = asyncio.Event()
    release = asyncio.Event()
    real_mark = outbox.mark_published  # type: ignore[attr-defined]

    async def slow_first_mark(database: Database, sequences: list[int]) -> None:
        if not marking.is_set():
            marking.set()
            await release.wait()
        await real_mark(database, sequences)

    monkeypatch.setattr(outbox, "mark_published", slow_first_mark)
    relay, hub = await started_relay(db)
    try:
        await f.order(db, [("TEE", 1)])
        await asyncio.wait_for(marking.wait(), HANG_PROTECTION_SECONDS)
        await f.order(db, [("TEE", 1)])  # announced while the first batch is being marked
        await eventually(lambda: _announced_upto(hub, 2))
        release.set()
        await eventually(lambda: _all_published(db, 2))  # no further commit needed
    finally:
        release.set()
        await relay.stop()


async def _announced_upto(hub: RecordingHub, n: int) -> bool:
    return bool(hub.announced) and hub.announced[-1] == n


async def _all_published(db: Database, n: int) -> bool:
    return await published(db) == [True] * n


async def test_relay_marks_what_it_announced_when_it_stops(db: Database) -> None:
    await _stock_tee(db, 5)
    relay, hub = await started_relay(db)
    await f.order(db, [("TEE", 1)])
    await eventually(lambda: _announced(hub))
    await relay.stop()  # before the batch interval is over
    assert await published(db) == [True]


async def _announced(hub: RecordingHub) -> bool:
    return hub.announced == [1]
