"""The unit of work: one transaction per use case, events written in it, published after."""

from __future__ import annotations

from types import TracebackType

from sqlalchemy import update

from db.database import Database
from db.models import EventCounter, OrderEvent, utcnow
from domain.access import Principal


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
            self.db.after_commit(self.committed_events)

    def record_event(
        self,
        order_id: int,
        type_: str,
        from_status: str | None,
        to_status: str | None,
        note: str | None = None,
    ) -> OrderEvent:
        event = OrderEvent(
            order_id=order_id,
            type=type_,
            from_status=from_status,
            to_status=to_status,
            actor=self.actor.id,
            actor_role=self.actor.role.value,
            note=note,
            occurred_at=utcnow(),
        )
        self._events.append(event)
        return event

    async def commit(self) -> None:
        if self._events:
            n = len(self._events)
            last = (
                await self.session.execute(
                    update(EventCounter)
                    .where(EventCounter.id == 1)
                    .values(last_sequence=EventCounter.last_sequence + n)
                    .returning(EventCounter.last_sequence)
                )
            ).scalar_one()
            for offset, event in enumerate(self._events):
                event.sequence = last - n + 1 + offset
            self.session.add_all(self._events)
        await self.session.commit()
        self._committed = True
        self.committed_events = self._events
        self._events = []
