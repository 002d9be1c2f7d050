"""The benchmark's database: created fresh, migrated and seeded through the command line,
topped up with stock through the use cases, and checked for consistency afterwards."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.broadcast import channel_for
from app.settings import normalize_database_url
from bench.system import ROOT

#: Databases the test suites own (and truncate): never touched by the benchmark.
FORBIDDEN_DATABASES = frozenset({"test", "ordergraph_test", "postgres", "template0", "template1"})
STOCK_PER_LEVEL = 1_000_000
HOLDING_STATUSES = ("PENDING", "BACKORDERED", "CONFIRMED", "PROCESSING")


class PrepareError(RuntimeError):
    """Setting up the database failed; the message says which step and shows its output."""


def app_env(database_url: str, broadcast_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without ORDERGRAPH_* settings, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERGRAPH_")}
    env.update(
        {
            "ORDERGRAPH_DATABASE_URL": database_url,
            "ORDERGRAPH_BROADCAST_URL": broadcast_url,
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def run_cli(args: list[str], env: dict[str, str], timeout: float = 600) -> str:
    """``python -m app …``; returns stdout, raises PrepareError with the output on failure."""
    result = subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise PrepareError(
            f"`python -m app {' '.join(args)}` exited with {result.returncode}:\n"
            f"{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        )
    return result.stdout


# Fresh databases -------------------------------------------------------------------------


def postgres_admin_dsn(database_url: str) -> tuple[str, str]:
    """(DSN of the maintenance database ``postgres`` on the same server, benchmark db name)."""
    parts = urlsplit(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    name = parts.path.lstrip("/")
    if not name or name in FORBIDDEN_DATABASES:
        raise PrepareError(f"refusing to use database {name!r} for the benchmark")
    return parts._replace(path="/postgres").geturl(), name


async def _recreate_postgres(database_url: str) -> None:
    dsn, name = postgres_admin_dsn(database_url)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


def sqlite_path(database_url: str) -> Path:
    """The file of a ``sqlite+aiosqlite:///…`` database."""
    return Path(database_url.split(":///", 1)[1])


