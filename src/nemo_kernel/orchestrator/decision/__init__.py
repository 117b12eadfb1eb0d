"""Decision engine of the meta-orchestrator: where replicas run, and why.

Pure and synchronous: the caller (the orchestration engine) passes the inventory as ``ClusterCandidate`` and
``NodeCandidate`` values and stores the returned ``PlacementDecision``::

    engine = DecisionEngine(settings.weights)
    decision = engine.decide("default", "web", 3, descriptor.deployment, [0, 1, 2], candidates)

Filters, in order (first rejection wins): cluster-health, cordon, excluded, cluster-allowlist, tier, region,
data-residency for clusters; node-health, architecture, runtime, tee, node-labels, capacity for nodes.
Scores: cost, carbon, balance (weighted into ``total``) and spread (ranked first). See ``engine`` and
``scoring`` for the exact rules.
"""

from nemo_kernel.orchestrator.decision.engine import DecisionEngine
from nemo_kernel.orchestrator.decision.filters import CLUSTER_FILTERS, NODE_FILTERS, Requirements
from nemo_kernel.orchestrator.decision.inventory import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.scoring import CRITERIA, DEFAULT_WEIGHTS

__all__ = [
    "CLUSTER_FILTERS",
    "CRITERIA",
    "DEFAULT_WEIGHTS",
    "NODE_FILTERS",
    "ClusterCandidate",
    "DecisionEngine",
    "NodeCandidate",
    "Requirements",
]
