"""Statements of hot paths, compiled once and run straight on the driver.

SQLAlchemy spends about 50-120 us of Python on every statement it executes (looking the
compiled form up in its cache, building an execution context, processing parameters and
results, dispatching events), against 5-40 us for SQLite to run it. A ``placeOrder`` runs
about ten statements, so that layer cost more than the database.

``Prepared(statement)`` compiles a Core statement with SQLAlchemy, once per dialect and
parameter shape, and keeps what an execution needs: the SQL text, the order of the
positional parameters with their bind processors (dates, JSON), the Python-side column
defaults an INSERT or UPDATE must fill in, and the result processors. It then runs the text
on the DBAPI connection under the ``Connection``, inside the transaction the ``Connection``
began (or in its autocommit):

- SQLite's plain ``sqlite3`` connections (``Database.sync_write_engine``,
  ``db.uow.run_core``, ``Database.read_core``);
- PostgreSQL's asyncpg, through SQLAlchemy's adapted DBAPI cursor (inside ``run_sync``, as
  every Core hot path there runs): the adapter keeps its prepared-statement cache, its
  transaction handling and its error translation; what is skipped is SQLAlchemy's execution
  layer, about 120 us of Python per statement measured here (220-260 against 100-125 us of
  the process's CPU per single-row SELECT). A list of parameter sets with RETURNING stays
  on SQLAlchemy there: it sends them as one statement, where the driver would need one
  round trip per set.

Anywhere else (other drivers, the aiosqlite engines, ``echo`` on) and for any statement it
cannot plan, it runs the statement through ``Connection.execute`` as usual, with the same
results. Either way the statement is counted for ``extensions.debug.sqlStatements``, and a
driver error is raised as SQLAlchemy's exception (``IntegrityError`` …); a PostgreSQL error
that means the connection is gone invalidates it, as ``Connection.execute`` would.

tests/test_prepared.py checks both paths against each other, statement by statement, on
SQLite and on PostgreSQL.
"""

from __future__ import annotations

import sqlite3
from collections import namedtuple
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, DateTime, Dialect, TypeDecorator
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.selectable import TextualSelect
from sqlalchemy.sql.visitors import traverse

from db.database import count_statement, run_on_driver

Params = Mapping[str, Any]
_CONSTANT = -2  # a getter's index: the parameter's value is in the statement itself
_Convert = Callable[[Any], Any]
_Processor = _Convert | None


class _Plan:
    """One compiled shape of a statement, ready to run on the driver."""

    __slots__ = ("args", "defaults", "getters", "key_returned", "processed", "row", "sql")

    def __init__(
        self,
        sql: str,
        getters: tuple[tuple[str, int, _Processor, Any], ...],
        defaults: tuple[tuple[str, Callable[[], Any]], ...],
        row: Any,
        processed: tuple[tuple[int, _Convert], ...],
        key_returned: bool = False,
    ) -> None:
        self.sql = sql
        # (parameter, index into its expanded list or -1 or CONSTANT, processor, constant)
        self.getters = getters
        self.defaults = defaults  # (parameter, makes its value): Python-side column defaults
        self.row = row  # a namedtuple class, or None when the statement returns no rows
        # (column index, result processor) for each column that has one
        self.processed = processed
        # An INSERT that returns its new primary key itself (PostgreSQL's implicit
        # RETURNING), rather than through the cursor's ``lastrowid`` (SQLite).
        self.key_returned = key_returned
        # The driver's positional arguments from a parameter set (``_args_function``).
        self.args: Callable[[Params], tuple[Any, ...]] = _args_function(getters, defaults)

    def rows(self, raw: list[tuple[Any, ...]]) -> list[Any]:
        make = self.row._make
        processed = self.processed
        if not processed:
            return [make(r) for r in raw]
        # Only the columns with a processor are touched (a generator over every column cost
        # about 2 us per row of eleven columns, of which two had one).
        rows = []
        for r in raw:
            values = list(r)
            for index, process in processed:
                values[index] = process(values[index])
            rows.append(make(values))
        return rows


