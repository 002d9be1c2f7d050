"""db.prepared: statements run on SQLite's driver give what SQLAlchemy gives, and write
what SQLAlchemy writes."""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta, timezone
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
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg
from sqlalchemy.dialects.sqlite import pysqlite
from sqlalchemy.types import JSON, DateTime

import db.prepared as prepared_module
from db.database import Database, StatementCounter, statement_counter
from db.prepared import Prepared
from domain.errors import DomainError, DomainErrors
from tests import factories as f
from tests.conftest import fresh_postgres_url

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
UNIQUE = MetaData()
uniques = Table(
    "uniques",
    UNIQUE,
    Column("id", Integer, primary_key=True),
    Column("k", String(5), unique=True),
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


class Paths:
    """Runs a function of a sync ``Connection`` on the driver and through SQLAlchemy, each
    in a transaction it rolls back: on SQLite's sync engine (the ``run_core`` one), or on
    PostgreSQL's async engine inside ``run_sync`` (as the hot paths run there)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.sqlite = database.sync_write_engine is not None

    @property
    def dialect(self) -> Any:
        return (self.database.sync_write_engine or self.database.write_engine).dialect

    async def run(self, fn: Any, *, driver: bool = True) -> Any:
        def in_transaction(conn: Any) -> Any:
            with conn.begin() as tx:
                if not self.sqlite:
                    conn.exec_driver_sql("TRUNCATE things RESTART IDENTITY")  # ids from 1
                with nullcontext() if driver else driver_off():
                    out = fn(conn)
                tx.rollback()
            return out

        if self.database.sync_write_engine is not None:
            with self.database.sync_write_engine.connect() as conn:
                return in_transaction(conn)
        async with self.database.write_engine.connect() as async_conn:
            return await async_conn.run_sync(in_transaction)

    async def both(self, fn: Any) -> tuple[Any, Any]:
        return await self.run(fn), await self.run(fn, driver=False)


@pytest.fixture
def pg_url() -> str:
    return fresh_postgres_url()


@pytest.fixture
async def paths(backend: str, db_url: str) -> AsyncIterator[Paths]:
    """The ``things`` tables on a database of each backend."""
    database = Database(db_url)
    if database.sync_write_engine is not None:
        meta.create_all(database.sync_write_engine)
        UNIQUE.create_all(database.sync_write_engine)
    else:
        async with database.write_engine.begin() as conn:
            await conn.run_sync(meta.drop_all)
            await conn.run_sync(UNIQUE.drop_all)
            await conn.run_sync(meta.create_all)
            await conn.run_sync(UNIQUE.create_all)
    try:
        yield Paths(database)
    finally:
        if database.sync_write_engine is None:
            async with database.write_engine.begin() as conn:
                await conn.run_sync(meta.drop_all)
                await conn.run_sync(UNIQUE.drop_all)
        await database.dispose()


def as_tuples(rows: list[Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in rows]


SQLITE = pysqlite.dialect()
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


async def test_selects_convert_values_as_sqlalchemy_does(paths: Paths) -> None:
    def read(conn: Any) -> list[tuple[Any, ...]]:
        seed(conn)
        rows = BY_NAMES.all(conn, {"names": ["a", "b", "c"]})
        assert [r.name for r in rows] == ["a", "b", "c"]  # access by name
        return as_tuples(rows) + as_tuples(BY_NAMES.all(conn, {"names": ["c"]}))

    fast, slow = await paths.both(read)
    assert fast == slow
    assert [type(r[2]) for r in fast] == [bool] * 4  # (SQLite's 0/1 become booleans)
    assert fast[1][4] == datetime(2026, 1, 2, 3, 4, 5, 6)  # the default, as a datetime
    assert fast[2][4] == datetime(2026, 5, 1, 12, 0, 0, 1)
    assert fast[0][3] == {"k": [1, 2]}
    assert BY_NAMES.runs_on_driver(paths.dialect, {"names": ["a"]})


async def test_inserts_fill_python_defaults_and_store_what_sqlalchemy_stores(
    paths: Paths,
) -> None:
    def write(conn: Any) -> list[tuple[Any, ...]]:
        seed(conn)
        # Stored as SQLAlchemy stores it (JSON None is the JSON text null by default).
        raw = conn.exec_driver_sql(
            "SELECT id, name, flag, CAST(doc AS TEXT), CAST(at AS TEXT), n FROM things ORDER BY id"
        )
        return [tuple(r) for r in raw]

    fast, slow = await paths.both(write)
    assert fast == slow
    assert [r[0] for r in fast] == [1, 2, 3]
    assert fast[1][3] == "null" and fast[1][4] == "2026-01-02 03:04:05.000006"


async def test_updates_report_changed_rows_once_and_for_many(paths: Paths) -> None:
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

    fast, slow = await paths.both(run)
    # asyncpg reports no row count for a list of parameter sets: -1 both ways.
    assert fast[:3] == slow[:3] == (1, 0, 2 if paths.sqlite else -1)
    assert as_tuples(fast[3]) == as_tuples(slow[3])
    assert [r.n for r in fast[3]] == [8, 8, 4]


async def test_returning_gives_one_row_per_parameter_set_in_order(paths: Paths) -> None:
    insert_returning = Prepared(
        sa_insert(things).returning(things.c.id, sort_by_parameter_order=True)
    )

    def run(conn: Any) -> list[int]:
        return insert_returning.scalars(conn, [{"name": n} for n in "zyxw"])

    fast, slow = await paths.both(run)
    assert fast == slow == [1, 2, 3, 4]


async def test_statements_are_counted_on_both_paths(paths: Paths) -> None:
    def run(conn: Any) -> None:
        seed(conn)
        BY_NAMES.all(conn, {"names": ["a"]})

    counts = []
    for driver in (True, False):
        counter = StatementCounter()
        token = statement_counter.set(counter)
        try:
            await paths.run(run, driver=driver)
        finally:
            statement_counter.reset(token)
        counts.append(counter.count)
    # Two INSERTs and a SELECT; on SQLite also BEGIN IMMEDIATE, on PostgreSQL the TRUNCATE
    # (asyncpg's BEGIN is the driver's own).
    assert counts == [4, 4]


def test_echo_and_other_dialects_take_sqlalchemys_path(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'echo.db'}", echo=True)
    assert database.sync_write_engine is not None
    with database.sync_write_engine.connect() as conn:
        assert prepared_module._driver(conn) is None
    database.sync_write_engine.dispose()
    pg = postgresql_asyncpg.dialect()  # type: ignore[no-untyped-call]
    assert BY_NAMES.runs_on_driver(pg, {"names": ["a"]})
    psycopg = postgresql_psycopg.dialect()  # type: ignore[no-untyped-call]
    assert not BY_NAMES.runs_on_driver(psycopg, {"names": ["a"]})


def fresh_sqlite(tmp_path: Path, template: Path, name: str) -> tuple[Database, Path]:
    path = tmp_path / f"{name}.db"
    shutil.copy(template, path)
    return Database(f"sqlite+aiosqlite:///{path}"), path


async def test_the_place_order_path_runs_on_the_driver(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every statement placeOrder runs through ``Prepared`` is planned for the driver, on
    both backends: a change that made one fall back to SQLAlchemy would otherwise go
    unnoticed."""
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
    on_driver: list[str] = []
    real_run = prepared_module._run

    def run_spy(conn: Any, raw: Any, sql: str, args: Any, *, many: bool = False) -> Any:
        on_driver.append(sql)
        return real_run(conn, raw, sql, args, many=many)

    monkeypatch.setattr(prepared_module, "_run", run_spy)
    # A guest, an idempotency key, an external id, and a backordered line: every branch.
    order = await f.order(
        db,
        [("TEE", 2), ("MUG", 3)],
        email="new@example.com",
        idempotency_key="k-1",
        external_id="ext-1",
    )
    assert order.status == "BACKORDERED"
    assert len(planned) >= (9 if db.is_sqlite else 7)  # (fewer statements on PostgreSQL)
    assert [s for s, ok in planned if not ok] == []
    assert len(on_driver) >= len(planned)  # (a list of parameter sets may run one by one)


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


async def test_driver_errors_are_sqlalchemys_exceptions_on_both_paths(paths: Paths) -> None:
    from sqlalchemy.exc import IntegrityError

    add = Prepared(sa_insert(uniques))

    def clash(conn: Any) -> list[str]:
        add.insert(conn, {"k": "a"})
        raised = []
        # (In a savepoint each: on PostgreSQL an error aborts the transaction up to it.)
        with pytest.raises(IntegrityError) as one, conn.begin_nested():
            add.insert(conn, {"k": "a"})
        raised.append(type(one.value.orig).__name__)
        with pytest.raises(IntegrityError) as many, conn.begin_nested():
            add.execute(conn, [{"k": "b"}, {"k": "b"}])
        raised.append(type(many.value.orig).__name__)
        assert add.insert(conn, {"k": "c"}) > 1  # the transaction goes on
        return raised

    fast, slow = await paths.both(clash)
    assert fast == slow  # the driver's own error class under it, the same both ways
    assert fast == (["IntegrityError"] * 2 if paths.sqlite else ["UniqueViolationError"] * 2)


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


async def test_a_postgresql_connection_lost_under_the_driver_path_is_replaced(pg_url: str) -> None:
    """A statement on the driver that finds its connection gone fails as SQLAlchemy's
    error, marked invalidated, and the pool replaces the connection: the next request
    works (it would get the dead one again, and fail too, were it not invalidated)."""
    from sqlalchemy import func
    from sqlalchemy.exc import DBAPIError
    from sqlalchemy.ext.asyncio import create_async_engine

    database = Database(pg_url, pool_size=1)
    backend_pid = Prepared(sa_select(func.pg_backend_pid()))
    killer = create_async_engine(pg_url)
    try:
        first = await database.read_core(backend_pid.scalar)
        async with killer.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        with pytest.raises(DBAPIError) as lost:
            await database.read_core(backend_pid.scalar)
        assert lost.value.connection_invalidated
        again = await database.read_core(backend_pid.scalar)
        assert again is not None and again != first
    finally:
        await killer.dispose()
        await database.dispose()


# The plan's argument function ------------------------------------------------------------

_NAMES = st.sampled_from(["a", "b", "c", "order id", "it's", 'q"uote'])


@st.composite
def _getters_and_params(draw: st.DrawFn) -> tuple[Any, Any, dict[str, Any]]:
    """Getters of every kind (a parameter, an item of an expanded list, a constant; with a
    processor or without), Python-side defaults, and a parameter set they fit."""
    params: dict[str, Any] = {}
    getters: list[tuple[str, int, Any, Any]] = []
    for _ in range(draw(st.integers(0, 8))):
        name = draw(_NAMES)
        kind = draw(st.sampled_from(["value", "item", "constant"]))
        process = draw(st.sampled_from([None, str, lambda v: ("processed", v)]))
        if kind == "constant":
            getters.append((name, prepared_module._CONSTANT, None, draw(st.integers())))
            continue
        if kind == "item":
            items = params.setdefault(f"{name}[]", draw(st.lists(st.integers(), min_size=1)))
            index = draw(st.integers(0, len(items) - 1))
            getters.append((f"{name}[]", index, process, None))
            continue
        params.setdefault(name, draw(st.integers() | st.text(max_size=3) | st.none()))
        getters.append((name, -1, process, None))
    defaults: list[tuple[str, Any]] = []
    for name in draw(st.lists(st.sampled_from(["made", "a", "b"]), unique=True, max_size=2)):
        value = draw(st.integers())
        defaults.append((name, lambda value=value: ("default", value)))
        getters.append((name, -1, None, None))
        if draw(st.booleans()):
            params[name] = "given"  # a default only fills a parameter left out
    return tuple(getters), tuple(defaults), params


def _args_by_loop(
    getters: tuple[tuple[str, int, Any, Any], ...],
    defaults: tuple[tuple[str, Any], ...],
    params: dict[str, Any],
) -> tuple[Any, ...]:
    """The driver's arguments as the loop over the getters that plans ran before."""
    if defaults:
        params = dict(params)
        for name, make in defaults:
            if name not in params:
                params[name] = make()
    out = []
    for name, index, process, constant in getters:
        if index == prepared_module._CONSTANT:
            out.append(constant)
            continue
        value = params[name] if index < 0 else params[name][index]
        out.append(value if process is None else process(value))
    return tuple(out)


@given(_getters_and_params())
def test_the_written_out_argument_function_matches_the_loop(
    case: tuple[Any, Any, dict[str, Any]],
) -> None:
    getters, defaults, params = case
    before = dict(params)
    made = prepared_module._args_function(getters, defaults)(params)
    assert made == _args_by_loop(getters, defaults, params)
    assert isinstance(made, tuple) and len(made) == len(getters)
    assert params == before  # the caller's parameters are left as they were


@given(
    moments=st.lists(st.datetimes(timezones=st.just(UTC)), min_size=1, max_size=3),
    picks=st.lists(st.tuples(st.integers(0, 2), st.booleans()), max_size=12),
)
def test_a_datetime_processor_answers_again_only_for_the_very_value_it_last_had(
    moments: list[datetime], picks: list[tuple[int, bool]]
) -> None:
    """Binding the same ``now`` again reuses its text; an equal moment in another zone (an
    equal datetime, other text) or any other value is processed anew."""
    plus_two = timezone(timedelta(hours=2))
    pool = [m for moment in moments for m in (moment, moment.astimezone(plus_two))]
    process = DateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert process is not None
    calls: list[datetime] = []

    def counted(value: datetime) -> Any:
        calls.append(value)
        return process(value)

    remembered = prepared_module._last_remembered(counted)
    last: Any = None
    for index, in_other_zone in picks:
        value = pool[(2 * index + in_other_zone) % len(pool)]
        before = len(calls)
        assert remembered(value) == process(value)
        assert len(calls) == before + (value is not last)
        last = value


def test_datetime_parameters_are_remembered_and_nothing_else() -> None:
    plan = INSERT_THINGS._plan(SQLITE, SEED[2], many=False)
    assert plan is not None
    wrapped = {
        name: process is not None and process.__name__ == "remembered"
        for name, _index, process, _constant in plan.getters
    }
    assert wrapped["at"] and not wrapped["doc"] and not wrapped["name"]
