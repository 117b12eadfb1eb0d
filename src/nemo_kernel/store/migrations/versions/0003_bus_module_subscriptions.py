"""bus module subscriptions

Revision ID: 0003_bus_subscriptions
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nemo_kernel.store.tables

revision: str = "0003_bus_subscriptions"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "bus_module_subscriptions",
        sa.Column("module", sa.String(length=63), nullable=False),
        sa.Column("patterns", sa.JSON(), nullable=False),
        sa.Column("updated_at", nemo_kernel.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("module"),
    )


def downgrade() -> None:
    op.drop_table("bus_module_subscriptions")
