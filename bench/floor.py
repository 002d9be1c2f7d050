"""The floor of the read scenario: ``python -m bench.floor <json-config>``.

Strawberry executing the read query in-process over the same objects, already in memory:
no HTTP, no authentication, no database. The rows are loaded once by executing the query
for real, recording what the root field and every DataLoader returned; then the query runs
again and again with ``schema.execute(query, context_value=ctx)`` where the root field and
the loaders answer from memory. The schema is ``app.main.make_schema()``, so parse and
validation caches, limits, the request guard and error masking run as in the server.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property, partial
from typing import Any

from strawberry.dataloader import DataLoader

from bench.queries import READ_ORDERS, count_fields
from bench.stats import summary_ms

Batch = Callable[[Sequence[Any]], Awaitable[list[Any]]]


async def _from_memory(table: dict[Any, Any], keys: Sequence[Any]) -> list[Any]:
    return [table[k] for k in keys]


def _recording(batch: Batch, table: dict[Any, Any]) -> Batch:
    async def load(keys: Sequence[Any]) -> list[Any]:
        values = await batch(keys)
        table.update(zip(keys, values, strict=True))
        return values

    return load


def _loader_names(loaders: Any) -> list[str]:
    """The DataLoaders of ``app.loaders.Loaders``: made on first use (cached properties)."""
    names = [
        name for name, value in vars(type(loaders)).items() if isinstance(value, cached_property)
    ]
    return [name for name in names if isinstance(getattr(loaders, name), DataLoader)]


class MemoryLoaders:
    """The attributes of ``app.loaders.Loaders``, answering from recorded tables. Built per
    execution, as the server builds its loaders per request."""

    def __init__(self, tables: dict[str, dict[Any, Any]]) -> None:
        for name, table in tables.items():
            setattr(self, name, DataLoader(load_fn=partial(_from_memory, table)))


async def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    import resolvers.orders as order_use_cases
    from app.context import Context
    from app.loaders import Loaders
    from app.main import make_schema, tune_gc_for_serving
    from app.settings import Settings
    from db.database import Database
    from domain.access import Principal

    settings = Settings.from_env({"ORDERGRAPH_DATABASE_URL": cfg["database_url"]})
    schema = make_schema()
    # The garbage collector as the server process has it (``app.main``): the comparison is
    # between executions, not between collector settings.
    tune_gc_for_serving()
    variables = {"first": int(cfg.get("first", 50))}
    principal = Principal.system("bench")
    db = Database(settings.database_url)

    def context(loaders: Any, database: Any) -> Context:
        return Context(
            request=None,
            response=None,
            db=database,
            loaders=loaders,
            pricing=settings.pricing,
            stream=None,  # type: ignore[arg-type]
            principal=principal,
            request_id="bench-floor",
        )

    # 1. Execute once for real, recording the page and every loaded object.
    real_list_orders = order_use_cases.list_orders
    pages: list[Any] = []

    async def recording_list_orders(*args: Any, **kwargs: Any) -> Any:
        page = await real_list_orders(*args, **kwargs)
        pages.append(page)
        return page

    loaders = Loaders(db)
    tables: dict[str, dict[Any, Any]] = {}
    for name in _loader_names(loaders):
        tables[name] = {}
        loader = getattr(loaders, name)
        setattr(loaders, name, DataLoader(load_fn=_recording(loader.load_fn, tables[name])))
    order_use_cases.list_orders = recording_list_orders
    try:
        recorded = await schema.execute(
            READ_ORDERS, variable_values=variables, context_value=context(loaders, db)
        )
    finally:
        order_use_cases.list_orders = real_list_orders
        await db.dispose()
    if recorded.errors:
        return {"error": f"recording run failed: {recorded.errors}"}
    page = pages[0]

    # 2. From memory only: the root field returns the recorded page, loaders the rows.
    async def page_from_memory(*_args: Any, **_kwargs: Any) -> Any:
        return page

    order_use_cases.list_orders = page_from_memory

    async def once() -> Any:
        return await schema.execute(
            READ_ORDERS,
            variable_values=variables,
            context_value=context(MemoryLoaders(tables), None),
        )

    first = await once()
    if first.errors:
        return {"error": f"in-memory run failed: {first.errors}"}
    same = first.data == recorded.data

    end = time.perf_counter() + float(cfg.get("warmup", 1))
    while time.perf_counter() < end:
        await once()
    durations: list[float] = []
    start = time.perf_counter()
    end = start + float(cfg.get("duration", 5))
    failures = 0
    while True:
        t0 = time.perf_counter()
        result = await once()
        t1 = time.perf_counter()
        durations.append(t1 - t0)
        if result.errors:
            failures += 1
        if t1 >= end:
            break
    elapsed = time.perf_counter() - start
    fields = count_fields(first.data)
    rate = len(durations) / elapsed
    return {
        "first": variables["first"],
        "executions": len(durations),
        "failures": failures,
        "pages_per_s": round(rate, 2),
        "latency_ms": summary_ms(durations),
        "response_fields": fields,
        "us_per_field": round(1e6 / rate / fields, 3),
        "same_data_as_database_run": same,
        "loaders_used": sorted(name for name, table in tables.items() if table),
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.floor <json-config>", file=sys.stderr)
        return 2
    config = json.loads(argv[0])
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(measure(config))
    else:
        result = uvloop.run(measure(config))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
