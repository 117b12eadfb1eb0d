"""reaction runs and watermarks, events by kind

Revision ID: 0004_reaction_runs
Revises: 0003_bus_subscriptions
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nemo_kernel.store.tables

revision: str = "0004_reaction_runs"
down_revision: str | None = "0003_bus_subscriptions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reaction_runs",
        sa.Column("reaction", sa.String(length=200), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("started_at", nemo_kernel.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", nemo_kernel.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reaction", "event_id"),
    )
    op.create_table(
        "reaction_watermarks",
        sa.Column("reaction", sa.String(length=200), nullable=False),
        sa.Column("settled_through", sa.Integer(), nullable=False),
        sa.Column("updated_at", nemo_kernel.store.tables.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reaction"),
    )
    op.create_index("ix_events_kind_id", "events", ["kind", "id"])


def downgrade() -> None:
    op.drop_index("ix_events_kind_id", table_name="events")
    op.drop_table("reaction_watermarks")
    op.drop_table("reaction_runs")
