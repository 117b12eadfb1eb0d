"""metric series and their 1-minute and 1-hour rollups (the embedded metrics store's history)

Revision ID: 0005_metric_rollups
Revises: 0004_reaction_runs
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_metric_rollups"
down_revision: str | None = "0004_reaction_runs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "metric_series",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("labels", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_metric_series_name", "metric_series", ["name"])
    op.create_table(
        "metric_rollups",
        sa.Column("series_id", sa.String(length=64), nullable=False),
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("start", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("sum", sa.Float(precision=53), nullable=True),
        sa.Column("min", sa.Float(precision=53), nullable=True),
        sa.Column("max", sa.Float(precision=53), nullable=True),
        sa.Column("last", sa.Float(precision=53), nullable=True),
        sa.Column("increase", sa.Float(precision=53), nullable=True),
        sa.PrimaryKeyConstraint("series_id", "resolution", "start"),
    )
    op.create_index("ix_metric_rollups_resolution_start", "metric_rollups", ["resolution", "start"])


def downgrade() -> None:
    op.drop_index("ix_metric_rollups_resolution_start", table_name="metric_rollups")
    op.drop_table("metric_rollups")
    op.drop_index("ix_metric_series_name", table_name="metric_series")
    op.drop_table("metric_series")
