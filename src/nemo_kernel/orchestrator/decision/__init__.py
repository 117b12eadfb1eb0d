"""Decision engine of the meta-orchestrator: where replicas run, and why.

Pure and synchronous: the caller (the orchestration engine) passes the clusters and nodes as ``ClusterCandidate``
and ``NodeCandidate`` values and stores the returned ``PlacementDecision``::

    engine = DecisionEngine(settings.weights)
    decision = engine.decide("default", "web", 3, descriptor.deployment, [0, 1, 2], candidates)

Filters, in order (first rejection wins): cluster-health, cordon, excluded, cluster-allowlist, tier, region,
data-residency for clusters; node-health, architecture, runtime, tee, node-labels, capacity for nodes.
Scores: the criteria of ``criteria.DEFAULT_CRITERIA`` (cost, carbon, balance), weighted into ``total``, and spread
(ranked first). See ``decide``, ``scoring`` and ``criteria`` for the exact rules.
"""

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.criteria import (
    DEFAULT_CRITERIA,
    AnyCriterion,
    Criterion,
    LoadCriterion,
    NodeLoad,
)
from nemo_kernel.orchestrator.decision.decide import DecisionEngine
from nemo_kernel.orchestrator.decision.filters import CLUSTER_FILTERS, NODE_FILTERS, Requirements

__all__ = [
    "CLUSTER_FILTERS",
    "DEFAULT_CRITERIA",
    "NODE_FILTERS",
    "AnyCriterion",
    "ClusterCandidate",
    "Criterion",
    "DecisionEngine",
    "LoadCriterion",
    "NodeCandidate",
    "NodeLoad",
    "Requirements",
]
