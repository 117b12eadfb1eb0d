"""PPEF closed loop: an SLA action the reaction decided but that is carried out outside it (a webhook, a
migration) is stored pending until the SLA action runner has done it

Revision ID: 0009_ppef
Revises: 0008_evacuations
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_ppef"
down_revision: str | None = "0008_evacuations"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("sla_actions", sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_sla_actions_pending", "sla_actions", ["pending"])


def downgrade() -> None:
    op.drop_index("ix_sla_actions_pending", table_name="sla_actions")
    op.drop_column("sla_actions", "pending")
