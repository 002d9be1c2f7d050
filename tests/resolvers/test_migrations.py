"""Migrations carry existing data forward: orders placed before access control get their
tracking token, and the models match what the migrations build."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from db.migrate import upgrade


async def test_upgrade_gives_existing_orders_distinct_tracking_tokens(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    await upgrade(url, "0001")
    engine = create_async_engine(url)
    try:
        async with engine.begin() as c:
            await c.execute(
                text(
                    "INSERT INTO customer (name, email, addresses, created_at) "
                    "VALUES ('Ada', 'ada@example.com', '[]', '2026-01-01 00:00:00')"
                )
            )
            for n in range(3):
                await c.execute(
                    text(
                        "INSERT INTO sales_order (customer_id, channel, status, payment_status, "
                        "payment_method, currency, subtotal_minor, shipping_minor, tax_minor, "
                        "total_minor, shipping_address, request_hash, placed_at, updated_at) "
                        "VALUES (1, 'WEB', 'PENDING', 'PENDING', 'CARD', 'USD', 100, 0, 0, "
                        f"100, '{{}}', 'h{n}', '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
                    )
                )
        await upgrade(url)
        async with engine.connect() as c:
            tokens = [r[0] for r in await c.execute(text("SELECT tracking_token FROM sales_order"))]
            tables = {r[0] for r in await c.execute(text("SELECT name FROM sqlite_master"))}
    finally:
        await engine.dispose()
    assert len(tokens) == 3 and len(set(tokens)) == 3
    assert all(t is not None and len(t) >= 32 for t in tokens)
    assert {"api_key", "uq_sales_order_tracking_token"} <= tables


def test_models_match_the_migrations(tmp_path: Path) -> None:
    """What the migrations build is what db/models.py declares (autogenerate finds nothing)."""
    import asyncio

    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import create_engine

    from db.models import Base

    path = tmp_path / "head.db"
    asyncio.run(upgrade(f"sqlite+aiosqlite:///{path}"))
    engine = create_engine(f"sqlite:///{path}")
    try:
        with engine.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []
