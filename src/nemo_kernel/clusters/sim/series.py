"""A simulated cluster's samples: the same ``nemo_replica_*`` and ``nemo_node_*`` series a real cluster reports."""

from __future__ import annotations

from nemo_kernel.clusters.sim.world import SimCluster
from nemo_kernel.domain import ReplicaPhase
from nemo_kernel.metrics import Sample, names


def cluster_samples(cluster: SimCluster, now: float) -> list[Sample]:
    """Every series of ``cluster`` at ``now`` (counters integrated up to it); the caller adds cluster labels."""
    cluster.advance(now)
    cluster.integrate(now)
    seed = cluster.settings.seed
    out: list[Sample] = []
    used: dict[str, float] = dict.fromkeys(cluster.nodes, 0.0)
    resident: dict[str, float] = dict.fromkeys(cluster.nodes, 0.0)
    for r in cluster.replicas.values():
        labels = {"replica": r.id, "workload": r.workload, "namespace": r.namespace, "node": r.node}
        rate, memory = r.cpu_rate(seed, now), r.memory_bytes(seed, now)
        used[r.node] += rate
        resident[r.node] += memory
        out += [
            Sample(names.REPLICA_UP.name, labels, float(r.phase is ReplicaPhase.RUNNING), now),
            Sample(names.REPLICA_RESTARTS.name, labels, float(r.restarts), now),
            Sample(names.REPLICA_CPU.name, labels, r.cpu_seconds, now),
            Sample(names.REPLICA_MEMORY.name, labels, memory, now),
            Sample(names.REPLICA_ENERGY.name, labels, r.energy_j, now),
            Sample(names.REPLICA_CO2.name, labels, r.co2_g, now),
        ]
    powers: dict[str, float] = {}
    for name, node in cluster.nodes.items():
        labels = {"node": name}
        powers[name] = power = SimCluster.node_power(node, used[name])
        out += [
            Sample(names.NODE_CPU.name, labels, node.cpu_seconds, now),
            Sample(names.NODE_CPU_CORES.name, labels, node.spec.cpu, now),
            Sample(names.NODE_MEMORY.name, labels, resident[name], now),
            Sample(names.NODE_MEMORY_CAPACITY.name, labels, node.spec.memory_mib * 2**20, now),
            Sample(names.NODE_POWER.name, labels, power, now),
            Sample(names.NODE_ENERGY.name, labels, node.energy_j, now),
            Sample(names.NODE_CO2.name, labels, node.co2_g, now),
        ]
    for r in cluster.replicas.values():  # each replica's share of its node's power, by the CPU it uses there
        rate = r.cpu_rate(seed, now)
        share = rate / used[r.node] if used[r.node] else 0.0
        labels = {"replica": r.id, "workload": r.workload, "namespace": r.namespace, "node": r.node}
        out.append(Sample(names.REPLICA_POWER.name, labels, powers[r.node] * share, now))
    out.append(Sample(names.CLUSTER_CARBON_INTENSITY.name, {}, cluster.spec.carbon_intensity, now))
    return out
