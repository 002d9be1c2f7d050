"""Group commit on SQLite (db.uow._GroupCommit): Core use cases that queue together share one
commit, and each still writes all or nothing, with the outcome it would have had alone."""

from __future__ import annotations

import asyncio
import gc
import shutil
import sqlite3
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import IntegrityError

import db.uow as uow_module
from db.database import Database
from db.uow import CoreWork, _group_commit, run_core
from domain.access import Principal
from tests import factories as f

ACTOR = Principal.system("test")


class Fixture:
    def __init__(self, db: Database, path: Path) -> None:
        self.db = db
        self.path = path
        self.commits = 0
        self.ran: list[str] = []

    def warehouses(self) -> list[str]:
        check = sqlite3.connect(self.path)
        try:
            return [r[0] for r in check.execute("SELECT code FROM warehouse ORDER BY id")]
        finally:
            check.close()

    async def stock_a_tee(self) -> None:
        """A warehouse and a product, TEE, with 10 in stock there."""
        await f.warehouse(self.db)
        await f.product(self.db, "TEE", "19.99")
        await f.stock(self.db, "TEE", "MAIN", 10)

    async def between_a_and_c(self, middle: Callable[[CoreWork], Any]) -> list[Any]:
        """``middle`` queued between adding warehouses A and C: one group, unless it
        spoils it; each one's result or exception."""
        return list(
            await asyncio.gather(
                run_core(self.db, ACTOR, self.add("A")),
                run_core(self.db, ACTOR, middle),
                run_core(self.db, ACTOR, self.add("C")),
                return_exceptions=True,
            )
        )

    def add(self, code: str, then: Callable[[CoreWork], Any] | None = None) -> Any:
        """A use case: add warehouse ``code``, then ``then`` (or answer how many there are)."""

        def fn(work: CoreWork) -> Any:
            self.ran.append(code)
            work.conn.exec_driver_sql(
                "INSERT INTO warehouse (code, name, priority, created_at) "
                f"VALUES ('{code}', 'W', 1, '2026-01-01 00:00:00.000000')"
            )
            if then is not None:
                return then(work)
            return work.conn.exec_driver_sql("SELECT count(*) FROM warehouse").scalar_one()

        return fn


@pytest.fixture
async def fx(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Fixture]:
    path = tmp_path / "group.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    fixture = Fixture(db, path)
    assert db.sync_write_engine is not None

    def on_commit(_conn: Any) -> None:
        fixture.commits += 1

    event.listen(db.sync_write_engine, "commit", on_commit)
    try:
        yield fixture
    finally:
        await db.dispose()


def boom(_work: CoreWork) -> Any:
    raise RuntimeError("boom")


def orphan_at_commit(work: CoreWork) -> Any:
    """A row whose foreign key fails at COMMIT, not at its INSERT."""
    work.conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")
    work.conn.exec_driver_sql(
        "INSERT INTO inventory_level (product_id, warehouse_id, on_hand, reserved, "
        "reorder_point, updated_at) VALUES (999999, 999999, 0, 0, 0, '2026-01-01 00:00:00')"
    )
    return "orphan"


async def test_use_cases_that_queue_together_share_one_commit(fx: Fixture) -> None:
    results = await asyncio.gather(*(run_core(fx.db, ACTOR, fx.add(c)) for c in "ABCD"))

    assert fx.commits == 1
    assert _group_commit(fx.db).groups == 1
    # Each saw the writes of those before it, as if they had committed before it began.
    assert results == [1, 2, 3, 4]
    assert fx.warehouses() == ["A", "B", "C", "D"]


async def test_one_alone_commits_by_itself(fx: Fixture) -> None:
    assert await run_core(fx.db, ACTOR, fx.add("A")) == 1
    assert await run_core(fx.db, ACTOR, fx.add("B")) == 2
    assert fx.commits == 2
    assert _group_commit(fx.db).groups == 0


async def test_a_use_case_that_fails_before_writing_leaves_its_group_alone(
    fx: Fixture,
) -> None:
    def refuse(work: CoreWork) -> Any:
        fx.ran.append("refused")
        work.conn.exec_driver_sql("SELECT count(*) FROM warehouse").scalar_one()
        raise RuntimeError("refused")

    results = await fx.between_a_and_c(refuse)

    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], RuntimeError)
    assert fx.ran == ["A", "refused", "C"]  # nobody ran twice
    assert fx.commits == 1 and _group_commit(fx.db).groups == 1
    assert fx.warehouses() == ["A", "C"]