def _args_function(
    getters: tuple[tuple[str, int, _Processor, Any], ...],
    defaults: tuple[tuple[str, Callable[[], Any]], ...],
) -> Callable[[Params], tuple[Any, ...]]:
    """A function of a parameter set that returns the driver's positional arguments:
    each parameter's value (or an item of an expanded list), through its bind processor,
    or a constant; Python-side column defaults filled in for parameters left out.

    Written out once per plan as straight-line code: the same loop over the getters,
    interpreted for every statement (about seventeen per ``placeOrder``), cost several
    times as much. tests/test_prepared.py compares it with that loop."""
    namespace: dict[str, Any] = {}
    body = []
    if defaults:
        body.append("params = dict(params)")
        for i, (name, make) in enumerate(defaults):
            namespace[f"d{i}"] = make
            body.append(f"if {name!r} not in params: params[{name!r}] = d{i}()")
    values = []
    for i, (name, index, process, constant) in enumerate(getters):
        if index == _CONSTANT:
            namespace[f"c{i}"] = constant
            values.append(f"c{i}")
            continue
        value = f"params[{name!r}]" if index < 0 else f"params[{name!r}][{index}]"
        if process is not None:
            namespace[f"p{i}"] = process
            value = f"p{i}({value})"
        values.append(value)
    body.append(f"return ({''.join(v + ', ' for v in values)})")
    source = "def args(params):\n" + "".join(f"    {line}\n" for line in body)
    exec(compile(source, "<db.prepared args>", "exec"), namespace)
    function: Callable[[Params], tuple[Any, ...]] = namespace["args"]
    return function


def _default_maker(column: Any) -> Callable[[], Any] | None:
    default = column.default
    if default is None or getattr(default, "is_sequence", False):
        return None
    if default.is_callable:
        fn = default.arg  # SQLAlchemy wraps it to take an execution context; ours ignore it
        return lambda: fn(None)
    if default.is_scalar:
        value = default.arg
        return lambda: value
    return None  # a SQL expression: leave it to SQLAlchemy


