"""The store: SQLAlchemy 2 over SQLite (default) or PostgreSQL, schema managed by Alembic."""

from nemo_kernel.store import clusters, events, rebalances, slas, workloads
from nemo_kernel.store.db import Database, in_chunks
from nemo_kernel.store.errors import Conflict, NotFound, store_busy

__all__ = [
    "Conflict",
    "Database",
    "NotFound",
    "clusters",
    "events",
    "in_chunks",
    "rebalances",
    "slas",
    "store_busy",
    "workloads",
]
