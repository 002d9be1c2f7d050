"""DataLoader batch functions: one SQL statement per batch, whatever the batch size.

They return plain rows (named tuples with the model's attribute names, ``db.queries.
model_columns``), not ORM instances: what the API renders is read once and never changed,
and building ORM instances (identity map, instance state, instrumented attributes) cost more
than the SQL itself (a page of 50 orders with lines, allocations, products and customers:
about 3 ms of ORM work per request). Each batch is a single statement outside any
transaction (``Database.read_core``): Strawberry resolves sibling fields concurrently, and
each statement sees what was committed when it ran, as a session per batch did.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, select

from db.database import Database
from db.prepared import Prepared
from db.queries import model_columns

_STATEMENTS: dict[tuple[Any, ...], Prepared] = {}


def _rows_where_in(model: type[Any], column: Any, order_by: Sequence[Any]) -> Prepared:
    """``SELECT <model's columns> WHERE column IN :keys ORDER BY …``, built once."""
    key = (model, column.key, tuple(str(o) for o in order_by))
    statement = _STATEMENTS.get(key)
    if statement is None:
        statement = _STATEMENTS[key] = Prepared(
            select(*model_columns(model))
            .where(column.in_(bindparam("keys", expanding=True)))
            .order_by(*order_by)
        )
    return statement


async def load_by_id(db: Database, model: type[Any], keys: Sequence[int]) -> list[Any]:
    statement = _rows_where_in(model, model.id, ())
    params = {"keys": list(keys)}
    found = {row.id: row for row in await db.read_core(lambda conn: statement.all(conn, params))}
    return [found.get(k) for k in keys]


async def load_grouped(
    db: Database, model: type[Any], column: Any, keys: Sequence[int], order_by: Sequence[Any]
) -> list[list[Any]]:
    statement = _rows_where_in(model, column, order_by)
    params = {"keys": list(keys)}
    groups: dict[int, list[Any]] = defaultdict(list)
    for row in await db.read_core(lambda conn: statement.all(conn, params)):
        groups[getattr(row, column.key)].append(row)
    return [groups.get(k, []) for k in keys]