class Prepared:
    """A Core statement for a hot path; see the module's docstring."""

    __slots__ = ("_expanding", "_plans", "statement")

    def __init__(self, statement: Any) -> None:
        self.statement = statement
        self._plans: dict[tuple[Any, ...], _Plan | None] = {}
        expanding: list[str] = []
        traverse(
            statement,
            {},
            {
                "bindparam": lambda b: (
                    expanding.append(b.key)
                    if isinstance(b, BindParameter) and b.expanding
                    else None
                )
            },
        )
        self._expanding = tuple(dict.fromkeys(expanding))

    # What call sites use ------------------------------------------------------------

    def all(self, conn: Connection, params: Params | None = None) -> list[Any]:
        """Every row, as named tuples (or SQLAlchemy ``Row``s: the same access by name)."""
        params = params or {}
        fast = self._fast(conn, params)
        if fast is None:
            return list(conn.execute(self.statement, params).all())
        raw, plan = fast
        return plan.rows(_run(conn, raw, plan.sql, plan.args(params)).fetchall())

    def first(self, conn: Connection, params: Params | None = None) -> Any | None:
        rows = self.all(conn, params)
        return rows[0] if rows else None

    def scalar(self, conn: Connection, params: Params | None = None) -> Any | None:
        row = self.first(conn, params)
        return row[0] if row is not None else None

    def scalars(self, conn: Connection, params: Params | Sequence[Params]) -> list[Any]:
        """The first column of every row; with a list of parameter sets (an INSERT …
        RETURNING), one row per set, in the order of the sets."""
        if isinstance(params, Mapping):
            return [row[0] for row in self.all(conn, params)]
        fast = self._fast_many(conn, params, many=False)
        if fast is None:
            return list(conn.execute(self.statement, list(params)).scalars().all())
        raw, plan = fast
        return [_run(conn, raw, plan.sql, plan.args(p)).fetchone()[0] for p in params]

    def execute(self, conn: Connection, params: Params | Sequence[Params]) -> int:
        """Run a statement that returns no rows, once or for every parameter set; the
        number of rows it changed."""
        if isinstance(params, Mapping):
            fast = self._fast(conn, params)
            if fast is None:
                return int(conn.execute(self.statement, params).rowcount)
            raw, plan = fast
            return int(_run(conn, raw, plan.sql, plan.args(params)).rowcount)
        fast = self._fast_many(conn, params, many=True)
        if fast is None:
            return int(conn.execute(self.statement, list(params)).rowcount)
        raw, plan = fast
        rows = [plan.args(p) for p in params]
        return int(_run(conn, raw, plan.sql, rows, many=True).rowcount)

    def insert(self, conn: Connection, params: Params) -> int:
        """Run a one-row INSERT; the new row's integer primary key."""
        fast = self._fast(conn, params)
        if fast is None:
            return int(conn.execute(self.statement, params).inserted_primary_key[0])  # type: ignore[index]
        raw, plan = fast
        cursor = _run(conn, raw, plan.sql, plan.args(params))
        key = cursor.fetchone()[0] if plan.key_returned else cursor.lastrowid
        assert key is not None
        return int(key)

    def runs_on_driver(self, dialect: Dialect, params: Params, *, many: bool = False) -> bool:
        """Whether this statement, with parameters of this shape, can run on the driver."""
        return self._plan(dialect, params, many=many) is not None

    # Planning -------------------------------------------------------------------------

    def _fast(
        self, conn: Connection, params: Params, *, many: bool = False
    ) -> tuple[Any, _Plan] | None:
        raw = _driver(conn)
        if raw is None:
            return None
        plan = self._plan(conn.dialect, params, many=many)
        return None if plan is None else (raw, plan)

    def _fast_many(
        self, conn: Connection, params: Sequence[Params], *, many: bool
    ) -> tuple[Any, _Plan] | None:
        """``_fast`` for a list of parameter sets, planned on the first: sets of different
        keys go through SQLAlchemy, whose rules and errors then apply, and so do sets that
        each return rows, except on SQLite (see the module's docstring)."""
        keys = params[0].keys()
        for p in params:
            if p.keys() != keys:
                return None
        if not many and conn.dialect.name != "sqlite":
            return None
        return self._fast(conn, params[0], many=many)

    def _plan(self, dialect: Dialect, params: Params, *, many: bool) -> _Plan | None:
        key = (
            dialect.name,
            dialect.driver,
            many,
            tuple(params),
            tuple(len(params[name]) for name in self._expanding if name in params),
        )
        try:
            return self._plans[key]
        except KeyError:
            plan = self._plans[key] = self._build(dialect, params, many)
            return plan

    def _build(self, dialect: Dialect, params: Params, many: bool) -> _Plan | None:
        if (dialect.name, dialect.driver, dialect.paramstyle) not in _DRIVERS:
            return None
        compiled: Any = self.statement.compile(
            dialect=dialect, column_keys=list(params), for_executemany=many
        )
        if not compiled.positional or compiled.literal_execute_params:
            return None
        defaults: list[tuple[str, Callable[[], Any]]] = []
        for column in (*compiled.insert_prefetch, *compiled.update_prefetch):
            make = _default_maker(column)
            if make is None:
                return None
            defaults.append((column.key, make))
        sample = dict(params)
        for name, make in defaults:
            sample.setdefault(name, make())
        state = compiled.construct_expanded_state(sample, escape_names=False)
        source: dict[str, tuple[str, int]] = {}
        for name, expanded in state.parameter_expansion.items():
            for i, expanded_name in enumerate(expanded):
                source[expanded_name] = (name, i)
        getters: list[tuple[str, int, _Processor, Any]] = []
        for name in state.positiontup or ():
            origin, index = source.get(name, (name, -1))
            bind = compiled.binds.get(origin)
            if bind is None:
                return None
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None and _is_datetime(bind.type):
                process = _last_remembered(process)
            if origin in sample:
                getters.append((origin, index, process, None))
            elif bind.callable is None and not bind.required and not bind.expanding:
                # A value written into the statement (``id == 1``): bound the same each time.
                value = bind.value if process is None else process(bind.value)
                getters.append((origin, _CONSTANT, None, value))
            else:
                return None  # a parameter we do not know how to fill
        columns: Sequence[Any]
        if isinstance(self.statement, Select | TextualSelect):
            columns = list(self.statement.selected_columns)
        elif isinstance(self.statement, UpdateBase):
            columns = list(self.statement.exported_columns)
        else:
            return None
        row_class: Any = None
        processed: list[tuple[int, _Convert]] = []
        if columns:
            names = [getattr(c, "key", None) or f"c{i}" for i, c in enumerate(columns)]
            row_class = _row_class(names)
            for index, column in enumerate(columns):
                process = column.type.dialect_impl(dialect).result_processor(dialect, None)
                if process is not None:
                    processed.append((index, process))
        key_returned = bool(compiled.implicit_returning)
        return _Plan(
            state.statement,
            tuple(getters),
            tuple(defaults),
            row_class,
            tuple(processed),
            key_returned,
        )


