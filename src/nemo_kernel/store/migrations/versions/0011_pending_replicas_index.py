"""pending replicas: an index on replicas (desired, phase, cluster), so the rollout finds the clusters with a replica
to send or to remove without scanning every replica of the fleet on every pass

Revision ID: 0011_pending_replicas_index
Revises: 0010_rebalance
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011_pending_replicas_index"
down_revision: str | None = "0010_rebalance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_replicas_desired_phase_cluster", "replicas", ["desired", "phase", "cluster"])


def downgrade() -> None:
    op.drop_index("ix_replicas_desired_phase_cluster", table_name="replicas")
