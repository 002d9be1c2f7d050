"""bench.rawplace does the writes placeOrder does on SQLite, statement by statement.

Both place an order of three products for an existing customer on copies of one database,
with SQLite tracing every statement. Each statement is reduced to what it does (its verb,
its table, the columns it writes, how many rows), which must be the same, in the same
order; and the raw writer's order must add up as the app's does (stock, ledger, event).
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path

import pytest

from bench.rawplace import RawPlacer, connect
from db.database import Database
from db.migrate import upgrade
from domain.orders import PaymentMethod, SalesChannel
from resolvers.orders import LineInput, PlaceOrderCommand, place_order
from tests.factories import ACTOR, ADDRESS, PRICING, order, product, stock, warehouse

SKUS = ["A-1", "B-2", "C-3"]


async def _catalogue(db: Database) -> int:
    await warehouse(db, "MAIN", 1)
    await warehouse(db, "SPARE", 2)
    for sku in SKUS:
        await product(db, sku)
        await stock(db, sku, "MAIN", 100)
        await stock(db, sku, "SPARE", 100)
    # An existing customer: the first order creates one.
    return int((await order(db, [("A-1", 1)])).customer_id)


def _shape(sql: str) -> tuple[str, ...]:
    """What a statement does, without its values and its spelling."""
    sql = re.sub(r"\s+", " ", sql).strip()
    verb = sql.split(" ", 1)[0].upper()
    if verb in ("BEGIN", "COMMIT", "ROLLBACK"):
        return (sql.upper(),)
    if verb == "SELECT":
        tables = re.findall(r"\b(?:FROM|JOIN) (\w+)", sql)
        return (verb, *tables)
    if verb == "INSERT":
        table, columns = re.match(r"INSERT INTO (\w+) \(([^)]*)\)", sql).groups()  # type: ignore[union-attr]
        return (verb, table, *sorted(c.strip() for c in columns.split(",")))
    if verb == "UPDATE":
        table, assignments = re.match(r"UPDATE (\w+) SET (.*?) WHERE", sql).groups()  # type: ignore[union-attr]
        columns = re.findall(r"(\w+)\s*=\s*(?:\(|\w|'|\?)", assignments)
        return (verb, table, *sorted(set(columns) - {table}))
    return (sql,)


async def test_the_raw_writer_writes_what_place_order_writes(tmp_path: Path) -> None:
    app_path = tmp_path / "app.db"
    await upgrade(f"sqlite+aiosqlite:///{app_path}")
    db = Database(f"sqlite+aiosqlite:///{app_path}")
    try:
        customer_id = await _catalogue(db)
        # A copy for the raw writer, before the app's order.
        raw_path = tmp_path / "raw.db"
        with (
            contextlib.closing(sqlite3.connect(app_path)) as source,
            contextlib.closing(sqlite3.connect(raw_path)) as target,
        ):
            source.backup(target)

        app: list[str] = []
        assert db.write_lock is not None
        async with db.write_lock:
            with db.core_connection() as conn:
                conn.connection.dbapi_connection.set_trace_callback(app.append)  # type: ignore[union-attr]
        placed = await place_order(
            db,
            PlaceOrderCommand(
                channel=SalesChannel.WEB,
                payment_method=PaymentMethod.CARD,
                lines=[LineInput(sku, 2) for sku in SKUS],
                shipping_address=dict(ADDRESS),
                customer_id=customer_id,
            ),
            ACTOR,
            PRICING,
        )
        assert placed.status == "PENDING"
    finally:
        await db.dispose()

    raw: list[str] = []
    raw_conn = connect(str(raw_path))
    try:
        placer = RawPlacer(raw_conn)
        placer.skus = list(SKUS)
        placer.customers = [customer_id]
        raw_conn.set_trace_callback(raw.append)
        order_id = placer.place()
        raw_conn.set_trace_callback(None)
        assert raw_conn.execute(
            "SELECT count(*) FROM order_line WHERE order_id = ?", (order_id,)
        ).fetchone() == (3,)
        levels = raw_conn.execute("SELECT sum(reserved) FROM inventory_level").fetchone()[0]
        ledger = raw_conn.execute("SELECT sum(reserved_delta) FROM stock_movement").fetchone()[0]
        assert levels == ledger
        assert raw_conn.execute(
            "SELECT count(*) FROM order_event WHERE order_id = ? AND type = 'PLACED'", (order_id,)
        ).fetchone() == (1,)
    finally:
        raw_conn.close()

    assert [_shape(s) for s in raw] == [_shape(s) for s in app]
    assert len(app) >= 15, app


@pytest.mark.parametrize(
    ("sql", "shape"),
    [
        ("INSERT INTO t (b, a) VALUES (1, 'x') RETURNING id", ("INSERT", "t", "a", "b")),
        (
            "UPDATE t SET n=(t.n + 1), at='2026' WHERE t.id = 1",
            ("UPDATE", "t", "at", "n"),
        ),
        ("SELECT t.a FROM t LEFT OUTER JOIN u ON u.x = t.y WHERE 1", ("SELECT", "t", "u")),
        ("BEGIN IMMEDIATE", ("BEGIN IMMEDIATE",)),
    ],
)
def test_shape(sql: str, shape: tuple[str, ...]) -> None:
    assert _shape(sql) == shape
