"""Engines and sessions for SQLite (embedded default) and PostgreSQL (scale-out)."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from db.checkpoint import BACKSTOP_PAGES, WalCheckpointer
from db.inline_sqlite import inline_dbapi
from db.keylocks import KeyLocks

T = TypeVar("T")


class StatementCounter:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


# Set per request (debug mode) so the API can report how many SQL statements it ran.
statement_counter: contextvars.ContextVar[StatementCounter | None] = contextvars.ContextVar(
    "statement_counter", default=None
)

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: PostgreSQL connections a Database keeps open (ORDERGRAPH_DB_POOL_SIZE).
DEFAULT_POOL_SIZE = 20
#: A pooled PostgreSQL connection idle for longer than this is pinged before use.
PING_AFTER_IDLE_S = 1.0


def count_statement() -> None:
    """Count one statement for the request being served, if it counts them (debug)."""
    counter = statement_counter.get()
    if counter is not None:
        counter.count += 1


def _count_statement(*_args: Any) -> None:
    count_statement()


def driver_error(exc: sqlite3.Error, statement: str, params: Any, dialect: Any) -> DBAPIError:
    """The SQLAlchemy exception (``IntegrityError``, ``OperationalError`` …) that
    ``Connection.execute`` raises for this driver error: code that runs statements on the
    driver itself raises the same ones, so callers catch one kind."""
    return cast(
        DBAPIError,
        DBAPIError.instance(statement, params, exc, sqlite3.Error, dialect=dialect),
    )


def run_on_driver(
    raw: sqlite3.Connection, statement: str, params: Any, dialect: Any, *, many: bool = False
) -> sqlite3.Cursor:
    """``raw.execute`` (``raw.executemany`` with a list of parameter tuples when ``many``),
    counted once, with SQLAlchemy's exceptions (see ``driver_error``)."""
    count_statement()
    try:
        return raw.executemany(statement, params) if many else raw.execute(statement, params)
    except sqlite3.Error as exc:
        raise driver_error(exc, statement, params, dialect) from exc


def _driver_in_transaction(conn: Connection) -> bool:
    return bool(getattr(conn.connection.dbapi_connection, "in_transaction", False))


class _KeptConnection:
    """One connection of ``engine`` kept open for callers that never overlap (the write
    lock's holder, or calls that run to completion on the loop's thread): a pool checkout,
    its reset and return cost more than a small transaction's statements. One that failed
    (invalidated, or left in a transaction) is closed, and the next caller gets a new one."""

    __slots__ = ("conn", "engine")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.conn: Connection | None = None

    @contextlib.contextmanager
    def use(self) -> Iterator[Connection]:
        conn = self.conn
        if conn is None or conn.closed or conn.invalidated:
            conn = self.conn = self.engine.connect()
        try:
            yield conn
        except BaseException:
            # (A COMMIT that fails, for a deferred constraint say, leaves SQLite's
            # transaction open while SQLAlchemy counts it as ended: ask the driver too.)
            if conn.invalidated or conn.in_transaction() or _driver_in_transaction(conn):
                self.conn = None
                conn.close()
            raise

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def end_autobegin(conn: Connection) -> None:
    """End the transaction SQLAlchemy began on ``conn`` for a statement in autocommit (its
    autobegin: nothing went to the database), so that the connection can serve the next
    caller as it is."""
    if conn.in_transaction():
        conn.rollback()


def _autocommit_read(conn: Connection, fn: Callable[[Connection], T]) -> T:
    try:
        return fn(conn)
    finally:
        end_autobegin(conn)


def _ping(conn: Connection) -> None:
    dbapi_connection = conn.connection.dbapi_connection
    assert dbapi_connection is not None, "a connection in use has its driver connection"
    conn.dialect.do_ping(dbapi_connection)


