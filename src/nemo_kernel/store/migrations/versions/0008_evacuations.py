"""evacuations: a migration started by the engine (drain, NotReady cluster) says why

Revision ID: 0008_evacuations
Revises: 0007_slas
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_evacuations"
down_revision: str | None = "0007_slas"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.add_column(sa.Column("reason", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("migrations") as batch:
        batch.drop_column("reason")
