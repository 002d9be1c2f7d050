"""The unit of work: one transaction per use case, events written in it, published after."""

from __future__ import annotations

import asyncio
import sqlite3
import weakref
from asyncio import Future
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, bindparam, insert, select, update

from db.database import Database, end_autobegin
from db.models import EventCounter, OrderEvent, utcnow
from db.prepared import Prepared
from domain.access import Principal

T = TypeVar("T")

# Hands out ``n`` sequences: the last write of every event-writing transaction (see below).
_BUMP_COUNTER = (
    update(EventCounter)
    .where(EventCounter.id == 1)
    .values(last_sequence=EventCounter.last_sequence + bindparam("n"))
    .returning(EventCounter.last_sequence)
)
_BUMP_COUNTER_CORE = Prepared(_BUMP_COUNTER)
_INSERT_EVENTS = insert(OrderEvent)
_INSERT_EVENTS_CORE = Prepared(_INSERT_EVENTS)
# An event row's columns besides its sequence.
EVENT_COLUMNS = (
    "order_id",
    "type",
    "from_status",
    "to_status",
    "actor",
    "actor_role",
    "note",
    "occurred_at",
)
# One event in one statement (PostgreSQL: a data-modifying CTE): the counter row is the one
# lock every event-writing transaction takes, and it is held until commit, so each round
# trip after taking it delays every other writer; this leaves only the commit.
_COUNTER_CTE = (
    update(EventCounter)
    .where(EventCounter.id == 1)
    .values(last_sequence=EventCounter.last_sequence + 1)
    .returning(EventCounter.last_sequence)
    .cte("bumped")
)
_APPEND_ONE_EVENT = (
    insert(OrderEvent)
    .from_select(
        ["sequence", *EVENT_COLUMNS],
        select(
            _COUNTER_CTE.c.last_sequence,
            *(bindparam(name, type_=OrderEvent.__table__.c[name].type) for name in EVENT_COLUMNS),
        ),
    )
    .returning(OrderEvent.sequence)
)
_APPEND_ONE_EVENT_CORE = Prepared(_APPEND_ONE_EVENT)


def event_row(
    actor: Principal,
    order_id: int,
    type_: str,
    from_status: str | None,
    to_status: str | None,
    note: str | None,
) -> dict[str, Any]:
    """An order event's columns, less its sequence (given at commit)."""
    return {
        "order_id": order_id,
        "type": type_,
        "from_status": from_status,
        "to_status": to_status,
        "actor": actor.id,
        "actor_role": actor.role.value,
        "note": note,
        "occurred_at": utcnow(),
    }


class UnitOfWork:
    """``async with UnitOfWork(db, actor) as uow:`` … ``await uow.commit()``.

    Leaving the block without ``commit()`` rolls everything back. Order events added with
    ``record_event`` get their global sequence numbers at commit, from one counter row whose
    update is the last write of the transaction: that keeps sequences dense and in commit
    order (a later commit never carries a smaller sequence), which the live event stream
    relies on to detect and fill gaps. After a successful commit the events go to the
    outbox relay (``Database.after_commit``); publishing never happens inside the transaction.
    """

    def __init__(self, db: Database, actor: Principal) -> None:
        self.db = db
        self.actor = actor
        self._events: list[OrderEvent] = []
        self.committed_events: list[OrderEvent] = []
        self._committed = False
        self._locked = False

    async def __aenter__(self) -> UnitOfWork:
        if self.db.write_lock is not None:
            await self.db.write_lock.acquire()
            self._locked = True
        self.session = self.db.write_session()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed:
                # Detach first: a use case may return what it read (an idempotent replay)
                # without committing, and rollback would expire those objects.
                self.session.expunge_all()
                await self.session.rollback()
            await self.session.close()
        finally:
            if self._locked:
                self.db.write_lock.release()  # type: ignore[union-attr]
                self._locked = False
        if self._committed and self.committed_events and self.db.after_commit is not None:
            self.db.after_commit([e.sequence for e in self.committed_events])

    def record_event(
        self,
        order_id: int,
        type_: str,
        from_status: str | None,
        to_status: str | None,
        note: str | None = None,
    ) -> OrderEvent:
        event = OrderEvent(**event_row(self.actor, order_id, type_, from_status, to_status, note))
        self._events.append(event)
        return event

    async def commit(self) -> None:
        if self._events:
            n = len(self._events)
            last = (await self.session.execute(_BUMP_COUNTER, {"n": n})).scalar_one()
            for offset, event in enumerate(self._events):
                event.sequence = last - n + 1 + offset
            self.session.add_all(self._events)
        await self.session.commit()
        self._committed = True
        self.committed_events = self._events
        self._events = []


