"""Reads of rebalancing plans: one by id with its moves, the latest ones."""

from __future__ import annotations

from nemo_kernel.domain import MOVES_PAGE, RebalanceStatus
from nemo_kernel.store import Database, rebalances


class RebalanceViews:
    """Rebalancing plans as the API shows them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, rebalance_id: int, offset: int = 0, limit: int = MOVES_PAGE) -> RebalanceStatus:
        """One plan with a page of its moves (``limit`` from the ``offset``-th) and where each is; ``NotFound`` if
        unknown."""
        with self._db.snapshot() as s:
            return rebalances.status_of(s, rebalances.get_rebalance(s, rebalance_id), offset, limit)

    def recent(self, limit: int = 20) -> list[RebalanceStatus]:
        """The latest plans, newest first, each with the first page of its moves."""
        with self._db.snapshot() as s:
            return [rebalances.status_of(s, row) for row in rebalances.recent(s, limit)]
