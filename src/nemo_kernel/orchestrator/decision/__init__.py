"""Decision engine of the meta-orchestrator: where replicas run, and why.

Pure and synchronous: the caller (the orchestration engine) passes the clusters and nodes as ``ClusterCandidate``
and ``NodeCandidate`` values and stores the returned ``PlacementDecision``::

    engine = DecisionEngine(settings.weights)
    decision = engine.decide("default", "web", 3, descriptor.deployment, [0, 1, 2], candidates)

Filters, in order (first rejection wins): cluster-health, cordon, excluded, cluster-allowlist, tier, region,
data-residency, latency for clusters; node-health, architecture, runtime, tee, node-labels, capacity for nodes.
Scores: the criteria of ``criteria.DEFAULT_CRITERIA`` (cost, carbon, balance, latency, energy), weighted into
``total``, and spread (ranked first; ``placement.spread`` bounds replicas per tier, region or cluster). See
``reference`` for the rules stated plainly, ``decide`` for the vectorised engine over a ``NodeTable``, ``scoring``
and ``criteria`` for the scores.
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
from nemo_kernel.orchestrator.decision.reference import ReferenceEngine
from nemo_kernel.orchestrator.decision.table import NodeTable

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
    "NodeTable",
    "ReferenceEngine",
    "Requirements",
]
