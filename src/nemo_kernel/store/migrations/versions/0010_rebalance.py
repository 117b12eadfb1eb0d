"""rebalance: the rebalancer's plans and their moves (the moves' start times are the workloads' cooldown)

Revision ID: 0010_rebalance
Revises: 0009_ppef
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nemo_kernel.store.tables

revision: str = "0010_rebalance"
down_revision: str | None = "0009_ppef"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    when = nemo_kernel.store.tables.UtcDateTime(timezone=True)
    op.create_table(
        "rebalances",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("apply", sa.Boolean(), nullable=False),
        sa.Column("solver_status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("totals", sa.JSON(), nullable=False),
        sa.Column("solve_seconds", sa.Float(), nullable=False),
        sa.Column("pinned", sa.JSON(), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", when, nullable=False),
        sa.Column("finished_at", when, nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rebalances_state", "rebalances", ["state"])
    op.create_table(
        "rebalance_moves",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rebalance_id", sa.Integer(), nullable=False),
        sa.Column("workload_id", sa.Integer(), nullable=False),
        sa.Column("workload", sa.String(length=127), nullable=False),
        sa.Column("replica", sa.String(length=128), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("from_cluster", sa.String(length=63), nullable=False),
        sa.Column("from_node", sa.String(length=63), nullable=False),
        sa.Column("to_cluster", sa.String(length=63), nullable=False),
        sa.Column("to_node", sa.String(length=63), nullable=False),
        sa.Column("saving_eur_h", sa.Float(), nullable=False),
        sa.Column("saving_gco2_h", sa.Float(), nullable=False),
        sa.Column("criterion", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("migration_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("started_at", when, nullable=True),
        sa.ForeignKeyConstraint(["rebalance_id"], ["rebalances.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workload_id"], ["workloads.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rebalance_moves_rebalance_id", "rebalance_moves", ["rebalance_id"])
    op.create_index("ix_rebalance_moves_state", "rebalance_moves", ["state"])
    op.create_index("ix_rebalance_moves_workload", "rebalance_moves", ["workload_id"])


def downgrade() -> None:
    op.drop_index("ix_rebalance_moves_workload", table_name="rebalance_moves")
    op.drop_index("ix_rebalance_moves_state", table_name="rebalance_moves")
    op.drop_index("ix_rebalance_moves_rebalance_id", table_name="rebalance_moves")
    op.drop_table("rebalance_moves")
    op.drop_index("ix_rebalances_state", table_name="rebalances")
    op.drop_table("rebalances")
