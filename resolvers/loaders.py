"""DataLoader batch functions: one SQL statement per batch, whatever the batch size.

Each batch opens its own short read session: Strawberry resolves sibling fields
concurrently and one AsyncSession must never be shared by two coroutines.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from db.database import Database


async def load_by_id(db: Database, model: type[Any], keys: Sequence[int]) -> list[Any]:
    async with db.reader() as s:
        found = {
            o.id: o for o in (await s.execute(select(model).where(model.id.in_(keys)))).scalars()
        }
    return [found.get(k) for k in keys]


async def load_grouped(
    db: Database, model: type[Any], column: Any, keys: Sequence[int], order_by: Sequence[Any]
) -> list[list[Any]]:
    async with db.reader() as s:
        rows = (
            await s.execute(select(model).where(column.in_(keys)).order_by(*order_by))
        ).scalars()
        groups: dict[int, list[Any]] = defaultdict(list)
        for row in rows:
            groups[getattr(row, column.key)].append(row)
    return [groups.get(k, []) for k in keys]