class _KeptAutocommit:
    """PostgreSQL: up to ``size`` autocommit connections kept checked out of the pool, for
    ``read_core`` and one-statement writes (``db.uow.run_core(transaction=False)``): every
    request's API-key lookup, placeOrder's read and its write. A pool checkout and its return
    cost about 50 us of the process's CPU (the pool's events, the AUTOCOMMIT setting applied
    and reset, the reset on return), against about 9 us to hand over a kept connection.

    It never makes a caller wait: with every kept connection in use, the caller checks one
    out of the pool as before. A connection idle for longer than ``PING_AFTER_IDLE_S`` is
    pinged before use, as the pool would (one that fails is dropped and the caller gets
    another). One whose caller raised (or was cancelled) goes back to the pool, whose reset
    deals with whatever state it is in."""

    __slots__ = ("_closed", "_idle", "_open", "engine", "size")

    def __init__(self, engine: AsyncEngine, size: int) -> None:
        self.engine = engine
        self.size = size
        self._idle: list[tuple[AsyncConnection, float]] = []  # (connection, idle since)
        self._open = 0
        self._closed = False

    async def _take(self) -> AsyncConnection | None:
        while self._idle:
            conn, since = self._idle.pop()
            if time.monotonic() - since <= PING_AFTER_IDLE_S:
                return conn
            try:
                await conn.run_sync(_ping)
                return conn
            except Exception:
                await self._drop(conn, invalidate=True)
        if self._open >= self.size or self._closed:
            return None
        self._open += 1
        try:
            return await self.engine.connect()
        except BaseException:
            self._open -= 1
            raise

    async def _drop(self, conn: AsyncConnection, *, invalidate: bool = False) -> None:
        self._open -= 1
        with contextlib.suppress(Exception):
            if invalidate:
                await conn.invalidate()
            await conn.close()

    @contextlib.asynccontextmanager
    async def use(self) -> AsyncIterator[AsyncConnection]:
        conn = await self._take()
        if conn is None:  # all in use: the pool's, for this call
            async with self.engine.connect() as pooled:
                yield pooled
            return
        try:
            yield conn
            if conn.in_transaction():  # a caller that left SQLAlchemy's autobegin open
                await conn.rollback()
        except BaseException:
            await self._drop(conn)
            raise
        if self._closed or conn.invalidated:
            await self._drop(conn)
        else:
            self._idle.append((conn, time.monotonic()))

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await self._drop(conn)


def sqlite_on_connect(dbapi_connection: Any, wal_autocheckpoint: int | None) -> None:
    """How every SQLite connection of ours is set up (WAL, foreign keys, busy timeout,
    ``synchronous=NORMAL``, temporary files in memory, and ``wal_autocheckpoint`` pages
    unless None)."""
    # Let us emit BEGIN ourselves (see _sqlite_begin); pysqlite's implicit transactions
    # would begin too late for a writer to hold the lock from the start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    # Temporary files in memory: above all the statement journal a statement inside a
    # transaction keeps to undo itself alone (an INSERT of many rows, say), which would
    # otherwise spill to a file of its own, written and synced, once it holds more than a
    # few pages.
    cursor.execute("PRAGMA temp_store=MEMORY")
    if wal_autocheckpoint is not None:
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
    cursor.close()


def _ping_when_idle(engine: Engine) -> None:
    """Pessimistic disconnect handling at a lower price than ``pool_pre_ping``: a pooled
    connection is pinged on checkout only when it has been idle for more than
    ``PING_AFTER_IDLE_S`` (asyncpg's ping outside a transaction is three round trips, BEGIN,
    ``;`` and ROLLBACK, and ``pool_pre_ping`` pays them on every checkout, twice per
    request). A connection in steady use is known to be alive from its last use; one that
    sat idle across a database restart fails its ping, and the pool replaces it
    (``DisconnectionError``) before the caller sees it."""

    def idle_from_now(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) <= PING_AFTER_IDLE_S:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise DisconnectionError(f"connection failed its ping: {exc}") from exc

    event.listen(engine, "connect", idle_from_now)
    event.listen(engine, "checkin", idle_from_now)
    event.listen(engine, "checkout", checkout)