async def test_a_use_case_that_fails_after_writing_writes_nothing_and_the_others_commit(
    fx: Fixture,
) -> None:
    results = await fx.between_a_and_c(fx.add("B", then=boom))

    assert results[0] == 1 and results[2] == 2  # C did not see B's row
    assert isinstance(results[1], RuntimeError)
    assert fx.warehouses() == ["A", "C"]
    # B's row could only go with the whole group, which stopped there: A ran again, and C
    # ran, each alone; B did not run again.
    assert fx.ran == ["A", "B", "A", "C"]
    assert fx.commits == 2 and _group_commit(fx.db).groups == 0


async def test_a_use_case_whose_error_ended_the_transaction_spoils_its_group(
    fx: Fixture,
) -> None:
    def rolled_back(work: CoreWork) -> Any:
        # What SQLite does itself on some errors (a full disk, say): the transaction ends.
        work.conn.connection.dbapi_connection.execute("ROLLBACK")  # type: ignore[union-attr]
        raise sqlite3.OperationalError("database or disk is full")

    results = await fx.between_a_and_c(rolled_back)

    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], sqlite3.OperationalError)
    assert fx.warehouses() == ["A", "C"]  # A's row, rolled back with the group, written again
    assert fx.ran == ["A", "A", "C"]  # the group stopped there; A and C then ran alone
    assert fx.commits == 2 and _group_commit(fx.db).groups == 0


async def test_when_the_shared_commit_fails_each_use_case_runs_again_alone(fx: Fixture) -> None:
    results = await fx.between_a_and_c(fx.add("B", then=orphan_at_commit))

    # The same outcomes as three transactions of their own: only B fails, at its commit.
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], IntegrityError)
    assert "FOREIGN KEY" in str(results[1])
    assert fx.warehouses() == ["A", "C"]
    assert fx.ran == ["A", "B", "C", "A", "B", "C"]
    assert _group_commit(fx.db).groups == 0
    # The connection is usable afterwards, and the group commit too.
    assert await asyncio.gather(*(run_core(fx.db, ACTOR, fx.add(c)) for c in "DE")) == [3, 4]
    assert _group_commit(fx.db).groups == 1


async def test_a_caller_cancelled_before_its_turn_is_skipped(fx: Fixture) -> None:
    tasks = [asyncio.create_task(run_core(fx.db, ACTOR, fx.add(c))) for c in "ABC"]
    await asyncio.sleep(0)  # all three queue; the group runs on the loop's next turn
    tasks[1].cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)

    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], asyncio.CancelledError)
    assert fx.ran == ["A", "C"]
    assert fx.warehouses() == ["A", "C"]


async def test_orders_placed_together_are_published_once_in_sequence_order(
    fx: Fixture,
) -> None:
    await fx.stock_a_tee()
    published: list[list[int]] = []
    fx.db.after_commit = lambda sequences: published.append(list(sequences))
    commits_before = fx.commits

    orders = await asyncio.gather(
        *(f.order(fx.db, [("TEE", 1)], email=f"buyer{i}@example.com") for i in range(4))
    )

    assert fx.commits == commits_before + 1
    assert len(published) == 1
    check = sqlite3.connect(fx.path)
    try:
        placed = dict(
            check.execute("SELECT order_id, sequence FROM order_event WHERE type = 'PLACED'")
        )
    finally:
        check.close()
    assert published[0] == [placed[o.id] for o in orders]
    first = published[0][0]
    assert published[0] == list(range(first, first + 4))


async def test_a_failed_commit_leaves_the_kept_connection_usable(fx: Fixture) -> None:
    # SQLite keeps the transaction open after a COMMIT refused for a deferred constraint;
    # SQLAlchemy counts it as ended. The next use case must not find it still open.
    with pytest.raises(IntegrityError, match="FOREIGN KEY"):
        await run_core(fx.db, ACTOR, fx.add("A", then=orphan_at_commit))
    assert await run_core(fx.db, ACTOR, fx.add("B")) == 1
    assert fx.warehouses() == ["B"]


async def test_temporary_files_are_kept_in_memory(fx: Fixture) -> None:
    # A statement journal would otherwise spill to a file, written and synced.
    def temp_store(work: CoreWork) -> Any:
        return work.conn.exec_driver_sql("PRAGMA temp_store").scalar_one()

    assert await run_core(fx.db, ACTOR, temp_store) == 2  # MEMORY


