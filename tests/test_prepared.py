"""db.prepared: statements run on SQLite's driver give what SQLAlchemy gives, and write
what SQLAlchemy writes."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table, bindparam, text
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy import update as sa_update
from sqlalchemy.dialects.postgresql import asyncpg as postgresql_asyncpg
from sqlalchemy.types import JSON, DateTime

import db.prepared as prepared_module
from db.database import Database, StatementCounter, statement_counter
from db.prepared import Prepared
from domain.errors import DomainError, DomainErrors
from tests import factories as f

# A table of its own for the statement-level comparisons: every kind of value we bind.
meta = MetaData()
things = Table(
    "things",
    meta,
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    Column("flag", Boolean, nullable=False, default=False),
    Column("doc", JSON, nullable=True),
    Column("at", DateTime, nullable=False, default=lambda: datetime(2026, 1, 2, 3, 4, 5, 6)),
    Column("n", Integer, nullable=False, default=7),
)


@contextmanager
def driver_off() -> Iterator[None]:
    """Every Prepared statement goes through ``Connection.execute`` meanwhile."""
    real = prepared_module._driver
    prepared_module._driver = lambda conn: None
    try:
        yield
    finally:
        prepared_module._driver = real


@pytest.fixture
def sync_engine(tmp_path: Path) -> Iterator[Any]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'things.db'}")
    engine = database.sync_write_engine
    assert engine is not None
    meta.create_all(engine)
    yield engine
    engine.dispose()


def both(engine: Any, fn: Any) -> tuple[Any, Any]:
    """``fn(conn)`` on the driver and through SQLAlchemy, each in a rolled-back transaction."""
    results = []
    for off in (False, True):
        with engine.connect() as conn, conn.begin() as tx:
            if off:
                with driver_off():
                    results.append(fn(conn))
            else:
                results.append(fn(conn))
            tx.rollback()
    return results[0], results[1]


def as_tuples(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows]


SEED = [
    {"name": "a", "flag": True, "doc": {"k": [1, 2]}},
    {"name": "b", "flag": False, "doc": None},
    {"name": "c", "flag": True, "doc": ["x"], "n": 3, "at": datetime(2026, 5, 1, 12, 0, 0, 1)},
]
INSERT_THINGS = Prepared(sa_insert(things))
BY_NAMES = Prepared(
    sa_select(things.c.id, things.c.name, things.c.flag, things.c.doc, things.c.at, things.c.n)
    .where(things.c.name.in_(bindparam("names", expanding=True)))
    .order_by(things.c.id)
)


def seed(conn: Any) -> None:
    INSERT_THINGS.execute(conn, SEED[:2])
    INSERT_THINGS.insert(conn, SEED[2])


def test_selects_convert_values_as_sqlalchemy_does(sync_engine: Any) -> None:
    def read(conn: Any) -> list[tuple[Any, ...]]:
        seed(conn)
        rows = BY_NAMES.all(conn, {"names": ["a", "b", "c"]})
        assert [r.name for r in rows] == ["a", "b", "c"]  # access by name
        return as_tuples(rows) + as_tuples(BY_NAMES.all(conn, {"names": ["c"]}))

    fast, slow = both(sync_engine, read)
    assert fast == slow
    assert [type(r[2]) for r in fast] == [bool] * 4  # SQLite's 0/1 become booleans
    assert fast[1][4] == datetime(2026, 1, 2, 3, 4, 5, 6)  # the default, as a datetime
    assert fast[2][4] == datetime(2026, 5, 1, 12, 0, 0, 1)
    assert fast[0][3] == {"k": [1, 2]}
    assert BY_NAMES.runs_on_driver(sync_engine.dialect, {"names": ["a"]})


def test_inserts_fill_python_defaults_and_store_what_sqlalchemy_stores(sync_engine: Any) -> None:
    def write(conn: Any) -> list[tuple[Any, ...]]:
        seed(conn)
        # Stored as SQLAlchemy stores it (JSON None is the JSON text null by default).
        raw = conn.execute(text("SELECT id, name, flag, doc, at, n FROM things ORDER BY id"))
        return [tuple(r) for r in raw]

    fast, slow = both(sync_engine, write)
    assert fast == slow
    assert fast[1][3] == "null" and fast[1][4] == "2026-01-02 03:04:05.000006"


def test_updates_report_changed_rows_once_and_for_many(sync_engine: Any) -> None:
    bump = Prepared(
        sa_update(things)
        .where(things.c.name == bindparam("who"), things.c.n >= bindparam("least"))
        .values(n=things.c.n + 1)
    )

    def run(conn: Any) -> tuple[int, int, int, list[Any]]:
        seed(conn)
        one = bump.execute(conn, {"who": "a", "least": 0})
        none = bump.execute(conn, {"who": "a", "least": 100})
        many = bump.execute(conn, [{"who": "b", "least": 0}, {"who": "c", "least": 0}])
        return one, none, many, BY_NAMES.all(conn, {"names": ["a", "b", "c"]})

    fast, slow = both(sync_engine, run)
    assert fast[:3] == slow[:3] == (1, 0, 2)
    assert as_tuples(fast[3]) == as_tuples(slow[3])


def test_returning_gives_one_row_per_parameter_set_in_order(sync_engine: Any) -> None:
    insert_returning = Prepared(
        sa_insert(things).returning(things.c.id, sort_by_parameter_order=True)
    )

    def run(conn: Any) -> list[int]:
        return insert_returning.scalars(conn, [{"name": n} for n in "zyxw"])

    fast, slow = both(sync_engine, run)
    assert fast == slow == [1, 2, 3, 4]


def test_statements_are_counted_on_both_paths(sync_engine: Any) -> None:
    counts = []
    for off in (False, True):
        counter = StatementCounter()
        token = statement_counter.set(counter)
        try:
            with sync_engine.connect() as conn, conn.begin() as tx:
                with driver_off() if off else nullcontext():
                    seed(conn)
                    BY_NAMES.all(conn, {"names": ["a"]})
                tx.rollback()
        finally:
            statement_counter.reset(token)
        counts.append(counter.count)
    assert counts == [4, 4]  # BEGIN IMMEDIATE, two INSERTs, one SELECT


def test_echo_and_other_dialects_take_sqlalchemys_path(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}", echo=True)
    assert database.sync_write_engine is not None
    with database.sync_write_engine.connect() as conn:
        assert prepared_module._driver(conn) is None
    database.sync_write_engine.dispose()
    pg = postgresql_asyncpg.dialect()  # type: ignore[no-untyped-call]
    assert not BY_NAMES.runs_on_driver(pg, {"names": ["a"]})


def fresh_sqlite(tmp_path: Path, template: Path, name: str) -> tuple[Database, Path]:
    path = tmp_path / f"{name}.db"
    shutil.copy(template, path)
    return Database(f"sqlite+aiosqlite:///{path}"), path


async def test_the_place_order_path_runs_on_the_driver(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement placeOrder runs through ``Prepared`` is planned for the driver: a
    change that made one fall back to SQLAlchemy would otherwise go unnoticed."""
    db, _ = fresh_sqlite(tmp_path, sqlite_template, "planned")
    await f.warehouse(db)
    await f.product(db, "TEE", "19.99")
    await f.product(db, "MUG", "7.50", allow_backorder=True)
    await f.stock(db, "TEE", "MAIN", 10)
    planned: list[tuple[str, bool]] = []
    real_plan = Prepared._plan

    def spy(self: Prepared, dialect: Any, params: Any, *, many: bool) -> Any:
        plan = real_plan(self, dialect, params, many=many)
        planned.append((str(self.statement).split("\n")[0], plan is not None))
        return plan

    monkeypatch.setattr(Prepared, "_plan", spy)
    # A guest, an idempotency key, an external id, and a backordered line: every branch.
    order = await f.order(
        db,
        [("TEE", 2), ("MUG", 3)],
        email="new@example.com",
        idempotency_key="k-1",
        external_id="ext-1",
    )
    await db.dispose()
    assert order.status == "BACKORDERED"
    assert len(planned) >= 12
    assert [s for s, ok in planned if not ok] == []


