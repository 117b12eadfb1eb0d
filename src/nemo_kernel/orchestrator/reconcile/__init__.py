"""Orchestration engine: reconciles desired placement with what the clusters report.

One pass (``OrchestrationEngine.reconcile_once``) runs, in order: heartbeats (Resource Manager), then the steps,
each a module of this package:

- ``observe``: the clusters' reports are applied to the replica rows (crashes and starts recorded as events);
- ``reschedule``: replicas of removed clusters are forgotten, those on drained or silent clusters that no migration
  moves (not running, or their evacuation gave up) get replacements queued;
- ``evacuate``: running replicas on drained or NotReady clusters or NotReady nodes get a migration (target chosen
  by the decision engine), carried out by the migration loop;
- ``schedule``: the decision engine places what is queued;
- ``rollout``: each cluster is told which replicas to run and which to remove (plan -> apply -> record).

Every state change is stored (with its event) before anything is sent; work is always re-derived from the store,
so a restart of the control plane resumes where it stopped. Moves are make-before-break, like rollouts: a replica
on a drained or silent cluster keeps its place until a replacement for its index runs elsewhere; only then is it
released. Each workload and each cluster is handled in isolation: an error about one (an unreadable stored row, a
driver failing on one replica) is logged and recorded on that object, and the pass goes on for the others.

Imports run one way: ``reconciler`` (composes the pass) -> the steps -> ``phases`` (the workload-phase rules) ->
``records`` (events and failure isolation). A new step is one module here plus one line in ``reconciler``.
"""

from nemo_kernel.orchestrator.reconcile.phases import ready_count, workload_phase
from nemo_kernel.orchestrator.reconcile.reconciler import OrchestrationEngine

__all__ = ["OrchestrationEngine", "ready_count", "workload_phase"]
