"""The schema the migrations build is the one the code declares, and the hot queries of a pass read indexes."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from nemo_kernel.orchestrator.reconcile.rollout import PENDING_CLUSTERS
from nemo_kernel.store import Database
from nemo_kernel.store.tables import Base


def test_the_migrated_schema_is_the_declared_one(database: Database) -> None:
    # A table, column or index declared in ``tables`` but missing from the migrations (or the reverse) would exist
    # on a new test database built from the metadata and not on a user's upgraded one.
    with database.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []


def test_the_rollouts_pending_clusters_come_from_an_index_alone(tmp_path) -> None:  # type: ignore[no-untyped-def]
    db = Database(f"sqlite:///{tmp_path / 'nemo.db'}")
    db.migrate()
    try:
        with db.engine.connect() as connection:
            sql = str(PENDING_CLUSTERS.compile(connection, compile_kwargs={"literal_binds": True}))
            plan = " | ".join(row[3] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}"))
    finally:
        db.dispose()
    # every replica of the fleet read on every pass after a change (0.2 s at 100,000) is what this rules out
    assert "SCAN replicas" not in plan, plan
    assert "COVERING INDEX ix_replicas_desired_phase_cluster" in plan, plan