# The whole use case, both ways ---------------------------------------------------------

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{6})?$")
TABLES = [
    "customer",
    "sales_order",
    "order_line",
    "allocation",
    "stock_movement",
    "inventory_level",
    "order_event",
    "event_counter",
    "idempotency_record",
]


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables placeOrder writes, with the values that differ between two
    runs by nature (times, tracking tokens) replaced by their shape."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        out = {}
        for table in TABLES:
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            rows = []
            for row in conn.execute(f"SELECT * FROM {table} ORDER BY 1"):
                normal = []
                for column, value in zip(columns, row, strict=True):
                    if column == "tracking_token":
                        value = ("token", len(value))
                    elif isinstance(value, str) and TIMESTAMP.match(value):
                        value = "<timestamp>"
                    normal.append(value)
                rows.append(tuple(normal))
            out[table] = rows
        return out
    finally:
        conn.close()


line_st = st.tuples(st.sampled_from(["TEE", "MUG", "CAP", "BAG", "NOPE"]), st.integers(1, 6))
order_st = st.fixed_dictionaries(
    {
        "lines": st.lists(line_st, min_size=1, max_size=3, unique_by=lambda t: t[0]),
        "guest": st.sampled_from(["ada@example.com", "bob@example.com", None]),
        "key": st.sampled_from([None, "k1", "k2"]),
        "external": st.sampled_from([None, "ext-1"]),
    }
)


