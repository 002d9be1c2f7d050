"""placeOrder's writes done by raw ``sqlite3``: ``python -m bench.rawplace <json-config>``.

The issue's premise for the ``place`` target is that raw sqlite3 doing the same writes
reaches about twice the trivial query's rate, "so the database is not what stands in the
way". This measures that premise in the same run, on a copy of the benchmark's database:
one thread, no HTTP, no GraphQL, no SQLAlchemy, as many orders as it can in the window,
each the statements ``placeOrder`` runs on SQLite for an existing customer and three
distinct products (``tests/test_bench_rawplace.py`` compares the two statement by
statement): read the products with their stock and the customer (the benchmark's orders
have no idempotency key), insert the order, its lines (one statement), their allocations
and the ledger rows, reserve with guarded updates, bump the event counter and insert the
event, in one ``BEGIN IMMEDIATE`` … ``COMMIT``, with the pragmas the app sets.

Config: ``database`` (a file path: a copy, it gains orders), ``warmup`` and ``duration`` in
seconds, ``seed``. Prints one JSON object: orders per second (wall clock) and CPU
microseconds per order.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sqlite3
import sys
import time
from datetime import UTC, datetime
from typing import Any

ADDRESS = {
    "name": "Bench Mark",
    "line1": "1 Load Street",
    "city": "Springfield",
    "postalCode": "10001",
    "country": "US",
}

PRODUCTS_WITH_STOCK = """
SELECT product.id, product.sku, product.name, product.price_minor, product.currency,
  product.active, product.allow_backorder, inventory_level.id, inventory_level.warehouse_id,
  inventory_level.on_hand - inventory_level.reserved, warehouse.priority,
  (SELECT customer.id FROM customer WHERE customer.id = ?)
FROM product LEFT OUTER JOIN inventory_level ON inventory_level.product_id = product.id
LEFT OUTER JOIN warehouse ON warehouse.id = inventory_level.warehouse_id
WHERE product.sku IN (?, ?, ?)"""
INSERT_ORDER = """
INSERT INTO sales_order (customer_id, channel, external_id, status, payment_status,
  payment_method, currency, subtotal_minor, shipping_minor, tax_minor, total_minor,
  shipping_address, request_hash, tracking_token, placed_at, updated_at)
VALUES (?, 'WEB', NULL, 'PENDING', 'PENDING', 'CARD', ?, ?, 0, 0, ?, ?, ?, ?, ?, ?)"""
INSERT_LINES = """
INSERT INTO order_line (order_id, product_id, sku, name, quantity, unit_price_minor,
  total_minor, backordered_quantity)
VALUES (?, ?, ?, ?, ?, ?, ?, 0), (?, ?, ?, ?, ?, ?, ?, 0), (?, ?, ?, ?, ?, ?, ?, 0)
RETURNING id"""
INSERT_ALLOCATION = (
    "INSERT INTO allocation (order_line_id, warehouse_id, quantity) VALUES (?, ?, ?)"
)
INSERT_MOVEMENT = """
INSERT INTO stock_movement (product_id, warehouse_id, on_hand_delta, reserved_delta, reason,
  reference, note, actor, created_at)
VALUES (?, ?, 0, ?, 'ORDER_RESERVED', ?, NULL, 'bench', ?)"""
RESERVE = """
UPDATE inventory_level SET reserved = inventory_level.reserved + ?, updated_at = ?
WHERE inventory_level.id = ? AND inventory_level.on_hand - inventory_level.reserved >= ?"""
BUMP_COUNTER = """
UPDATE event_counter SET last_sequence = event_counter.last_sequence + 1
WHERE event_counter.id = 1 RETURNING last_sequence"""
INSERT_EVENT = """
INSERT INTO order_event (sequence, order_id, type, from_status, to_status, actor, actor_role,
  note, occurred_at)