def recreate_database(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        path = sqlite_path(database_url)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        asyncio.run(_recreate_postgres(database_url))


async def _analyze_postgres(database_url: str) -> str:
    dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        autovacuum = str(await conn.fetchval("SHOW autovacuum"))
        await conn.execute("ANALYZE")
        return autovacuum
    finally:
        await conn.close()


def analyze_postgres(database_url: str) -> str:
    """ANALYZE the benchmark's PostgreSQL database; returns the server's ``autovacuum``
    setting. Every scenario starts on fresh planner statistics, as a database in steady
    state has them: the scenarios write tens of thousands of rows in minutes, and with
    autovacuum off (this machine's server) or not yet round, the planner took the order
    tables for nearly empty and read a page's lines and allocations by sequential scans,
    10-30 ms of PostgreSQL's CPU per page once 12,000-20,000 orders were in."""
    return asyncio.run(_analyze_postgres(database_url))


async def _probe_postgres(database_url: str) -> None:
    dsn, _ = postgres_admin_dsn(database_url)
    conn = await asyncpg.connect(dsn, timeout=3)
    await conn.close()


def probe_services(database_url: str, redis_url: str) -> str | None:
    """None when PostgreSQL and Redis answer, else why not."""
    try:
        asyncio.run(_probe_postgres(database_url))
    except PrepareError as exc:
        return str(exc)
    except Exception as exc:
        return f"PostgreSQL unreachable ({database_url}): {type(exc).__name__}: {exc}"
    try:
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
        client.ping()
        channel = channel_for(normalize_database_url(database_url))
        listeners = sum(int(n) for _, n in client.pubsub_numsub(channel))
        client.close()
    except Exception as exc:
        return f"Redis unreachable ({redis_url}): {type(exc).__name__}: {exc}"
    if listeners:
        # The channel is named after the database: listeners now are servers still
        # running on the benchmark's own database (a previous run that did not stop).
        return (
            f"{listeners} process(es) already listen on the benchmark database's Redis "
            f"channel {channel!r} at {redis_url}: stop the servers of an earlier run first."
        )
    return None


# Catalogue, stock and demo orders --------------------------------------------------------


@dataclass
class Dataset:
    """What the load process needs to know about the data."""

    skus: list[str]
    customer_ids: list[str]  # global IDs
    warehouses: list[str]
    read_orders: int
    api_key: str = field(repr=False, default="")


async def _stock_and_orders(database_url: str, three_line_orders: int) -> Dataset:
    # The app's own use cases, acting as the system (as the seed command does).
    from sqlalchemy import select

    from app.settings import Settings
    from db.database import Database
    from db.models import Customer, Product, Warehouse
    from domain.access import Principal
    from domain.inventory import StockMovementReason
    from domain.orders import PaymentMethod, SalesChannel
    from resolvers.inventory import AdjustInventoryCommand, adjust_inventory
    from resolvers.orders import LineInput, PlaceOrderCommand, place_order
    from schema.common import to_global_id

    actor = Principal.system("bench")
    settings = Settings.from_env({"ORDERGRAPH_DATABASE_URL": database_url})
    db = Database(settings.database_url)
    try:
        async with db.reader() as s:
            skus = list((await s.execute(select(Product.sku).order_by(Product.id))).scalars())
            codes = list((await s.execute(select(Warehouse.code).order_by(Warehouse.id))).scalars())
            customers = list((await s.execute(select(Customer.id).order_by(Customer.id))).scalars())
        for sku in skus:
            for code in codes:
                await adjust_inventory(
                    db,
                    AdjustInventoryCommand(
                        sku=sku,
                        warehouse_code=code,
                        delta=STOCK_PER_LEVEL,
                        reason=StockMovementReason.RECEIVED,
                        note="benchmark stock",
                    ),
                    actor,
                )
        rng = random.Random(7)
        address = {
            "name": "Bench Mark",
            "line1": "1 Load Street",
            "city": "Springfield",
            "postalCode": "10001",
            "country": "US",
        }
        for _ in range(three_line_orders):
            await place_order(
                db,
                PlaceOrderCommand(
                    channel=SalesChannel.WEB,
                    payment_method=PaymentMethod.CARD,
                    lines=[LineInput(sku, rng.randint(1, 3)) for sku in rng.sample(skus, 3)],
                    shipping_address=dict(address),
                    customer_id=rng.choice(customers),
                ),
                actor,
                settings.pricing,
            )
        return Dataset(
            skus=skus,
            customer_ids=[str(to_global_id("Customer", c)) for c in customers],
            warehouses=codes,
            read_orders=three_line_orders,
        )
    finally:
        await db.dispose()


def prepare(database_url: str, broadcast_url: str, seed_orders: int, read_orders: int) -> Dataset:
    """A fresh, migrated database with the demo catalogue, ``seed_orders`` demo orders,
    ample stock everywhere, ``read_orders`` orders of 3 lines each, and an ADMIN key."""
    recreate_database(database_url)
    env = app_env(database_url, broadcast_url)
    run_cli(["migrate"], env)
    run_cli(["seed", "--orders", str(seed_orders)], env)
    dataset = asyncio.run(_stock_and_orders(database_url, read_orders))
    key = run_cli(["api-key", "create", "--role", "ADMIN", "--name", "bench"], env).strip()
    if not key.startswith("og_"):
        raise PrepareError(f"api-key create printed no key: {key[:40]!r}")
    dataset.api_key = key
    return dataset


# Consistency ------------------------------------------------------------------------------

_HOLDING = ", ".join(f"'{s}'" for s in HOLDING_STATUSES)

LEVELS_SQL = f"""
SELECT il.product_id, il.warehouse_id, il.on_hand, il.reserved,
  COALESCE((SELECT SUM(sm.on_hand_delta) FROM stock_movement sm
            WHERE sm.product_id = il.product_id AND sm.warehouse_id = il.warehouse_id), 0),
  COALESCE((SELECT SUM(sm.reserved_delta) FROM stock_movement sm
            WHERE sm.product_id = il.product_id AND sm.warehouse_id = il.warehouse_id), 0),
  COALESCE((SELECT SUM(a.quantity) FROM allocation a
            JOIN order_line ol ON ol.id = a.order_line_id
            JOIN sales_order o ON o.id = ol.order_id
            WHERE ol.product_id = il.product_id AND a.warehouse_id = il.warehouse_id
              AND o.status IN ({_HOLDING})), 0)
FROM inventory_level il ORDER BY il.id
"""

LINES_SQL = f"""
SELECT COUNT(*) FROM order_line ol JOIN sales_order o ON o.id = ol.order_id
WHERE o.status IN ({_HOLDING})
  AND ol.quantity <> ol.backordered_quantity
      + COALESCE((SELECT SUM(a.quantity) FROM allocation a WHERE a.order_line_id = ol.id), 0)
"""

STALE_ALLOCATIONS_SQL = f"""
SELECT COUNT(*) FROM allocation a JOIN order_line ol ON ol.id = a.order_line_id
JOIN sales_order o ON o.id = ol.order_id
WHERE o.status NOT IN ({_HOLDING}) AND a.quantity <> 0
"""

PLACED_SQL = """
SELECT COUNT(*) FROM sales_order o
WHERE (SELECT COUNT(*) FROM order_event e WHERE e.order_id = o.id AND e.type = 'PLACED') <> 1
"""

SEQUENCES_SQL = """
SELECT COUNT(*), COUNT(DISTINCT sequence), COALESCE(MIN(sequence), 0),
       COALESCE(MAX(sequence), 0) FROM order_event
"""


async def _scalar(conn: Any, sql: str, **params: Any) -> Any:
    return (await conn.execute(text(sql), params)).scalar()


async def _max_order_id(database_url: str) -> int:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            return int(await _scalar(conn, "SELECT COALESCE(MAX(id), 0) FROM sales_order"))
    finally:
        await engine.dispose()


def max_order_id(database_url: str) -> int:
    """The newest order's id: orders above it were written by what runs next."""
    return asyncio.run(_max_order_id(database_url))


async def _check(
    database_url: str, orders_before: int, successful: int | None, wait_published: float
) -> dict[str, Any]:
    engine = create_async_engine(database_url)
    problems: list[str] = []
    try:
        async with engine.connect() as conn:
            levels = (await conn.execute(text(LEVELS_SQL))).all()
            bad_levels = []
            for product, warehouse, on_hand, reserved, ledger_on_hand, ledger_res, alloc in levels:
                if not (on_hand == ledger_on_hand and reserved == ledger_res == alloc):
                    bad_levels.append(
                        {
                            "product_id": product,
                            "warehouse_id": warehouse,
                            "on_hand": on_hand,
                            "ledger_on_hand": int(ledger_on_hand),
                            "reserved": reserved,
                            "ledger_reserved": int(ledger_res),
                            "live_allocations": int(alloc),
                        }
                    )
                if reserved > on_hand or reserved < 0:
                    problems.append(f"level {product}/{warehouse} oversold: {reserved}>{on_hand}")
            if bad_levels:
                problems.append(f"{len(bad_levels)} inventory level(s) disagree with the ledger")
            lines_off = int(await _scalar(conn, LINES_SQL))
            if lines_off:
                problems.append(f"{lines_off} order line(s) whose allocations + backorder != qty")
            stale = int(await _scalar(conn, STALE_ALLOCATIONS_SQL))
            if stale:
                problems.append(f"{stale} allocation(s) still held by closed orders")
            placed_off = int(await _scalar(conn, PLACED_SQL))
            if placed_off:
                problems.append(f"{placed_off} order(s) without exactly one PLACED event")
            count, distinct, low, high = (await conn.execute(text(SEQUENCES_SQL))).one()
            counter = await _scalar(conn, "SELECT last_sequence FROM event_counter WHERE id = 1")
            dense = count == distinct == high and (low == 1 or count == 0)
            if not dense:
                problems.append(
                    f"event sequences not dense 1..N: {count} events, {distinct} distinct, "
                    f"min {low}, max {high}"
                )
            if counter is not None and int(counter) != high:
                problems.append(f"event_counter.last_sequence {counter} != max sequence {high}")
            new_orders = int(
                await _scalar(
                    conn,
                    "SELECT COUNT(*) FROM sales_order WHERE id > :before",
                    before=orders_before,
                )
            )
            if successful is not None and new_orders != successful:
                problems.append(
                    f"{new_orders} orders written but {successful} successful responses"
                )
        deadline = time.monotonic() + wait_published
        while True:
            async with engine.connect() as conn:
                unpublished = int(
                    await _scalar(
                        conn, "SELECT COUNT(*) FROM order_event WHERE published_at IS NULL"
                    )
                )
            if unpublished == 0 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        if unpublished:
            problems.append(f"{unpublished} event(s) still unpublished after {wait_published}s")
    finally:
        await engine.dispose()
    return {
        "ok": not problems,
        "problems": problems,
        "inventory_levels": len(levels),
        "levels_disagreeing": bad_levels[:10],
        "orders_written": new_orders,
        "successful_responses": successful,
        "events": int(count),
        "max_sequence": int(high),
        "unpublished_events": unpublished,
    }


def check_consistency(
    database_url: str, orders_before: int, successful: int | None, wait_published: float = 10.0
) -> dict[str, Any]:
    """Stock, ledger, allocations and events add up; orders written == successful responses
    (``successful`` counts every placeOrder that answered with an order, warm-up included)."""
    return asyncio.run(_check(database_url, orders_before, successful, wait_published))
