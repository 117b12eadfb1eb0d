"""The store on SQLite and PostgreSQL: what the API and the engine rely on."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from nemo_kernel.domain import ClusterSpec, WorkloadDescriptor
from nemo_kernel.store import Conflict, Database, NotFound, clusters, events, workloads


def _cluster(name: str = "edge-1") -> ClusterSpec:
    return ClusterSpec.model_validate(
        {
            "name": name,
            "tier": "edge",
            "region": "eu-south",
            "country": "ES",
            "nodes": [{"name": "n1", "cpu": 4, "memory_mib": 4096}, {"name": "n2", "cpu": 2, "memory_mib": 2048}],
        }
    )


def _descriptor(replicas: int = 2) -> WorkloadDescriptor:
    return WorkloadDescriptor.model_validate(
        {"name": "demo", "deployment": {"command": ["true"], "replicas": replicas}}
    )


def test_cluster_roundtrip_and_duplicate(database: Database) -> None:
    with database.transaction() as s:
        clusters.add_cluster(s, _cluster())
    with pytest.raises(Conflict), database.transaction() as s:
        clusters.add_cluster(s, _cluster())
    with database.transaction() as s:
        row = clusters.get_cluster(s, "edge-1")
        status = clusters.to_cluster_status(row)
        assert status.spec == _cluster()
        assert [n.name for n in row.nodes] == ["n1", "n2"]
        assert [e.kind for e in events.history(s, "cluster/edge-1")] == ["cluster.registered"]


def test_migrate_is_idempotent(database: Database) -> None:
    database.migrate()
    with database.transaction() as s:
        assert clusters.list_clusters(s) == []


def test_remove_unknown_cluster(database: Database) -> None:
    with pytest.raises(NotFound), database.transaction() as s:
        clusters.remove_cluster(s, "nope")


def test_apply_versions_and_capacity_accounting(database: Database) -> None:
    with database.transaction() as s:
        clusters.add_cluster(s, _cluster())
        first = workloads.apply_workload(s, _descriptor())
        assert first.outcome == "created"
    with database.transaction() as s:
        assert workloads.apply_workload(s, _descriptor()).outcome == "unchanged"
        updated = workloads.apply_workload(s, _descriptor(replicas=3))
        assert (updated.outcome, updated.row.version) == ("updated", 2)
        row = workloads.get_workload(s, "default", "demo")
        replica = workloads.bind_replicas(
            s, row, [workloads.Binding(0, "edge-1", "n1", "runc")], cpu=0.5, memory_mib=100
        )[0]
        workloads.bind_replicas(s, row, [workloads.Binding(1, "edge-1", "n1", "runc")], cpu=0.5, memory_mib=100)
    with database.transaction() as s:
        node = clusters.get_cluster(s, "edge-1").nodes[0]
        assert (node.allocated_cpu, node.allocated_memory_mib, node.replica_count) == (1.0, 200, 2)
        stored = s.get(type(replica), replica.id)
        assert stored is not None
        workloads.release_replica(s, stored)
        workloads.release_replica(s, stored)  # releasing twice gives capacity back once
    with database.transaction() as s:
        node = clusters.get_cluster(s, "edge-1").nodes[0]
        assert (node.allocated_cpu, node.allocated_memory_mib, node.replica_count) == (0.5, 100, 1)
        kinds = [e.kind for e in events.history(s, "workload/default/demo")]
        assert kinds == ["workload.registered", "workload.updated"]


def test_outbox_marks_published(database: Database) -> None:
    with database.transaction() as s:
        clusters.add_cluster(s, _cluster("a"))
        clusters.add_cluster(s, _cluster("b"))
    with database.transaction() as s:
        pending = events.unpublished(s)
        assert [e.subject for e in pending] == ["cluster/a", "cluster/b"]
        events.mark_published(s, [pending[0].id])
    with database.transaction() as s:
        assert [e.subject for e in events.unpublished(s)] == ["cluster/b"]


def test_failed_transaction_stores_nothing(database: Database) -> None:
    with pytest.raises(RuntimeError), database.transaction() as s:
        clusters.add_cluster(s, _cluster())
        raise RuntimeError("validation failed half-way")
    with database.transaction() as s:
        assert clusters.list_clusters(s) == []
        assert events.unpublished(s) == []


def test_a_new_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    # It holds the issuer's signing keys and password hashes, wherever NEMO_DATABASE_URL puts it.
    path = tmp_path / "elsewhere" / "nemo.db"
    database = Database(f"sqlite:///{path}")
    try:
        database.migrate()
        files = [p for p in path.parent.iterdir() if p.name.startswith("nemo.db")]
        assert path in files
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
    finally:
        database.dispose()