def _sqlite_file(url: str) -> str | None:
    """The database file of a SQLite URL; None for in-memory and URI databases."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


class Database:
    """Owns the engines. Writers on SQLite take the write lock at BEGIN (``BEGIN IMMEDIATE``)
    and queue on an in-process lock first, so they never fail on lock upgrade and never spin
    in SQLite's busy handler against each other; readers never block (WAL).

    ``background_checkpoints`` (servers; SQLite files only): WAL checkpoints run on a
    thread of their own (db/checkpoint.py) between ``start()`` and ``dispose()``, not inside
    a writer's commit."""

    def __init__(
        self,
        url: str,
        *,
        echo: bool = False,
        pool_size: int = DEFAULT_POOL_SIZE,
        background_checkpoints: bool = False,
    ) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        # Called with the sequences of the events a transaction wrote, right after its commit.
        self.after_commit: Callable[[Sequence[int]], None] | None = None
        self.checkpointer: WalCheckpointer | None = None
        self._kept: list[_KeptConnection] = []
        self._autocommit: _KeptAutocommit | None = None
        # PostgreSQL: orders of this process that share a product queue here (db/keylocks.py);
        # SQLite's writers queue on the write lock already.
        self.product_locks: KeyLocks | None = None
        if self.is_sqlite:
            self.write_lock: asyncio.Lock | None = asyncio.Lock()
            path = _sqlite_file(url)
            if background_checkpoints and path is not None:
                self.checkpointer = WalCheckpointer(path, self.write_lock)
            autockpt = BACKSTOP_PAGES if self.checkpointer else None
            self.write_engine = self._sqlite_engine(url, "BEGIN IMMEDIATE", echo, autockpt)
            self.read_engine = self._sqlite_engine(url, "BEGIN", echo, autockpt)
            # Core hot paths (db.uow.run_core) run on plain sqlite3 with no greenlet in
            # between: SQLite runs on this thread anyway (db/inline_sqlite.py), under the
            # same write lock, so this changes nothing but the cost per statement.
            self.sync_write_engine: Engine | None = self._sqlite_sync_engine(
                url, echo, "BEGIN IMMEDIATE", autockpt
            )
            # Single-statement reads (read_core): no explicit transaction at all.
            self.sync_read_engine: Engine | None = self._sqlite_sync_engine(
                url, echo, None, autockpt
            )
            self._core_conn = _KeptConnection(self.sync_write_engine)
            self._read_conn = _KeptConnection(self.sync_read_engine)
            self._kept = [self._core_conn, self._read_conn]
        else:
            # A fixed set of connections, kept open: a caller beyond ``pool_size`` waits for
            # one. Overflow connections (opened past the pool size, closed on return) churned
            # under steady load: every burst above the pool size forked PostgreSQL backends
            # that lived for one request, and lost their prepared statements with them.
            self.write_engine = create_async_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=0
            )
            _ping_when_idle(self.write_engine.sync_engine)
            # Reads run in autocommit: under READ COMMITTED every statement takes its own
            # snapshot anyway, so a transaction around a read adds two round trips (BEGIN,
            # ROLLBACK) and no consistency. Same pool, same connections.
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
            # Half the pool at most; the rest serves sessions (ORM reads and writes).
            self._autocommit = _KeptAutocommit(self.read_engine, pool_size // 2)
            self.write_lock = None
            self.product_locks = KeyLocks()
            self.sync_write_engine = None
            self.sync_read_engine = None
        engines = [self.write_engine.sync_engine]
        if self.is_sqlite:  # (PostgreSQL's read engine shares the write engine's events)
            engines.append(self.read_engine.sync_engine)
        for engine in engines:
            event.listen(engine, "before_cursor_execute", _count_statement)
        for sync_engine in (self.sync_write_engine, self.sync_read_engine):
            if sync_engine is not None:
                event.listen(sync_engine, "before_cursor_execute", _count_statement)
        self.write_session = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self.read_session = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @staticmethod
    def _sqlite_engine(
        url: str, begin: str, echo: bool, wal_autocheckpoint: int | None = None
    ) -> AsyncEngine:
        engine = create_async_engine(
            url, echo=echo, connect_args={"timeout": 30}, module=inline_dbapi()
        )

        def on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

        event.listen(
            engine.sync_engine,
            "connect",
            lambda dbapi_conn, _record: sqlite_on_connect(dbapi_conn, wal_autocheckpoint),
        )
        event.listen(engine.sync_engine, "begin", on_begin)
        return engine

    def core_connection(self) -> contextlib.AbstractContextManager[Connection]:
        """The connection Core write transactions run on, on SQLite (``db.uow.run_core``):
        one, kept open, used only by the holder of the write lock."""
        assert self.write_lock is not None and self.write_lock.locked(), "hold the write lock"
        return self._core_conn.use()

    @staticmethod
    def _sqlite_sync_engine(
        url: str, echo: bool, begin: str | None, wal_autocheckpoint: int | None
    ) -> Engine:
        sync_url = make_url(url).set(drivername="sqlite")
        engine = create_engine(sync_url, echo=echo, connect_args={"timeout": 30})
        event.listen(
            engine,
            "connect",
            lambda dbapi_conn, _record: sqlite_on_connect(dbapi_conn, wal_autocheckpoint),
        )
        if begin is not None:

            def on_begin(conn: Any) -> None:
                # On the driver itself (as db.prepared runs statements), unless echoing.
                if echo:
                    conn.exec_driver_sql(begin)
                    return
                run_on_driver(conn.connection.dbapi_connection, begin, (), conn.dialect)

            event.listen(engine, "begin", on_begin)
        return engine

    async def read_core(self, fn: Callable[[Connection], T]) -> T:
        """``fn(connection)`` for reads on a hot path (every request's API-key lookup;
        placeOrder's reads on PostgreSQL), without a transaction: on SQLite plain sqlite3
        calls on this thread, as every SQLite call here is (db/inline_sqlite.py), without
        the async adaptation; elsewhere one hand-off to the pooled async connection, in
        autocommit (each statement sees what is committed when it runs)."""
        if self.sync_read_engine is not None:
            # One kept connection: ``fn`` runs to completion on this thread.
            with self._read_conn.use() as conn:
                return _autocommit_read(conn, fn)
        async with self.autocommit_connection() as conn:
            return await conn.run_sync(_autocommit_read, fn)

    def autocommit_connection(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """PostgreSQL: a connection in autocommit, for one statement or a few independent
        ones (``read_core``, ``db.uow.run_core(transaction=False)``): a kept one when one is
        free (``_KeptAutocommit``), else one of the pool's."""
        if self._autocommit is None:
            return self.read_engine.connect()
        return self._autocommit.use()

    async def autovacuum_is_off(self) -> bool:
        """PostgreSQL: whether the server runs without autovacuum (False on SQLite)."""
        if self.is_sqlite:
            return False
        setting = await self.read_core(lambda c: c.exec_driver_sql("SHOW autovacuum").scalar())
        return str(setting).lower() == "off"

    def reader(self) -> AsyncSession:
        return self.read_session()

    def start(self) -> None:
        """Start background work (WAL checkpoints); ``dispose()`` stops it."""
        if self.checkpointer is not None:
            self.checkpointer.start()

    async def dispose(self) -> None:
        if self.checkpointer is not None:
            await self.checkpointer.stop()
        for kept in self._kept:
            kept.close()
        if self._autocommit is not None:
            await self._autocommit.close()
        for sync_engine in (self.sync_write_engine, self.sync_read_engine):
            if sync_engine is not None:
                sync_engine.dispose()
        await self.write_engine.dispose()
        if self.is_sqlite:
            await self.read_engine.dispose()
