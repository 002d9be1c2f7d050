"""An aiosqlite-compatible driver that runs SQLite calls on the event loop's own thread.

aiosqlite runs every call on a worker thread and hands the result back through the event
loop: measured here, about 60 microseconds per hand-off and two hand-offs per statement,
against about 1 microsecond for the statement itself. A use case of 20 statements spent
almost all its time crossing threads. SQLite in WAL mode never makes a reader wait, and our
writers queue on the in-process write lock before ``BEGIN IMMEDIATE``, so within one process a
statement does not wait on a lock; running it inline blocks the loop for its own few
microseconds only. (Several processes on one SQLite file can make ``BEGIN IMMEDIATE`` wait
for another process's transaction; that is the documented reason to use PostgreSQL there.)

SQLAlchemy's aiosqlite dialect drives this module through the same interface it uses for
aiosqlite (``create_async_engine(url, module=inline_dbapi())``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi

DatabaseError = sqlite3.DatabaseError
Error = sqlite3.Error
IntegrityError = sqlite3.IntegrityError
NotSupportedError = sqlite3.NotSupportedError
OperationalError = sqlite3.OperationalError
ProgrammingError = sqlite3.ProgrammingError
sqlite_version = sqlite3.sqlite_version
sqlite_version_info = sqlite3.sqlite_version_info


class Cursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> Cursor:
        self._cursor.execute(sql, parameters)
        return self

    async def executemany(self, sql: str, parameters: Iterable[Sequence[Any]]) -> Cursor:
        self._cursor.executemany(sql, parameters)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(size if size is not None else self._cursor.arraysize)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()


class _Immediate:
    """Stands in for aiosqlite's request queue: SQLAlchemy puts (future, function) on it to
    run a function "on the connection's thread", which here is this one."""

    def put_nowait(self, item: tuple[Any, Callable[[], Any]]) -> None:
        future, function = item
        try:
            future.set_result(function())
        except Exception as exc:
            future.set_exception(exc)


class _NoThread:
    daemon = True


class Connection:
    def __init__(self, database: str, **kwargs: Any) -> None:
        self._database = database
        self._kwargs = kwargs
        self._conn: sqlite3.Connection | None = None
        self._tx = _Immediate()
        self._thread = _NoThread()

    def __await__(self) -> Generator[Any, None, Connection]:
        self._conn = sqlite3.connect(self._database, **self._kwargs)
        return self
        yield  # pragma: no cover  (makes this a generator)

    @property
    def _connection(self) -> sqlite3.Connection | None:
        return self._conn

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise ProgrammingError("Cannot operate on a closed database.")
        return self._conn

    @property
    def isolation_level(self) -> str | None:
        return self._live().isolation_level

    def cursor(self) -> Cursor:
        return Cursor(self._live().cursor())

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._live().create_function(*args, **kwargs)

    async def commit(self) -> None:
        self._live().commit()

    async def rollback(self) -> None:
        self._live().rollback()

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def connect(database: str, **kwargs: Any) -> Connection:
    return Connection(database, **kwargs)


def inline_dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The module to pass as ``create_async_engine(..., module=...)``."""
    import sys

    return AsyncAdapt_aiosqlite_dbapi(sys.modules[__name__], sqlite3)
