"""What the gateway routes to: the URLs of a workload's running replicas, read from the store."""

from __future__ import annotations

from nemo_kernel.domain import ClusterSpec, ReplicaPhase, WorkloadDescriptor
from nemo_kernel.store import Database, clusters, workloads


def test_only_running_desired_replicas_of_the_asked_workloads_are_routed_to(database: Database) -> None:
    spec = {
        "name": "edge-1",
        "tier": "edge",
        "region": "eu",
        "country": "ES",
        "nodes": [{"name": "n1", "cpu": 8, "memory_mib": 1024}],
    }
    descriptor = {"name": "web", "deployment": {"command": ["app"], "replicas": 4, "ports": []}}
    with database.transaction() as s:
        clusters.add_cluster(s, ClusterSpec.model_validate(spec))
        web = workloads.apply_workload(s, WorkloadDescriptor.model_validate(descriptor)).row
        other = workloads.apply_workload(s, WorkloadDescriptor.model_validate({**descriptor, "name": "other"})).row
        for row, index, phase in [
            (web, 0, ReplicaPhase.RUNNING),
            (web, 1, ReplicaPhase.RUNNING),
            (web, 2, ReplicaPhase.STARTING),
            (web, 3, ReplicaPhase.RUNNING),
            (other, 0, ReplicaPhase.RUNNING),
        ]:
            replica = workloads.bind_replicas(
                s, row, [workloads.Binding(index, "edge-1", "n1", None)], cpu=0.1, memory_mib=16
            )[0]
            replica.phase, replica.url = phase.value, f"http://127.0.0.1:{9000 + index}/{row.name}"
            if index == 3:
                workloads.release_replica(s, replica)  # stopping: no new requests
                replica.phase = ReplicaPhase.RUNNING.value

    with database.transaction() as s:
        found = workloads.running_urls(s, {"default/web", "default/absent"})
    assert found == {
        "default/absent": [],
        "default/web": ["http://127.0.0.1:9000/web", "http://127.0.0.1:9001/web"],
    }