class CoreWork:
    """A unit of work for hot paths written with Core statements on a sync ``Connection``
    (see ``run_core``): the same rules as ``UnitOfWork`` (one transaction, events sequenced
    by the counter as its last write, published after commit) without the ORM's per-object
    bookkeeping, and with the whole transaction run from one greenlet hand-off (none at all
    on SQLite, whose calls run on the event loop's thread anyway)."""

    __slots__ = ("_events", "actor", "conn", "sequences")
    conn: Connection  # set when the transaction starts

    def __init__(self, actor: Principal) -> None:
        self.actor = actor
        self._events: list[dict[str, Any]] = []
        self.sequences: list[int] = []

    def record_event(
        self,
        order_id: int,
        type_: str,
        from_status: str | None,
        to_status: str | None,
        note: str | None = None,
    ) -> None:
        self._events.append(event_row(self.actor, order_id, type_, from_status, to_status, note))

    def appended(self, sequence: int) -> None:
        """The use case's own statement appended its one event, with ``sequence``, bumping
        the event counter as its last write (``resolvers.orders._PLACE_ORDER_PG``); the
        work records no other event."""
        assert not self._events and not self.sequences, "one event per work this way"
        self.sequences = [sequence]

    def _write_events(self) -> None:
        n = len(self._events)
        if not n:
            return
        if n == 1 and self.conn.dialect.name == "postgresql":
            sequence = _APPEND_ONE_EVENT_CORE.scalar(self.conn, self._events[0])
            assert sequence is not None, "the event counter row is missing"
            self.sequences = [sequence]
            return
        _write_events_of(self.conn, [self])


def _in_transaction(conn: Connection, work: CoreWork, fn: Callable[[CoreWork], T]) -> T:
    work.conn = conn
    with conn.begin():
        result = fn(work)
        work._write_events()
    return result


def _in_autocommit(conn: Connection, work: CoreWork, fn: Callable[[CoreWork], T]) -> T:
    work.conn = conn
    try:
        result = fn(work)
    finally:
        end_autobegin(conn)
    assert not work._events, "in autocommit, events are appended by the writing statement"
    return result


async def run_core(
    db: Database, actor: Principal, fn: Callable[[CoreWork], T], *, transaction: bool = True
) -> T:
    """Run ``fn(work)`` in one write transaction on a sync connection: commit when it
    returns, roll back when it raises. Events it records get their sequences at the end of
    the transaction and go to the outbox relay after the commit.

    On SQLite, calls that queue at the same moment share one commit (``_GroupCommit``):
    each ``fn`` still writes all or nothing. ``fn`` must act on the database only: after a
    failed shared commit it runs again, alone; and it should refuse before it writes, as
    one that fails after writing makes the others of its group run again alone.

    ``transaction=False`` (PostgreSQL; SQLite always has one): ``fn`` runs in autocommit,
    for a use case that writes in one statement, atomic by itself, and appends its events
    in that statement (``CoreWork.appended``); it saves BEGIN and COMMIT, two round trips."""
    if db.sync_write_engine is not None:
        return await _group_commit(db).run(db, actor, fn)
    work = CoreWork(actor)
    if db.write_lock is not None:
        await db.write_lock.acquire()
    try:
        if transaction:
            async with db.write_engine.connect() as conn:
                result = await conn.run_sync(_in_transaction, work, fn)
        else:
            async with db.autocommit_connection() as conn:
                result = await conn.run_sync(_in_autocommit, work, fn)
    finally:
        if db.write_lock is not None:
            db.write_lock.release()
    if work.sequences and db.after_commit is not None:
        db.after_commit(work.sequences)
    return result


