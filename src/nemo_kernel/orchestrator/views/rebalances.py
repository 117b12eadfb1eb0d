"""Reads of rebalancing plans: one by id with its moves, the latest ones."""

from __future__ import annotations

from nemo_kernel.domain import RebalanceStatus
from nemo_kernel.store import Database, rebalances


class RebalanceViews:
    """Rebalancing plans as the API shows them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, rebalance_id: int) -> RebalanceStatus:
        """One plan with its moves and where each is; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            return rebalances.to_status(rebalances.get_rebalance(s, rebalance_id), rebalances.moves_of(s, rebalance_id))

    def recent(self, limit: int = 20) -> list[RebalanceStatus]:
        """The latest plans, newest first."""
        with self._db.snapshot() as s:
            return [rebalances.to_status(row, rebalances.moves_of(s, row.id)) for row in rebalances.recent(s, limit)]
