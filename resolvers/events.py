"""The order event log: reading events after a cursor (replay) and marking them published."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, func, select, update

from db.database import Database
from db.models import Order, OrderEvent, utcnow
from db.uow import run_core
from domain.access import Principal

REPLAY_BATCH = 500


@dataclass(frozen=True, slots=True)
class EventFilterArgs:
    order_ids: frozenset[int] | None = None
    customer_id: int | None = None
    types: frozenset[str] | None = None
    to_statuses: frozenset[str] | None = None

    def matches(self, event: OrderEvent, customer_id: int | None) -> bool:
        if self.order_ids is not None and event.order_id not in self.order_ids:
            return False
        if self.types is not None and event.type not in self.types:
            return False
        if self.to_statuses is not None and event.to_status not in self.to_statuses:
            return False
        return self.customer_id is None or customer_id == self.customer_id


async def events_after(
    db: Database,
    after: int,
    f: EventFilterArgs,
    *,
    up_to: int | None = None,
    limit: int = REPLAY_BATCH,
) -> list[tuple[OrderEvent, int]]:
    """Stored events with ``after < sequence (<= up_to)``, in sequence order, with the
    order's customer id (for filtering and authorization)."""
    stmt = (
        select(OrderEvent, Order.customer_id)
        .join(Order, Order.id == OrderEvent.order_id)
        .where(OrderEvent.sequence > after)
        .order_by(OrderEvent.sequence)
        .limit(limit)
    )
    if up_to is not None:
        stmt = stmt.where(OrderEvent.sequence <= up_to)
    if f.order_ids is not None:
        stmt = stmt.where(OrderEvent.order_id.in_(f.order_ids))
    if f.customer_id is not None:
        stmt = stmt.where(Order.customer_id == f.customer_id)
    if f.types is not None:
        stmt = stmt.where(OrderEvent.type.in_(f.types))
    if f.to_statuses is not None:
        stmt = stmt.where(OrderEvent.to_status.in_(f.to_statuses))
    async with db.reader() as s:
        return [(e, c) for e, c in (await s.execute(stmt)).all()]


async def last_sequence(db: Database) -> int:
    async with db.reader() as s:
        return int(
            (await s.execute(select(func.coalesce(func.max(OrderEvent.sequence), 0)))).scalar_one()
        )


async def unpublished_events(
    db: Database, limit: int = REPLAY_BATCH, older_than_seconds: float = 0
) -> list[OrderEvent]:
    stmt = select(OrderEvent).where(OrderEvent.published_at.is_(None))
    if older_than_seconds:
        stmt = stmt.where(OrderEvent.occurred_at < utcnow() - timedelta(seconds=older_than_seconds))
    async with db.reader() as s:
        return list((await s.execute(stmt.order_by(OrderEvent.sequence).limit(limit))).scalars())


OUTBOX = Principal.system("outbox")


_MARK_RANGE_PUBLISHED = (
    update(OrderEvent)
    .where(OrderEvent.sequence.between(bindparam("lo"), bindparam("hi")))
    .values(published_at=bindparam("now"))
)
_MARK_PUBLISHED = (
    update(OrderEvent)
    .where(OrderEvent.sequence.in_(bindparam("sequences", expanding=True)))
    .values(published_at=bindparam("now"))
)


async def mark_published(db: Database, sequences: Sequence[int]) -> None:
    """One statement, in a transaction of its own (the relay runs it after every batch of
    commits, so it is on the write path's budget)."""
    if not sequences:
        return
    lo, hi, now = min(sequences), max(sequences), utcnow()
    if hi - lo + 1 == len(set(sequences)):  # the usual case: a dense run of commits
        stmt, params = _MARK_RANGE_PUBLISHED, {"lo": lo, "hi": hi, "now": now}
    else:
        stmt, params = _MARK_PUBLISHED, {"sequences": sorted(set(sequences)), "now": now}
    await run_core(db, OUTBOX, lambda work: work.conn.execute(stmt, params))


async def order_customer_ids(db: Database, order_ids: Sequence[int]) -> dict[int, int]:
    async with db.reader() as s:
        return dict(
            (await s.execute(select(Order.id, Order.customer_id).where(Order.id.in_(order_ids))))
            .tuples()
            .all()
        )