# Group commit (SQLite) -------------------------------------------------------------------

#: At most this many use cases share a commit: it bounds how long the write lock is held.
GROUP_COMMIT_MAX = 16


class _Spoiled(Exception):
    """A use case of a group failed after changing rows: the group is rolled back."""


# Each database's queue. It holds no reference to its database, which would keep the
# database (and what its ``after_commit`` reaches: the relay, the broadcast's connections)
# alive for as long as the process runs.
_groups: weakref.WeakKeyDictionary[Database, _GroupCommit] = weakref.WeakKeyDictionary()


def _group_commit(db: Database) -> _GroupCommit:
    group = _groups.get(db)
    if group is None:
        group = _groups[db] = _GroupCommit()
    return group


class _Item:
    __slots__ = ("fn", "future", "work")

    def __init__(self, fn: Callable[[CoreWork], Any], work: CoreWork, future: Future[Any]):
        self.fn = fn
        self.work = work
        self.future = future


class _GroupCommit:
    """SQLite's Core writes, committed in groups.

    A commit costs SQLite a write of every page the transaction changed to the log, two
    system calls per page: about 130 us of a placeOrder's 1.2 ms, measured here, half of it
    for pages every order changes (the ends of the order, line, allocation, movement and
    event tables and their indexes, the event counter). Use cases that queue for the write
    lock at the same moment (in the same turn of the event loop) therefore run one after
    another in one transaction and share one commit: the shared pages are written once per
    group. Their events are the group's last writes, one counter bump and one insert for
    all (``_write_events_of``).

    - Each use case is still all or nothing, and each sees the writes of those before it,
      as it would had they committed before it began.
    - One that raises before changing a row (the connection's ``total_changes`` tells)
      gets its exception; the others are unaffected. That is how use cases fail: their
      reads decide, then they write (placeOrder refuses an order before its first write).
    - One that raises after changing rows, or whose error ended SQLite's transaction,
      spoils the group: it gets its exception, nothing of the group is kept, and the others
      run again alone, as below. (Each in a savepoint of its own had kept that rare case
      cheap, at the price of SQLite copying every page a use case changed into the
      savepoint's journal first: 3.5 % of every placeOrder.)
    - A caller's answer, and the relay's events, come after the group's commit.
    - If the group transaction itself fails (BEGIN, the events, the commit), nothing of
      it is kept, and every use case that succeeded in it or did not run runs again alone,
      so each gets the outcome it would have had without grouping.
    - A caller cancelled before its use case starts is skipped.

    Nothing waits to fill a group: the first caller schedules the group for the loop's
    next turn, and a group takes whoever queued by then (at most ``GROUP_COMMIT_MAX``)."""

    def __init__(self) -> None:
        self.pending: list[_Item] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self.drainer: asyncio.Task[None] | None = None
        self.groups = 0  # commits of more than one use case, for tests and measurements

    async def run(self, db: Database, actor: Principal, fn: Callable[[CoreWork], T]) -> T:
        loop = asyncio.get_running_loop()
        if loop is not self.loop:  # (a new loop: nothing of an old one can run here)
            self.loop, self.pending, self.drainer = loop, [], None
        item = _Item(fn, CoreWork(actor), loop.create_future())
        self.pending.append(item)
        if self.drainer is None:
            self.drainer = loop.create_task(self._drain(db), name="sqlite-group-commit")
        result: T = await item.future
        return result

    async def _drain(self, db: Database) -> None:
        assert db.write_lock is not None, "SQLite has a write lock"
        try:
            while self.pending:
                sequences: list[int] = []
                async with db.write_lock:
                    batch = [i for i in self.pending[:GROUP_COMMIT_MAX] if not i.future.done()]
                    del self.pending[:GROUP_COMMIT_MAX]
                    if not batch:
                        continue
                    try:
                        outcomes = self._run(db, batch)
                    except BaseException as exc:
                        for item in batch:
                            _settle(item.future, exc)
                        raise
                for item, ok, value in outcomes:
                    if ok:
                        sequences.extend(item.work.sequences)
                        _settle(item.future, None, value)
                    else:
                        _settle(item.future, value)
                if sequences and db.after_commit is not None:
                    db.after_commit(sequences)
        except BaseException as exc:  # (cancelled while waiting for the lock, say)
            for item in self.pending:
                _settle(item.future, exc)
            self.pending = []
            raise
        finally:
            self.drainer = None

    def _run(self, db: Database, batch: list[_Item]) -> list[tuple[_Item, bool, Any]]:
        """Each item's outcome: (item, True, result) once committed, else (item, False,
        exception)."""
        if len(batch) == 1:
            return [self._alone(db, batch[0])]
        outcomes: dict[int, tuple[_Item, bool, Any]] = {}
        try:
            with db.core_connection() as conn, conn.begin():
                raw = cast(sqlite3.Connection, conn.connection.dbapi_connection)
                for n, item in enumerate(batch):
                    item.work.conn = conn
                    changes = raw.total_changes
                    try:
                        result = item.fn(item.work)
                    except Exception as exc:
                        outcomes[n] = (item, False, exc)
                        if raw.total_changes != changes or not raw.in_transaction:
                            # It changed rows before it failed (or SQLite ended the
                            # transaction): nothing but the whole group can be undone.
                            raise _Spoiled from exc
                    else:
                        outcomes[n] = (item, True, result)
                _write_events_of(conn, [item.work for item, ok, _ in outcomes.values() if ok])
        except Exception:
            # Nothing of the group is kept: each item that succeeded in it, or did not
            # run, runs again alone.
            return [
                outcomes[n]
                if n in outcomes and not outcomes[n][1]
                else self._alone(db, item, again=True)
                for n, item in enumerate(batch)
            ]
        self.groups += 1
        return [outcomes[n] for n in range(len(batch))]

    def _alone(self, db: Database, item: _Item, again: bool = False) -> tuple[_Item, bool, Any]:
        if again:  # (what the failed group recorded is gone with it)
            item.work = CoreWork(item.work.actor)
        try:
            with db.core_connection() as conn:
                result = _in_transaction(conn, item.work, item.fn)
        except Exception as exc:
            return (item, False, exc)
        return (item, True, result)


def _write_events_of(conn: Connection, works: list[CoreWork]) -> None:
    """The events ``works`` recorded, in their order, as the transaction's last writes: one
    bump of the counter and one insert for all of them (a group commit's use cases that
    succeeded share them; should they fail, the group fails, and each use case runs again
    alone)."""
    events = [event for work in works for event in work._events]
    if not events:
        return
    last = _BUMP_COUNTER_CORE.scalar(conn, {"n": len(events)})
    assert last is not None, "the event counter row is missing"
    sequence = last - len(events) + 1
    for work in works:
        first = sequence
        for event in work._events:
            event["sequence"] = sequence
            sequence += 1
        work.sequences = list(range(first, sequence))
    _INSERT_EVENTS_CORE.execute(conn, events)


def _settle(future: Future[Any], exc: BaseException | None, result: Any = None) -> None:
    if future.done():  # (its caller was cancelled meanwhile)
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    elif exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
