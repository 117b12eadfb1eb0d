"""migrations: replicas moving between nodes, clusters and runtimes

Revision ID: 0006_migrations
Revises: 0005_metric_rollups
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nemo_kernel.store.tables

revision: str = "0006_migrations"
down_revision: str | None = "0005_metric_rollups"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = nemo_kernel.store.tables.UtcDateTime(timezone=True)
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("workload", sa.String(length=127), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("source_replica", sa.String(length=128), nullable=False),
        sa.Column("source_index", sa.Integer(), nullable=False),
        sa.Column("source_cluster", sa.String(length=63), nullable=False),
        sa.Column("source_node", sa.String(length=63), nullable=False),
        sa.Column("target_replica", sa.String(length=128), nullable=True),
        sa.Column("target_cluster", sa.String(length=63), nullable=False),
        sa.Column("target_node", sa.String(length=63), nullable=False),
        sa.Column("target_runtime", sa.String(length=63), nullable=True),
        sa.Column("state_version", sa.Integer(), nullable=True),
        sa.Column("frozen_at", when, nullable=True),
        sa.Column("switched_at", when, nullable=True),
        sa.Column("source_stopped_at", when, nullable=True),
        sa.Column("phase_deadline", when, nullable=True),
        sa.Column("rolling_back", sa.Boolean(), nullable=False),
        sa.Column("timings", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("updated_at", when, nullable=False),
        sa.ForeignKeyConstraint(["workload_id"], ["workloads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_migrations_workload_id", "migrations", ["workload_id"])
    op.create_index("ix_migrations_phase", "migrations", ["phase"])


def downgrade() -> None:
    op.drop_index("ix_migrations_phase", table_name="migrations")
    op.drop_index("ix_migrations_workload_id", table_name="migrations")
    op.drop_table("migrations")