async def place_all(database: Database, scripts: list[dict[str, Any]]) -> list[Any]:
    outcomes: list[Any] = []
    for script in scripts:
        extra: dict[str, Any] = {
            "idempotency_key": script["key"],
            "external_id": script["external"],
        }
        if script["guest"] is not None:
            extra["email"] = script["guest"]
        try:
            order = await f.order(database, script["lines"], **extra)
            outcomes.append(("order", order.id, order.status, order.total_minor))
        except (DomainError, DomainErrors) as exc:
            outcomes.append(("refused", str(exc)))
    return outcomes


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(scripts=st.lists(order_st, min_size=1, max_size=5))
async def test_place_order_writes_the_same_rows_on_both_paths(
    scripts: list[dict[str, Any]], tmp_path: Path, sqlite_template: Path
) -> None:
    results = []
    for off in (False, True):
        database, path = fresh_sqlite(tmp_path, sqlite_template, "slow" if off else "fast")
        try:
            await f.warehouse(database, "MAIN", priority=1)
            await f.warehouse(database, "EAST", priority=2)
            await f.product(database, "TEE", "19.99")
            await f.product(database, "MUG", "7.50", allow_backorder=True)
            await f.product(database, "CAP", "12.00")
            await f.product(database, "BAG", "30.00", currency="EUR")
            await f.stock(database, "TEE", "MAIN", 5)
            await f.stock(database, "TEE", "EAST", 4)
            await f.stock(database, "MUG", "EAST", 2)
            await f.stock(database, "BAG", "MAIN", 9)
            if off:
                with driver_off():
                    outcomes = await place_all(database, scripts)
            else:
                outcomes = await place_all(database, scripts)
        finally:
            await database.dispose()
        results.append((outcomes, dump(path)))
    (fast_outcomes, fast_rows), (slow_outcomes, slow_rows) = results
    assert fast_outcomes == slow_outcomes
    assert fast_rows == slow_rows


# Errors, and the connection Core transactions run on ------------------------------------

UNIQUE = MetaData()
uniques = Table("uniques", UNIQUE, Column("id", Integer, primary_key=True), Column("k", String(5)))


