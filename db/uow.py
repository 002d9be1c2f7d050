"""The unit of work: one transaction per use case, events written in it, published after."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, insert, select, update

from db.database import Database
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
        last = _BUMP_COUNTER_CORE.scalar(self.conn, {"n": n})
        assert last is not None, "the event counter row is missing"
        first = last - n + 1
        for offset, event in enumerate(self._events):
            event["sequence"] = first + offset
        _INSERT_EVENTS_CORE.execute(self.conn, self._events)
        self.sequences = list(range(first, last + 1))


def _in_transaction(conn: Connection, work: CoreWork, fn: Callable[[CoreWork], T]) -> T:
    work.conn = conn
    with conn.begin():
        result = fn(work)
        work._write_events()
    return result


def _in_autocommit(conn: Connection, work: CoreWork, fn: Callable[[CoreWork], T]) -> T:
    work.conn = conn
    result = fn(work)
    assert not work._events, "in autocommit, events are appended by the writing statement"
    return result


async def run_core(
    db: Database, actor: Principal, fn: Callable[[CoreWork], T], *, transaction: bool = True
) -> T:
    """Run ``fn(work)`` in one write transaction on a sync connection: commit when it
    returns, roll back when it raises. Events it records get their sequences at the end of
    the transaction and go to the outbox relay after the commit.

    ``transaction=False`` (PostgreSQL; SQLite always has one): ``fn`` runs in autocommit,
    for a use case that writes in one statement, atomic by itself, and appends its events
    in that statement (``CoreWork.appended``); it saves BEGIN and COMMIT, two round trips."""
    work = CoreWork(actor)
    if db.write_lock is not None:
        await db.write_lock.acquire()
    try:
        if db.sync_write_engine is not None:
            with db.core_connection() as sync_conn:
                result = _in_transaction(sync_conn, work, fn)
        elif transaction:
            async with db.write_engine.connect() as conn:
                result = await conn.run_sync(_in_transaction, work, fn)
        else:
            async with db.read_engine.connect() as conn:  # (PostgreSQL's is in autocommit)
                result = await conn.run_sync(_in_autocommit, work, fn)
    finally:
        if db.write_lock is not None:
            db.write_lock.release()
    if work.sequences and db.after_commit is not None:
        db.after_commit(work.sequences)
    return result
