"""Scores of feasible nodes: each criterion in [0, 1], higher is better, combined by a weighted mean.

- ``cost``: EUR per hour of one replica on the node's cluster, min-max normalised over the decision's feasible
  nodes (cheapest 1.0, dearest 0.0).
- ``carbon``: gCO2 per hour of one replica, from the node's marginal power for the requested CPU and the
  cluster's grid intensity, min-max normalised the same way (greenest 1.0).
- ``balance``: the lower of the CPU and memory fractions the node keeps free after taking the replica. It is
  already a fraction, so it is *not* min-max normalised: stretching 0.50 vs 0.51 free to 0.0 vs 1.0 would make a
  sliver of capacity outweigh a real price or carbon difference, and it would rescale every node's total each
  time one node takes a replica.
- ``spread``: 1 / (1 + replicas of the workload already on the node). Reported for explanation but not part of
  ``total``: spreading is applied as the first ranking key instead (see ``engine``).

Cost and carbon are normalised once, over the nodes that pass every filter at the start of the decision, so a
node's scores do not change when a different node fills up mid-decision.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.inventory import ClusterCandidate, NodeCandidate

CRITERIA: tuple[str, ...] = ("cost", "carbon", "balance")
"""Criteria that enter ``total``, i.e. the keys a weights mapping may use."""

DEFAULT_WEIGHTS: Mapping[str, float] = {"cost": 1.0, "carbon": 1.0, "balance": 1.0}

_MIB_PER_GIB = 1024.0


def checked_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` with every criterion present (missing ones are 0), after checking they make a mean.

    Raises ValueError on an unknown criterion (a typo would otherwise silently weigh nothing), a negative or
    non-finite weight, or weights that are all zero.
    """
    unknown = sorted(set(weights) - set(CRITERIA))
    if unknown:
        raise ValueError(f"unknown score criteria {unknown}; known: {list(CRITERIA)}")
    full = {name: float(weights.get(name, 0.0)) for name in CRITERIA}
    for name, value in full.items():
        if not 0.0 <= value < float("inf"):
            raise ValueError(f"weight {name}={value} must be a finite number >= 0")
    if sum(full.values()) <= 0.0:
        raise ValueError("at least one weight must be above 0")
    return full


def replica_cost_eur_hour(cluster: ClusterCandidate, req: Requirements) -> float:
    """What one replica costs per hour on ``cluster``."""
    prices = cluster.prices
    return req.cpu * prices.cpu_hour_eur + req.memory_mib / _MIB_PER_GIB * prices.gib_hour_eur


def replica_carbon_g_hour(cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
    """gCO2 per hour one replica causes on ``node``: the marginal watts of its CPU times the grid intensity.

    The power model is linear in CPU use, so the marginal draw of ``req.cpu`` cores is the node's dynamic
    range per core times the cores requested; idle draw is paid whether or not the replica lands here.
    """
    power = node.power
    marginal_watts = (power.max_watts - power.idle_watts) / node.cpu * req.cpu
    return marginal_watts * cluster.carbon_intensity / 1000.0


def normalised_lower_is_better(values: Sequence[float]) -> list[float]:
    """Min-max normalise so the lowest value scores 1.0 and the highest 0.0; all equal -> all 1.0."""
    if not values:
        return []
    low = min(values)
    spread = max(values) - low
    # Relative tolerance: identical prices computed through different float paths must still tie.
    if spread <= 1e-12 * max(abs(low), 1.0):
        return [1.0] * len(values)
    return [1.0 - (value - low) / spread for value in values]


def balance(node: NodeCandidate, used_cpu: float, used_memory_mib: float) -> float:
    """Fraction of ``node`` left free with the given usage, the lower of CPU and memory, clamped to [0, 1]."""
    free = min(1.0 - used_cpu / node.cpu, 1.0 - used_memory_mib / node.memory_mib)
    return min(max(free, 0.0), 1.0)


def spread(hosted_replicas: int) -> float:
    """1.0 on a node without replicas of the workload, halving, thirding... as replicas accumulate."""
    return 1.0 / (1 + hosted_replicas)