def test_driver_errors_are_sqlalchemys_exceptions_on_both_paths(sync_engine: Any) -> None:
    from sqlalchemy.exc import IntegrityError

    UNIQUE.create_all(sync_engine)
    with sync_engine.connect() as conn:
        conn.exec_driver_sql("CREATE UNIQUE INDEX uniques_k ON uniques (k)")
        conn.commit()
    add = Prepared(sa_insert(uniques))

    def clash(conn: Any) -> list[str]:
        add.insert(conn, {"k": "a"})
        raised = []
        with pytest.raises(IntegrityError) as one:
            add.insert(conn, {"k": "a"})
        raised.append(type(one.value.orig).__name__)
        with pytest.raises(IntegrityError) as many:
            add.execute(conn, [{"k": "b"}, {"k": "b"}])
        raised.append(type(many.value.orig).__name__)
        return raised

    fast, slow = both(sync_engine, clash)
    assert fast == slow == ["IntegrityError", "IntegrityError"]


async def test_core_transactions_share_one_connection_and_survive_failures(
    tmp_path: Path, sqlite_template: Path
) -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from db.uow import run_core
    from domain.access import Principal

    database, path = fresh_sqlite(tmp_path, sqlite_template, "core")
    actor = Principal.system("test")
    seen: list[Any] = []

    def work(w: Any) -> int:
        seen.append(w.conn)
        return int(w.conn.exec_driver_sql("SELECT count(*) FROM warehouse").scalar_one())

    def failing(w: Any) -> None:
        w.conn.exec_driver_sql("INSERT INTO event_counter (id, last_sequence) VALUES (99, 0)")
        raise RuntimeError("boom")

    try:
        assert await run_core(database, actor, work) == 0
        with pytest.raises(RuntimeError):
            await run_core(database, actor, failing)
        assert await run_core(database, actor, work) == 0
        assert seen[0] is seen[1]  # one connection, not a pool checkout per transaction
        # The failed transaction left nothing behind.
        check = sqlite3.connect(path)
        assert check.execute("SELECT count(*) FROM event_counter WHERE id = 99").fetchone() == (0,)
        # Another writer holds the lock: BEGIN IMMEDIATE fails as SQLAlchemy's error, and
        # the next transaction works once the lock is free.
        seen[0].connection.dbapi_connection.execute("PRAGMA busy_timeout = 50")
        check.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"):
            await run_core(database, actor, work)
        check.execute("ROLLBACK")
        check.close()
        assert await run_core(database, actor, work) == 0
    finally:
        await database.dispose()


async def test_the_api_key_lookup_runs_on_the_driver_on_one_kept_connection(
    tmp_path: Path, sqlite_template: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from domain.access import Role
    from resolvers.access import create_api_key, find_api_key

    db, _ = fresh_sqlite(tmp_path, sqlite_template, "keys")
    try:
        created = await create_api_key(db, "reader", Role.STAFF)
        planned: list[bool] = []
        real_plan = Prepared._plan

        def spy(self: Prepared, dialect: Any, params: Any, *, many: bool) -> Any:
            plan = real_plan(self, dialect, params, many=many)
            planned.append(plan is not None)
            return plan

        monkeypatch.setattr(Prepared, "_plan", spy)
        connections: list[Any] = []
        real_read = db.read_core

        def recording(fn: Any) -> Any:
            def run(conn: Any) -> Any:
                connections.append(conn)
                return fn(conn)

            return run

        async def spying_read(fn: Any) -> Any:
            return await real_read(recording(fn))

        monkeypatch.setattr(db, "read_core", spying_read)
        first = await find_api_key(db, created.key)
        again = await find_api_key(db, created.key)
        assert first is not None and again is not None and first.id == created.record.id
        assert await find_api_key(db, created.key + "x") is None
        assert planned == [True, True, True]
        assert connections[0] is connections[1] is connections[2]
        assert not connections[0].in_transaction()
    finally:
        await db.dispose()