async def test_a_group_whose_callers_were_all_cancelled_writes_nothing(fx: Fixture) -> None:
    tasks = [asyncio.create_task(run_core(fx.db, ACTOR, fx.add(c))) for c in "AB"]
    await asyncio.sleep(0)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await run_core(fx.db, ACTOR, fx.add("C")) == 1
    assert fx.ran == ["C"]
    assert fx.commits == 1


async def test_the_queue_does_not_keep_its_database_alive(
    tmp_path: Path, sqlite_template: Path
) -> None:
    path = tmp_path / "gone.db"
    shutil.copy(sqlite_template, path)
    db = Database(f"sqlite+aiosqlite:///{path}")
    fixture = Fixture(db, path)
    assert await asyncio.gather(*(run_core(db, ACTOR, fixture.add(c)) for c in "AB")) == [1, 2]
    await db.dispose()
    gone = weakref.ref(db)
    del db, fixture
    gc.collect()
    assert gone() is None


def recording(order_id: int) -> Callable[[CoreWork], Any]:
    def fn(work: CoreWork) -> Any:
        work.record_event(order_id, "CONFIRMED", "PENDING", "CONFIRMED", None)
        work.record_event(order_id, "NOTE_ADDED", None, None, "two events")
        return order_id

    return fn


async def _events(path: Path) -> list[tuple[int, int]]:
    check = sqlite3.connect(path)
    try:
        return list(check.execute("SELECT sequence, order_id FROM order_event ORDER BY sequence"))
    finally:
        check.close()


class _CountingScalar:
    """A ``Prepared`` statement's ``scalar``, counted."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.calls = 0

    def scalar(self, *args: Any) -> Any:
        self.calls += 1
        return self.real.scalar(*args)


async def test_a_groups_events_are_written_once_for_all_in_order(
    fx: Fixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    await fx.stock_a_tee()
    ids = [(await f.order(fx.db, [("TEE", 1)], email=f"b{i}@example.com")).id for i in range(3)]
    before = await _events(fx.path)
    bumps = _CountingScalar(uow_module._BUMP_COUNTER_CORE)
    monkeypatch.setattr(uow_module, "_BUMP_COUNTER_CORE", bumps)
    published: list[list[int]] = []
    fx.db.after_commit = lambda sequences: published.append(list(sequences))

    results = await asyncio.gather(
        run_core(fx.db, ACTOR, recording(ids[0])),
        # It records events, then fails (before writing a row: the group goes on).
        run_core(fx.db, ACTOR, lambda w: (recording(ids[1])(w), boom(w))),
        run_core(fx.db, ACTOR, recording(ids[2])),
        return_exceptions=True,
    )

    assert results[0] == ids[0] and results[2] == ids[2]
    assert isinstance(results[1], RuntimeError)  # its events went with it
    assert bumps.calls == 1 and _group_commit(fx.db).groups == 1
    after = (await _events(fx.path))[len(before) :]
    last = before[-1][0]
    assert after == [(last + 1, ids[0]), (last + 2, ids[0]), (last + 3, ids[2]), (last + 4, ids[2])]
    assert published == [[last + 1, last + 2, last + 3, last + 4]]


async def test_when_a_groups_events_cannot_be_written_each_use_case_runs_again_alone(
    fx: Fixture,
) -> None:
    await fx.stock_a_tee()
    order_id = (await f.order(fx.db, [("TEE", 1)])).id
    before = await _events(fx.path)

    results = await asyncio.gather(
        run_core(fx.db, ACTOR, fx.add("A", then=recording(order_id))),
        run_core(fx.db, ACTOR, fx.add("B", then=recording(999_999))),  # no such order
        run_core(fx.db, ACTOR, fx.add("C", then=recording(order_id))),
        return_exceptions=True,
    )

    assert results[0] == order_id and results[2] == order_id
    assert isinstance(results[1], IntegrityError)
    assert fx.ran == ["A", "B", "C", "A", "B", "C"]
    assert fx.warehouses()[-2:] == ["A", "C"]
    last = before[-1][0]
    after = (await _events(fx.path))[len(before) :]
    assert [s for s, _ in after] == [last + 1, last + 2, last + 3, last + 4]
    assert {o for _, o in after} == {order_id}