VALUES (?, ?, 'PLACED', NULL, 'PENDING', 'bench', 'ADMIN', NULL, ?)"""


class RawPlacer:
    """Places orders on ``conn`` as ``placeOrder`` writes them on SQLite."""

    def __init__(self, conn: sqlite3.Connection, seed: int = 1) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.skus = [r[0] for r in conn.execute("SELECT sku FROM product WHERE active")]
        self.customers = [r[0] for r in conn.execute("SELECT id FROM customer")]
        if len(self.skus) < 3 or not self.customers:
            raise ValueError("the database needs 3 active products and a customer")

    def place(self) -> int:
        """One order of three distinct random products (1-3 units each); its id."""
        rng, conn = self.rng, self.conn
        skus = rng.sample(self.skus, 3)
        quantities = [rng.randint(1, 3) for _ in skus]
        customer = rng.choice(self.customers)
        now = datetime.now(UTC).replace(tzinfo=None).isoformat(" ")
        conn.execute("BEGIN IMMEDIATE")
        try:
            rows = conn.execute(PRODUCTS_WITH_STOCK, [customer, *sorted(skus)]).fetchall()
            product = {r[1]: r for r in rows}
            # Each line from the first warehouse (by priority) that has all of it.
            stock = sorted((r for r in rows if r[7] is not None), key=lambda r: (r[10], r[8]))
            source = {}
            for sku, qty in zip(skus, quantities, strict=True):
                level = next(r for r in stock if r[1] == sku and r[9] >= qty)
                source[sku] = (level[7], level[8])
            currency = product[skus[0]][4]
            totals = [product[s][3] * q for s, q in zip(skus, quantities, strict=True)]
            address = json.dumps(ADDRESS)
            digest = hashlib.sha256(f"{customer}{skus}{quantities}".encode()).hexdigest()
            order_id = conn.execute(
                INSERT_ORDER,
                (
                    customer,
                    currency,
                    sum(totals),
                    sum(totals),
                    address,
                    digest,
                    secrets.token_urlsafe(24),
                    now,
                    now,
                ),
            ).lastrowid
            line_ids = sorted(
                row[0]
                for row in conn.execute(
                    INSERT_LINES,
                    [
                        value
                        for s, q, total in zip(skus, quantities, totals, strict=True)
                        for value in (
                            order_id,
                            product[s][0],
                            s,
                            product[s][2],
                            q,
                            product[s][3],
                            total,
                        )
                    ],
                )
            )
            conn.executemany(
                INSERT_ALLOCATION,
                [
                    (line, source[s][1], q)
                    for line, s, q in zip(line_ids, skus, quantities, strict=True)
                ],
            )
            reference = f"ORD-{order_id:06d}"
            conn.executemany(
                INSERT_MOVEMENT,
                [
                    (product[s][0], source[s][1], q, reference, now)
                    for s, q in zip(skus, quantities, strict=True)
                ],
            )
            reserved = conn.executemany(
                RESERVE, [(q, now, source[s][0], q) for s, q in zip(skus, quantities, strict=True)]
            ).rowcount
            if reserved != 3:
                raise RuntimeError("stock moved under a single writer")
            sequence = conn.execute(BUMP_COUNTER).fetchone()[0]
            conn.execute(INSERT_EVENT, (sequence, order_id, now))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        assert order_id is not None
        return order_id


def connect(path: str) -> sqlite3.Connection:
    """A connection set up as the app's write connection is (``db.database``): the
    checkpoints a server runs on a thread of its own happen here inline, at the backstop."""
    from db.checkpoint import BACKSTOP_PAGES
    from db.database import sqlite_on_connect

    conn = sqlite3.connect(path)
    sqlite_on_connect(conn, BACKSTOP_PAGES)
    return conn


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    conn = connect(cfg["database"])
    try:
        placer = RawPlacer(conn, int(cfg.get("seed", 1)))
        end_warmup = time.perf_counter() + float(cfg["warmup"])
        while time.perf_counter() < end_warmup:
            placer.place()
        orders = 0
        cpu0, start = time.process_time(), time.perf_counter()
        end = start + float(cfg["duration"])
        while time.perf_counter() < end:
            placer.place()
            orders += 1
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu0
    finally:
        conn.close()
    return {
        "orders": orders,
        "orders_per_s": round(orders / wall, 1),
        "cpu_us_per_order": round(cpu / orders * 1e6, 1) if orders else None,
    }


def main(argv: list[str]) -> int:
    try:
        result = run(json.loads(argv[0]))
    except Exception as exc:  # reported to the benchmark, which fails the scenario
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
