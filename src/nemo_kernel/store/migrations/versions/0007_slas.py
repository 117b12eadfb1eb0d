"""PPEF: SLAs (versioned), the status of their SLOs, violations and the audit of the closed loop

Revision ID: 0007_slas
Revises: 0006_migrations
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_slas"
down_revision: str | None = "0006_migrations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _at(name: str, nullable: bool) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "slas",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("workload", sa.String(length=63), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        _at("created_at", False),
        _at("updated_at", False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name"),
    )
    op.create_index("ix_slas_namespace_workload", "slas", ["namespace", "workload"])
    op.create_index("ix_slas_state", "slas", ["state"])
    op.create_table(
        "slo_status",
        sa.Column("sla_id", sa.Integer(), sa.ForeignKey("slas.id", ondelete="CASCADE"), nullable=False),
        sa.Column("slo", sa.String(length=63), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("value", sa.Float(precision=53), nullable=True),
        sa.Column("target", sa.Float(precision=53), nullable=False),
        sa.Column("budget_remaining", sa.Float(precision=53), nullable=True),
        sa.Column("burn_rates", sa.JSON(), nullable=False),
        _at("predicted_breach_at", True),
        sa.Column("confidence", sa.Float(precision=53), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        _at("evaluated_at", True),
        sa.PrimaryKeyConstraint("sla_id", "slo"),
    )
    op.create_table(
        "sla_violations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sla_id", sa.Integer(), sa.ForeignKey("slas.id", ondelete="CASCADE"), nullable=False),
        sa.Column("slo", sa.String(length=63), nullable=False),
        _at("started_at", False),
        _at("ended_at", True),
        sa.Column("worst_value", sa.Float(precision=53), nullable=True),
        sa.Column("breach_level", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sla_violations_sla_slo_ended", "sla_violations", ["sla_id", "slo", "ended_at"])
    op.create_index("ix_sla_violations_started_at", "sla_violations", ["started_at"])
    op.create_table(
        "sla_actions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sla_id", sa.Integer(), sa.ForeignKey("slas.id", ondelete="CASCADE"), nullable=False),
        sa.Column("slo", sa.String(length=63), nullable=True),
        sa.Column("trigger", sa.String(length=16), nullable=False),
        sa.Column("predicted", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        _at("at", False),
        sa.Column("followup", sa.JSON(), nullable=True),
        _at("followup_at", True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sla_actions_sla_at", "sla_actions", ["sla_id", "at"])


def downgrade() -> None:
    op.drop_index("ix_sla_actions_sla_at", table_name="sla_actions")
    op.drop_table("sla_actions")
    op.drop_index("ix_sla_violations_started_at", table_name="sla_violations")
    op.drop_index("ix_sla_violations_sla_slo_ended", table_name="sla_violations")
    op.drop_table("sla_violations")
    op.drop_table("slo_status")
    op.drop_index("ix_slas_state", table_name="slas")
    op.drop_index("ix_slas_namespace_workload", table_name="slas")
    op.drop_table("slas")