def _is_datetime(type_: Any) -> bool:
    if isinstance(type_, TypeDecorator):
        type_ = type_.impl_instance
    return isinstance(type_, DateTime)


def _last_remembered(process: _Convert) -> _Convert:
    """``process`` for datetimes, answering again for the value it was last given without
    running it. A use case binds one ``now`` to most of its statements (a ``placeOrder`` on
    SQLite: nine times, each a zone conversion and a string format, about 1 % of the
    request); datetimes are immutable, and the value is held, so ``is`` cannot mistake a
    new one for it. (One tuple, read and replaced whole: threads sharing a plan see a
    value with its own result.)"""
    last: tuple[Any, Any] = (_UNSEEN, None)

    def remembered(value: Any) -> Any:
        nonlocal last
        seen = last
        if seen[0] is value:
            return seen[1]
        result = process(value)
        last = (value, result)
        return result

    return remembered


_UNSEEN = object()


def _row_class(names: list[str]) -> Any:
    """A named tuple class for a statement's rows (attribute access like ``Row``)."""
    return namedtuple("Row", names, rename=True)


#: (dialect, driver, paramstyle) whose DBAPI connections plans run on. (Not the aiosqlite
#: engines': their statements go through SQLAlchemy.)
_DRIVERS = {("sqlite", "pysqlite", "qmark"), ("postgresql", "asyncpg", "numeric_dollar")}


def _driver(conn: Connection) -> Any | None:
    """The DBAPI connection under ``conn`` when statements may run on it: a plain
    ``sqlite3`` connection, or SQLAlchemy's adapted asyncpg connection."""
    dialect = conn.dialect
    if conn.engine.echo or (dialect.name, dialect.driver, dialect.paramstyle) not in _DRIVERS:
        return None
    return conn.connection.dbapi_connection


def _run(conn: Connection, raw: Any, sql: str, args: Any, *, many: bool = False) -> Any:
    """Run ``sql`` on ``raw`` (``args`` a list of parameter tuples when ``many``): the
    cursor, with the statement counted and driver errors raised as SQLAlchemy's."""
    if isinstance(raw, sqlite3.Connection):
        return run_on_driver(raw, sql, args, conn.dialect, many=many)
    count_statement()
    dialect = conn.dialect
    cursor = raw.cursor()
    try:
        if many:
            cursor.executemany(sql, args)
        else:
            cursor.execute(sql, args)
    except dialect.loaded_dbapi.Error as exc:
        gone = dialect.is_disconnect(exc, raw, cursor)
        if gone:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, args, exc, dialect.loaded_dbapi.Error, connection_invalidated=gone, dialect=dialect
        ) from exc
    return cursor
