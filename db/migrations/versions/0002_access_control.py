"""access control: API keys, tracking tokens, event actor roles, product cost prices

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:00:00
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.String(length=500), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_key_key_hash")),
    )
    op.create_index("ix_api_key_revoked_at", "api_key", ["revoked_at"])
    op.add_column("product", sa.Column("cost_minor", sa.BigInteger(), nullable=True))
    op.add_column("order_event", sa.Column("actor_role", sa.String(length=16), nullable=True))
    op.add_column("sales_order", sa.Column("tracking_token", sa.String(length=64), nullable=True))
    # Orders placed before this migration get their token now.
    bind = op.get_bind()
    order = sa.table("sales_order", sa.column("id"), sa.column("tracking_token"))
    for (order_id,) in bind.execute(sa.select(order.c.id)).all():
        bind.execute(
            order.update()
            .where(order.c.id == order_id)
            .values(tracking_token=secrets.token_urlsafe(24))
        )
    op.create_index("uq_sales_order_tracking_token", "sales_order", ["tracking_token"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_sales_order_tracking_token", table_name="sales_order")
    with op.batch_alter_table("sales_order") as batch:
        batch.drop_column("tracking_token")
    with op.batch_alter_table("order_event") as batch:
        batch.drop_column("actor_role")
    with op.batch_alter_table("product") as batch:
        batch.drop_column("cost_minor")
    op.drop_index("ix_api_key_revoked_at", table_name="api_key")
    op.drop_table("api_key")
