"""Reads of migrations: one by id, a page (optionally of one workload)."""

from __future__ import annotations

from nemo_kernel.domain import MigrationStatus
from nemo_kernel.store import Database
from nemo_kernel.store.migration_records import get_migration, list_migrations, to_status


class MigrationViews:
    """Migrations as the API shows them."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def get(self, migration_id: int) -> MigrationStatus:
        """One migration with its phase timings and measured downtime; ``NotFound`` if unknown."""
        with self._db.snapshot() as s:
            return to_status(get_migration(s, migration_id))

    def page(self, workload: str | None = None, *, limit: int = 100, offset: int = 0) -> list[MigrationStatus]:
        """Migrations, newest first; of one workload (``namespace/name``) when given."""
        with self._db.snapshot() as s:
            return [to_status(row) for row in list_migrations(s, workload, limit=limit, offset=offset)]
